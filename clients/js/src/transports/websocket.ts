/**
 * The WebSocket transport: `GET /ws?token=JWT[&since=ID]`, JSON text frames both ways.
 *
 * The token goes in the query because a browser cannot set headers on a WebSocket. A refused token is an
 * HTTP 401 before the upgrade, which a browser reports only as close code 1006; `Connection` asks REST
 * whether the token was the reason (see `RestApi.tokenVerdict`).
 */

import { decodeFrame } from '../frames.js';
import { Timer, type Timers } from '../timers.js';
import type { ClientFrame } from '../types.js';
import { CloseCode } from '../types.js';
import type { Endpoints } from '../urls.js';
import { Liveness } from './liveness.js';
import type {
  CloseInfo,
  ConnectParams,
  SendResult,
  Transport,
  TransportFactory,
  TransportHandlers,
} from './transport.js';

/** The part of the browser's `WebSocket` this transport uses, so tests can hand in a fake. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
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

const OPEN = 1;

export function websocketTransport(options: WebSocketTransportOptions): TransportFactory {
  return {
    kind: 'websocket',
    topicsAtConnect: false,
    create: (params, handlers) => new WebSocketTransport(options, params, handlers),
  };
}

class WebSocketTransport implements Transport {
  readonly kind = 'websocket';
  private readonly socket: WebSocketLike;
  private readonly heartbeat: Timer;
  private readonly liveness: Liveness;
  private opened = false;
  private done = false;

  constructor(
    private readonly options: WebSocketTransportOptions,
    params: ConnectParams,
    private readonly handlers: TransportHandlers,
  ) {
    this.heartbeat = new Timer(options.timers);
    this.liveness = new Liveness(options.timers, options.idleTimeoutMs, () => this.silent());
    this.socket = new options.WebSocket(options.endpoints.ws('/ws', { token: params.token, since: params.since }));
    this.socket.onopen = () => this.open();
    this.socket.onmessage = (event) => this.message(event.data);
    this.socket.onclose = (event) => this.finish({ code: event.code, reason: event.reason, opened: this.opened });
    // An error is always followed by a close, which carries what there is to know.
    this.socket.onerror = () => undefined;
  }

  send(frame: ClientFrame): SendResult {
    if (this.done || this.socket.readyState !== OPEN) return 'unavailable';
    this.socket.send(JSON.stringify(frame));
    return 'sent';
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.stop();
    this.socket.close(1000, 'client closed');
  }

  private open(): void {
    if (this.done) return;
    this.opened = true;
    this.liveness.kick();
    this.schedulePing();
    this.handlers.onOpen();
  }

  private message(data: unknown): void {
    if (this.done) return;
    this.liveness.kick();
    if (typeof data !== 'string') return;
    const frame = decodeFrame(data);
    if (frame !== undefined) this.handlers.onFrame(frame);
  }

  private schedulePing(): void {
    this.heartbeat.start(this.options.heartbeatMs, () => {
      this.send({ type: 'ping' });
      this.schedulePing();
    });
  }

  /** A dead connection may take minutes to report its close, so it is reported now. */
  private silent(): void {
    this.socket.close(1000, 'no frame from the server');
    this.finish({ code: CloseCode.abnormal, reason: 'no frame from the server in time', opened: this.opened });
  }

  private finish(info: CloseInfo): void {
    if (this.done) return;
    this.done = true;
    this.stop();
    this.handlers.onClose(info);
  }

  private stop(): void {
    this.heartbeat.cancel();
    this.liveness.stop();
    this.socket.onopen = null;
    this.socket.onmessage = null;
    this.socket.onclose = null;
    this.socket.onerror = null;
  }
}
