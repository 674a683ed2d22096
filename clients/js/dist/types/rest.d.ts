/**
 * The REST API a user token may call: the inbox (list, count, mark read), topic states and histories (the
 * polling fallback), and the token check that tells a refused token from a broken network.
 */
import type { Notification, NotificationPage, TopicHistory, TopicState } from './types.js';
import { Endpoints } from './urls.js';
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;
/** An HTTP error answer: the status and the server's `{"error":{"code","message"}}`. */
export declare class HttpError extends Error {
    readonly status: number;
    readonly code: string;
    constructor(status: number, code: string, message: string);
}
/** `list()`'s query: page either by cursor (`before`, stable while notifications arrive) or by offset. */
export interface ListOptions {
    /** Offset paging (kept by the server for compatibility); cannot be combined with `before`. */
    page?: number;
    /** The cursor: a page's `next_before`, for the page after it. */
    before?: string;
    /** 1 to 100; the server's default is 10. */
    limit?: number;
    unread?: boolean;
}
/** What the server made of a token: `refused` is a 401, `unknown` anything that did not answer. */
export type TokenVerdict = 'accepted' | 'refused' | 'unknown';
export declare class RestApi {
    private readonly endpoints;
    private readonly fetcher;
    private readonly getToken;
    constructor(endpoints: Endpoints, fetcher: FetchLike, getToken: () => Promise<string>);
    list(options?: ListOptions): Promise<NotificationPage>;
    unreadCount(): Promise<number>;
    markRead(id: string): Promise<Notification>;
    markAllRead(): Promise<number>;
    /** The topic's state, or null when the topic is unknown or expired (404). */
    topicState(topic: string): Promise<TopicState | null>;
    /** The state and the events after `since`; an unknown topic reads as no state and no events. */
    topicHistory(topic: string, since: number): Promise<TopicHistory>;
    /** Whether the token may watch `topic`: false on 403 only, so a network failure never refuses a topic. */
    mayWatch(topic: string): Promise<boolean>;
    /**
     * Asks the server about `token`. A browser shows a WebSocket refused with 401 only as close code 1006, the
     * same as a network failure, so after a socket fails before opening this tells the two apart.
     */
    tokenVerdict(token: string): Promise<TokenVerdict>;
    private json;
}
/** Reads the server's error body, falling back to the status line for a proxy's HTML error page. */
export declare function httpError(response: Response): Promise<HttpError>;
