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
export declare class Inbox {
    private readonly options;
    private readonly sink;
    private readonly seen;
    /** Ids known to be read, so a read reported twice (REST answer, then the stream) counts once. */
    private readonly knownRead;
    private readonly unread;
    private newest;
    private count;
    constructor(options: InboxOptions, sink: InboxSink);
    /** The newest notification id seen: where a new connection resumes (`since`). */
    get lastId(): string | undefined;
    get unreadCount(): number | undefined;
    apply(frame: InboxFrame): void;
    snapshot(): InboxSnapshot;
    /** Starts from another tab's snapshot: its unread notifications arrive as a backlog. */
    restore(snapshot: InboxSnapshot): void;
    private backlog;
    /** Emits a notification not seen before; returns whether it was new. */
    private admit;
    private read;
    private keepUnread;
    private advance;
    private setCount;
}
