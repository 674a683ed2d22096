/**
 * What each frame a transport delivers means: inbox frames go to the inbox, topic frames through the watch
 * list (which knows whether a snapshot resumes), an `error` without a topic is a `ServerError`. Unknown
 * frame types never get here (`frames.ts` drops them), and `resync`, `pong` and `close` need nothing: the
 * close that follows a resync resumes with `since` like any other.
 */

import type { ConnectionSink } from './connection.js';
import { ServerError } from './events.js';
import type { TransportFrame } from './types.js';
import type { WatchList } from './watch-list.js';

export interface FrameTargets {
  sink: ConnectionSink;
  watchList: WatchList;
  /** The newest notification id seen. */
  since: () => string | undefined;
}

/** Routes `frame`; `fetch-more` when a backlog said `more` and moved `since` on: reconnect to fetch the rest. */
export function routeFrame(frame: TransportFrame, to: FrameTargets): 'done' | 'fetch-more' {
  switch (frame.type) {
    case 'hello':
    case 'notification':
    case 'read':
    case 'read_all':
    case 'unread_count':
      to.sink.frame(frame);
      return 'done';
    case 'notifications': {
      const before = to.since();
      to.sink.frame(frame);
      // Only if the batch moved `since` on, so a server that says `more` with nothing new cannot loop.
      return frame.more && to.since() !== before ? 'fetch-more' : 'done';
    }
    case 'subscribed':
    case 'unsubscribed':
    case 'event': {
      const update = to.watchList.translate(frame);
      if (update !== undefined) to.sink.topic(update);
      return 'done';
    }
    case 'error': {
      if (frame.topic === undefined) {
        to.sink.error(new ServerError(frame.code, frame.message));
        return 'done';
      }
      const update = to.watchList.translate({ ...frame, topic: frame.topic });
      if (update !== undefined) to.sink.topic(update);
      return 'done';
    }
    case 'resync':
    case 'pong':
    case 'close':
      return 'done';
  }
}
