/**
 * One connection per browser: tabs elect a leader with a Web Lock, and the leader relays what its
 * connection learns to the others over a BroadcastChannel.
 *
 * - Every tab asks for the lock `name` and holds it, once granted, for its life. The tab holding it leads:
 *   it runs the connection (`ConnectionOwner`), applies each update itself and broadcasts it. When it
 *   closes or crashes the browser hands the lock to the next tab waiting, which leads from then on and
 *   resumes from the newest id it heard relayed — so nothing is lost, and what is sent twice is dropped by
 *   each tab's inbox.
 * - A tab that joins asks for a `snapshot` (newest id, unread count, newest unread notifications,
 *   connection state) and drops relayed inbox updates until it has it.
 * - Followers send the leader their topics (`watch`, with where each handler is, so a new leader resumes
 *   them); the leader watches the union. Each tab holds a second lock, `name + ':tab:' + id`, for its life:
 *   the leader waits on it to learn that a follower closed, and drops its topics.
 * - A follower's `markRead` / `markAllRead` go to the leader, which has the socket (one frame for many ids).
 *   Without an answer in `requestTimeoutMs` (the leader just closed), or with no leader yet, the follower
 *   marks over REST itself. `list()` is REST from any tab.
 */

import type { Host, Link } from '../link.js';
import { markEachOverRest } from '../marking.js';
import { ConnectionOwner, type OwnerOptions } from '../owner.js';
import { HttpError } from '../rest.js';
import { Timer, type Timers } from '../timers.js';
import type { Update } from '../update.js';
import { holdLock, type ChannelConstructor, type ChannelLike, type LocksLike } from './browser.js';
import { isTabMessage, type CarriedError, type Request, type TabMessage } from './messages.js';

export interface SharedLinkOptions {
  owner: OwnerOptions;
  locks: LocksLike;
  BroadcastChannel: ChannelConstructor;
  /** Names the leader lock and the channel: one per server and user. */
  name: string;
  timers: Timers;
  requestTimeoutMs: number;
}

interface Pending {
  request: Request;
  settle(result: Promise<void>): void;
}

export class SharedLink implements Link {
  readonly shared = true;
  private readonly channel: ChannelLike;
  /** Withdraws the lock requests still waiting when this tab closes. */
  private readonly abort = new AbortController();
  private readonly released: Promise<void>;
  private release: () => void = () => undefined;
  private owner: ConnectionOwner | undefined;
  private leaderId: string | undefined;
  private synced = false;
  private closing = false;
  private readonly watchedTabs = new Set<string>();
  private readonly pending = new Map<number, Pending>();
  private nextRequest = 0;

  constructor(
    private readonly options: SharedLinkOptions,
    private readonly host: Host,
  ) {
    this.channel = new options.BroadcastChannel(options.name);
    this.released = new Promise((resolve) => {
      this.release = resolve;
    });
  }

  start(): void {
    this.host.setLeader(false);
    this.channel.onmessage = (event) => {
      if (isTabMessage(event.data)) this.receive(event.data);
    };
    const hold = { signal: this.abort.signal, released: this.released };
    // Asked for before this tab says anything, so the leader's wait on it queues behind it.
    holdLock(this.options.locks, tabLock(this.options.name, this.host.tabId), { ...hold, onGranted: () => undefined });
    holdLock(this.options.locks, this.options.name, { ...hold, onGranted: () => this.lead() });
    this.post({ kind: 'sync', from: this.host.tabId });
  }

  /** Whether this tab holds the connection. */
  get leading(): boolean {
    return this.owner !== undefined;
  }

  markRead(ids: readonly string[]): Promise<void> {
    return this.forward({ op: 'markRead', ids: [...ids] });
  }

  markAllRead(): Promise<void> {
    return this.forward({ op: 'markAllRead' });
  }

  watchChanged(): void {
    if (this.owner !== undefined) this.owner.watch(this.host.tabId, this.host.watchRequests());
    else this.post({ kind: 'watch', from: this.host.tabId, topics: this.host.watchRequests() });
  }

  online(): void {
    this.owner?.retryNow();
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.post({ kind: 'bye', from: this.host.tabId });
    this.owner?.stop();
    this.owner = undefined;
    this.abort.abort();
    this.release();
    for (const pending of this.pending.values()) pending.settle(Promise.reject(new Error('the client was closed')));
    this.channel.onmessage = null;
    this.channel.close();
  }

  private lead(): void {
    if (this.closing) return;
    const owner = new ConnectionOwner(
      this.options.owner,
      (update) => this.publish(update),
      (error) => this.host.error(error),
    );
    this.owner = owner;
    this.leaderId = this.host.tabId;
    this.synced = true;
    this.host.setLeader(true);
    owner.watch(this.host.tabId, this.host.watchRequests());
    this.post({ kind: 'leader', from: this.host.tabId });
    owner.start();
    for (const pending of this.pending.values()) pending.settle(this.perform(pending.request));
  }

  /** Broadcast before applying: applying an `authError` closes this link. */
  private publish(update: Update): void {
    if (!this.closing) this.post({ kind: 'update', from: this.host.tabId, update });
    this.host.apply(update);
  }

