/**
 * Time, injected. Every delay the client waits goes through a `Timers`, so tests drive time by hand and
 * nothing in the client sleeps on its own clock.
 */
export interface Timers {
    setTimeout(callback: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
}
export declare const systemTimers: Timers;
/**
 * One cancellable slot for a timeout: starting it again replaces what was waiting, so a state machine never
 * leaves a stray callback behind when it moves on.
 */
export declare class Timer {
    private readonly timers;
    private handle;
    private armed;
    constructor(timers: Timers);
    get pending(): boolean;
    start(ms: number, callback: () => void): void;
    cancel(): void;
}
