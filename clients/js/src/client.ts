/**
 * `createClient`: the public face. It holds the tab's own state — its inbox (dedupe, newest id, unread
 * count), its topic handlers, its listeners — and a `Link` to the server: its own connection, or the one
 * another tab holds. Everything the connection learns arrives as an `Update` and is applied here in the
 * same way whichever tab holds it.
 */

import { transportChain } from './chain.js';
import { Emitter, rethrowLater } from './emitter.js';
import { AuthError, type ClientEvents, type ConnectionStatus, type StateDetail } from './events.js';
import { Inbox, type InboxSnapshot } from './inbox.js';
import { tokenSubject } from './jwt.js';
import { DirectLink, type Host, type Link } from './link.js';
import { settings, type ClientOptions, type Settings } from './options.js';
import type { OwnerOptions } from './owner.js';
import { RestApi, type ListOptions } from './rest.js';
import { SharedLink } from './tabs/shared-link.js';
import { TopicRouter, type TopicHandler, type WatchRequest } from './topics.js';
import type { NotificationPage } from './types.js';
import type { Update } from './update.js';
import { Endpoints } from './urls.js';

export interface HeraldClient {
  /** Listens to an event; returns the function that stops listening. */
  on<E extends keyof ClientEvents>(event: E, listener: (...args: ClientEvents[E]) => void): () => void;
  /** Watches a status topic (`namespace:id`); returns the function that stops watching. */
  subscribe(topic: string, handler: TopicHandler): () => void;
  /** Marks notifications read; resolves once the request is sent (WebSocket) or answered (REST). */
  markRead(ids: string | readonly string[]): Promise<void>;
  markAllRead(): Promise<void>;
  /** A page of the inbox over REST, newest first. */
  list(options?: ListOptions): Promise<NotificationPage>;
  /** Stops: closes the connection (another tab takes it over), removes every listener. */
  close(): void;
  /** The state as of the last `state` event. */
  readonly state: StateDetail;
  readonly unreadCount: number | undefined;
  /** The newest notification id seen: where the next connection resumes. */
  readonly lastId: string | undefined;
}

export function createClient(options: ClientOptions): HeraldClient {
  return new Client(settings(options));
}

/** `namespace:id`, as the server's README defines a topic name. */
const TOPIC = /^[a-z0-9_-]+:[A-Za-z0-9._:-]{1,128}$/;

class Client implements HeraldClient, Host {
  readonly tabId: string;
  private readonly emitter = new Emitter<ClientEvents>();
  private readonly router = new TopicRouter();
  private readonly inbox: Inbox;
  private readonly rest: RestApi;
  private readonly endpoints: Endpoints;
  private readonly ready: Promise<Link | undefined>;
  private link: Link | undefined;
  private connection: ConnectionStatus = { state: 'connecting', transport: null, failures: 0 };
  private leader = false;
  private emitted: StateDetail | undefined;
  private closed = false;
  private readonly online = (): void => this.link?.online();

  constructor(private readonly settings: Settings) {
    const env = settings.environment;
    this.tabId = env.tabId;
    this.endpoints = new Endpoints(settings.url);
    this.rest = new RestApi(this.endpoints, env.fetch, settings.getToken);
    this.inbox = new Inbox(
      { dedupeSize: settings.dedupeSize, unreadKept: 100 },
      {
        notification: (notification, meta) => this.emitter.emit('notification', notification, meta),
        backlog: (info) => this.emitter.emit('backlog', info),
        read: (event) => this.emitter.emit('read', event),
        unreadCount: (count) => this.emitter.emit('unreadCount', count),
      },
    );
    this.ready = this.connect();
  }

  get state(): StateDetail {
    return this.detail();
  }

  get unreadCount(): number | undefined {
    return this.inbox.unreadCount;
  }

  get lastId(): string | undefined {
    return this.inbox.lastId;
  }

  on<E extends keyof ClientEvents>(event: E, listener: (...args: ClientEvents[E]) => void): () => void {
    return this.emitter.on(event, listener);
  }

