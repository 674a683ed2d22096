/**
 * What to do after a connection ends, as a pure function of how it ended, so the rules read in one place
 * and tests check them without a clock.
 *
 * - The client closed it to reconnect at once (a backlog with `more`, new SSE topics): now, no failure.
 * - It failed before opening, or dropped before it was stable for a reason of its own: a failure of its
 *   transport. After `fallbackAfter` failures in a row, the next transport of the chain, at once.
 * - The server asked (token expired, slow consumer, resync, shutdown, idle), or it had been stable: the
 *   transport works; retry after the backoff.
 */
export interface Ended {
    code: number;
    opened: boolean;
    /** It had stayed open for `stableAfterMs`. */
    stable: boolean;
    /** The client closed it to reconnect. */
    requested: boolean;
}
export interface Place {
    /** The transport's place in the chain. */
    level: number;
    /** Failures in a row on it. */
    failures: number;
}
export interface NextTry extends Place {
    /** `now`: no wait; `backoff`: the backoff's next delay. */
    wait: 'now' | 'backoff';
    /** Moved to the next transport: its backoff starts afresh. */
    fellBack: boolean;
}
export declare function nextTry(place: Place, ended: Ended, chain: {
    length: number;
    fallbackAfter: number;
}): NextTry;
