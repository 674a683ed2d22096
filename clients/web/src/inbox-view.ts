/**
 * The signed-in view: the header (connection, bell, sign out), the list and its paging, and the toasts,
 * all driven by one `HeraldClient`. One view lives from sign-in to sign-out; `dispose` leaves the page's
 * elements as they were before it.
 */

import { HttpError, type ConnectionState, type HeraldClient, type StateDetail } from '../../js/src/index.js';
import { byId, describe } from './dom.js';
import { NotificationList } from './list.js';
import { Toasts } from './toasts.js';

const PAGE_SIZE = 20;
const TOAST_MS = 6_000;
const TOASTS_SHOWN = 3;
const TIMES_REFRESH_MS = 30_000;

export interface InboxViewEvents {
  /** The server refused the token (the client's `authError`, or a 401 on a page). */
  refused(): void;
  /** The first page answered, or failed for another reason than the token (the view then offers a retry). */
  loaded(): void;
}

const STATE_TEXT: Record<ConnectionState, string> = {
  connecting: 'connecting',
  open: 'connected',
  reconnecting: 'reconnecting',
  polling: 'polling',
  offline: 'offline',
};

export class InboxView {
  private readonly root = byId('inbox', HTMLDivElement);
  private readonly main = byId('inbox-main', HTMLElement);
  private readonly bell = byId('bell', HTMLButtonElement);
  private readonly badge = byId('unread-count', HTMLSpanElement);
  private readonly connection = byId('connection-state', HTMLSpanElement);
  private readonly heading = byId('inbox-heading', HTMLHeadingElement);
  private readonly markAll = byId('mark-all-read', HTMLButtonElement);
  private readonly loadMoreButton = byId('load-more', HTMLButtonElement);
  private readonly status = byId('list-status', HTMLParagraphElement);
  private readonly retry = byId('list-retry', HTMLButtonElement);
  private readonly actionError = byId('action-error', HTMLParagraphElement);
  private readonly list: NotificationList;
  private readonly toasts: Toasts;
  private readonly stops: (() => void)[] = [];
  private readonly marking = new Set<string>();
  private loading: 'first' | 'more' | undefined;
  private loadError: string | undefined;
  /** "Load more" brought a page: the end of the list is then worth saying. */
  private pagedOlder = false;
  /** The count from the last REST page, used only until the client knows it from the server. */
  private pageCount: number | undefined;
  private disposed = false;

  constructor(
    private readonly client: HeraldClient,
    private readonly events: InboxViewEvents,
  ) {
    this.list = new NotificationList(byId('notifications', HTMLUListElement), {
      markRead: (id) => void this.markRead(id),
    });
    this.toasts = new Toasts(byId('toasts', HTMLElement), {
      max: TOASTS_SHOWN,
      durationMs: TOAST_MS,
      focusElsewhere: () => this.heading.focus(),
    });

    this.stops.push(
      client.on('notification', (notification, { backlog }) => {
        this.list.addLive(notification);
        // Not while a sign-in from the form waits for its first page: the inbox is not on screen yet.
        if (!backlog && !this.root.hidden) this.toasts.show(notification);
        this.renderFooter();
      }),
      client.on('read', ({ ids, all }) => {
        if (all) this.list.markAllRead(client.lastId);
        else this.list.markRead(ids);
      }),
      client.on('unreadCount', () => this.renderCount()),
      client.on('state', (detail) => this.renderState(detail)),
      client.on('authError', () => this.events.refused()),
      client.on('error', (error) => console.warn('herald:', error)),
    );
    this.listen(this.bell, 'click', () => this.jumpToUnread());
    this.listen(this.markAll, 'click', () => void this.markAllRead());
    this.listen(this.loadMoreButton, 'click', () => void this.loadMore());
    this.listen(this.retry, 'click', () => void this.loadFirst());
    const timer = setInterval(() => this.list.refreshTimes(), TIMES_REFRESH_MS);
    this.stops.push(() => clearInterval(timer));

    this.renderState(client.state);
    this.renderCount();
    void this.loadFirst();
  }

  show(): void {
    this.root.hidden = false;
    this.main.hidden = false;
  }

  /** Puts focus where a keyboard user starts: the list's heading. */
  focus(): void {
    this.heading.focus();
  }

  dispose(): void {
    this.disposed = true;
    for (const stop of this.stops) stop();
    this.list.clear();
    this.toasts.clear();
    this.root.hidden = true;
    this.main.hidden = true;
    this.status.textContent = '';
    this.setActionError(undefined);
    this.retry.hidden = true;
    this.loadMoreButton.hidden = true;
    this.badge.textContent = '0';
  }

  private listen(target: HTMLElement, type: 'click', listener: () => void): void {
    target.addEventListener(type, listener);
    this.stops.push(() => target.removeEventListener(type, listener));
  }

  private async loadFirst(): Promise<void> {
    if (this.loading !== undefined) return;
    this.loading = 'first';
    this.loadError = undefined;
    this.renderFooter();
    try {
      const page = await this.client.list({ limit: PAGE_SIZE });
      if (this.disposed) return;
      this.list.addPage(page);
      this.pageCount = page.unread_count;
      this.renderCount();
    } catch (error) {
      if (this.refusedBy(error)) return;
      this.loadError = `Your notifications could not be loaded: ${describe(error)}`;
    } finally {
      this.loading = undefined;
    }
    this.renderFooter();
    this.events.loaded();
  }

