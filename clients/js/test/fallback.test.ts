/** The fallback chain: WebSocket → SSE → polling, the way back, and each transport's own behaviour. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { answer, FakeWebSocket, json, notification, sseEvent, sseResponse, topicEvent, topicState } from './fakes.js';
import { harness, RestInbox } from './harness.js';

const hello = { type: 'hello', user_id: 'alice', connection_id: '1', unread_count: 0 };

/** Fails the WebSocket tries one after another, letting each retry wait (and no more) pass. */
async function failSockets(h: ReturnType<typeof harness>, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) {
    FakeWebSocket.last().fail();
    await h.timers.advance(0); // the token check
    await h.timers.advance(h.client.state.retryInMs ?? 0);
  }
}

describe('the fallback chain', () => {
  it('moves to SSE after three failed WebSockets, and to polling after three failed streams', async () => {
    const h = harness();
    const inbox = new RestInbox();
    inbox.route(h.fetch);
    h.fetch.route(answer('/api/v1/stream', { error: { code: 'at_capacity' } }, 503));
    await h.timers.advance(0);
    FakeWebSocket.last().fail();
    await h.timers.advance(30_000);
    FakeWebSocket.last().fail();
    await h.timers.advance(30_000);
    assert.equal(FakeWebSocket.instances.length, 3);
    assert.equal(h.fetch.callsTo('/api/v1/stream').length, 0);
    FakeWebSocket.last().fail();
    await h.timers.advance(0);
    assert.equal(h.fetch.callsTo('/api/v1/stream').length, 1);
    await h.timers.advance(30_000);
    await h.timers.advance(30_000);
    assert.equal(h.fetch.callsTo('/api/v1/stream').length, 3);
    assert.equal(h.client.state.state, 'polling');
    assert.equal(h.client.state.transport, 'poll');
    assert.ok(h.fetch.callsTo('/api/v1/notifications').length >= 1);
    const order = [...new Set(h.seen.states.map((s) => s.transport).filter((t) => t !== null))];
    assert.deepEqual(order, ['websocket', 'sse', 'poll']);
    h.client.close();
  });

  it('switches back to the WebSocket when it opens again, losing and repeating nothing', async () => {
    const h = harness();
    const stream = sseResponse();
    let streamSignal: AbortSignal | undefined;
    h.fetch.route((url, init) => {
      if (url.pathname !== '/api/v1/stream') return undefined;
      streamSignal = init?.signal ?? undefined;
      return stream.response;
    });
    await h.timers.advance(0);
    await failSockets(h, 3);
    assert.equal(h.client.state.state, 'open');
    assert.equal(h.client.state.transport, 'sse');

    const [a, b, c, d] = [notification(), notification(), notification(), notification()];
    stream.send(sseEvent(hello));
    stream.send(sseEvent({ type: 'notifications', items: [a], more: false }, a.id));
    stream.send(sseEvent({ type: 'notification', data: b }, b.id));
    await h.timers.advance(0);
    assert.deepEqual(h.ids(), [a.id, b.id]);

    await h.timers.advance(30_000); // probeAfterMs: the WebSocket is tried again in the background
    const probe = FakeWebSocket.last();
    assert.equal(FakeWebSocket.instances.length, 4);
    assert.equal(probe.query.get('since'), b.id);
    stream.send(sseEvent({ type: 'notification', data: c }, c.id)); // still on SSE meanwhile
    await h.timers.advance(0);

    probe.accept(0, [c, d]); // its backlog since b repeats c
    assert.equal(h.client.state.transport, 'websocket');
    assert.equal(streamSignal?.aborted, true);
    assert.deepEqual(h.ids(), [a.id, b.id, c.id, d.id]);
    h.client.close();
  });

  it('keeps the stream when the background WebSocket fails, and tries again later', async () => {
    const h = harness();
    const stream = sseResponse();
    h.fetch.route((url) => (url.pathname === '/api/v1/stream' ? stream.response : undefined));
    await h.timers.advance(0);
    await failSockets(h, 3);
    stream.send(sseEvent(hello));
    await h.timers.advance(30_000);
    FakeWebSocket.last().fail();
    await h.timers.advance(0);
    assert.equal(h.client.state.transport, 'sse');
    assert.equal(h.client.state.state, 'open');
    await h.timers.advance(30_000);
    assert.equal(FakeWebSocket.instances.length, 5);
    h.client.close();
  });

  it('leaves polling for the WebSocket once it opens', async () => {
    const h = harness({ transports: ['websocket', 'poll'] });
    const inbox = new RestInbox();
    inbox.route(h.fetch);
    const a = notification();
    inbox.items.push(a);
    await h.timers.advance(0);
    await failSockets(h, 3);
    assert.equal(h.client.state.state, 'polling');
    await h.timers.advance(30_000);
    assert.equal(FakeWebSocket.instances.length, 4);
    const polls = h.fetch.callsTo('/api/v1/notifications').length;
    FakeWebSocket.last().accept(1, [a]);
    assert.equal(h.client.state.transport, 'websocket');
    await h.timers.advance(60_000);
    assert.equal(h.fetch.callsTo('/api/v1/notifications').length, polls);
    assert.deepEqual(h.ids(), [a.id]);
    h.client.close();
  });
});

