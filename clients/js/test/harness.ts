/** A client wired to fakes, with everything it emits recorded. */

import { createClient, type ClientOptions, type HeraldClient } from '../src/index.js';
import type { AuthError, ReadEvent, StateDetail } from '../src/index.js';
import type { Notification } from '../src/types.js';
import { FakeFetch, FakeTimers, FakeWebSocket, json } from './fakes.js';

export interface Recorded {
  notifications: { id: string; backlog: boolean }[];
  states: StateDetail[];
  reads: ReadEvent[];
  counts: number[];
  authErrors: AuthError[];
  errors: Error[];
}

export interface Harness {
  client: HeraldClient;
  timers: FakeTimers;
  fetch: FakeFetch;
  seen: Recorded;
  tokens: string[];
  ids(): string[];
}

export function record(client: HeraldClient): Recorded {
  const seen: Recorded = { notifications: [], states: [], reads: [], counts: [], authErrors: [], errors: [] };
  client.on('notification', (n: Notification, meta) => seen.notifications.push({ id: n.id, backlog: meta.backlog }));
  client.on('state', (detail) => seen.states.push(detail));
  client.on('read', (event) => seen.reads.push(event));
  client.on('unreadCount', (count) => seen.counts.push(count));
  client.on('authError', (error) => seen.authErrors.push(error));
  client.on('error', (error) => seen.errors.push(error));
  return seen;
}

/** A client that does not share (each test's own connection), over fakes; the token check says 200. */
export function harness(options: Partial<ClientOptions> = {}): Harness {
  FakeWebSocket.reset();
  const timers = new FakeTimers();
  const fetch = new FakeFetch();
  fetch.route((url) => (url.pathname === '/api/v1/notifications/unread-count' ? json({ unread_count: 0 }) : undefined));
  const tokens: string[] = [];
  const client = createClient({
    url: 'http://herald.test',
    getToken: async () => {
      const token = `token-${tokens.length + 1}`;
      tokens.push(token);
      return token;
    },
    shareConnection: false,
    ...options,
    environment: {
      WebSocket: FakeWebSocket,
      fetch: fetch.fetch,
      timers,
      random: () => 0.5,
      locks: undefined,
      BroadcastChannel: undefined,
      onlineEvents: undefined,
      tabId: 'tab-1',
      ...options.environment,
    },
  });
  const seen = record(client);
  return { client, timers, fetch, seen, tokens, ids: () => seen.notifications.map((n) => n.id) };
}

/** A REST inbox the poll transport can read: newest first, cursor paging, unread count. */
export class RestInbox {
  items: Notification[] = [];

  route(fetch: FakeFetch): void {
    fetch.route((url) => {
      if (url.pathname === '/api/v1/notifications/unread-count') return json({ unread_count: this.unread() });
      if (url.pathname !== '/api/v1/notifications') return undefined;
      const limit = Number(url.searchParams.get('limit') ?? 10);
      const before = url.searchParams.get('before');
      const unreadOnly = url.searchParams.get('unread') === 'true';
      const newestFirst = [...this.items]
        .sort((a, b) => (a.id < b.id ? 1 : -1))
        .filter((n) => (before === null || n.id < before) && (!unreadOnly || !n.read));
      const items = newestFirst.slice(0, limit);
      const more = newestFirst.length > limit;
      return json({
        items,
        limit,
        total: this.items.length,
        unread_count: this.unread(),
        next_before: more ? (items[items.length - 1]?.id ?? null) : null,
      });
    });
  }

  private unread(): number {
    return this.items.filter((n) => !n.read).length;
  }
}
