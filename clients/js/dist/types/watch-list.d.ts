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
/** A topic's `error` frame (`forbidden`, `too_many_subscriptions`, `history_gone`). */
type TopicError = {
    type: 'error';
    topic: string;
    code: string;
    message: string;
};
/** What changed on the connection's side when an owner's wishes changed. */
export interface WatchChange {
    /** Newly watched: subscribe (with `since` when known). */
    added: string[];
    /** No owner left: unsubscribe. */
    removed: string[];
    /** Watched already, but a handler awaits a snapshot: subscribe again, with `since`. */
    refresh: string[];
}
export declare class WatchList {
    private readonly topics;
    /** Sets what `owner` wants; the place it reports seeds a topic the connection did not watch yet. */
    set(owner: string, requests: readonly WatchRequest[]): WatchChange;
    /** Drops an owner that went away (a tab that closed). */
    forget(owner: string): WatchChange;
    /** The topics to ask for on a connect. */
    names(): string[];
    /** Where to resume `topic`: its `since`, if the connection has read any of it. */
    since(topic: string): number | undefined;
    /** Records that a subscribe is on its way, with or without a `since`. */
    subscribing(topic: string, since: number | undefined): void;
    /** What a topic frame means, or undefined for a topic nobody watches any more. */
    translate(frame: TopicFrame | TopicError): TopicUpdate | undefined;
}
export {};
