/**
 * Topics over REST, for the polling transport. It answers a `subscribe` as the server's `/ws` does — a
 * `history_gone` error if history no longer reaches `since`, then `subscribed` with the state, then the events
 * after `since` — and then reads `GET /api/v1/topics/{topic}/events?since=N` at every poll, so the rest of the
 * client cannot tell it from a socket.
 */
import { type RestApi } from '../rest.js';
import type { ServerFrame } from '../types.js';
export declare class TopicPoller {
    private readonly rest;
    private readonly emit;
    private readonly onError;
    private readonly topics;
    constructor(rest: RestApi, emit: (frame: ServerFrame) => void, onError: (error: Error) => void);
    /** Starts (or restarts, as a re-subscribe does) watching `topic`, and reads it now. */
    subscribe(topic: string, since: number | undefined): Promise<void>;
    unsubscribe(topic: string): void;
    /** One read of every watched topic. */
    poll(): Promise<void>;
    private read;
    private apply;
    /** A read still matters only if the topic was not unsubscribed or re-subscribed meanwhile. */
    private current;
}
