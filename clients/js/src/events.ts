/** The events a client emits, and what each one carries. */

import type { TransportKind } from './transports/transport.js';
import type { Notification } from './types.js';

/**
 * `connecting`: the first try. `open`: connected over a WebSocket or SSE. `reconnecting`: waiting for or
 * making another try. `polling`: on the REST fallback. `offline`: stopped (closed, or the token refused).
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'polling' | 'offline';

/** The connection as the tab that holds it sees it; relayed unchanged to the other tabs. */
export interface ConnectionStatus {
  state: ConnectionState;
  /** The transport in use or being tried; null when stopped. */
  transport: TransportKind | null;
  /** Failed tries in a row on this transport; the fallback moves on after `fallbackAfter`. */
  failures: number;
  /** While waiting to try again: how long the wait is. */
  retryInMs?: number;
}

export interface StateDetail extends ConnectionStatus {
  /** Whether this tab holds the connection (always true when tabs do not share one). */
  leader: boolean;
  /** Whether tabs of this browser share one connection (Web Locks and BroadcastChannel available). */
  shared: boolean;
}

export interface NotificationMeta {
  /**
   * Part of a catch-up (the unread backlog at the start, or what was missed while disconnected) rather than
   * just published: an application may want to skip the toast for these.
   */
  backlog: boolean;
}

export interface BacklogInfo {
  /** How many new notifications the batch delivered (each was also a `notification` event, before this). */
  count: number;
  /** The server had more; the client is fetching the rest already. */
  more: boolean;
}

/** Notifications now read, by any tab, connection or REST call; `all` for "mark all read". */
export interface ReadEvent {
  ids: string[];
  all: boolean;
}

/** The server refused the token: the client has stopped; create a new client with a working `getToken`. */
export class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthError';
  }
}

export type ClientEvents = {
  notification: [notification: Notification, meta: NotificationMeta];
  backlog: [info: BacklogInfo];
  read: [event: ReadEvent];
  unreadCount: [count: number];
  state: [detail: StateDetail];
  authError: [error: AuthError];
  error: [error: Error];
};

/** An `error` frame from the server about a frame this client sent (the connection stays open). */
export class ServerError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ServerError';
  }
}
