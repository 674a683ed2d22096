/**
 * The REST API a user token may call: the inbox (list, count, mark read), topic states and histories (the
 * polling fallback), and the token check that tells a refused token from a broken network.
 */

import type { Notification, NotificationPage, TopicHistory, TopicState } from './types.js';
import { Endpoints, topicSegment, type Query } from './urls.js';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** An HTTP error answer: the status and the server's `{"error":{"code","message"}}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** `list()`'s query: page either by cursor (`before`, stable while notifications arrive) or by offset. */
export interface ListOptions {
  /** Offset paging (kept by the server for compatibility); cannot be combined with `before`. */
  page?: number;
  /** The cursor: a page's `next_before`, for the page after it. */
  before?: string;
  /** 1 to 100; the server's default is 10. */
  limit?: number;
  unread?: boolean;
}

/** What the server made of a token: `refused` is a 401, `unknown` anything that did not answer. */
export type TokenVerdict = 'accepted' | 'refused' | 'unknown';

export class RestApi {
  constructor(
    private readonly endpoints: Endpoints,
    private readonly fetcher: FetchLike,
    private readonly getToken: () => Promise<string>,
  ) {}

  list(options: ListOptions = {}): Promise<NotificationPage> {
    if (options.page !== undefined && options.before !== undefined) {
      return Promise.reject(new TypeError('list(): page and before cannot be combined'));
    }
    return this.json<NotificationPage>('GET', '/api/v1/notifications', {
      page: options.page?.toString(),
      before: options.before,
      limit: options.limit?.toString(),
      unread: options.unread === undefined ? undefined : String(options.unread),
    });
  }

  async unreadCount(): Promise<number> {
    const body = await this.json<{ unread_count: number }>('GET', '/api/v1/notifications/unread-count');
    return body.unread_count;
  }

  markRead(id: string): Promise<Notification> {
    return this.json<Notification>('POST', `/api/v1/notifications/${encodeURIComponent(id)}/read`);
  }

  async markAllRead(): Promise<number> {
    const body = await this.json<{ updated: number }>('POST', '/api/v1/notifications/read-all');
    return body.updated;
  }

  /** The topic's state, or null when the topic is unknown or expired (404). */
  async topicState(topic: string): Promise<TopicState | null> {
    try {
      return await this.json<TopicState>('GET', `/api/v1/topics/${topicSegment(topic)}`);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return null;
      throw error;
    }
  }

  /** The state and the events after `since`; an unknown topic reads as no state and no events. */
  async topicHistory(topic: string, since: number): Promise<TopicHistory> {
    try {
      return await this.json<TopicHistory>('GET', `/api/v1/topics/${topicSegment(topic)}/events`, {
        since: String(since),
      });
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return { topic, state: null, events: [], gone: false };
      throw error;
    }
  }

  /** Whether the token may watch `topic`: false on 403 only, so a network failure never refuses a topic. */
  async mayWatch(topic: string): Promise<boolean> {
    try {
      await this.topicState(topic);
      return true;
    } catch (error) {
      return !(error instanceof HttpError && error.status === 403);
    }
  }

  /**
   * Asks the server about `token`. A browser shows a WebSocket refused with 401 only as close code 1006, the
   * same as a network failure, so after a socket fails before opening this tells the two apart.
   */
  async tokenVerdict(token: string): Promise<TokenVerdict> {
    try {
      const response = await this.fetcher(this.endpoints.http('/api/v1/notifications/unread-count'), {
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        cache: 'no-store',
      });
      if (response.status === 401) return 'refused';
      return response.ok ? 'accepted' : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  private async json<T>(method: 'GET' | 'POST', path: string, query?: Query): Promise<T> {
    const token = await this.getToken();
    const response = await this.fetcher(this.endpoints.http(path, query), {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
      cache: 'no-store',
    });
    if (!response.ok) throw await httpError(response);
    return (await response.json()) as T;
  }
}

/** Reads the server's error body, falling back to the status line for a proxy's HTML error page. */
export async function httpError(response: Response): Promise<HttpError> {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body: unknown = await response.json();
    const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (typeof error?.code === 'string') code = error.code;
    if (typeof error?.message === 'string') message = error.message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new HttpError(response.status, code, message);
}
