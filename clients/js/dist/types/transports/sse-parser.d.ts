/**
 * A `text/event-stream` parser, following the HTML standard's rules: lines end with CRLF, LF or CR (a CR at
 * the end of one chunk may pair with an LF at the start of the next); a blank line dispatches; `:` starts a
 * comment; one space after the colon is dropped; `data` lines join with newlines; an event without data is
 * not dispatched. Fed decoded text in whatever chunks the network delivers.
 */
export interface SseEvent {
    /** The `event:` field, `message` when absent. */
    event: string;
    data: string;
    /** The last `id:` seen on the stream, as the standard keeps it across events. */
    id: string | undefined;
}
export declare class SseParser {
    private pending;
    private skipLeadingLf;
    private started;
    private eventType;
    private data;
    private lastId;
    /** Parses a chunk; returns the events it completed. */
    push(chunk: string): SseEvent[];
    private line;
    private dispatch;
}
