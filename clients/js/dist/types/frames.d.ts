/**
 * Reading server frames. The server is trusted, but a frame is still checked for the fields this client
 * reads, so that a newer server's additions (or a proxy's garbage) never throw deep inside the client: a
 * frame that does not match is treated like an unknown type and skipped.
 */
import type { ServerFrame } from './types.js';
/** Parses one frame's JSON text; `undefined` for anything that is not a frame this client knows. */
export declare function decodeFrame(text: string): ServerFrame | undefined;
/** The same check for a value already parsed (the REST poller builds frames from response bodies). */
export declare function asFrame(value: unknown): ServerFrame | undefined;
