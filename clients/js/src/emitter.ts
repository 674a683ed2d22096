/**
 * A typed event emitter: `on(event, listener)` returns the function that removes the listener.
 *
 * A listener that throws must not break the client's state machine half way through a frame, nor silence
 * the other listeners, so its error is rethrown on a fresh task: the page's error reporting sees it, and the
 * client carries on.
 */

export type EventMap = { [event: string]: unknown[] };

type Listeners<Events extends EventMap> = { [E in keyof Events]?: Set<(...args: Events[E]) => void> };

export class Emitter<Events extends EventMap> {
  private listeners: Listeners<Events> = {};

  on<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): () => void {
    const set: Set<(...args: Events[E]) => void> = this.listeners[event] ?? new Set();
    this.listeners[event] = set;
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  emit<E extends keyof Events>(event: E, ...args: Events[E]): void {
    const set = this.listeners[event];
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (error) {
        rethrowLater(error);
      }
    }
  }

  clear(): void {
    this.listeners = {};
  }
}

/** Reports an application callback's error to the page (window `error`, the console), not to the client. */
export function rethrowLater(error: unknown): void {
  queueMicrotask(() => {
    throw error;
  });
}
