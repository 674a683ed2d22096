/**
 * The tab that holds the connection: the connection itself, the topics every tab watches, and marking read
 * for every tab. Everything the connection learns goes out through `publish` as an `Update`, which the tab
 * applies and, when tabs share, broadcasts.
 *
 * Marking read goes over the WebSocket when it is open (one frame for up to 1,000 ids; the server's `read`
 * frame, to every connection, confirms it), else over REST. The server echoes a REST mark to every open
 * stream; when none is open (polling, or between connections) the owner publishes the reads itself, with
 * the unread count read back, so every tab still hears of them. The inbox drops a read it heard already.
 */

import { Connection, type ConnectionOptions } from './connection.js';
import { markEachOverRest } from './marking.js';
import type { RestApi } from './rest.js';
import type { WatchRequest } from './topics.js';
import type { TransportFactory } from './transports/transport.js';
import type { Update } from './update.js';
import { WatchList } from './watch-list.js';

/** The most ids one `mark_read` frame may carry. */
const MARK_READ_FRAME_IDS = 1000;

export type OwnerOptions = Omit<ConnectionOptions, 'watchList' | 'tokenVerdict' | 'mayWatch' | 'transports'> & {
  transports: readonly TransportFactory[];
  rest: RestApi;
};

export class ConnectionOwner {
  private readonly watchList = new WatchList();
  private readonly connection: Connection;

  constructor(
    private readonly options: OwnerOptions,
    private readonly publish: (update: Update) => void,
    onError: (error: Error) => void,
  ) {
    this.connection = new Connection(
      {
        ...options,
        watchList: this.watchList,
        tokenVerdict: (token) => options.rest.tokenVerdict(token),
        mayWatch: (topic) => options.rest.mayWatch(topic),
      },
      {
        frame: (frame) => publish({ kind: 'frame', frame }),
        topic: (update) => publish({ kind: 'topic', update }),
        status: (status) => publish({ kind: 'status', status }),
        authError: (message) => publish({ kind: 'authError', message }),
        error: onError,
      },
    );
  }

  start(): void {
    this.connection.start();
  }

  stop(): void {
    this.connection.stop();
  }

  /** The browser is back online. */
  retryNow(): void {
    this.connection.retryNow();
  }

  /** Sets what one tab (`owner`) watches. */
  watch(owner: string, requests: readonly WatchRequest[]): void {
    this.connection.watchChanged(this.watchList.set(owner, requests));
  }

  /** A tab went away: its topics go with it. */
  forget(owner: string): void {
    this.connection.watchChanged(this.watchList.forget(owner));
  }

  async markRead(ids: readonly string[]): Promise<void> {
    const unique = [...new Set(ids)];
    const rest: string[] = [];
    for (let i = 0; i < unique.length; i += MARK_READ_FRAME_IDS) {
      const chunk = unique.slice(i, i + MARK_READ_FRAME_IDS);
      if (this.connection.send({ type: 'mark_read', ids: chunk }) !== 'sent') rest.push(...chunk);
    }
    if (rest.length > 0) await this.markReadOverRest(rest);
  }

  async markAllRead(): Promise<void> {
    if (this.connection.send({ type: 'mark_all_read' }) === 'sent') return;
    const streamedBefore = this.connection.streaming;
    await this.options.rest.markAllRead();
    if (!(streamedBefore && this.connection.streaming)) this.publish({ kind: 'frame', frame: { type: 'read_all' } });
  }

  private async markReadOverRest(ids: readonly string[]): Promise<void> {
    const streamedBefore = this.connection.streaming;
    const { marked, failures } = await markEachOverRest(this.options.rest, ids);
    if (marked.length > 0 && !(streamedBefore && this.connection.streaming)) {
      this.publish({ kind: 'frame', frame: { type: 'read', ids: marked } });
      const count = await this.options.rest.unreadCount().catch(() => undefined);
      if (count !== undefined) this.publish({ kind: 'frame', frame: { type: 'unread_count', unread_count: count } });
    }
    if (failures.length > 0) throw failures[0];
  }
}
