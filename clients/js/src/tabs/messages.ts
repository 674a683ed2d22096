/**
 * The messages tabs exchange over their `BroadcastChannel`. Every message names its sender (`from`); one
 * meant for a single tab names it too (`to`), since a channel reaches every tab.
 *
 * - leader → all: `leader` (I hold the connection now), `update` (what the connection learned, in order).
 * - tab → leader: `sync` (I just joined: send me where you are), `watch` (my topics), `request` (mark read
 *   for me), `bye` (I am closing).
 * - leader → one tab: `snapshot` (the answer to `sync`), `response` (the answer to `request`).
 *
 * A channel delivers one sender's messages in order, so a `snapshot` sits exactly between the updates it
 * already covers and those it does not: a joining tab drops inbox updates until its snapshot and applies
 * every one after it.
 */

import type { ConnectionStatus } from '../events.js';
import type { InboxSnapshot } from '../inbox.js';
import type { WatchRequest } from '../topics.js';
import type { Update } from '../update.js';

export type Request = { op: 'markRead'; ids: string[] } | { op: 'markAllRead' };

/** An error carried across tabs: errors themselves do not survive every browser's structured clone. */
export interface CarriedError {
  name: string;
  message: string;
  status?: number;
  code?: string;
}

export type TabMessage =
  | { kind: 'leader'; from: string }
  | { kind: 'update'; from: string; update: Update }
  | { kind: 'sync'; from: string }
  | { kind: 'snapshot'; from: string; to: string; inbox: InboxSnapshot; status: ConnectionStatus }
  | { kind: 'watch'; from: string; topics: WatchRequest[] }
  | { kind: 'request'; from: string; to: string; id: number; request: Request }
  | { kind: 'response'; from: string; to: string; id: number; error?: CarriedError }
  | { kind: 'bye'; from: string };

const KINDS: ReadonlySet<string> = new Set([
  'leader',
  'update',
  'sync',
  'snapshot',
  'watch',
  'request',
  'response',
  'bye',
]);

/** A message from another tab of this client (the channel's name is ours; this guards against old versions). */
export function isTabMessage(value: unknown): value is TabMessage {
  if (typeof value !== 'object' || value === null) return false;
  const { kind, from } = value as { kind?: unknown; from?: unknown };
  return typeof kind === 'string' && KINDS.has(kind) && typeof from === 'string';
}
