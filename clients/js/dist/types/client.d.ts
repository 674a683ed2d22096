/**
 * `createClient`: the public face. It holds the tab's own state — its inbox (dedupe, newest id, unread
 * count), its topic handlers, its listeners — and a `Link` to the server: its own connection, or the one
 * another tab holds. Everything the connection learns arrives as an `Update` and is applied here in the
 * same way whichever tab holds it.
 */
import { type ClientEvents, type StateDetail } from './events.js';
import { type ClientOptions } from './options.js';
import { type ListOptions } from './rest.js';
import { type TopicHandler } from './topics.js';
import type { NotificationPage } from './types.js';
export interface HeraldClient {
    /** Listens to an event; returns the function that stops listening. */
    on<E extends keyof ClientEvents>(event: E, listener: (...args: ClientEvents[E]) => void): () => void;
    /** Watches a status topic (`namespace:id`); returns the function that stops watching. */
    subscribe(topic: string, handler: TopicHandler): () => void;
    /** Marks notifications read; resolves once the request is sent (WebSocket) or answered (REST). */
    markRead(ids: string | readonly string[]): Promise<void>;
    markAllRead(): Promise<void>;
    /** A page of the inbox over REST, newest first. */
    list(options?: ListOptions): Promise<NotificationPage>;
    /** Stops: closes the connection (another tab takes it over), removes every listener. */
    close(): void;
    /** The state as of the last `state` event. */
    readonly state: StateDetail;
    readonly unreadCount: number | undefined;
    /** The newest notification id seen: where the next connection resumes. */
    readonly lastId: string | undefined;
}
export declare function createClient(options: ClientOptions): HeraldClient;
