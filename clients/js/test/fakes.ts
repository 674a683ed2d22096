/**
 * Test doubles: a clock driven by hand, a WebSocket the test plays the server for, a `fetch` that routes
 * to handlers, and Web Locks with the browser's queueing. Only time and I/O are faked; the client's own
 * modules run as they are.
 */

import type { FetchLike, LocksLike, Notification, Timers, TopicState, WebSocketLike } from '../src/index.js';

/** Lets every pending promise callback and I/O callback run. */
export async function flush(rounds = 10): Promise<void> {
  for (let i = 0; i < rounds; i += 1) await new Promise<void>((resolve) => setImmediate(resolve));
}

export class FakeTimers implements Timers {
  now = 0;
  private nextId = 1;
  private readonly due = new Map<number, { at: number; callback: () => void }>();

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.due.set(id, { at: this.now + Math.max(0, ms), callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.due.delete(handle as number);
  }

  /** Timers waiting, as delays from now. */
  pending(): number[] {
    return [...this.due.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Moves the clock on by `ms`, running each timer that comes due, in order, with promises flushed between. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      await flush();
      let next: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.due) {
        if (entry[1].at <= end && (next === undefined || entry[1].at < next[1].at)) next = entry;
      }
      if (next === undefined) break;
      this.due.delete(next[0]);
      this.now = next[1].at;
      next[1].callback();
    }
    this.now = end;
    await flush();
  }
}

export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Record<string, unknown>[] = [];
  closedByClient: number | undefined;

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this);
  }

  static reset(): void {
    FakeWebSocket.instances = [];
  }

  static last(): FakeWebSocket {
    const socket = FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    if (socket === undefined) throw new Error('no WebSocket was opened');
    return socket;
  }

  get query(): URLSearchParams {
    return new URL(this.url).searchParams;
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number): void {
    this.closedByClient = code ?? 1000;
    this.readyState = 3;
  }

  // The server's side.

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The usual start: open, hello, backlog. */
  accept(unread = 0, items: Notification[] = [], more = false): void {
    this.open();
    this.receive({ type: 'hello', user_id: 'alice', connection_id: '1', unread_count: unread });
    this.receive({ type: 'notifications', items, more });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** A browser's view of a refused upgrade (or a network failure): close 1006, never opened. */
  fail(): void {
    this.serverClose(1006);
  }
}

export type Route = (url: URL, init: RequestInit | undefined) => Response | Promise<Response> | undefined;

/** A `fetch` that asks each route in turn; unrouted requests fail like a network error. */
export class FakeFetch {
  readonly calls: { url: URL; init: RequestInit | undefined }[] = [];
  private readonly routes: Route[] = [];

  readonly fetch: FetchLike = async (input, init) => {
    const url = new URL(input);
    this.calls.push({ url, init });
    for (const route of this.routes) {
      const response = await route(url, init);
      if (response !== undefined) return response;
    }
    throw new TypeError(`fetch failed: no route for ${url.pathname}`);
  };

  route(route: Route): this {
    this.routes.unshift(route);
    return this;
  }

  callsTo(path: string): { url: URL; init: RequestInit | undefined }[] {
    return this.calls.filter((c) => c.url.pathname === path);
  }
}

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

/** An SSE response the test writes to. */
export function sseResponse(): { response: Response; send(text: string): void; end(): void } {
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } }),
    send: (text) => controller?.enqueue(encoder.encode(text)),
    end: () => controller?.close(),
  };
}

export function sseEvent(frame: { type: string } & Record<string, unknown>, id?: string): string {
  return `event: ${frame.type}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(frame)}\n\n`;
}

/** Web Locks as a browser grants them: one holder per name, requests queued in order, abortable. */
export class FakeLocks implements LocksLike {
  private readonly held = new Set<string>();
  private readonly queues = new Map<string, { run: () => void; signal: AbortSignal | undefined }[]>();

  request(
    name: string,
    options: { signal?: AbortSignal },
    callback: (lock: unknown) => Promise<unknown> | unknown,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) {
        reject(new DOMException('aborted', 'AbortError'));
        return;
      }
      const entry = {
        signal,
        run: () => {
          void (async () => {
            try {
              resolve(await callback({ name }));
            } catch (error) {
              reject(error);
            } finally {
              this.held.delete(name);
              this.pump(name);
            }
          })();
        },
      };
      const queue = this.queues.get(name) ?? [];
      this.queues.set(name, queue);
      queue.push(entry);
      signal?.addEventListener('abort', () => {
        const index = queue.indexOf(entry);
        if (index >= 0) {
          queue.splice(index, 1);
          reject(new DOMException('aborted', 'AbortError'));
        }
      });
      this.pump(name);
    });
  }

  isHeld(name: string): boolean {
    return this.held.has(name);
  }

  heldNames(): string[] {
    return [...this.held];
  }

  private pump(name: string): void {
    if (this.held.has(name)) return;
    const entry = this.queues.get(name)?.shift();
    if (entry === undefined) return;
    this.held.add(name);
    queueMicrotask(entry.run);
  }
}

let counter = 0;

/** A ULID-like id: 26 characters whose string order is the order they were made in. */
export function nextId(): string {
  counter += 1;
  return `01J${counter.toString().padStart(23, '0')}`;
}

export function notification(overrides: Partial<Notification> = {}): Notification {
  return {
    id: nextId(),
    user_id: 'alice',
    type: 'test',
    title: 'hello',
    message: null,
    data: {},
    created_at: '2025-01-01T00:00:00Z',
    delivered: true,
    delivered_at: null,
    read: false,
    read_at: null,
    ...overrides,
  };
}

/** An unsigned JWT for `sub` (the client never verifies, the server does). */
export function jwt(sub: string): string {
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: 4102444800 })}.signature`;
}

/** A `random` that returns the given values in turn, then the last one forever. */
export function randoms(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] ?? 0;
}

/** A route answering `path` with `body` (any method). */
export function answer(path: string, body: unknown, status = 200): Route {
  return (url) => (url.pathname === path ? json(body, status) : undefined);
}

export function topicState(topic: string, seq: number, status = 'pending'): TopicState {
  return { topic, seq, status, progress: null, data: {}, updated_at: '', expires_at: '' };
}

/** A topic `event` frame. */
export function topicEvent(topic: string, seq: number, status = 'routing') {
  return { type: 'event', topic, seq, event: { seq, type: 'status', status, progress: null, data: {}, at: '' } };
}
