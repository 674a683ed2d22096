/**
 * Marking notifications read one by one over REST (`POST /api/v1/notifications/{id}/read`), a few at a
 * time so a long list neither crawls nor floods the server. Used when no WebSocket can carry one
 * `mark_read` frame for them all.
 */
import type { RestApi } from './rest.js';
export interface MarkOutcome {
    marked: string[];
    /** One error per id that could not be marked (a 404 for an unknown id, a network failure). */
    failures: unknown[];
}
export declare function markEachOverRest(rest: RestApi, ids: readonly string[]): Promise<MarkOutcome>;
