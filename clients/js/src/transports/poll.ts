/**
 * The last resort: REST at an interval, when neither a WebSocket nor a stream gets through (a proxy that
 * buffers responses, a network that kills long requests).
 *
 * It speaks in the same frames as the server, so the rest of the client is unchanged: the first poll is
 * the connect (an `unread_count`, then a `notifications` backlog: the unread ones of the newest page, or with
 * `since` everything after it); later polls send each newer notification as a `notification`, ids that turned
 * read as `read`, and the count. Newer notifications are found by paging newest-first with the `before`
 * cursor until the last id seen, so a burst between two polls is not cut to one page.
 */

import { HttpError, type RestApi } from '../rest.js';
import { Timer, type Timers } from '../timers.js';
import {
  CloseCode,
  type ClientFrame,
  type Notification,
  type NotificationPage,
  type TransportFrame,
} from '../types.js';
import { TopicPoller } from './poll-topics.js';
import type { ConnectParams, SendResult, Transport, TransportFactory, TransportHandlers } from './transport.js';

export interface PollTransportOptions {
  rest: RestApi;
  timers: Timers;
  intervalMs: number;
  /** Notifications read per request while looking for new ones (1–100). */
  pageSize: number;
  /** Pages read at most in one poll; past that the catch-up is cut and says so through `onError`. */
  maxPages: number;
}

/** The server's largest page: the first poll reads pages this big, for the backlog or the catch-up. */
const FIRST_PAGE = 100;

/** What one poll found: the new notifications and every one it read, both newest first. */
interface Found {
  items: Notification[];
  fetched: Notification[];
  /** The newest page: its unread count is the count now. */
  page: NotificationPage;
  /** Stopped at `maxPages` before reaching the last id seen. */
  cut: boolean;
}

export function pollTransport(options: PollTransportOptions): TransportFactory {
  return {
    kind: 'poll',
    topicsAtConnect: false,
    create: (params, handlers) => new PollTransport(options, params, handlers),
  };
}

class PollTransport implements Transport {
  readonly kind = 'poll';
  private readonly timer: Timer;
  private readonly topics: TopicPoller;
  private lastId: string | undefined;
  /** The read flags of the newest items, to notice ones read elsewhere. */
  private readFlags = new Map<string, boolean>();
  private opened = false;
  private done = false;

  constructor(
    private readonly options: PollTransportOptions,
    params: ConnectParams,
    private readonly handlers: TransportHandlers,
  ) {
    this.lastId = params.since;
    this.timer = new Timer(options.timers);
    this.topics = new TopicPoller(
      options.rest,
      (frame) => this.emit(frame),
      (error) => {
        if (!this.done) handlers.onError(error);
      },
    );
    void this.tick();
  }

  send(frame: ClientFrame): SendResult {
    if (this.done) return 'unavailable';
    if (frame.type === 'subscribe') {
      void this.topics.subscribe(frame.topic, frame.since);
      return 'sent';
    }
    if (frame.type === 'unsubscribe') {
      this.topics.unsubscribe(frame.topic);
      return 'sent';
    }
    return 'unavailable';
  }

  close(): void {
    this.done = true;
    this.timer.cancel();
  }

  private async tick(): Promise<void> {
    try {
      await this.pollInbox();
    } catch (error) {
      if (this.done) return;
      if (!this.opened || (error instanceof HttpError && error.status === 401)) {
        this.done = true;
        this.handlers.onClose({
          code: CloseCode.abnormal,
          reason: error instanceof Error ? error.message : String(error),
          opened: this.opened,
          authRefused: error instanceof HttpError && error.status === 401,
        });
        return;
      }
      this.handlers.onError(error instanceof Error ? error : new Error(String(error)));
    }
    if (this.done) return;
    await this.topics.poll();
    if (!this.done) this.timer.start(this.options.intervalMs, () => void this.tick());
  }

  private async pollInbox(): Promise<void> {
    const first = !this.opened;
    const { items, fetched, page, cut } =
      first && this.lastId === undefined
        ? await this.newestPage()
        : await this.newerThan(this.lastId, first ? FIRST_PAGE : this.options.pageSize);
    if (this.done) return;
    if (first) {
      this.opened = true;
      this.handlers.onOpen();
      this.emit({ type: 'unread_count', unread_count: page.unread_count });
    }
    const oldestFirst = [...items].reverse();
    if (first) {
      const backlog = this.lastId === undefined ? oldestFirst.filter((n) => !n.read) : oldestFirst;
      this.emit({ type: 'notifications', items: backlog, more: false });
    } else {
      for (const notification of oldestFirst) this.emit({ type: 'notification', data: notification });
    }
    const turnedRead = fetched.filter((n) => n.read && this.readFlags.get(n.id) === false).map((n) => n.id);
    if (!first && turnedRead.length > 0) this.emit({ type: 'read', ids: turnedRead });
    if (!first) this.emit({ type: 'unread_count', unread_count: page.unread_count });
    this.readFlags = new Map(fetched.map((n) => [n.id, n.read]));
    const newest = page.items[0]?.id;
    if (newest !== undefined && (this.lastId === undefined || newest > this.lastId)) this.lastId = newest;
    if (cut) {
      this.handlers.onError(new Error(`polling: more than ${items.length} new notifications; older ones skipped`));
    }
  }

  /** The first poll without `since`: the newest page, whose unread items are the backlog. */
  private async newestPage(): Promise<Found> {
    const page = await this.options.rest.list({ limit: FIRST_PAGE });
    return { items: page.items, fetched: page.items, page, cut: false };
  }

  /**
   * Everything newer than `lastId` (all of the newest page when there is none), newest first. A catch-up
   * reads full pages, so it reaches as far back as the WebSocket's (1,000).
   */
  private async newerThan(lastId: string | undefined, limit: number): Promise<Found> {
    const first = await this.options.rest.list({ limit });
    const items: Notification[] = [];
    const fetched: Notification[] = [];
    let page = first;
    for (let pages = 1; ; pages += 1) {
      fetched.push(...page.items);
      const older = page.items.findIndex((n) => lastId !== undefined && n.id <= lastId);
      items.push(...(older < 0 ? page.items : page.items.slice(0, older)));
      const before = page.next_before ?? null;
      if (older >= 0 || before === null || lastId === undefined || this.done) {
        return { items, fetched, page: first, cut: false };
      }
      if (pages >= this.options.maxPages) return { items, fetched, page: first, cut: true };
      page = await this.options.rest.list({ limit, before });
    }
  }

  private emit(frame: TransportFrame): void {
    if (!this.done) this.handlers.onFrame(frame);
  }
}