  subscribe(topic: string, handler: TopicHandler): () => void {
    if (!TOPIC.test(topic)) throw new TypeError(`not a topic name (namespace:id): ${JSON.stringify(topic)}`);
    const remove = this.router.add(topic, handler, rethrowLater);
    this.link?.watchChanged();
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      remove();
      this.link?.watchChanged();
    };
  }

  async markRead(ids: string | readonly string[]): Promise<void> {
    const list = typeof ids === 'string' ? [ids] : [...ids];
    if (list.length === 0) return;
    const link = await this.ready;
    if (link === undefined || this.closed) throw new Error('the client is closed');
    await link.markRead(list);
  }

  async markAllRead(): Promise<void> {
    const link = await this.ready;
    if (link === undefined || this.closed) throw new Error('the client is closed');
    await link.markAllRead();
  }

  list(options?: ListOptions): Promise<NotificationPage> {
    return this.rest.list(options);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.settings.environment.onlineEvents?.removeEventListener('online', this.online);
    this.link?.close();
    this.connection = { state: 'offline', transport: null, failures: 0 };
    this.emitState();
    this.emitter.clear();
  }

  // Host: what the link calls back.

  apply(update: Update): void {
    if (this.closed) return;
    switch (update.kind) {
      case 'frame':
        this.inbox.apply(update.frame);
        return;
      case 'topic':
        this.router.deliver(update.update);
        return;
      case 'status':
        this.connection = update.status;
        this.emitState();
        return;
      case 'authError':
        this.emitter.emit('authError', new AuthError(update.message));
        this.close();
        return;
    }
  }

  watchRequests(): WatchRequest[] {
    return this.router.watchRequests();
  }

  inboxSnapshot(): InboxSnapshot {
    return this.inbox.snapshot();
  }

  restore(snapshot: InboxSnapshot): void {
    this.inbox.restore(snapshot);
  }

  status(): ConnectionStatus {
    return this.connection;
  }

  setLeader(leader: boolean): void {
    this.leader = leader;
    this.emitState();
  }

  error(error: Error): void {
    this.emitter.emit('error', error);
  }

  /** Names the shared lock after the token's user, so two users of one browser never share. */
  private async connect(): Promise<Link | undefined> {
    // Nothing is emitted before the caller of createClient has had the chance to attach its listeners.
    await Promise.resolve();
    const env = this.settings.environment;
    let user: string | undefined;
    if (this.settings.shareConnection && env.locks !== undefined && env.BroadcastChannel !== undefined) {
      user = await this.settings.getToken().then(tokenSubject, (error: unknown) => {
        this.error(error instanceof Error ? error : new Error(String(error)));
        return undefined;
      });
    }
    if (this.closed) return undefined;
    const owner = this.ownerOptions();
    const link =
      user !== undefined && env.locks !== undefined && env.BroadcastChannel !== undefined
        ? new SharedLink(
            {
              owner,
              locks: env.locks,
              BroadcastChannel: env.BroadcastChannel,
              name: `herald/v1|${this.endpoints.origin}|${user}`,
              timers: env.timers,
              requestTimeoutMs: this.settings.requestTimeoutMs,
            },
            this,
          )
        : new DirectLink(owner, this);
    this.link = link;
    env.onlineEvents?.addEventListener('online', this.online);
    link.start();
    this.emitState();
    return link;
  }

  private ownerOptions(): OwnerOptions {
    const s = this.settings;
    const env = s.environment;
    return {
      transports: transportChain(s, this.endpoints, this.rest),
      rest: this.rest,
      getToken: s.getToken,
      since: () => this.inbox.lastId,
      timers: env.timers,
      random: env.random,
      backoffBaseMs: s.backoffBaseMs,
      backoffCapMs: s.backoffCapMs,
      fallbackAfter: s.fallbackAfter,
      stableAfterMs: s.stableAfterMs,
      probeAfterMs: s.probeAfterMs,
    };
  }

  private detail(): StateDetail {
    return { ...this.connection, leader: this.leader, shared: this.link?.shared ?? false };
  }

  private emitState(): void {
    const detail = this.detail();
    const last = this.emitted;
    if (
      last !== undefined &&
      last.state === detail.state &&
      last.transport === detail.transport &&
      last.failures === detail.failures &&
      last.retryInMs === detail.retryInMs &&
      last.leader === detail.leader &&
      last.shared === detail.shared
    ) {
      return;
    }
    this.emitted = detail;
    this.emitter.emit('state', detail);
  }
}
