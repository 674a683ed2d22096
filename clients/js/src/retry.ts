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

import { CloseCode } from './types.js';

/** Closes the server asks for: the connection worked, so they never count against the transport. */
const SERVER_ASKED: ReadonlySet<number> = new Set([
  CloseCode.goingAway,
  CloseCode.idleTimeout,
  CloseCode.tokenExpired,
  CloseCode.slowConsumer,
  CloseCode.resync,
]);

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

export function nextTry(place: Place, ended: Ended, chain: { length: number; fallbackAfter: number }): NextTry {
  if (ended.requested) return { ...place, wait: 'now', fellBack: false };
  const failed = !ended.opened || (!ended.stable && !SERVER_ASKED.has(ended.code));
  if (!failed) return { ...place, wait: 'backoff', fellBack: false };
  const failures = place.failures + 1;
  if (failures >= chain.fallbackAfter && place.level < chain.length - 1) {
    return { level: place.level + 1, failures: 0, wait: 'now', fellBack: true };
  }
  return { level: place.level, failures, wait: 'backoff', fellBack: false };
}
