/**
 * Exponential backoff with full jitter: the n-th retry waits a random time in [0, min(cap, base · 2ⁿ)).
 *
 * Full jitter rather than a fixed schedule because a server restart or a cluster resync drops thousands of
 * connections at the same instant; spreading each one's retry over the whole window keeps them from coming
 * back in the same instant too.
 */
export interface BackoffOptions {
    baseMs: number;
    capMs: number;
    /** A number in [0, 1), like `Math.random`; injected so tests choose it. */
    random: () => number;
}
/** The delay before retry number `attempt` (0 for the first retry). */
export declare function fullJitterDelay(attempt: number, options: BackoffOptions): number;
/** Counts consecutive retries; reset it once a connection has proved itself by staying open. */
export declare class Backoff {
    private readonly options;
    private attempts;
    constructor(options: BackoffOptions);
    /** How many delays were handed out since the last reset. */
    get attempt(): number;
    next(): number;
    reset(): void;
}
