/**
 * A bounded memory of ids, for "no duplicate reaches the application".
 *
 * A resume with `since`, a switch between transports and a leader takeover may each deliver a notification
 * that was already delivered; they overlap by a few frames, never by thousands, so remembering the most
 * recently seen ids (least recently seen dropped first) is enough, and memory stays flat however long the
 * page lives.
 */
export declare class RecentIds {
    private readonly capacity;
    private readonly ids;
    constructor(capacity: number);
    get size(): number;
    has(id: string): boolean;
    /** Remembers `id`; returns whether it is new. Seeing an id again makes it the most recent. */
    add(id: string): boolean;
}
