/**
 * The two browser APIs tabs share a connection with, as the parts this client uses, so tests can hand in
 * fakes: Web Locks (`navigator.locks`) to elect the one tab that connects, and `BroadcastChannel` to relay.
 *
 * A Web Lock held by a tab is released by the browser when the tab closes or crashes, which is what makes
 * it a leader election without heartbeats: the next tab waiting for the lock gets it, at once.
 */

export interface LocksLike {
  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<unknown> | unknown,
  ): Promise<unknown>;
}

export interface ChannelLike {
  onmessage: ((event: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

export type ChannelConstructor = new (name: string) => ChannelLike;

/**
 * Asks for the lock `name` and, once granted, holds it until `released` settles; `onGranted` runs when it
 * is granted. Aborting `signal` withdraws a request still waiting.
 */
export function holdLock(
  locks: LocksLike,
  name: string,
  options: { signal: AbortSignal; released: Promise<void>; onGranted: () => void },
): void {
  locks
    .request(name, { signal: options.signal }, async () => {
      options.onGranted();
      await options.released;
    })
    .catch(() => undefined); // Withdrawn (AbortError) when the client closes first.
}
