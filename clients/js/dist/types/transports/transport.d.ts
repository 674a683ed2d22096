/**
 * What every transport offers the connection: one attempt to reach the server, reported through three
 * callbacks. A transport never retries by itself; `Connection` decides when and with which transport to try
 * again, so the retry rules live in one place.
 */
import type { ClientFrame, TransportFrame } from '../types.js';
export type TransportKind = 'websocket' | 'sse' | 'poll';
export interface ConnectParams {
    token: string;
    /** Resume after this notification id (the newest one seen). */
    since: string | undefined;
    /** Topics to watch from the start, for a transport that takes them only when it connects (SSE). */
    topics: readonly string[];
}
export interface CloseInfo {
    /** A WebSocket close code; the code of an SSE `close` event; 1006 for a failure without one. */
    code: number;
    reason: string;
    /** Whether `onOpen` was called: a failure before it is a failed try. */
    opened: boolean;
    /** The server answered 401 to the credentials: retrying with the same source of tokens is pointless. */
    authRefused?: boolean;
    /** The HTTP status of a refusal before opening, where the transport can see it (SSE, polling). */
    status?: number;
}
export interface TransportHandlers {
    /** The server accepted the connection; frames follow. */
    onOpen(): void;
    onFrame(frame: TransportFrame): void;
    /** Called once, unless the client closed the transport itself. */
    onClose(info: CloseInfo): void;
    /** Something went wrong that does not end the connection (a poll that failed once it was running). */
    onError(error: Error): void;
}
/**
 * `sent`: the transport carried the frame. `unavailable`: it cannot carry this frame now (not open, or a
 * transport without an upstream, like SSE's inbox); use REST. `reconnect`: the transport takes this only on
 * a new connection (SSE's topics).
 */
export type SendResult = 'sent' | 'unavailable' | 'reconnect';
export interface Transport {
    readonly kind: TransportKind;
    send(frame: ClientFrame): SendResult;
    /** Ends the connection; no callback follows. Idempotent. */
    close(): void;
}
export interface TransportFactory {
    readonly kind: TransportKind;
    /** Whether topics are given when connecting (`ConnectParams.topics`) rather than sent as frames. */
    readonly topicsAtConnect: boolean;
    create(params: ConnectParams, handlers: TransportHandlers): Transport;
}
