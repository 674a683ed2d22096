/**
 * The fallback chain as configured, less what this browser lacks (no `WebSocket`, no streams): each kind
 * becomes its transport factory, best first. Polling needs only `fetch`, so a chain left empty polls.
 */

import type { Settings } from './options.js';
import type { RestApi } from './rest.js';
import { pollTransport } from './transports/poll.js';
import { sseTransport } from './transports/sse.js';
import type { TransportFactory } from './transports/transport.js';
import { websocketTransport } from './transports/websocket.js';
import type { Endpoints } from './urls.js';

/** Pages one poll reads at most: a catch-up of 10 full pages reaches 1,000 back, as the WebSocket does. */
const POLL_MAX_PAGES = 10;

export function transportChain(settings: Settings, endpoints: Endpoints, rest: RestApi): TransportFactory[] {
  const env = settings.environment;
  const poll = (): TransportFactory =>
    pollTransport({
      rest,
      timers: env.timers,
      intervalMs: settings.pollIntervalMs,
      pageSize: settings.pollPageSize,
      maxPages: POLL_MAX_PAGES,
    });
  const chain: TransportFactory[] = [];
  for (const kind of settings.transports) {
    if (kind === 'websocket' && env.WebSocket !== undefined) {
      chain.push(
        websocketTransport({
          endpoints,
          WebSocket: env.WebSocket,
          timers: env.timers,
          heartbeatMs: settings.heartbeatMs,
          idleTimeoutMs: settings.idleTimeoutMs,
        }),
      );
    } else if (kind === 'sse' && typeof ReadableStream !== 'undefined') {
      chain.push(
        sseTransport({ endpoints, fetch: env.fetch, timers: env.timers, idleTimeoutMs: settings.idleTimeoutMs }),
      );
    } else if (kind === 'poll') {
      chain.push(poll());
    }
  }
  return chain.length > 0 ? chain : [poll()];
}