describe('SSE', () => {
  it('sends the token as a header, since and topics in the query, and honours a close event', async () => {
    const h = harness({ transports: ['sse'] });
    const streams = [sseResponse(), sseResponse()];
    let n = 0;
    h.fetch.route((url) => (url.pathname === '/api/v1/stream' ? streams[n++]?.response : undefined));
    const states: string[] = [];
    h.client.subscribe('order:1', (m) => states.push(m.type));
    await h.timers.advance(0);
    const first = h.fetch.callsTo('/api/v1/stream')[0];
    assert.equal(new Headers(first?.init?.headers).get('authorization'), 'Bearer token-1');
    assert.equal(first?.url.searchParams.get('topics'), 'order:1');
    assert.equal(first?.url.searchParams.get('token'), null);

    const a = notification();
    streams[0]?.send(': keepalive\n\n');
    streams[0]?.send(sseEvent(hello));
    streams[0]?.send(sseEvent({ type: 'notifications', items: [a], more: false }, a.id));
    streams[0]?.send(sseEvent({ type: 'subscribed', topic: 'order:1', state: null }));
    streams[0]?.send(sseEvent({ type: 'resync' }));
    streams[0]?.send(sseEvent({ type: 'close', code: 4009, reason: 'resync' }));
    await h.timers.advance(0);
    assert.equal(h.seen.states.at(-1)?.failures, 0);
    await h.timers.advance(1000);
    const second = h.fetch.callsTo('/api/v1/stream')[1];
    assert.equal(second?.url.searchParams.get('since'), a.id);
    assert.deepEqual(states, ['state']);
    h.client.close();
  });

  it('drops a topic the token may not watch, which makes the server refuse the whole stream (403)', async () => {
    const h = harness({ transports: ['sse'] });
    const stream = sseResponse();
    h.fetch.route((url) => {
      if (url.pathname !== '/api/v1/stream') return undefined;
      const topics = url.searchParams.get('topics') ?? '';
      return topics.includes('secret:1') ? json({ error: { code: 'forbidden' } }, 403) : stream.response;
    });
    h.fetch.route(answer('/api/v1/topics/secret:1', { error: { code: 'forbidden' } }, 403));
    h.fetch.route(answer('/api/v1/topics/order:1', topicState('order:1', 1)));
    const secret: string[] = [];
    h.client.subscribe('order:1', () => undefined);
    h.client.subscribe('secret:1', (m) => secret.push(m.type === 'error' ? m.code : m.type));
    await h.timers.advance(0);
    const calls = h.fetch.callsTo('/api/v1/stream');
    assert.equal(calls.length, 2);
    assert.equal(calls[1]?.url.searchParams.get('topics'), 'order:1');
    assert.deepEqual(secret, ['forbidden']);
    stream.send(sseEvent(hello));
    await h.timers.advance(0);
    assert.equal(h.client.state.state, 'open');
    assert.equal(h.client.state.failures, 0);
    h.client.close();
  });

  it('reconnects with the new topic when one is added while streaming', async () => {
    const h = harness({ transports: ['sse'] });
    const streams = [sseResponse(), sseResponse()];
    let n = 0;
    h.fetch.route((url) => (url.pathname === '/api/v1/stream' ? streams[n++]?.response : undefined));
    await h.timers.advance(0);
    streams[0]?.send(sseEvent(hello));
    await h.timers.advance(0);
    h.client.subscribe('intent:42', () => undefined);
    await h.timers.advance(0);
    const calls = h.fetch.callsTo('/api/v1/stream');
    assert.equal(calls.length, 2);
    assert.equal(calls[1]?.url.searchParams.get('topics'), 'intent:42');
    h.client.close();
  });
});

