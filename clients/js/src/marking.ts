/**
 * Marking notifications read one by one over REST (`POST /api/v1/notifications/{id}/read`), a few at a
 * time so a long list neither crawls nor floods the server. Used when no WebSocket can carry one
 * `mark_read` frame for them all.
 */

import type { RestApi } from './rest.js';

const AT_ONCE = 4;

export interface MarkOutcome {
  marked: string[];
  /** One error per id that could not be marked (a 404 for an unknown id, a network failure). */
  failures: unknown[];
}

export async function markEachOverRest(rest: RestApi, ids: readonly string[]): Promise<MarkOutcome> {
  const outcome: MarkOutcome = { marked: [], failures: [] };
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let id = ids[next++]; id !== undefined; id = ids[next++]) {
      try {
        await rest.markRead(id);
        outcome.marked.push(id);
      } catch (error) {
        outcome.failures.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(AT_ONCE, ids.length) }, worker));
  return outcome;
}
