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

import { decodeFrame } from '../frames.js';
import type { FetchLike } from '../rest.js';
import type { Timers } from '../timers.js';
import { CloseCode, type ClientFrame } from '../types.js';
import type { Endpoints } from '../urls.js';
import { Liveness } from './liveness.js';
import { SseParser, type SseEvent } from './sse-parser.js';
import type {
  CloseInfo,
  ConnectParams,
  SendResult,
  Transport,
  TransportFactory,
  TransportHandlers,
} from './transport.js';

export interface SseTransportOptions {
  endpoints: Endpoints;
  fetch: FetchLike;
  timers: Timers;
  /** Silence (not even a keepalive comment) after which the stream counts as dead. */
  idleTimeoutMs: number;
}

export function sseTransport(options: SseTransportOptions): TransportFactory {
  return {
    kind: 'sse',
    topicsAtConnect: true,
    create: (params, handlers) => new SseTransport(options, params, handlers),
  };
}

class SseTransport implements Transport {
  readonly kind = 'sse';
  private readonly abort = new AbortController();
  private readonly liveness: Liveness;
  private readonly parser = new SseParser();
  private opened = false;
  private done = false;

  constructor(
    private readonly options: SseTransportOptions,
    params: ConnectParams,
    private readonly handlers: TransportHandlers,
  ) {
    this.liveness = new Liveness(options.timers, options.idleTimeoutMs, () =>
      this.finish({ code: CloseCode.abnormal, reason: 'no data from the server in time', opened: this.opened }),
    );
    void this.run(params);
  }

  send(frame: ClientFrame): SendResult {
    if (frame.type === 'subscribe') return 'reconnect';
    // An unwatched topic's events are dropped by the connection; the next connect leaves it out.
    if (frame.type === 'unsubscribe') return 'sent';
    return 'unavailable';
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.liveness.stop();
    this.abort.abort();
  }

  private async run(params: ConnectParams): Promise<void> {
    const url = this.options.endpoints.http('/api/v1/stream', {
      since: params.since,
      topics: params.topics.length > 0 ? params.topics.join(',') : undefined,
    });
    let response: Response;
    try {
      response = await this.options.fetch(url, {
        headers: { Authorization: `Bearer ${params.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: this.abort.signal,
      });
    } catch (error) {
      this.finish({ code: CloseCode.abnormal, reason: describe(error), opened: false });
      return;
    }
    if (this.done) return;
    const type = response.headers.get('content-type') ?? '';
    if (!response.ok || response.body === null || !type.includes('text/event-stream')) {
      void response.body?.cancel().catch(() => undefined);
      this.finish({
        code: CloseCode.abnormal,
        reason: `HTTP ${response.status}`,
        opened: false,
        authRefused: response.status === 401,
        status: response.status,
      });
      return;
    }
    this.opened = true;
    this.liveness.kick();
    this.handlers.onOpen();
    await this.read(response.body);
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!this.done) {
        const { value, done } = await reader.read();
        if (done || this.done) break;
        this.liveness.kick();
        for (const event of this.parser.push(decoder.decode(value, { stream: true }))) {
          this.event(event);
          if (this.done) break;
        }
      }
    } catch (error) {
      this.finish({ code: CloseCode.abnormal, reason: describe(error), opened: true });
      return;
    } finally {
      reader.releaseLock();
    }
    this.finish({ code: CloseCode.abnormal, reason: 'the stream ended', opened: true });
  }

  private event(event: SseEvent): void {
    const frame = decodeFrame(event.data);
    if (frame === undefined) return;
    if (frame.type === 'close') {
      this.finish({ code: frame.code, reason: frame.reason, opened: true });
      return;
    }
    this.handlers.onFrame(frame);
  }

  private finish(info: CloseInfo): void {
    if (this.done) return;
    this.done = true;
    this.liveness.stop();
    this.abort.abort();
    this.handlers.onClose(info);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
