/**
 * The Server-Sent Events transport: `GET /api/v1/stream[?since=ID][&topics=a,b]` with `Authorization:
 * Bearer`, read with `fetch()` and a stream parser rather than `EventSource`, so that the token travels in a
 * header (not in access logs), the status of a refusal is visible (401 vs 429 vs 503), and `since` is ours
 * to set on every attempt.
 *
 * Each event's data is the same JSON as the WebSocket frame. Where a WebSocket would close with a code, the
 * stream sends a `close` event with that code and ends; that code is reported as the close code. SSE has no
 * upstream: marking read goes over REST, and topics are named when connecting.
 */
import type { FetchLike } from '../rest.js';
import type { Timers } from '../timers.js';
import type { Endpoints } from '../urls.js';
import type { TransportFactory } from './transport.js';
export interface SseTransportOptions {
    endpoints: Endpoints;
    fetch: FetchLike;
    timers: Timers;
    /** Silence (not even a keepalive comment) after which the stream counts as dead. */
    idleTimeoutMs: number;
}
export declare function sseTransport(options: SseTransportOptions): TransportFactory;
