/**
 * The tab's view of the inbox: turns frames into the application's events, each notification exactly once.
 *
 * It keeps what resuming needs — the newest id seen (ids are ULIDs, so the newest is the greatest string) —
 * the unread count, and the newest unread notifications, which a leader hands to a tab that joins later.
 *
 * The count follows the server: a `hello` (or a count read over REST) sets it, a new unread notification
 * adds one, `read` takes off the ids it names (the server names only ids that were unread), `read_all`
 * zeroes it. A backlog changes nothing: the `hello` before it counted it already.
 */

import { RecentIds } from './dedupe.js';
import type { BacklogInfo, NotificationMeta, ReadEvent } from './events.js';
import type { InboxFrame, Notification } from './types.js';

export interface InboxSink {
  notification(notification: Notification, meta: NotificationMeta): void;
  backlog(info: BacklogInfo): void;
  read(event: ReadEvent): void;
  unreadCount(count: number): void;
}

/** What a tab that joins needs to start where this one is. */
export interface InboxSnapshot {
  lastId: string | undefined;
  unreadCount: number | undefined;
  /** The newest unread notifications, oldest first. */
  unread: Notification[];
}

export interface InboxOptions {
  /** Ids remembered to drop duplicates. */
  dedupeSize: number;
  /** Unread notifications kept for a joining tab (the server's own unread backlog is 100). */
  unreadKept: number;
}

export class Inbox {
  private readonly seen: RecentIds;
  /** Ids known to be read, so a read reported twice (REST answer, then the stream) counts once. */
  private readonly knownRead: RecentIds;
  private readonly unread = new Map<string, Notification>();
  private newest: string | undefined;
  private count: number | undefined;

  constructor(
    private readonly options: InboxOptions,
    private readonly sink: InboxSink,
  ) {
    this.seen = new RecentIds(options.dedupeSize);
    this.knownRead = new RecentIds(options.dedupeSize);
  }

  /** The newest notification id seen: where a new connection resumes (`since`). */
  get lastId(): string | undefined {
    return this.newest;
  }

  get unreadCount(): number | undefined {
    return this.count;
  }

  apply(frame: InboxFrame): void {
    switch (frame.type) {
      case 'hello':
        this.setCount(frame.unread_count);
        break;
      case 'unread_count':
        this.setCount(frame.unread_count);
        break;
      case 'notifications':
        this.backlog(frame.items, frame.more);
        break;
      case 'notification':
        if (this.admit(frame.data, false) && !frame.data.read && this.count !== undefined) {
          this.setCount(this.count + 1);
        }
        break;
      case 'read':
        this.read(frame.ids);
        break;
      case 'read_all':
        this.unread.clear();
        this.sink.read({ ids: [], all: true });
        this.setCount(0);
        break;
    }
  }

  snapshot(): InboxSnapshot {
    const unread = [...this.unread.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { lastId: this.newest, unreadCount: this.count, unread };
  }

  /** Starts from another tab's snapshot: its unread notifications arrive as a backlog. */
  restore(snapshot: InboxSnapshot): void {
    this.advance(snapshot.lastId);
    if (snapshot.unreadCount !== undefined) this.setCount(snapshot.unreadCount);
    this.backlog(snapshot.unread, false);
  }

  private backlog(items: readonly Notification[], more: boolean): void {
    let count = 0;
    for (const notification of items) {
      if (this.admit(notification, true)) count += 1;
    }
    this.sink.backlog({ count, more });
  }

  /** Emits a notification not seen before; returns whether it was new. */
  private admit(notification: Notification, backlog: boolean): boolean {
    this.advance(notification.id);
    if (!this.seen.add(notification.id)) return false;
    if (notification.read) this.knownRead.add(notification.id);
    else this.keepUnread(notification);
    this.sink.notification(notification, { backlog });
    return true;
  }

  private read(ids: readonly string[]): void {
    const newly = ids.filter((id) => this.knownRead.add(id));
    if (newly.length === 0) return;
    for (const id of newly) this.unread.delete(id);
    this.sink.read({ ids: newly, all: false });
    if (this.count !== undefined) this.setCount(Math.max(0, this.count - newly.length));
  }

  private keepUnread(notification: Notification): void {
    this.unread.set(notification.id, notification);
    if (this.unread.size <= this.options.unreadKept) return;
    let oldest: string | undefined;
    for (const id of this.unread.keys()) if (oldest === undefined || id < oldest) oldest = id;
    if (oldest !== undefined) this.unread.delete(oldest);
  }

  private advance(id: string | undefined): void {
    if (id !== undefined && (this.newest === undefined || id > this.newest)) this.newest = id;
  }

  private setCount(count: number): void {
    if (count === this.count) return;
    this.count = count;
    this.sink.unreadCount(count);
  }
}
