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
import type { ConnectionStatus } from './events.js';
import type { TokenVerdict } from './rest.js';
import { type Timers } from './timers.js';
import type { TopicUpdate } from './topics.js';
import type { SendResult, TransportFactory } from './transports/transport.js';
import { type ClientFrame, type InboxFrame } from './types.js';
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
export declare class Connection {
    private readonly options;
    private readonly sink;
    private readonly backoff;
    private readonly retry;
    private readonly stable;
    private readonly probeTimer;
    private readonly soon;
    private level;
    private failures;
    private primary;
    private probe;
    private stopped;
    private everOpened;
    constructor(options: ConnectionOptions, sink: ConnectionSink);
    start(): void;
    stop(): void;
    /** Whether a WebSocket or SSE stream is open, so the server will echo reads to every connection. */
    get streaming(): boolean;
    /** Sends over the open transport, if it carries this frame. */
    send(frame: ClientFrame): SendResult;
    /** The network is back (the browser says so): try the best transport now rather than after the wait. */
    retryNow(): void;
    /** The tabs' topics changed: subscribe, unsubscribe or refresh over the open transport. */
    watchChanged(change: WatchChange): void;
    private connect;
    private startProbe;
    private newAttempt;
    private token;
    private open;
    private opened;
    /** A better transport opened in the background: it becomes the connection, the old one is closed. */
    private promote;
    private watchAll;
    private subscribe;
    private frame;
    /** Closes `attempt` to connect again at once (after the current frame is handled). */
    private reconnectSoon;
    private closed;
    /**
     * Finds the topics the token may not watch, and refuses them as a socket would (`forbidden`, which the watch
     * list remembers, so the next connect leaves them out). Returns how many.
     */
    private refusedTopics;
    private scheduleRetry;
    private scheduleProbe;
    private probeFailed;
    private refuse;
    private tryingState;
    private kindAt;
    private report;
}
