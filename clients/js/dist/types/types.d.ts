/**
 * The server's wire types, exactly as Herald sends them (see the "Protocol" and "Status streams" sections of
 * the server's README). Only this module and `frames.ts` know how the wire looks.
 */
/** A notification. Ids are ULIDs, so comparing two ids as strings compares when they were created. */
export interface Notification {
    id: string;
    user_id: string;
    type: string;
    title: string | null;
    message: string | null;
    data: unknown;
    /** RFC 3339, UTC. */
    created_at: string;
    delivered: boolean;
    delivered_at: string | null;
    read: boolean;
    read_at: string | null;
}
/** A topic's latest state: the newest status and progress, and its data merged key by key. */
export interface TopicState {
    topic: string;
    seq: number;
    status: string | null;
    progress: number | null;
    data: Record<string, unknown>;
    updated_at: string;
    expires_at: string;
}
/** One event of a topic; `seq` numbers a topic's events 1, 2, … */
export interface TopicEvent {
    seq: number;
    type: string;
    status: string | null;
    progress: number | null;
    data: Record<string, unknown>;
    at: string;
}
/** What the server sends over `/ws`, and over SSE as each event's `data`. */
export type ServerFrame = {
    type: 'hello';
    user_id: string;
    connection_id: string;
    unread_count: number;
} | {
    type: 'notifications';
    items: Notification[];
    more: boolean;
} | {
    type: 'notification';
    data: Notification;
} | {
    type: 'read';
    ids: string[];
} | {
    type: 'read_all';
} | {
    type: 'pong';
} | {
    type: 'resync';
} | {
    type: 'error';
    code: string;
    message: string;
    topic?: string;
} | {
    type: 'subscribed';
    topic: string;
    state: TopicState | null;
} | {
    type: 'unsubscribed';
    topic: string;
} | {
    type: 'event';
    topic: string;
    seq: number;
    event: TopicEvent;
}
/** SSE only: where a WebSocket would close with `code`, the stream says so and ends. */
 | {
    type: 'close';
    code: number;
    reason: string;
};
/** What a client may send over `/ws`. */
export type ClientFrame = {
    type: 'mark_read';
    ids: string[];
} | {
    type: 'mark_all_read';
} | {
    type: 'ping';
} | {
    type: 'subscribe';
    topic: string;
    since?: number;
} | {
    type: 'unsubscribe';
    topic: string;
};
/** The client's own frame: an unread count read over REST (while polling, or after marking over REST). */
export interface UnreadCountFrame {
    type: 'unread_count';
    unread_count: number;
}
/** What a transport hands the connection: the server's frames, or the poller's count. */
export type TransportFrame = ServerFrame | UnreadCountFrame;
/** The frames about the inbox. */
export type InboxFrame = Extract<ServerFrame, {
    type: 'hello' | 'notifications' | 'notification' | 'read' | 'read_all';
}> | UnreadCountFrame;
/** The frames about topics. */
export type TopicFrame = Extract<ServerFrame, {
    type: 'subscribed' | 'unsubscribed' | 'event';
}>;
/** A page of `GET /api/v1/notifications`, newest first. */
export interface NotificationPage {
    items: Notification[];
    limit: number;
    total: number;
    unread_count: number;
    /** The `before` of the next (older) page; null when no page follows. */
    next_before: string | null;
    /** Only with offset paging. */
    page?: number;
}
/** `GET /api/v1/topics/{topic}/events?since=N`: the polling fallback for topics. */
export interface TopicHistory {
    topic: string;
    state: TopicState | null;
    events: TopicEvent[];
    /** History no longer reaches back to `since`: start again from `state`. */
    gone: boolean;
}
/** Close codes the server uses, from the README's protocol section. */
export declare const CloseCode: {
    readonly goingAway: 1001;
    readonly abnormal: 1006;
    readonly internal: 1011;
    readonly idleTimeout: 4000;
    readonly tokenExpired: 4001;
    readonly slowConsumer: 4008;
    readonly resync: 4009;
};
