/**
 * The topics the connection watches on behalf of every tab (the union of what each tab asked for), where
 * each one's events were read up to, and what each topic frame means.
 *
 * It turns the connection's topic frames into `TopicUpdate`s: a `subscribed` frame is `resumed` when the
 * subscribe carried a `since` and no `history_gone` came before it, so the events after `since` follow.
 * Topics the server refused (`forbidden`, `too_many_subscriptions`) are not asked for again on the next
 * connect, until a tab asks for them anew.
 */

import type { TopicUpdate, WatchRequest } from './topics.js';
import type { TopicFrame } from './types.js';

interface Watched {
  /** The tabs (or other owners) that want it. */
  owners: Set<string>;
  /** The newest seq the connection has seen. */
  seq: number | undefined;
  refused: boolean;
  /** Set when a subscribe is sent: whether it carried a `since`. */
  resuming: boolean;
  gone: boolean;
}

/** A topic's `error` frame (`forbidden`, `too_many_subscriptions`, `history_gone`). */
type TopicError = { type: 'error'; topic: string; code: string; message: string };

/** What changed on the connection's side when an owner's wishes changed. */
export interface WatchChange {
  /** Newly watched: subscribe (with `since` when known). */
  added: string[];
  /** No owner left: unsubscribe. */
  removed: string[];
  /** Watched already, but a handler awaits a snapshot: subscribe again, with `since`. */
  refresh: string[];
}

export class WatchList {
  private readonly topics = new Map<string, Watched>();

  /** Sets what `owner` wants; the place it reports seeds a topic the connection did not watch yet. */
  set(owner: string, requests: readonly WatchRequest[]): WatchChange {
    const change: WatchChange = { added: [], removed: [], refresh: [] };
    const wanted = new Set(requests.map((r) => r.topic));
    for (const request of requests) {
      const entry = this.topics.get(request.topic);
      if (entry === undefined) {
        this.topics.set(request.topic, {
          owners: new Set([owner]),
          seq: request.seq,
          refused: false,
          resuming: false,
          gone: false,
        });
        change.added.push(request.topic);
        continue;
      }
      const isNewOwner = !entry.owners.has(owner);
      entry.owners.add(owner);
      if (entry.refused && isNewOwner) {
        entry.refused = false;
        change.added.push(request.topic);
      } else if (request.fresh && !entry.refused) {
        change.refresh.push(request.topic);
      }
    }
    for (const [topic, entry] of this.topics) {
      if (!entry.owners.has(owner) || wanted.has(topic)) continue;
      entry.owners.delete(owner);
      if (entry.owners.size === 0) {
        this.topics.delete(topic);
        change.removed.push(topic);
      }
    }
    return change;
  }

  /** Drops an owner that went away (a tab that closed). */
  forget(owner: string): WatchChange {
    return this.set(owner, []);
  }

  /** The topics to ask for on a connect. */
  names(): string[] {
    return [...this.topics].filter(([, entry]) => !entry.refused).map(([topic]) => topic);
  }

  /** Where to resume `topic`: its `since`, if the connection has read any of it. */
  since(topic: string): number | undefined {
    return this.topics.get(topic)?.seq;
  }

  /** Records that a subscribe is on its way, with or without a `since`. */
  subscribing(topic: string, since: number | undefined): void {
    const entry = this.topics.get(topic);
    if (entry === undefined) return;
    entry.resuming = since !== undefined;
    entry.gone = false;
  }

  /** What a topic frame means, or undefined for a topic nobody watches any more. */
  translate(frame: TopicFrame | TopicError): TopicUpdate | undefined {
    const entry = this.topics.get(frame.topic);
    if (entry === undefined) return undefined;
    switch (frame.type) {
      case 'subscribed': {
        const resumed = entry.resuming && !entry.gone;
        entry.resuming = false;
        entry.gone = false;
        // Resumed, the events after `since` follow and move the place on; otherwise the state is the place.
        if (!resumed) entry.seq = frame.state?.seq ?? 0;
        return { kind: 'snapshot', topic: frame.topic, state: frame.state, resumed };
      }
      case 'event':
        if (entry.seq === undefined || frame.seq > entry.seq) entry.seq = frame.seq;
        return { kind: 'event', topic: frame.topic, seq: frame.seq, event: frame.event };
      case 'unsubscribed':
        return undefined;
      case 'error':
        if (frame.code === 'history_gone') entry.gone = true;
        if (frame.code === 'forbidden' || frame.code === 'too_many_subscriptions') entry.refused = true;
        return { kind: 'error', topic: frame.topic, code: frame.code, message: frame.message };
    }
  }
}
