/**
 * A tab's topic handlers, and what each one is told.
 *
 * Every handler starts with a snapshot (`state`), then gets each event after it exactly once, in `seq`
 * order. Each handler keeps its own place (the last seq it got), because handlers join at different times:
 * a handler added to a topic already watched waits for a fresh snapshot, holding back the events that
 * arrive meanwhile, and then gets those newer than the snapshot.
 *
 * Snapshots reach every handler of the topic, and each decides with `resumed`: a resumed snapshot is
 * followed by the events after the resume point, so a handler that already has a place ignores it; one that
 * is not (history gone, an SSE reconnect, which names topics without a seq) replaces what the handler had
 * when it is newer.
 */

import type { TopicEvent, TopicState } from './types.js';

/** What a topic handler receives. */
export type TopicMessage =
  | { type: 'state'; topic: string; state: TopicState | null }
  | { type: 'event'; topic: string; seq: number; event: TopicEvent }
  | { type: 'error'; topic: string; code: string; message: string };

export type TopicHandler = (message: TopicMessage) => void;

/** A topic frame as the connection saw it, annotated with whether the events after its resume follow. */
export type TopicUpdate =
  | { kind: 'snapshot'; topic: string; state: TopicState | null; resumed: boolean }
  | { kind: 'event'; topic: string; seq: number; event: TopicEvent }
  | { kind: 'error'; topic: string; code: string; message: string };

/** What the tab asks the connection to watch: each topic, its place, and whether a handler awaits a snapshot. */
export interface WatchRequest {
  topic: string;
  /** The oldest place among its handlers that have one: resume after it. */
  seq: number | undefined;
  /** A handler awaits its first snapshot. */
  fresh: boolean;
}

interface Watcher {
  handler: TopicHandler;
  /** The last seq this handler got; undefined until its first snapshot. */
  seq: number | undefined;
  /** Events that came before its first snapshot. */
  held: Extract<TopicUpdate, { kind: 'event' }>[];
}

/** Events held for one handler at most while it waits for its snapshot. */
const MAX_HELD = 1000;

export class TopicRouter {
  private readonly topics = new Map<string, Set<Watcher>>();

  /** Adds a handler; returns the function that removes it. */
  add(topic: string, handler: TopicHandler, report: (error: unknown) => void): () => void {
    const watcher: Watcher = { handler: guarded(handler, report), seq: undefined, held: [] };
    let set = this.topics.get(topic);
    if (set === undefined) {
      set = new Set();
      this.topics.set(topic, set);
    }
    set.add(watcher);
    return () => {
      set.delete(watcher);
      if (set.size === 0 && this.topics.get(topic) === set) this.topics.delete(topic);
    };
  }

  watchRequests(): WatchRequest[] {
    return [...this.topics].map(([topic, watchers]) => {
      const places = [...watchers].map((w) => w.seq).filter((seq): seq is number => seq !== undefined);
      return {
        topic,
        seq: places.length > 0 ? Math.min(...places) : undefined,
        fresh: [...watchers].some((w) => w.seq === undefined),
      };
    });
  }

  deliver(update: TopicUpdate): void {
    const watchers = this.topics.get(update.topic);
    if (watchers === undefined) return;
    for (const watcher of [...watchers]) {
      if (update.kind === 'snapshot') snapshot(watcher, update);
      else if (update.kind === 'event') event(watcher, update);
      else watcher.handler({ type: 'error', topic: update.topic, code: update.code, message: update.message });
    }
  }
}

function snapshot(watcher: Watcher, update: Extract<TopicUpdate, { kind: 'snapshot' }>): void {
  const seq = update.state?.seq ?? 0;
  if (watcher.seq === undefined) {
    watcher.seq = seq;
    watcher.handler({ type: 'state', topic: update.topic, state: update.state });
    const held = watcher.held.sort((a, b) => a.seq - b.seq);
    watcher.held = [];
    for (const e of held) event(watcher, e);
    return;
  }
  if (update.resumed) return;
  // A snapshot that does not continue the handler's events replaces its state when it is newer; a topic
  // that expired reads as null and starts again from seq 0.
  if (update.state === null ? watcher.seq !== 0 : seq > watcher.seq) {
    watcher.seq = seq;
    watcher.handler({ type: 'state', topic: update.topic, state: update.state });
  }
}

function event(watcher: Watcher, update: Extract<TopicUpdate, { kind: 'event' }>): void {
  if (watcher.seq === undefined) {
    if (watcher.held.length >= MAX_HELD) watcher.held.shift();
    watcher.held.push(update);
    return;
  }
  if (update.seq <= watcher.seq) return;
  watcher.seq = update.seq;
  watcher.handler({ type: 'event', topic: update.topic, seq: update.seq, event: update.event });
}

function guarded(handler: TopicHandler, report: (error: unknown) => void): TopicHandler {
  return (message) => {
    try {
      handler(message);
    } catch (error) {
      report(error);
    }
  };
}
