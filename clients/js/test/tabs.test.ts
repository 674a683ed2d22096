/**
 * One connection per browser: leader election over (fake) Web Locks, relay over Node's real
 * BroadcastChannel, takeover when the leader closes.
 */

import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';

import { createClient, type ClientOptions, type HeraldClient, type TopicMessage } from '../src/index.js';
import {
  FakeFetch,
  FakeLocks,
  FakeTimers,
  FakeWebSocket,
  flush,
  json,
  jwt,
  notification,
  topicEvent,
  topicState,
} from './fakes.js';
import { record, type Recorded } from './harness.js';

interface Tab {
  client: HeraldClient;
  seen: Recorded;
  ids(): string[];
}

interface Browser {
  locks: FakeLocks;
  timers: FakeTimers;
  fetch: FakeFetch;
  open(id: string, user?: string, options?: Partial<ClientOptions>): Tab;
}

const opened: HeraldClient[] = [];
let users = 0;

/** One browser: its tabs share the lock manager, the clock and the network. Each test has its own user. */
function browser(): Browser & { user: string } {
  FakeWebSocket.reset();
  const locks = new FakeLocks();
  const timers = new FakeTimers();
  const fetch = new FakeFetch();
  fetch.route((url) => (url.pathname === '/api/v1/notifications/unread-count' ? json({ unread_count: 0 }) : undefined));
  users += 1;
  const user = `user-${users}`;
  return {
    user,
    locks,
    timers,
    fetch,
    open(id, who = user, options = {}) {
      const client = createClient({
        url: 'http://herald.test',
        getToken: () => jwt(who),
        ...options,
        environment: {
          WebSocket: FakeWebSocket,
          fetch: fetch.fetch,
          timers,
          random: () => 0.5,
          locks,
          BroadcastChannel: globalThis.BroadcastChannel,
          onlineEvents: undefined,
          tabId: id,
          ...options.environment,
        },
      });
      opened.push(client);
      const seen = record(client);
      return { client, seen, ids: () => seen.notifications.map((n) => n.id) };
    },
  };
}

/** Lets the lock grants and the channel's messages go round. */
async function settle(b: Browser): Promise<void> {
  for (let i = 0; i < 5; i += 1) {
    await b.timers.advance(0);
    await flush(20);
  }
}

afterEach(() => {
  for (const client of opened.splice(0)) client.close();
});

