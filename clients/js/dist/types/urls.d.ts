/**
 * The server's addresses, from the one `url` the application gives: `https://herald.example.com`, a path
 * prefix behind a proxy (`https://example.com/herald`), a `ws(s)://` form of either, or a relative URL
 * (`/herald`) resolved against the page.
 */
export type Query = Record<string, string | undefined>;
export declare class Endpoints {
    /** The server's base as http(s). */
    private readonly base;
    /** Its path prefix without a trailing slash: empty at the root. */
    private readonly prefix;
    constructor(url: string, page?: string | undefined);
    /** A key naming this server, for the lock and channel tabs share. */
    get origin(): string;
    http(path: string, query?: Query): string;
    ws(path: string, query?: Query): string;
    private build;
}
/** A topic as a path segment: `order:1` stays readable (a colon is allowed in a path segment). */
export declare function topicSegment(topic: string): string;