describe('polling', () => {
  it('starts with the unread backlog, then emits what is new, reads from elsewhere, and the count', async () => {
    const h = harness({ transports: ['poll'], pollPageSize: 2 });
    const inbox = new RestInbox();
    inbox.route(h.fetch);
    const [a, b] = [notification(), notification({ read: true })];
    inbox.items.push(a, b);
    await h.timers.advance(0);
    assert.equal(h.client.state.state, 'polling');
    assert.deepEqual(h.seen.notifications, [{ id: a.id, backlog: true }]);
    assert.deepEqual(h.seen.counts, [1]);

    a.read = true; // read elsewhere
    await h.timers.advance(5000);
    assert.deepEqual(h.seen.reads, [{ ids: [a.id], all: false }]);
    assert.deepEqual(h.seen.counts, [1, 0]);

    const burst = [notification(), notification(), notification(), notification(), notification()];
    inbox.items.push(...burst);
    await h.timers.advance(5000);
    assert.deepEqual(
      h.seen.notifications.slice(1).map((n) => [n.id, n.backlog]),
      burst.map((n) => [n.id, false]),
    );
    assert.equal(h.client.unreadCount, 5);
    // The burst was read in pages of 2 with the cursor.
    assert.ok(h.fetch.callsTo('/api/v1/notifications').some((c) => c.url.searchParams.get('before') !== null));

    await h.timers.advance(5000);
    assert.equal(h.seen.notifications.length, 6);
    h.client.close();
  });

  it('resumes after the last id when it takes over from a stream', async () => {
    const h = harness({ transports: ['websocket', 'poll'], fallbackAfter: 1 });
    const inbox = new RestInbox();
    inbox.route(h.fetch);
    const [a, b] = [notification(), notification({ read: true })];
    inbox.items.push(a, b);
    await h.timers.advance(0);
    FakeWebSocket.last().accept(1, [a]);
    await h.timers.advance(10_000);
    FakeWebSocket.last().serverClose(1006);
    FakeWebSocket.last().onclose = null;
    await h.timers.advance(1000);
    FakeWebSocket.last().fail();
    await h.timers.advance(0);
    assert.equal(h.client.state.state, 'polling');
    assert.deepEqual(h.ids(), [a.id, b.id]); // b is after `since`, read or not: a catch-up, as over the socket
    assert.equal(h.seen.notifications[1]?.backlog, true);
    h.client.close();
  });

  it('polls topics: the state first, then the events after it', async () => {
    const h = harness({ transports: ['poll'] });
    new RestInbox().route(h.fetch);
    const state = topicState('order:1', 2, 'routing');
    const events = [
      { seq: 3, type: 'status', status: 'building', progress: 10, data: {}, at: '' },
      { seq: 4, type: 'status', status: 'building', progress: 50, data: {}, at: '' },
    ];
    h.fetch.route((url) => {
      if (url.pathname === '/api/v1/topics/order:1') return json(state);
      if (url.pathname === '/api/v1/topics/order:1/events') {
        const since = Number(url.searchParams.get('since'));
        return json({ topic: 'order:1', state, events: events.filter((e) => e.seq > since), gone: false });
      }
      return undefined;
    });
    const got: string[] = [];
    h.client.subscribe('order:1', (m) => got.push(m.type === 'event' ? `event ${m.seq}` : m.type));
    await h.timers.advance(0);
    assert.deepEqual(got, ['state']);
    await h.timers.advance(5000);
    await h.timers.advance(5000);
    assert.deepEqual(got, ['state', 'event 3', 'event 4']);
    h.client.close();
  });
});

