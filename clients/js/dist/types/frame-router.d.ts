/**
 * What each frame a transport delivers means: inbox frames go to the inbox, topic frames through the watch
 * list (which knows whether a snapshot resumes), an `error` without a topic is a `ServerError`. Unknown
 * frame types never get here (`frames.ts` drops them), and `resync`, `pong` and `close` need nothing: the
 * close that follows a resync resumes with `since` like any other.
 */
import type { ConnectionSink } from './connection.js';
import type { TransportFrame } from './types.js';
import type { WatchList } from './watch-list.js';
export interface FrameTargets {
    sink: ConnectionSink;
    watchList: WatchList;
    /** The newest notification id seen. */
    since: () => string | undefined;
}
/** Routes `frame`; `fetch-more` when a backlog said `more` and moved `since` on: reconnect to fetch the rest. */
export declare function routeFrame(frame: TransportFrame, to: FrameTargets): 'done' | 'fetch-more';
