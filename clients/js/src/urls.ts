/**
 * The server's addresses, from the one `url` the application gives: `https://herald.example.com`, a path
 * prefix behind a proxy (`https://example.com/herald`), a `ws(s)://` form of either, or a relative URL
 * (`/herald`) resolved against the page.
 */

export type Query = Record<string, string | undefined>;

export class Endpoints {
  /** The server's base as http(s). */
  private readonly base: URL;
  /** Its path prefix without a trailing slash: empty at the root. */
  private readonly prefix: string;

  constructor(url: string, page: string | undefined = pageLocation()) {
    const parsed = page === undefined ? new URL(url) : new URL(url, page);
    if (parsed.protocol === 'ws:') parsed.protocol = 'http:';
    if (parsed.protocol === 'wss:') parsed.protocol = 'https:';
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new TypeError(`Herald url must be http(s) or ws(s), got ${parsed.protocol}`);
    }
    parsed.search = '';
    parsed.hash = '';
    this.base = parsed;
    this.prefix = parsed.pathname.replace(/\/+$/, '');
  }

  /** A key naming this server, for the lock and channel tabs share. */
  get origin(): string {
    return this.base.origin + this.prefix;
  }

  http(path: string, query: Query = {}): string {
    return this.build(path, query).toString();
  }

  ws(path: string, query: Query = {}): string {
    const url = this.build(path, query);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.toString();
  }

  private build(path: string, query: Query): URL {
    const url = new URL(this.base.toString());
    url.pathname = this.prefix + path;
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(key, value);
    }
    return url;
  }
}

/** A topic as a path segment: `order:1` stays readable (a colon is allowed in a path segment). */
export function topicSegment(topic: string): string {
  return encodeURIComponent(topic).replace(/%3A/gi, ':');
}

function pageLocation(): string | undefined {
  const location = (globalThis as { location?: { href?: unknown } }).location;
  return typeof location?.href === 'string' ? location.href : undefined;
}
