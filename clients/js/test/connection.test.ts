/** Reconnecting and resuming over the WebSocket: since, resync, more, backoff, token expiry, auth errors. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { answer, FakeWebSocket, notification } from './fakes.js';
import { harness } from './harness.js';

describe('resuming', () => {
  it('reconnects after a drop with since = the newest id seen, and a fresh token', async () => {
    const { client, timers, seen, ids } = harness();
    await timers.advance(0);
    const connecting = { state: 'connecting', transport: null, failures: 0, leader: true, shared: false };
    assert.deepEqual(seen.states[0], connecting);
    const first = FakeWebSocket.last();
    assert.equal(first.query.get('token'), 'token-1');
    assert.equal(first.query.get('since'), null);
    const [a, b, c] = [notification(), notification(), notification()];
    first.accept(2, [a]);
    first.receive({ type: 'notification', data: b });
    first.serverClose(1006);
    assert.equal(seen.states.at(-1)?.state, 'reconnecting');
    assert.equal(seen.states.at(-1)?.retryInMs, 250); // random 0.5 × 500 ms

    await timers.advance(250);
    const second = FakeWebSocket.last();
    assert.notEqual(second, first);
    assert.equal(second.query.get('since'), b.id);
    assert.equal(second.query.get('token'), 'token-2');
    second.accept(3, [b, c]);
    assert.deepEqual(ids(), [a.id, b.id, c.id]);
    assert.equal(client.lastId, c.id);
    client.close();
  });

  it('resumes after a resync (4009) with since, without counting a failure', async () => {
    const { client, timers, seen } = harness();
    await timers.advance(0);
    const first = FakeWebSocket.last();
    const a = notification();
    first.accept(0, [a]);
    first.receive({ type: 'resync' });
    first.serverClose(4009);
    assert.equal(seen.states.at(-1)?.failures, 0);
    await timers.advance(1000);
    assert.equal(FakeWebSocket.last().query.get('since'), a.id);
    client.close();
  });

  it('resumes after a slow-consumer close (4008) with since', async () => {
    const { client, timers } = harness();
    await timers.advance(0);
    const first = FakeWebSocket.last();
    const a = notification();
    first.accept(0, []);
    first.receive({ type: 'notification', data: a });
    first.serverClose(4008);
    await timers.advance(1000);
    assert.equal(FakeWebSocket.last().query.get('since'), a.id);
    client.close();
  });

  it('continues a backlog that says more: true at once, from its last id', async () => {
    const { client, timers, seen, ids } = harness();
    await timers.advance(0);
    const first = FakeWebSocket.last();
    const [a, b, c] = [notification(), notification(), notification()];
    first.accept(0, [a, b], true);
    await timers.advance(0);
    assert.equal(first.closedByClient, 1000);
    const second = FakeWebSocket.last();
    assert.equal(second.query.get('since'), b.id);
    second.accept(0, [c], false);
    assert.deepEqual(ids(), [a.id, b.id, c.id]);
    assert.deepEqual(
      seen.notifications.map((n) => n.backlog),
      [true, true, true],
    );
    client.close();
  });

  it('reconnects with a fresh token when the server says the token expired (4001)', async () => {
    const { client, timers, tokens } = harness();
    await timers.advance(0);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().serverClose(4001, 'token expired');
    await timers.advance(1000);
    assert.equal(FakeWebSocket.last().query.get('token'), 'token-2');
    assert.deepEqual(tokens, ['token-1', 'token-2']);
    client.close();
  });

  it('notices a silent connection and reconnects', async () => {
    const { client, timers } = harness({ heartbeatMs: 1000, idleTimeoutMs: 2500 });
    await timers.advance(0);
    const first = FakeWebSocket.last();
    first.accept();
    await timers.advance(1000);
    assert.deepEqual(first.sent.at(-1), { type: 'ping' });
    await timers.advance(1600);
    assert.equal(first.closedByClient, 1000);
    await timers.advance(1000);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });
});

describe('the browser coming back online', () => {
  it('retries at once instead of waiting out the backoff', async () => {
    const online = new EventTarget();
    const h = harness({ environment: { random: () => 0.999, onlineEvents: online } });
    await h.timers.advance(0);
    FakeWebSocket.last().fail();
    await h.timers.advance(0);
    assert.equal(h.client.state.retryInMs, 499);
    online.dispatchEvent(new Event('online'));
    await h.timers.advance(0);
    assert.equal(FakeWebSocket.instances.length, 2);
    h.client.close();
  });
});

describe('backoff', () => {
  it('waits with full jitter, doubling per failure, and starts over once a connection stays open', async () => {
    const { client, timers, seen } = harness({ fallbackAfter: 100, environment: { random: () => 0.999 } });
    await timers.advance(0);
    for (let i = 0; i < 3; i += 1) {
      FakeWebSocket.last().fail();
      await timers.advance(0); // the token check
      const wait = seen.states.at(-1)?.retryInMs ?? -1;
      await timers.advance(wait);
    }
    const waits = seen.states.filter((s) => s.retryInMs !== undefined).map((s) => s.retryInMs);
    assert.deepEqual(waits, [499, 999, 1998]);

    FakeWebSocket.last().accept();
    await timers.advance(10_000); // stableAfterMs
    FakeWebSocket.last().serverClose(1006);
    assert.equal(seen.states.at(-1)?.retryInMs, 499);
    client.close();
  });

  it('counts a connection that drops before it is stable as a failure', async () => {
    const { client, timers, seen } = harness({ environment: { random: () => 0.999 } });
    await timers.advance(0);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().serverClose(1006);
    assert.equal(seen.states.at(-1)?.failures, 1);
    await timers.advance(499);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().serverClose(1011);
    assert.equal(seen.states.at(-1)?.failures, 2);
    assert.equal(seen.states.at(-1)?.retryInMs, 999);
    client.close();
  });
});

describe('a refused token', () => {
  it('stops the client with authError when the token check after a failed socket says 401', async () => {
    const { client, timers, fetch, seen } = harness();
    fetch.route(answer('/api/v1/notifications/unread-count', { error: { code: 'unauthorized' } }, 401));
    await timers.advance(0);
    FakeWebSocket.last().fail();
    await timers.advance(0);
    assert.equal(seen.authErrors.length, 1);
    assert.equal(seen.authErrors[0]?.name, 'AuthError');
    assert.equal(client.state.state, 'offline');
    await timers.advance(600_000);
    assert.equal(FakeWebSocket.instances.length, 1);
    const check = fetch.callsTo('/api/v1/notifications/unread-count')[0];
    assert.equal(new Headers(check?.init?.headers).get('authorization'), 'Bearer token-1');
  });

  it('keeps retrying when the token is fine and the failure was the network', async () => {
    const { client, timers, seen } = harness();
    await timers.advance(0);
    FakeWebSocket.last().fail();
    await timers.advance(1000);
    assert.equal(seen.authErrors.length, 0);
    assert.equal(FakeWebSocket.instances.length, 2);
    client.close();
  });

  it('stops the client when the SSE stream answers 401', async () => {
    const { client, timers, fetch, seen } = harness({ transports: ['sse'] });
    fetch.route(answer('/api/v1/stream', { error: { code: 'unauthorized' } }, 401));
    await timers.advance(0);
    assert.equal(seen.authErrors.length, 1);
    assert.equal(client.state.state, 'offline');
    await timers.advance(600_000);
    assert.equal(fetch.callsTo('/api/v1/stream').length, 1);
  });
});