describe('sharing one connection between tabs', () => {
  it('lets one tab hold the socket and relays everything to the others', async () => {
    const b = browser();
    const a = b.open('A');
    const c = b.open('C');
    await settle(b);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(a.client.state.leader, true);
    assert.equal(c.client.state.leader, false);
    assert.equal(c.client.state.shared, true);

    const [n1, n2] = [notification(), notification()];
    FakeWebSocket.last().accept(1, [n1]);
    FakeWebSocket.last().receive({ type: 'notification', data: n2 });
    await settle(b);
    assert.deepEqual(a.ids(), [n1.id, n2.id]);
    assert.deepEqual(c.ids(), [n1.id, n2.id]);
    assert.equal(c.client.unreadCount, 2);
    assert.equal(c.client.state.state, 'open');
    assert.equal(c.client.state.transport, 'websocket');
    assert.equal(c.client.lastId, n2.id);
  });

  it("sends a follower's markRead over the leader's socket, and every tab hears the read", async () => {
    const b = browser();
    const a = b.open('A');
    const c = b.open('C');
    await settle(b);
    const socket = FakeWebSocket.last();
    const n1 = notification();
    socket.accept(1, [n1]);
    await settle(b);
    const marked = c.client.markRead(n1.id);
    await settle(b);
    await marked;
    assert.deepEqual(socket.sent.at(-1), { type: 'mark_read', ids: [n1.id] });
    socket.receive({ type: 'read', ids: [n1.id] });
    await settle(b);
    for (const tab of [a, c]) {
      assert.deepEqual(tab.seen.reads, [{ ids: [n1.id], all: false }]);
      assert.equal(tab.client.unreadCount, 0);
    }
  });

  it('hands the connection to another tab when the leader closes, resuming with since', async () => {
    const b = browser();
    const a = b.open('A');
    const c = b.open('C');
    await settle(b);
    const [n1, n2, n3] = [notification(), notification(), notification()];
    FakeWebSocket.last().accept(1, [n1]);
    FakeWebSocket.last().receive({ type: 'notification', data: n2 });
    await settle(b);

    a.client.close();
    await settle(b);
    assert.equal(c.client.state.leader, true);
    assert.equal(FakeWebSocket.instances.length, 2);
    const takeover = FakeWebSocket.last();
    assert.equal(takeover.query.get('since'), n2.id);
    takeover.accept(2, [n2, n3]);
    assert.deepEqual(c.ids(), [n1.id, n2.id, n3.id]);
  });

  it('starts a tab that joins later from the leader: its unread backlog and count, no socket of its own', async () => {
    const b = browser();
    b.open('A');
    await settle(b);
    const [n1, n2] = [notification(), notification({ read: true })];
    FakeWebSocket.last().accept(1, [n1, n2]);
    await settle(b);
    const late = b.open('L');
    await settle(b);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.deepEqual(late.seen.notifications, [{ id: n1.id, backlog: true }]);
    assert.equal(late.client.unreadCount, 1);
    assert.equal(late.client.lastId, n2.id);
    assert.equal(late.client.state.state, 'open');
  });

  it("watches a follower's topics on the leader's connection, and drops them when the follower closes", async () => {
    const b = browser();
    b.open('A');
    const c = b.open('C');
    await settle(b);
    const socket = FakeWebSocket.last();
    socket.accept();
    await settle(b);
    const got: string[] = [];
    c.client.subscribe('order:7', (m: TopicMessage) => got.push(m.type === 'event' ? `event ${m.seq}` : m.type));
    await settle(b);
    assert.deepEqual(socket.sent.at(-1), { type: 'subscribe', topic: 'order:7' });
    socket.receive({ type: 'subscribed', topic: 'order:7', state: topicState('order:7', 1) });
    socket.receive(topicEvent('order:7', 2));
    await settle(b);
    assert.deepEqual(got, ['state', 'event 2']);

    c.client.close();
    await settle(b);
    assert.deepEqual(socket.sent.at(-1), { type: 'unsubscribe', topic: 'order:7' });
  });

  it("resumes the followers' topics from their last seq when a follower takes over", async () => {
    const b = browser();
    const a = b.open('A');
    const c = b.open('C');
    await settle(b);
    FakeWebSocket.last().accept();
    const got: string[] = [];
    c.client.subscribe('order:7', (m: TopicMessage) => got.push(m.type === 'event' ? `event ${m.seq}` : m.type));
    await settle(b);
    FakeWebSocket.last().receive({ type: 'subscribed', topic: 'order:7', state: topicState('order:7', 1) });
    FakeWebSocket.last().receive(topicEvent('order:7', 2));
    await settle(b);

    a.client.close();
    await settle(b);
    const takeover = FakeWebSocket.last();
    takeover.accept();
    assert.deepEqual(takeover.sent, [{ type: 'subscribe', topic: 'order:7', since: 2 }]);
    takeover.receive({ type: 'subscribed', topic: 'order:7', state: topicState('order:7', 3) });
    takeover.receive(topicEvent('order:7', 3));
    assert.deepEqual(got, ['state', 'event 2', 'event 3']);
    assert.equal(c.client.state.leader, true);
  });

  it('stops every tab when the token is refused', async () => {
    const b = browser();
    b.fetch.route((url) => (url.pathname === '/api/v1/notifications/unread-count' ? json({}, 401) : undefined));
    const a = b.open('A');
    const c = b.open('C');
    await settle(b);
    FakeWebSocket.last().fail();
    await settle(b);
    assert.equal(a.seen.authErrors.length, 1);
    assert.equal(c.seen.authErrors.length, 1);
    assert.equal(c.client.state.state, 'offline');
    // The tab that gets the lock next may have started its one try before it hears; then nothing more.
    const sockets = FakeWebSocket.instances.length;
    assert.ok(sockets <= 2);
    await b.timers.advance(600_000);
    await settle(b);
    assert.equal(FakeWebSocket.instances.length, sockets);
    assert.equal(b.locks.heldNames().length, 0);
  });

  it('does not share between two users of one browser', async () => {
    const b = browser();
    b.open('A', 'alice-of-this-test');
    b.open('B', 'bob-of-this-test');
    await settle(b);
    assert.equal(FakeWebSocket.instances.length, 2);
  });

  it('gives each tab its own socket without Web Locks, or when sharing is turned off', async () => {
    const b = browser();
    const a = b.open('A', b.user, { environment: { locks: undefined } });
    const c = b.open('C', b.user, { shareConnection: false });
    await settle(b);
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.equal(a.client.state.shared, false);
    assert.equal(c.client.state.leader, true);
  });
});
