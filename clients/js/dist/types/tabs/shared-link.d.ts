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
import { type OwnerOptions } from '../owner.js';
import { type Timers } from '../timers.js';
import { type ChannelConstructor, type LocksLike } from './browser.js';
export interface SharedLinkOptions {
    owner: OwnerOptions;
    locks: LocksLike;
    BroadcastChannel: ChannelConstructor;
    /** Names the leader lock and the channel: one per server and user. */
    name: string;
    timers: Timers;
    requestTimeoutMs: number;
}
export declare class SharedLink implements Link {
    private readonly options;
    private readonly host;
    readonly shared = true;
    private readonly channel;
    /** Withdraws the lock requests still waiting when this tab closes. */
    private readonly abort;
    private readonly released;
    private release;
    private owner;
    private leaderId;
    private synced;
    private closing;
    private readonly watchedTabs;
    private readonly pending;
    private nextRequest;
    constructor(options: SharedLinkOptions, host: Host);
    start(): void;
    /** Whether this tab holds the connection. */
    get leading(): boolean;
    markRead(ids: readonly string[]): Promise<void>;
    markAllRead(): Promise<void>;
    watchChanged(): void;
    online(): void;
    close(): void;
    private lead;
    /** Broadcast before applying: applying an `authError` closes this link. */
    private publish;
    private receive;
    /** Learns, through the follower's own lock, when it goes away, to drop its topics. */
    private watchTab;
    private forward;
    private answer;
    /** As the leader through the connection; as a follower without a leader, over REST. */
    private perform;
    /** A follower on its own: marks over REST and tells its own inbox (the leader's stream may echo it too). */
    private markOverRest;
    private post;
}
