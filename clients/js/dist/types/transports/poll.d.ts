/**
 * The last resort: REST at an interval, when neither a WebSocket nor a stream gets through (a proxy that
 * buffers responses, a network that kills long requests).
 *
 * It speaks in the same frames as the server, so the rest of the client is unchanged: the first poll is
 * the connect (an `unread_count`, then a `notifications` backlog: the unread ones of the newest page, or with
 * `since` everything after it); later polls send each newer notification as a `notification`, ids that turned
 * read as `read`, and the count. Newer notifications are found by paging newest-first with the `before`
 * cursor until the last id seen, so a burst between two polls is not cut to one page.
 */
import { type RestApi } from '../rest.js';
import { type Timers } from '../timers.js';
import type { TransportFactory } from './transport.js';
export interface PollTransportOptions {
    rest: RestApi;
    timers: Timers;
    intervalMs: number;
    /** Notifications read per request while looking for new ones (1–100). */
    pageSize: number;
    /** Pages read at most in one poll; past that the catch-up is cut and says so through `onError`. */
    maxPages: number;
}
export declare function pollTransport(options: PollTransportOptions): TransportFactory;