describe('marking read', () => {
  it('sends one frame over an open WebSocket', async () => {
    const h = harness();
    await h.timers.advance(0);
    const socket = FakeWebSocket.last();
    socket.accept(2);
    await h.client.markRead(['01A', '01B', '01A']);
    await h.client.markAllRead();
    assert.deepEqual(socket.sent, [{ type: 'mark_read', ids: ['01A', '01B'] }, { type: 'mark_all_read' }]);
    socket.receive({ type: 'read', ids: ['01A', '01B'] });
    assert.deepEqual(h.seen.reads, [{ ids: ['01A', '01B'], all: false }]);
    assert.equal(h.client.unreadCount, 0);
    h.client.close();
  });

  it('uses REST when no socket is open, and tells the tab itself', async () => {
    const h = harness();
    let unread = 2;
    h.fetch.route((url, init) => {
      if (init?.method === 'POST' && url.pathname.endsWith('/read')) {
        unread -= 1;
        return json(notification({ read: true }));
      }
      if (url.pathname === '/api/v1/notifications/unread-count') return json({ unread_count: unread });
      return undefined;
    });
    await h.timers.advance(0);
    FakeWebSocket.last().accept(2);
    FakeWebSocket.last().serverClose(1006);
    await h.client.markRead(['01A']);
    const posts = h.fetch.calls.filter((c) => c.init?.method === 'POST');
    assert.deepEqual(
      posts.map((c) => c.url.pathname),
      ['/api/v1/notifications/01A/read'],
    );
    assert.deepEqual(h.seen.reads, [{ ids: ['01A'], all: false }]);
    assert.equal(h.client.unreadCount, 1);
    h.client.close();
  });

  it('lists over REST with the cursor', async () => {
    const h = harness();
    const inbox = new RestInbox();
    inbox.route(h.fetch);
    inbox.items.push(notification(), notification(), notification());
    const page = await h.client.list({ limit: 2 });
    assert.equal(page.items.length, 2);
    const next = await h.client.list({ limit: 2, before: page.next_before ?? '' });
    assert.equal(next.items.length, 1);
    assert.equal(next.next_before, null);
    await assert.rejects(h.client.list({ page: 1, before: 'x' }), TypeError);
    h.client.close();
  });
});

describe('topics over the WebSocket', () => {
  it('subscribes on connect, resumes from the last seq after a reconnect, and delivers each event once', async () => {
    const h = harness();
    const got: string[] = [];
    h.client.subscribe('order:1', (m) => got.push(m.type === 'event' ? `event ${m.seq}` : `${m.type}`));
    await h.timers.advance(0);
    const first = FakeWebSocket.last();
    first.accept();
    assert.deepEqual(first.sent, [{ type: 'subscribe', topic: 'order:1' }]);
    const state = (seq: number) => topicState('order:1', seq);
    const event = (seq: number) => topicEvent('order:1', seq);
    first.receive({ type: 'subscribed', topic: 'order:1', state: state(1) });
    first.receive(event(2));
    first.serverClose(1006);
    await h.timers.advance(1000);
    const second = FakeWebSocket.last();
    second.accept();
    assert.deepEqual(second.sent, [{ type: 'subscribe', topic: 'order:1', since: 2 }]);
    second.receive({ type: 'subscribed', topic: 'order:1', state: state(3) });
    second.receive(event(2));
    second.receive(event(3));
    assert.deepEqual(got, ['state', 'event 2', 'event 3']);
    h.client.close();
  });

  it('tells the handler when the topic is refused, and unsubscribes when it is done', async () => {
    const h = harness();
    await h.timers.advance(0);
    const socket = FakeWebSocket.last();
    socket.accept();
    const got: string[] = [];
    const stop = h.client.subscribe('secret:1', (m) => got.push(m.type === 'error' ? m.code : m.type));
    socket.receive({ type: 'error', code: 'forbidden', message: 'not granted', topic: 'secret:1' });
    stop();
    assert.deepEqual(got, ['forbidden']);
    assert.deepEqual(socket.sent, [
      { type: 'subscribe', topic: 'secret:1' },
      { type: 'unsubscribe', topic: 'secret:1' },
    ]);
    assert.throws(() => h.client.subscribe('Not a topic', () => undefined), TypeError);
    h.client.close();
  });
});