  private async loadMore(): Promise<void> {
    const before = this.list.frontier;
    if (this.loading !== undefined || typeof before !== 'string') return;
    this.loading = 'more';
    this.renderFooter();
    let added: HTMLLIElement[] = [];
    try {
      const page = await this.client.list({ limit: PAGE_SIZE, before });
      if (this.disposed) return;
      added = this.list.addPage(page);
      this.pagedOlder = true;
      this.setActionError(undefined);
    } catch (error) {
      if (this.refusedBy(error)) return;
      this.setActionError(`Older notifications could not be loaded: ${describe(error)}`);
    } finally {
      this.loading = undefined;
    }
    const hadFocus = document.activeElement === this.loadMoreButton;
    this.renderFooter();
    // The button goes once the last page is in; focus moves on to what it brought rather than to the page.
    if (hadFocus && this.loadMoreButton.hidden) (added[0] ?? this.heading).focus();
  }

  private async markRead(id: string): Promise<void> {
    if (this.marking.has(id)) return;
    this.marking.add(id);
    try {
      await this.client.markRead(id);
      if (this.disposed) return;
      // Sent (or answered over REST): the `read` event confirms it, but the list need not wait for it.
      this.list.markRead([id]);
      this.setActionError(undefined);
    } catch (error) {
      if (!this.disposed && !this.refusedBy(error)) {
        this.setActionError(`That notification could not be marked read: ${describe(error)}`);
      }
    } finally {
      this.marking.delete(id);
    }
  }

  private async markAllRead(): Promise<void> {
    if (this.markAll.getAttribute('aria-busy') === 'true') return;
    this.markAll.setAttribute('aria-busy', 'true');
    try {
      await this.client.markAllRead();
      if (this.disposed) return;
      this.list.markAllRead(this.client.lastId);
      this.setActionError(undefined);
    } catch (error) {
      if (!this.disposed && !this.refusedBy(error)) {
        this.setActionError(`Your notifications could not be marked read: ${describe(error)}`);
      }
    } finally {
      this.markAll.removeAttribute('aria-busy');
    }
  }

  private jumpToUnread(): void {
    const unread = this.list.firstUnread();
    if (unread === undefined) {
      this.heading.focus();
      return;
    }
    unread.scrollIntoView({ block: 'nearest', behavior: prefersReducedMotion() ? 'auto' : 'smooth' });
    unread.focus({ preventScroll: true });
  }

  /** A 401 means the token is no good any more: the page returns to the sign-in form. */
  private refusedBy(error: unknown): boolean {
    if (!(error instanceof HttpError && error.status === 401)) return false;
    if (!this.disposed) this.events.refused();
    return true;
  }

  private setActionError(message: string | undefined): void {
    this.actionError.textContent = message ?? '';
    this.actionError.hidden = message === undefined;
  }

  private renderState(detail: StateDetail): void {
    const transport = detail.transport ?? '';
    this.connection.dataset.state = detail.state;
    this.connection.dataset.transport = transport;
    this.connection.textContent =
      detail.state === 'open' && transport !== '' ? `${STATE_TEXT.open} (${transport})` : STATE_TEXT[detail.state];
    const holder = !detail.shared
      ? 'This tab has its own connection.'
      : detail.leader
        ? 'This tab holds the connection for every tab.'
        : 'Another tab holds the connection for this one.';
    const retry = detail.retryInMs === undefined ? '' : ` Next try in ${Math.ceil(detail.retryInMs / 1000)} s.`;
    this.connection.title = `${holder}${retry}`;
  }

  private renderCount(): void {
    const count = this.client.unreadCount ?? this.pageCount ?? 0;
    this.badge.textContent = String(count);
    this.bell.classList.toggle('has-unread', count > 0);
    this.bell.setAttribute(
      'aria-label',
      count === 0 ? 'No unread notifications' : `${count} unread notification${count === 1 ? '' : 's'}`,
    );
  }

  private renderFooter(): void {
    const frontier = this.list.frontier;
    const failed = this.loadError !== undefined;
    this.list.setBusy(this.loading !== undefined);
    this.loadMoreButton.hidden = typeof frontier !== 'string';
    // Not `disabled`: a button disabled under the keyboard loses its focus. The `loading` guard is enough.
    this.loadMoreButton.setAttribute('aria-disabled', String(this.loading === 'more'));
    this.loadMoreButton.textContent = this.loading === 'more' ? 'Loading…' : 'Load more';
    this.retry.hidden = !failed || this.loading !== undefined;
    this.status.classList.toggle('error', failed && this.loading === undefined);
    this.status.textContent =
      this.loading === 'first'
        ? 'Loading your notifications…'
        : failed
          ? (this.loadError ?? '')
          : frontier === null && this.list.size === 0
            ? 'No notifications yet. New ones appear here as they arrive.'
            : frontier === null && this.pagedOlder
              ? 'No older notifications.'
              : '';
  }
}

function prefersReducedMotion(): boolean {
  return window.matchMedia('(prefers-reduced-motion: reduce)').matches;
}
