/** The client's options, their defaults, and the browser APIs it uses (all injectable, for tests). */

import type { FetchLike } from './rest.js';
import type { ChannelConstructor, LocksLike } from './tabs/browser.js';
import { systemTimers, type Timers } from './timers.js';
import type { TransportKind } from './transports/transport.js';
import type { WebSocketConstructor } from './transports/websocket.js';

export interface ClientOptions {
  /** The server: `https://herald.example.com`, with a path prefix if it has one, or relative to the page. */
  url: string;
  /** A user JWT. Called for each connection attempt and REST call, so it may refresh; may be async. */
  getToken: () => string | Promise<string>;
  /** The fallback chain, best first. Default `['websocket', 'sse', 'poll']`. */
  transports?: readonly TransportKind[];
  /** One connection for all tabs of this browser (default true); false: one per tab. */
  shareConnection?: boolean;
  /** Backoff: the first retry waits up to this (default 500 ms), doubling per retry … */
  backoffBaseMs?: number;
  /** … up to this (default 30 s). Also how often a better transport is retried while on a worse one. */
  backoffCapMs?: number;
  /** Failed tries in a row before the next transport of the chain (default 3). */
  fallbackAfter?: number;
  /** How long a connection must stay open to reset the backoff and the failure count (default 10 s). */
  stableAfterMs?: number;
  /** How often a better transport is retried while on a worse one (default: `backoffCapMs`). */
  probeAfterMs?: number;
  /** REST polling interval, the last resort (default 5 s). */
  pollIntervalMs?: number;
  /** Notifications per request while polling (default 20, at most 100). */
  pollPageSize?: number;
  /** WebSocket ping interval (default 25 s). */
  heartbeatMs?: number;
  /** Silence after which a WebSocket or stream counts as dead (default 70 s). */
  idleTimeoutMs?: number;
  /** Notification ids remembered to drop duplicates (default 1000). */
  dedupeSize?: number;
  /** How long a tab waits for the leader tab to answer before doing a request itself (default 5 s). */
  requestTimeoutMs?: number;
  /** Browser APIs, for tests and unusual hosts; each defaults to the global one. */
  environment?: Partial<Environment>;
}

export interface Environment {
  WebSocket: WebSocketConstructor | undefined;
  fetch: FetchLike;
  BroadcastChannel: ChannelConstructor | undefined;
  locks: LocksLike | undefined;
  timers: Timers;
  random: () => number;
  /** Where the browser's `online` event fires (the window), to reconnect at once. */
  onlineEvents: OnlineEvents | undefined;
  /** This tab's id among the tabs sharing a connection. */
  tabId: string;
}

export interface OnlineEvents {
  addEventListener(type: 'online', listener: () => void): void;
  removeEventListener(type: 'online', listener: () => void): void;
}

export interface Settings {
  url: string;
  getToken: () => Promise<string>;
  transports: readonly TransportKind[];
  shareConnection: boolean;
  backoffBaseMs: number;
  backoffCapMs: number;
  fallbackAfter: number;
  stableAfterMs: number;
  probeAfterMs: number;
  pollIntervalMs: number;
  pollPageSize: number;
  heartbeatMs: number;
  idleTimeoutMs: number;
  dedupeSize: number;
  requestTimeoutMs: number;
  environment: Environment;
}

export function settings(options: ClientOptions): Settings {
  if (typeof options.getToken !== 'function') throw new TypeError('createClient: getToken is required');
  const capMs = positive('backoffCapMs', options.backoffCapMs, 30_000);
  const getToken = options.getToken;
  return {
    url: options.url,
    getToken: async () => getToken(),
    transports: options.transports ?? ['websocket', 'sse', 'poll'],
    shareConnection: options.shareConnection ?? true,
    backoffBaseMs: positive('backoffBaseMs', options.backoffBaseMs, 500),
    backoffCapMs: capMs,
    fallbackAfter: positive('fallbackAfter', options.fallbackAfter, 3),
    stableAfterMs: positive('stableAfterMs', options.stableAfterMs, 10_000),
    probeAfterMs: positive('probeAfterMs', options.probeAfterMs, capMs),
    pollIntervalMs: positive('pollIntervalMs', options.pollIntervalMs, 5_000),
    pollPageSize: Math.min(100, positive('pollPageSize', options.pollPageSize, 20)),
    heartbeatMs: positive('heartbeatMs', options.heartbeatMs, 25_000),
    idleTimeoutMs: positive('idleTimeoutMs', options.idleTimeoutMs, 70_000),
    dedupeSize: positive('dedupeSize', options.dedupeSize, 1000),
    requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs, 5_000),
    environment: environment(options.environment ?? {}),
  };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`createClient: ${name} must be a positive number`);
  return value;
}

function environment(given: Partial<Environment>): Environment {
  const global = globalThis as {
    WebSocket?: WebSocketConstructor;
    BroadcastChannel?: ChannelConstructor;
    navigator?: { locks?: LocksLike };
    addEventListener?: unknown;
    crypto?: { randomUUID?: () => string };
  };
  const random = given.random ?? Math.random;
  return {
    WebSocket: 'WebSocket' in given ? given.WebSocket : global.WebSocket,
    fetch: given.fetch ?? ((input, init) => globalThis.fetch(input, init)),
    BroadcastChannel: 'BroadcastChannel' in given ? given.BroadcastChannel : global.BroadcastChannel,
    locks: 'locks' in given ? given.locks : global.navigator?.locks,
    timers: given.timers ?? systemTimers,
    random,
    onlineEvents:
      'onlineEvents' in given
        ? given.onlineEvents
        : typeof global.addEventListener === 'function'
          ? (globalThis as unknown as OnlineEvents)
          : undefined,
    tabId: given.tabId ?? global.crypto?.randomUUID?.() ?? random().toString(36).slice(2) + Date.now().toString(36),
  };
}
