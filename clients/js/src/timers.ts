/**
 * Time, injected. Every delay the client waits goes through a `Timers`, so tests drive time by hand and
 * nothing in the client sleeps on its own clock.
 */

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

/**
 * One cancellable slot for a timeout: starting it again replaces what was waiting, so a state machine never
 * leaves a stray callback behind when it moves on.
 */
export class Timer {
  private handle: unknown;
  private armed = false;

  constructor(private readonly timers: Timers) {}

  get pending(): boolean {
    return this.armed;
  }

  start(ms: number, callback: () => void): void {
    this.cancel();
    this.armed = true;
    this.handle = this.timers.setTimeout(() => {
      this.armed = false;
      callback();
    }, ms);
  }

  cancel(): void {
    if (this.armed) this.timers.clearTimeout(this.handle);
    this.armed = false;
  }
}
