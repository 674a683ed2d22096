/**
 * The one live connection to the server, over the best transport that works: the fallback chain, the
 * retries, and the resume.
 *
 * - Every try resumes with `since` = the newest notification id seen, and re-subscribes every watched topic
 *   from its last seq; `more: true` on a backlog reconnects at once to fetch the rest.
 * - When a try ends, `retry.ts` decides: the same transport after the backoff (full jitter, reset once a
 *   connection stays open), or after `fallbackAfter` failures in a row the next transport of the chain.
 * - A WebSocket that fails before opening may have been refused (a browser shows a 401 as 1006): the token
 *   is checked over REST, and a refused token stops everything (`authError`), no retry loop.
 * - On a worse transport, the better ones are tried again in the background every `probeAfterMs` (best
 *   first); one that opens takes over at once. It started with the `since` of its start, so it re-sends what
 *   the old transport delivered meanwhile: the inbox drops those duplicates, and nothing falls in between.
 */

import { Backoff } from './backoff.js';
import type { ConnectionState, ConnectionStatus } from './events.js';
import { routeFrame } from './frame-router.js';
import type { TokenVerdict } from './rest.js';
import { Timer, type Timers } from './timers.js';
import type { TopicUpdate } from './topics.js';
import type { CloseInfo, SendResult, Transport, TransportFactory } from './transports/transport.js';
import { nextTry } from './retry.js';
import { CloseCode, type ClientFrame, type InboxFrame, type TransportFrame } from './types.js';
import type { WatchChange, WatchList } from './watch-list.js';

export interface ConnectionOptions {
  /** The chain, best first. */
  transports: readonly TransportFactory[];
  getToken: () => Promise<string>;
  tokenVerdict: (token: string) => Promise<TokenVerdict>;
  /** Whether the token may watch a topic (the SSE stream refuses all of them, 403, for one it may not). */
  mayWatch: (topic: string) => Promise<boolean>;
  /** The newest notification id seen, read at each try. */
  since: () => string | undefined;
  watchList: WatchList;
  timers: Timers;
  random: () => number;
  backoffBaseMs: number;
  backoffCapMs: number;
  fallbackAfter: number;
  stableAfterMs: number;
  probeAfterMs: number;
}

export interface ConnectionSink {
  frame(frame: InboxFrame): void;
  topic(update: TopicUpdate): void;
  status(status: ConnectionStatus): void;
  authError(message: string): void;
  error(error: Error): void;
}

/** One try: a transport being connected, or connected. */
interface Attempt {
  readonly factory: TransportFactory;
  /** Its place in the chain. */
  readonly level: number;
  transport?: Transport;
  token?: string;
  /** The topics named when connecting, for a transport that takes them then. */
  topics: readonly string[];
  opened: boolean;
  stable: boolean;
  /** The client closed it to reconnect at once (a backlog with more, new SSE topics). */
  requested: boolean;
}

