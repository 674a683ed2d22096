/**
 * A typed event emitter: `on(event, listener)` returns the function that removes the listener.
 *
 * A listener that throws must not break the client's state machine half way through a frame, nor silence
 * the other listeners, so its error is rethrown on a fresh task: the page's error reporting sees it, and the
 * client carries on.
 */
export type EventMap = {
    [event: string]: unknown[];
};
export declare class Emitter<Events extends EventMap> {
    private listeners;
    on<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): () => void;
    emit<E extends keyof Events>(event: E, ...args: Events[E]): void;
    clear(): void;
}
/** Reports an application callback's error to the page (window `error`, the console), not to the client. */
export declare function rethrowLater(error: unknown): void;
