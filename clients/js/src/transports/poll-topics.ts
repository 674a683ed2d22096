/**
 * Topics over REST, for the polling transport. It answers a `subscribe` as the server's `/ws` does — a
 * `history_gone` error if history no longer reaches `since`, then `subscribed` with the state, then the events
 * after `since` — and then reads `GET /api/v1/topics/{topic}/events?since=N` at every poll, so the rest of the
 * client cannot tell it from a socket.
 */

import { HttpError, type RestApi } from '../rest.js';
import type { ServerFrame, TopicHistory } from '../types.js';

interface Polled {
  /** The newest seq passed on; undefined until the first answer. */
  seq: number | undefined;
  /** The `since` the subscribe asked for, used by the first read only. */
  since: number | undefined;
  /** A read is in flight: a poll skips the topic rather than read it twice at once. */
  busy: boolean;
}

export class TopicPoller {
  private readonly topics = new Map<string, Polled>();

  constructor(
    private readonly rest: RestApi,
    private readonly emit: (frame: ServerFrame) => void,
    private readonly onError: (error: Error) => void,
  ) {}

  /** Starts (or restarts, as a re-subscribe does) watching `topic`, and reads it now. */
  subscribe(topic: string, since: number | undefined): Promise<void> {
    const entry: Polled = { seq: undefined, since, busy: false };
    this.topics.set(topic, entry);
    return this.read(topic, entry);
  }

  unsubscribe(topic: string): void {
    this.topics.delete(topic);
  }

  /** One read of every watched topic. */
  async poll(): Promise<void> {
    await Promise.all([...this.topics].map(([topic, entry]) => this.read(topic, entry)));
  }

  private async read(topic: string, entry: Polled): Promise<void> {
    if (entry.busy) return;
    entry.busy = true;
    try {
      if (entry.seq === undefined && entry.since === undefined) {
        const state = await this.rest.topicState(topic);
        if (!this.current(topic, entry)) return;
        this.emit({ type: 'subscribed', topic, state });
        entry.seq = state?.seq ?? 0;
        return;
      }
      const first = entry.seq === undefined;
      const history = await this.rest.topicHistory(topic, entry.seq ?? entry.since ?? 0);
      if (this.current(topic, entry)) this.apply(topic, entry, history, first);
    } catch (error) {
      if (!this.current(topic, entry)) return;
      if (error instanceof HttpError && error.status === 403) {
        // As over the socket: the topic is refused, the connection stays.
        this.topics.delete(topic);
        this.emit({ type: 'error', code: 'forbidden', message: error.message, topic });
        return;
      }
      this.onError(error instanceof Error ? error : new Error(String(error)));
    } finally {
      entry.busy = false;
    }
  }

  private apply(topic: string, entry: Polled, history: TopicHistory, first: boolean): void {
    if (history.gone) {
      this.emit({ type: 'error', code: 'history_gone', message: 'history no longer reaches back', topic });
    }
    if (first || history.gone) this.emit({ type: 'subscribed', topic, state: history.state });
    let seq = entry.seq ?? entry.since ?? 0;
    if (history.gone) seq = history.state?.seq ?? 0;
    for (const event of history.events) {
      if (event.seq <= seq) continue;
      this.emit({ type: 'event', topic, seq: event.seq, event });
      seq = event.seq;
    }
    entry.seq = seq;
  }

  /** A read still matters only if the topic was not unsubscribed or re-subscribed meanwhile. */
  private current(topic: string, entry: Polled): boolean {
    return this.topics.get(topic) === entry;
  }
}