export class Connection {
  private readonly backoff: Backoff;
  private readonly retry: Timer;
  private readonly stable: Timer;
  private readonly probeTimer: Timer;
  private readonly soon: Timer;
  private level = 0;
  private failures = 0;
  private primary: Attempt | undefined;
  private probe: Attempt | undefined;
  private stopped = true;
  private everOpened = false;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly sink: ConnectionSink,
  ) {
    if (options.transports.length === 0) throw new TypeError('Connection needs at least one transport');
    this.backoff = new Backoff({ baseMs: options.backoffBaseMs, capMs: options.backoffCapMs, random: options.random });
    this.retry = new Timer(options.timers);
    this.stable = new Timer(options.timers);
    this.probeTimer = new Timer(options.timers);
    this.soon = new Timer(options.timers);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const timer of [this.retry, this.stable, this.probeTimer, this.soon]) timer.cancel();
    this.primary?.transport?.close();
    this.probe?.transport?.close();
    this.primary = undefined;
    this.probe = undefined;
    this.sink.status({ state: 'offline', transport: null, failures: 0 });
  }

  /** Whether a WebSocket or SSE stream is open, so the server will echo reads to every connection. */
  get streaming(): boolean {
    return this.primary?.opened === true && this.primary.factory.kind !== 'poll';
  }

  /** Sends over the open transport, if it carries this frame. */
  send(frame: ClientFrame): SendResult {
    const transport = this.primary?.opened ? this.primary.transport : undefined;
    return transport?.send(frame) ?? 'unavailable';
  }

  /** The network is back (the browser says so): try the best transport now rather than after the wait. */
  retryNow(): void {
    if (this.stopped || this.primary?.opened) return;
    this.primary?.transport?.close();
    this.primary = undefined;
    this.retry.cancel();
    this.level = 0;
    this.failures = 0;
    this.backoff.reset();
    void this.connect();
  }

  /** The tabs' topics changed: subscribe, unsubscribe or refresh over the open transport. */
  watchChanged(change: WatchChange): void {
    const attempt = this.primary;
    if (attempt?.transport === undefined || !attempt.opened) return; // the next open subscribes them all
    for (const topic of change.removed) attempt.transport.send({ type: 'unsubscribe', topic });
    let reconnect = false;
    for (const topic of [...change.added, ...change.refresh]) {
      if (this.subscribe(attempt, topic) === 'reconnect') reconnect = true;
    }
    if (reconnect) this.reconnectSoon(attempt);
  }

  private async connect(): Promise<void> {
    const attempt = this.newAttempt(this.level);
    this.primary = attempt;
    this.report(this.tryingState(attempt));
    const token = await this.token();
    if (this.stopped || this.primary !== attempt) return;
    if (token === undefined) {
      void this.closed(attempt, { code: CloseCode.abnormal, reason: 'getToken failed', opened: false });
      return;
    }
    this.open(attempt, token);
  }

  private async startProbe(level: number): Promise<void> {
    if (this.stopped || level >= this.level || this.probe !== undefined) return;
    const attempt = this.newAttempt(level);
    this.probe = attempt;
    const token = await this.token();
    if (this.stopped || this.probe !== attempt) return;
    if (token === undefined) {
      this.probeFailed(attempt);
      return;
    }
    this.open(attempt, token);
  }

  private newAttempt(level: number): Attempt {
    const factory = this.options.transports[level];
    if (factory === undefined) throw new RangeError(`no transport at level ${level}`);
    return { factory, level, topics: [], opened: false, stable: false, requested: false };
  }

  private async token(): Promise<string | undefined> {
    try {
      return await this.options.getToken();
    } catch (error) {
      this.sink.error(error instanceof Error ? error : new Error(String(error)));
      return undefined;
    }
  }

  private open(attempt: Attempt, token: string): void {
    attempt.token = token;
    attempt.topics = attempt.factory.topicsAtConnect ? this.options.watchList.names() : [];
    attempt.transport = attempt.factory.create(
      { token, since: this.options.since(), topics: attempt.topics },
      {
        onOpen: () => this.opened(attempt),
        onFrame: (frame) => this.frame(attempt, frame),
        onClose: (info) => void this.closed(attempt, info),
        onError: (error) => {
          if (attempt === this.primary) this.sink.error(error);
        },
      },
    );
  }

  private opened(attempt: Attempt): void {
    if (attempt === this.probe) {
      this.promote(attempt);
      return;
    }
    if (attempt !== this.primary) return;
    attempt.opened = true;
    this.everOpened = true;
    this.retry.cancel();
    this.report(attempt.factory.kind === 'poll' ? 'polling' : 'open');
    this.stable.start(this.options.stableAfterMs, () => {
      if (attempt !== this.primary) return;
      attempt.stable = true;
      this.backoff.reset();
      this.failures = 0;
    });
    this.watchAll(attempt);
    if (attempt.level > 0) this.scheduleProbe();
  }

  /** A better transport opened in the background: it becomes the connection, the old one is closed. */
  private promote(attempt: Attempt): void {
    this.probe = undefined;
    const old = this.primary;
    this.primary = attempt;
    old?.transport?.close();
    this.retry.cancel();
    this.soon.cancel();
    this.level = attempt.level;
    this.failures = 0;
    this.backoff.reset();
    this.opened(attempt);
  }

  private watchAll(attempt: Attempt): void {
    const watchList = this.options.watchList;
    if (attempt.factory.topicsAtConnect) {
      for (const topic of attempt.topics) watchList.subscribing(topic, undefined);
      // Topics asked for while this one was connecting are only taken by a new connection.
      if (watchList.names().some((topic) => !attempt.topics.includes(topic))) this.reconnectSoon(attempt);
      return;
    }
    for (const topic of watchList.names()) this.subscribe(attempt, topic);
  }

  private subscribe(attempt: Attempt, topic: string): SendResult | undefined {
    const since = this.options.watchList.since(topic);
    const frame: ClientFrame = since === undefined ? { type: 'subscribe', topic } : { type: 'subscribe', topic, since };
    const result = attempt.transport?.send(frame);
    if (result === 'sent') this.options.watchList.subscribing(topic, since);
    return result;
  }

  private frame(attempt: Attempt, frame: TransportFrame): void {
    if (attempt !== this.primary) return;
    const route = routeFrame(frame, { sink: this.sink, watchList: this.options.watchList, since: this.options.since });
    if (route === 'fetch-more') this.reconnectSoon(attempt);
  }

  /** Closes `attempt` to connect again at once (after the current frame is handled). */
  private reconnectSoon(attempt: Attempt): void {
    this.soon.start(0, () => {
      if (attempt !== this.primary) return;
      attempt.requested = true;
      attempt.transport?.close();
      void this.closed(attempt, { code: 1000, reason: 'reconnecting to resume', opened: attempt.opened });
    });
  }

  private async closed(attempt: Attempt, info: CloseInfo): Promise<void> {
    if (attempt === this.probe) {
      this.probeFailed(attempt);
      return;
    }
    if (attempt !== this.primary) return;
    this.primary = undefined;
    this.stable.cancel();
    if (info.authRefused) {
      this.refuse(`the server refused the token (${info.reason})`);
      return;
    }
    if (info.status === 403 && attempt.topics.length > 0) {
      const refused = await this.refusedTopics(attempt.topics);
      if (this.stopped || this.primary !== undefined) return;
      // Without them the next try goes through: at once, and not a failure of the transport.
      if (refused > 0) attempt.requested = true;
    }
    if (!info.opened && attempt.factory.kind === 'websocket' && attempt.token !== undefined) {
      const verdict = await this.options.tokenVerdict(attempt.token);
      // A probe may have taken over, or the client stopped, while the server was asked.
      if (this.stopped || this.primary !== undefined) return;
      if (verdict === 'refused') {
        this.refuse('the server refused the token (401)');
        return;
      }
    }
    this.scheduleRetry(attempt, info);
  }

  /**
   * Finds the topics the token may not watch, and refuses them as a socket would (`forbidden`, which the watch
   * list remembers, so the next connect leaves them out). Returns how many.
   */
  private async refusedTopics(topics: readonly string[]): Promise<number> {
    const allowed = await Promise.all(topics.map((topic) => this.options.mayWatch(topic)));
    const refused = topics.filter((_, i) => allowed[i] === false);
    for (const topic of refused) {
      const frame = { type: 'error', code: 'forbidden', message: 'the token may not watch this topic', topic } as const;
      routeFrame(frame, { sink: this.sink, watchList: this.options.watchList, since: this.options.since });
    }
    return refused.length;
  }

  private scheduleRetry(attempt: Attempt, info: CloseInfo): void {
    const next = nextTry(
      { level: this.level, failures: this.failures },
      { code: info.code, opened: info.opened, stable: attempt.stable, requested: attempt.requested },
      { length: this.options.transports.length, fallbackAfter: this.options.fallbackAfter },
    );
    this.level = next.level;
    this.failures = next.failures;
    if (next.fellBack) this.backoff.reset();
    const delay = next.wait === 'now' ? 0 : this.backoff.next();
    this.report(this.kindAt(this.level) === 'poll' ? 'polling' : 'reconnecting', delay);
    this.retry.start(delay, () => void this.connect());
  }

  private scheduleProbe(): void {
    if (this.stopped || this.level === 0 || this.probe !== undefined || this.probeTimer.pending) return;
    this.probeTimer.start(this.options.probeAfterMs, () => void this.startProbe(0));
  }

  private probeFailed(attempt: Attempt): void {
    this.probe = undefined;
    const next = attempt.level + 1;
    if (next < this.level) void this.startProbe(next);
    else this.scheduleProbe();
  }

  private refuse(message: string): void {
    this.stop();
    this.sink.authError(message);
  }

  private tryingState(attempt: Attempt): ConnectionState {
    if (attempt.factory.kind === 'poll') return 'polling';
    return this.everOpened || this.failures > 0 || attempt.level > 0 ? 'reconnecting' : 'connecting';
  }

  private kindAt(level: number): TransportFactory['kind'] | undefined {
    return this.options.transports[level]?.kind;
  }

  private report(state: ConnectionState, retryInMs?: number): void {
    const status: ConnectionStatus = { state, transport: this.kindAt(this.level) ?? null, failures: this.failures };
    if (retryInMs !== undefined) status.retryInMs = retryInMs;
    this.sink.status(status);
  }
}
