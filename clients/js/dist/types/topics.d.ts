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
export type TopicMessage = {
    type: 'state';
    topic: string;
    state: TopicState | null;
} | {
    type: 'event';
    topic: string;
    seq: number;
    event: TopicEvent;
} | {
    type: 'error';
    topic: string;
    code: string;
    message: string;
};
export type TopicHandler = (message: TopicMessage) => void;
/** A topic frame as the connection saw it, annotated with whether the events after its resume follow. */
export type TopicUpdate = {
    kind: 'snapshot';
    topic: string;
    state: TopicState | null;
    resumed: boolean;
} | {
    kind: 'event';
    topic: string;
    seq: number;
    event: TopicEvent;
} | {
    kind: 'error';
    topic: string;
    code: string;
    message: string;
};
/** What the tab asks the connection to watch: each topic, its place, and whether a handler awaits a snapshot. */
export interface WatchRequest {
    topic: string;
    /** The oldest place among its handlers that have one: resume after it. */
    seq: number | undefined;
    /** A handler awaits its first snapshot. */
    fresh: boolean;
}
export declare class TopicRouter {
    private readonly topics;
    /** Adds a handler; returns the function that removes it. */
    add(topic: string, handler: TopicHandler, report: (error: unknown) => void): () => void;
    watchRequests(): WatchRequest[];
    deliver(update: TopicUpdate): void;
}
