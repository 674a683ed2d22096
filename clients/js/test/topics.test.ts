/** Topic handlers (a snapshot, then each event once) and the connection's watch list (what resumes). */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { TopicRouter, type TopicMessage, type TopicUpdate } from '../src/topics.js';
import type { TopicEvent, TopicState } from '../src/types.js';
import { WatchList } from '../src/watch-list.js';

const state = (seq: number): TopicState => ({
  topic: 'order:1',
  seq,
  status: 'building',
  progress: null,
  data: {},
  updated_at: '2025-01-01T00:00:00Z',
  expires_at: '2025-01-01T06:00:00Z',
});
const event = (seq: number): Extract<TopicUpdate, { kind: 'event' }> => ({
  kind: 'event',
  topic: 'order:1',
  seq,
  event: { seq, type: 'status', status: 'building', progress: null, data: {}, at: '' } satisfies TopicEvent,
});
const snapshot = (seq: number, resumed: boolean): TopicUpdate => ({
  kind: 'snapshot',
  topic: 'order:1',
  state: state(seq),
  resumed,
});
const describeMessage = (m: TopicMessage): string =>
  m.type === 'state' ? `state ${m.state?.seq ?? 'null'}` : m.type === 'event' ? `event ${m.seq}` : `error ${m.code}`;

function handler() {
  const got: string[] = [];
  return { got, handle: (m: TopicMessage) => got.push(describeMessage(m)) };
}

const rethrow = (error: unknown): void => {
  throw error;
};

describe('TopicRouter', () => {
  it('gives a handler its snapshot, then each newer event once', () => {
    const router = new TopicRouter();
    const h = handler();
    router.add('order:1', h.handle, rethrow);
    router.deliver(snapshot(3, false));
    for (const seq of [3, 4, 4, 5]) router.deliver(event(seq));
    assert.deepEqual(h.got, ['state 3', 'event 4', 'event 5']);
  });

  it('holds events that come before the snapshot, and releases those after it', () => {
    const router = new TopicRouter();
    const h = handler();
    router.add('order:1', h.handle, rethrow);
    router.deliver(event(5));
    router.deliver(event(4));
    router.deliver(snapshot(4, true));
    assert.deepEqual(h.got, ['state 4', 'event 5']);
  });

  it('lets a handler already in place ignore a resumed snapshot, while a new one starts from it', () => {
    const router = new TopicRouter();
    const first = handler();
    router.add('order:1', first.handle, rethrow);
    router.deliver(snapshot(2, false));
    router.deliver(event(3));
    const second = handler();
    router.add('order:1', second.handle, rethrow);
    assert.deepEqual(router.watchRequests(), [{ topic: 'order:1', seq: 3, fresh: true }]);
    router.deliver(snapshot(3, true)); // the re-subscribe with since=3
    router.deliver(event(4));
    assert.deepEqual(first.got, ['state 2', 'event 3', 'event 4']);
    assert.deepEqual(second.got, ['state 3', 'event 4']);
    assert.deepEqual(router.watchRequests(), [{ topic: 'order:1', seq: 4, fresh: false }]);
  });

  it('replaces the state with a newer snapshot that does not resume (history gone, SSE reconnect)', () => {
    const router = new TopicRouter();
    const h = handler();
    router.add('order:1', h.handle, rethrow);
    router.deliver(snapshot(2, false));
    router.deliver({ kind: 'error', topic: 'order:1', code: 'history_gone', message: '' });
    router.deliver(snapshot(9, false));
    router.deliver(snapshot(9, false));
    router.deliver(snapshot(5, false)); // older: ignored
    router.deliver(event(10));
    assert.deepEqual(h.got, ['state 2', 'error history_gone', 'state 9', 'event 10']);
  });

  it('stops delivering once the handler is removed', () => {
    const router = new TopicRouter();
    const h = handler();
    const remove = router.add('order:1', h.handle, rethrow);
    remove();
    router.deliver(snapshot(1, false));
    assert.deepEqual(h.got, []);
    assert.deepEqual(router.watchRequests(), []);
  });
});

describe('WatchList', () => {
  it('watches the union of what tabs want, and unwatches when the last one leaves', () => {
    const list = new WatchList();
    assert.deepEqual(list.set('tab-a', [{ topic: 'order:1', seq: undefined, fresh: true }]), {
      added: ['order:1'],
      removed: [],
      refresh: [],
    });
    assert.deepEqual(list.set('tab-b', [{ topic: 'order:1', seq: undefined, fresh: true }]), {
      added: [],
      removed: [],
      refresh: ['order:1'],
    });
    assert.deepEqual(list.set('tab-a', []).removed, []);
    assert.deepEqual(list.forget('tab-b').removed, ['order:1']);
    assert.deepEqual(list.names(), []);
  });

  it('marks a snapshot resumed only after a subscribe with since and without history_gone', () => {
    const list = new WatchList();
    list.set('tab', [{ topic: 'order:1', seq: 4, fresh: false }]);
    assert.equal(list.since('order:1'), 4);
    list.subscribing('order:1', 4);
    const resumed = list.translate({ type: 'subscribed', topic: 'order:1', state: state(6) });
    assert.deepEqual(resumed, { kind: 'snapshot', topic: 'order:1', state: state(6), resumed: true });
    assert.equal(list.since('order:1'), 4); // the events 5 and 6 follow and move it on
    list.translate({ type: 'event', topic: 'order:1', seq: 5, event: event(5).event });
    assert.equal(list.since('order:1'), 5);

    list.subscribing('order:1', 5);
    list.translate({ type: 'error', topic: 'order:1', code: 'history_gone', message: '' });
    const gone = list.translate({ type: 'subscribed', topic: 'order:1', state: state(40) });
    assert.equal(gone?.kind === 'snapshot' && gone.resumed, false);
    assert.equal(list.since('order:1'), 40);
  });

  it('does not ask again for a refused topic until a tab asks anew', () => {
    const list = new WatchList();
    list.set('tab-a', [{ topic: 'secret:1', seq: undefined, fresh: true }]);
    list.translate({ type: 'error', topic: 'secret:1', code: 'forbidden', message: 'no' });
    assert.deepEqual(list.names(), []);
    assert.deepEqual(list.set('tab-b', [{ topic: 'secret:1', seq: undefined, fresh: true }]).added, ['secret:1']);
  });

  it('drops frames for topics nobody watches', () => {
    const list = new WatchList();
    assert.equal(list.translate({ type: 'event', topic: 'order:9', seq: 1, event: event(1).event }), undefined);
  });
});
