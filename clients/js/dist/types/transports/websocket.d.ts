/**
 * The WebSocket transport: `GET /ws?token=JWT[&since=ID]`, JSON text frames both ways.
 *
 * The token goes in the query because a browser cannot set headers on a WebSocket. A refused token is an
 * HTTP 401 before the upgrade, which a browser reports only as close code 1006; `Connection` asks REST
 * whether the token was the reason (see `RestApi.tokenVerdict`).
 */
import { type Timers } from '../timers.js';
import type { Endpoints } from '../urls.js';
import type { TransportFactory } from './transport.js';
/** The part of the browser's `WebSocket` this transport uses, so tests can hand in a fake. */
export interface WebSocketLike {
    readonly readyState: number;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: {
        data: unknown;
    }) => void) | null;
    onclose: ((event: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;
export interface WebSocketTransportOptions {
    endpoints: Endpoints;
    WebSocket: WebSocketConstructor;
    timers: Timers;
    /** How often to send `{"type":"ping"}`; the answer proves the connection is alive. */
    heartbeatMs: number;
    /** Silence after which the connection counts as dead. */
    idleTimeoutMs: number;
}
export declare function websocketTransport(options: WebSocketTransportOptions): TransportFactory;
