/** The inbox: each notification once, the newest id, the unread count, snapshots for joining tabs. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { BacklogInfo, NotificationMeta, ReadEvent } from '../src/events.js';
import { Inbox } from '../src/inbox.js';
import type { Notification } from '../src/types.js';
import { notification } from './fakes.js';

function recording(dedupeSize = 1000) {
  const events = {
    notifications: [] as [Notification, NotificationMeta][],
    backlogs: [] as BacklogInfo[],
    reads: [] as ReadEvent[],
    counts: [] as number[],
  };
  const inbox = new Inbox(
    { dedupeSize, unreadKept: 3 },
    {
      notification: (n, meta) => events.notifications.push([n, meta]),
      backlog: (info) => events.backlogs.push(info),
      read: (event) => events.reads.push(event),
      unreadCount: (count) => events.counts.push(count),
    },
  );
  return { inbox, events };
}

describe('Inbox', () => {
  it('emits each notification once, whether it comes in a backlog or live', () => {
    const { inbox, events } = recording();
    const [a, b, c] = [notification(), notification(), notification()];
    inbox.apply({ type: 'hello', user_id: 'alice', connection_id: '1', unread_count: 2 });
    inbox.apply({ type: 'notifications', items: [a, b], more: false });
    inbox.apply({ type: 'notification', data: b });
    inbox.apply({ type: 'notification', data: c });
    inbox.apply({ type: 'notifications', items: [b, c], more: false });
    assert.deepEqual(
      events.notifications.map(([n, meta]) => [n.id, meta.backlog]),
      [
        [a.id, true],
        [b.id, true],
        [c.id, false],
      ],
    );
    assert.deepEqual(events.backlogs, [
      { count: 2, more: false },
      { count: 0, more: false },
    ]);
    assert.equal(inbox.lastId, c.id);
  });

  it('counts unread as the server does: hello sets, new adds, read takes off, read_all zeroes', () => {
    const { inbox, events } = recording();
    const [a, b] = [notification(), notification()];
    inbox.apply({ type: 'hello', user_id: 'alice', connection_id: '1', unread_count: 5 });
    inbox.apply({ type: 'notifications', items: [a], more: false });
    inbox.apply({ type: 'notification', data: b });
    inbox.apply({ type: 'notification', data: notification({ read: true }) });
    inbox.apply({ type: 'read', ids: [a.id, b.id] });
    inbox.apply({ type: 'read', ids: [a.id] }); // heard twice (REST echo, then the stream): counted once
    inbox.apply({ type: 'unread_count', unread_count: 4 });
    inbox.apply({ type: 'read_all' });
    assert.deepEqual(events.counts, [5, 6, 4, 0]);
    assert.deepEqual(events.reads, [
      { ids: [a.id, b.id], all: false },
      { ids: [], all: true },
    ]);
  });

  it('keeps the newest id even when frames arrive out of order', () => {
    const { inbox } = recording();
    const [a, b] = [notification(), notification()];
    inbox.apply({ type: 'notification', data: b });
    inbox.apply({ type: 'notification', data: a });
    assert.equal(inbox.lastId, b.id);
  });

  it('forgets ids past its bound, the oldest first', () => {
    const { inbox, events } = recording(2);
    const [a, b, c] = [notification(), notification(), notification()];
    for (const n of [a, b, c]) inbox.apply({ type: 'notification', data: n });
    inbox.apply({ type: 'notification', data: c });
    inbox.apply({ type: 'notification', data: a }); // forgotten, so admitted again
    assert.deepEqual(
      events.notifications.map(([n]) => n.id),
      [a.id, b.id, c.id, a.id],
    );
  });

  it('hands a joining tab the newest unread notifications, and the tab starts from them', () => {
    const { inbox } = recording();
    const items = [notification(), notification(), notification(), notification(), notification()];
    inbox.apply({ type: 'hello', user_id: 'alice', connection_id: '1', unread_count: 5 });
    inbox.apply({ type: 'notifications', items, more: false });
    inbox.apply({ type: 'read', ids: [items[4]?.id ?? ''] });
    const snapshot = inbox.snapshot();
    // The newest three were kept (the bound); the newest of them is read now.
    assert.deepEqual(
      snapshot.unread.map((n) => n.id),
      [items[2]?.id, items[3]?.id],
    );
    assert.equal(snapshot.unreadCount, 4);
    assert.equal(snapshot.lastId, items[4]?.id);

    const joining = recording();
    joining.inbox.restore(snapshot);
    assert.equal(joining.events.notifications.length, 2);
    assert.ok(joining.events.notifications.every(([, meta]) => meta.backlog));
    assert.deepEqual(joining.events.counts, [4]);
    assert.equal(joining.inbox.lastId, items[4]?.id);
  });
});
