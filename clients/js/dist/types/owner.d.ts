/**
 * The tab that holds the connection: the connection itself, the topics every tab watches, and marking read
 * for every tab. Everything the connection learns goes out through `publish` as an `Update`, which the tab
 * applies and, when tabs share, broadcasts.
 *
 * Marking read goes over the WebSocket when it is open (one frame for up to 1,000 ids; the server's `read`
 * frame, to every connection, confirms it), else over REST. The server echoes a REST mark to every open
 * stream; when none is open (polling, or between connections) the owner publishes the reads itself, with
 * the unread count read back, so every tab still hears of them. The inbox drops a read it heard already.
 */
import { type ConnectionOptions } from './connection.js';
import type { RestApi } from './rest.js';
import type { WatchRequest } from './topics.js';
import type { TransportFactory } from './transports/transport.js';
import type { Update } from './update.js';
export type OwnerOptions = Omit<ConnectionOptions, 'watchList' | 'tokenVerdict' | 'mayWatch' | 'transports'> & {
    transports: readonly TransportFactory[];
    rest: RestApi;
};
export declare class ConnectionOwner {
    private readonly options;
    private readonly publish;
    private readonly watchList;
    private readonly connection;
    constructor(options: OwnerOptions, publish: (update: Update) => void, onError: (error: Error) => void);
    start(): void;
    stop(): void;
    /** The browser is back online. */
    retryNow(): void;
    /** Sets what one tab (`owner`) watches. */
    watch(owner: string, requests: readonly WatchRequest[]): void;
    /** A tab went away: its topics go with it. */
    forget(owner: string): void;
    markRead(ids: readonly string[]): Promise<void>;
    markAllRead(): Promise<void>;
    private markReadOverRest;
}
