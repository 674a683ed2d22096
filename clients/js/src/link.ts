/**
 * How a tab reaches the server: holding the connection itself (`DirectLink`, also what every tab does when
 * tabs cannot or may not share), or through the tab that holds it (`SharedLink` in `tabs/`). The client
 * talks to a `Link` and does not know which.
 */

import type { ConnectionStatus } from './events.js';
import type { InboxSnapshot } from './inbox.js';
import { ConnectionOwner, type OwnerOptions } from './owner.js';
import type { WatchRequest } from './topics.js';
import type { Update } from './update.js';

/** What a link needs from its tab. */
export interface Host {
  readonly tabId: string;
  /** Applies an update from the connection, wherever it is, to this tab. */
  apply(update: Update): void;
  watchRequests(): WatchRequest[];
  inboxSnapshot(): InboxSnapshot;
  restore(snapshot: InboxSnapshot): void;
  status(): ConnectionStatus;
  /** Whether this tab holds the connection now. */
  setLeader(leader: boolean): void;
  error(error: Error): void;
}

export interface Link {
  readonly shared: boolean;
  start(): void;
  markRead(ids: readonly string[]): Promise<void>;
  markAllRead(): Promise<void>;
  /** The tab's topics changed; read them from the host. */
  watchChanged(): void;
  /** The browser is back online. */
  online(): void;
  close(): void;
}

/** This tab holds its own connection. */
export class DirectLink implements Link {
  readonly shared = false;
  private readonly owner: ConnectionOwner;

  constructor(
    options: OwnerOptions,
    private readonly host: Host,
  ) {
    this.owner = new ConnectionOwner(options, (update) => host.apply(update), (error) => host.error(error));
  }

  start(): void {
    this.host.setLeader(true);
    this.watchChanged();
    this.owner.start();
  }

  markRead(ids: readonly string[]): Promise<void> {
    return this.owner.markRead(ids);
  }

  markAllRead(): Promise<void> {
    return this.owner.markAllRead();
  }

  watchChanged(): void {
    this.owner.watch(this.host.tabId, this.host.watchRequests());
  }

  online(): void {
    this.owner.retryNow();
  }

  close(): void {
    this.owner.stop();
  }
}
