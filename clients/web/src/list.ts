/**
 * The notification list: one `li.notification` per notification, newest first, each id once.
 *
 * Two sources fill it: REST pages (`client.list`, newest first, paged with `before`) and the client's live
 * `notification` events. Ids are ULIDs, so ordering by id is ordering by creation, whichever source an
 * item came from and in whatever order they arrive.
 *
 * The list is kept gap-free: it shows every notification from the newest down to the oldest one paged in
 * (the frontier), never a stray older one. The client's backlog is the newest 100 *unread* notifications,
 * which can reach far below the first page; showing those would skip the read ones in between, and paging
 * "before the last id shown" would then miss them for good. So a live item older than the frontier is left
 * out, and paging brings it in, in its place.
 *
 * Read is one-way (nothing marks a notification unread again), so an item is read as soon as any source
 * says so: its own `read` flag, a `read` event naming it, or a "mark all read" that came after it.
 */

import type { Notification, NotificationPage } from '../../js/src/index.js';
import { element, holdsFocus, icon, srOnly } from './dom.js';
import { refreshTimes, setTime } from './time.js';

interface Entry {
  notification: Notification;
  item: HTMLLIElement;
  read: boolean;
}

export interface ListEvents {
  /** The user asked to mark this notification read. */
  markRead(id: string): void;
}

export class NotificationList {
  private readonly entries = new Map<string, Entry>();
  /** Ids that read events named, for items not paged in yet. */
  private readonly readIds = new Set<string>();
  /** "Mark all read" covered every notification up to this id. */
  private allReadThrough: string | undefined;
  /**
   * The oldest notification paged in, below which nothing is shown; `null` once the last page came, and
   * `undefined` before the first one did (everything live is shown meanwhile).
   */
  private frontierId: string | null | undefined;

  constructor(
    private readonly list: HTMLUListElement,
    private readonly events: ListEvents,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The `before` for the next page, `null` when there is none, `undefined` before the first page. */
  get frontier(): string | null | undefined {
    return this.frontierId;
  }

  /** The newest id shown (where "mark all read" reaches when the client knows of nothing newer). */
  get newestId(): string | undefined {
    return (this.list.firstElementChild as HTMLElement | null)?.dataset.id;
  }

  /** A live notification, from the client. */
  addLive(notification: Notification): void {
    const frontier = this.frontierId;
    if (typeof frontier === 'string' && notification.id < frontier) return;
    this.upsert(notification);
  }

  /** A REST page, newest first; returns the items it added, newest first. */
  addPage(page: NotificationPage): HTMLLIElement[] {
    const added: HTMLLIElement[] = [];
    for (const notification of page.items) {
      const isNew = !this.entries.has(notification.id);
      const item = this.upsert(notification);
      if (isNew) added.push(item);
    }
    this.frontierId = page.next_before;
    const frontier = this.frontierId;
    if (frontier !== null) {
      for (const [id, entry] of this.entries) {
        if (id < frontier) this.remove(id, entry);
      }
    }
    return added;
  }

  markRead(ids: readonly string[]): void {
    for (const id of ids) {
      this.readIds.add(id);
      const entry = this.entries.get(id);
      if (entry !== undefined) this.setRead(entry);
    }
  }

  /** Every notification up to `throughId` (and everything shown) is read. */
  markAllRead(throughId: string | undefined): void {
    for (const id of [throughId, this.newestId, this.allReadThrough]) {
      if (id !== undefined && (this.allReadThrough === undefined || id > this.allReadThrough)) {
        this.allReadThrough = id;
      }
    }
    for (const entry of this.entries.values()) this.setRead(entry);
  }

  /** The newest unread item, for the bell to jump to. */
  firstUnread(): HTMLLIElement | undefined {
    return this.list.querySelector<HTMLLIElement>('li.notification.unread') ?? undefined;
  }

  /** Tells assistive technology the list is being filled. */
  setBusy(busy: boolean): void {
    this.list.setAttribute('aria-busy', String(busy));
  }

  refreshTimes(): void {
    refreshTimes(this.list);
  }

  clear(): void {
    this.entries.clear();
    this.readIds.clear();
    this.allReadThrough = undefined;
    this.frontierId = undefined;
    this.list.replaceChildren();
  }

  private upsert(notification: Notification): HTMLLIElement {
    const known = this.entries.get(notification.id);
    if (known !== undefined) {
      if (this.isRead(notification)) this.setRead(known);
      return known.item;
    }
    const entry: Entry = { notification, item: render(notification), read: false };
    entry.item.querySelector('button.mark-read')?.addEventListener('click', () => this.events.markRead(notification.id));
    this.entries.set(notification.id, entry);
    this.insert(entry.item, notification.id);
    if (this.isRead(notification)) this.setRead(entry);
    return entry.item;
  }

  private isRead(notification: Notification): boolean {
    return (
      notification.read ||
      this.readIds.has(notification.id) ||
      (this.allReadThrough !== undefined && notification.id <= this.allReadThrough)
    );
  }

  /** Puts `item` in id order, newest first; pages come oldest-last, so the search starts at the end. */
  private insert(item: HTMLLIElement, id: string): void {
    let after: Element | null = this.list.lastElementChild;
    while (after !== null && ((after as HTMLElement).dataset.id ?? '') < id) after = after.previousElementSibling;
    if (after === null) this.list.prepend(item);
    else after.after(item);
  }

  private setRead(entry: Entry): void {
    if (entry.read) return;
    entry.read = true;
    const item = entry.item;
    const button = item.querySelector('button.mark-read');
    // The button goes away with the unread state; focus stays on the item rather than fall to the page.
    const hadFocus = button !== null && holdsFocus(button);
    item.classList.remove('unread');
    item.querySelector('.unread-label')?.remove();
    button?.remove();
    if (hadFocus) item.focus();
  }

  private remove(id: string, entry: Entry): void {
    this.entries.delete(id);
    entry.item.remove();
  }
}

function render(notification: Notification): HTMLLIElement {
  const title = displayTitle(notification);
  const item = element('li', 'notification unread');
  item.dataset.id = notification.id;
  // Focusable by script only: where focus goes when its "Mark read" button disappears.
  item.tabIndex = -1;

  const content = element('div', 'content');
  // "Unread" is in the heading, so it is heard first and in a screen reader's list of headings; `.title`
  // itself stays just the title.
  const heading = element('h3', 'heading');
  const unread = srOnly('Unread: ');
  unread.classList.add('unread-label');
  heading.append(unread, element('span', 'title', title));
  const message = element('p', 'message', notification.message ?? '');
  message.hidden = !notification.message;
  const meta = element('p', 'meta');
  const time = element('time');
  setTime(time, notification.created_at);
  const separator = element('span', 'separator', '·');
  separator.setAttribute('aria-hidden', 'true');
  meta.append(element('span', 'type', notification.type), separator, time);
  content.append(heading, message, meta);

  const markRead = element('button', 'mark-read icon-button');
  markRead.type = 'button';
  markRead.setAttribute('aria-label', `Mark read: ${title}`);
  markRead.title = 'Mark read';
  markRead.append(icon('check'));

  item.append(content, markRead);
  return item;
}

/** A notification without a title is named by its type. */
export function displayTitle(notification: Notification): string {
  return notification.title || notification.type;
}