  private receive(message: TabMessage): void {
    if (this.closing || message.from === this.host.tabId) return;
    if ('to' in message && message.to !== this.host.tabId) return;
    const owner = this.owner;
    switch (message.kind) {
      case 'leader':
        this.leaderId = message.from;
        if (owner === undefined) {
          this.watchChanged();
          if (!this.synced) this.post({ kind: 'sync', from: this.host.tabId });
        }
        return;
      case 'update':
        // A refused token stops every tab, even one that took the lead before hearing it: they share the
        // token's source, so it would only be refused again.
        if (message.update.kind === 'authError') {
          this.host.apply(message.update);
          return;
        }
        if (owner !== undefined) return; // From a leader that has just stepped down.
        this.leaderId = message.from;
        if (message.update.kind === 'frame' && !this.synced) return; // The snapshot will cover it.
        this.host.apply(message.update);
        return;
      case 'snapshot':
        if (owner !== undefined || this.synced) return;
        this.synced = true;
        this.leaderId = message.from;
        this.host.restore(message.inbox);
        this.host.apply({ kind: 'status', status: message.status });
        this.watchChanged();
        return;
      case 'sync':
        if (owner === undefined) return;
        this.watchTab(message.from);
        this.post({
          kind: 'snapshot',
          from: this.host.tabId,
          to: message.from,
          inbox: this.host.inboxSnapshot(),
          status: this.host.status(),
        });
        return;
      case 'watch':
        if (owner === undefined) return;
        this.watchTab(message.from);
        owner.watch(message.from, message.topics);
        return;
      case 'request':
        if (owner !== undefined) void this.answer(message.from, message.id, message.request);
        return;
      case 'response':
        this.pending
          .get(message.id)
          ?.settle(message.error === undefined ? Promise.resolve() : Promise.reject(revive(message.error)));
        return;
      case 'bye':
        owner?.forget(message.from);
        if (message.from === this.leaderId) this.leaderId = undefined;
        return;
    }
  }

  /** Learns, through the follower's own lock, when it goes away, to drop its topics. */
  private watchTab(tab: string): void {
    if (this.watchedTabs.has(tab)) return;
    this.watchedTabs.add(tab);
    this.options.locks
      .request(tabLock(this.options.name, tab), { signal: this.abort.signal }, () => {
        this.watchedTabs.delete(tab);
        this.owner?.forget(tab);
      })
      .catch(() => undefined);
  }

  private forward(request: Request): Promise<void> {
    if (this.owner !== undefined) return this.perform(request);
    const leader = this.leaderId;
    if (leader === undefined || this.closing) return this.markOverRest(request);
    return new Promise<void>((resolve, reject) => {
      const id = ++this.nextRequest;
      const timer = new Timer(this.options.timers);
      const settle = (result: Promise<void>): void => {
        if (!this.pending.delete(id)) return;
        timer.cancel();
        result.then(resolve, reject);
      };
      this.pending.set(id, { request, settle });
      timer.start(this.options.requestTimeoutMs, () => settle(this.perform(request)));
      this.post({ kind: 'request', from: this.host.tabId, to: leader, id, request });
    });
  }

  private async answer(to: string, id: number, request: Request): Promise<void> {
    try {
      await this.perform(request);
      this.post({ kind: 'response', from: this.host.tabId, to, id });
    } catch (error) {
      this.post({ kind: 'response', from: this.host.tabId, to, id, error: carry(error) });
    }
  }

  /** As the leader through the connection; as a follower without a leader, over REST. */
  private perform(request: Request): Promise<void> {
    const owner = this.owner;
    if (owner === undefined) return this.markOverRest(request);
    return request.op === 'markRead' ? owner.markRead(request.ids) : owner.markAllRead();
  }

  /** A follower on its own: marks over REST and tells its own inbox (the leader's stream may echo it too). */
  private async markOverRest(request: Request): Promise<void> {
    const rest = this.options.owner.rest;
    if (request.op === 'markAllRead') {
      await rest.markAllRead();
      this.host.apply({ kind: 'frame', frame: { type: 'read_all' } });
      return;
    }
    const { marked, failures } = await markEachOverRest(rest, request.ids);
    if (marked.length > 0) this.host.apply({ kind: 'frame', frame: { type: 'read', ids: marked } });
    if (failures.length > 0) throw failures[0];
  }

  private post(message: TabMessage): void {
    try {
      this.channel.postMessage(message);
    } catch {
      // A closed channel: this tab is going away, and the others will learn it from the locks.
    }
  }
}

function tabLock(name: string, tab: string): string {
  return `${name}:tab:${tab}`;
}

function carry(error: unknown): CarriedError {
  if (error instanceof HttpError) {
    return { name: error.name, message: error.message, status: error.status, code: error.code };
  }
  if (error instanceof Error) return { name: error.name, message: error.message };
  return { name: 'Error', message: String(error) };
}

function revive(error: CarriedError): Error {
  if (error.status !== undefined) {
    return new HttpError(error.status, error.code ?? `http_${error.status}`, error.message);
  }
  const revived = new Error(error.message);
  revived.name = error.name;
  return revived;
}
