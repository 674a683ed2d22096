/**
 * Reading server frames. The server is trusted, but a frame is still checked for the fields this client
 * reads, so that a newer server's additions (or a proxy's garbage) never throw deep inside the client: a
 * frame that does not match is treated like an unknown type and skipped.
 */

import type { ServerFrame } from './types.js';

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const isString = (value: unknown): value is string => typeof value === 'string';
const isNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);
const isStringArray = (value: unknown): value is string[] => Array.isArray(value) && value.every(isString);
const isNotification = (value: unknown): boolean => isObject(value) && isString(value['id']);

/** Checks, for each frame type this client understands, the fields it reads. */
const shapes: Record<ServerFrame['type'], (frame: Json) => boolean> = {
  hello: (f) => isNumber(f['unread_count']),
  notifications: (f) => Array.isArray(f['items']) && f['items'].every(isNotification),
  notification: (f) => isNotification(f['data']),
  read: (f) => isStringArray(f['ids']),
  read_all: () => true,
  pong: () => true,
  resync: () => true,
  error: (f) => isString(f['code']),
  subscribed: (f) => isString(f['topic']) && (f['state'] === null || isObject(f['state'])),
  unsubscribed: (f) => isString(f['topic']),
  event: (f) => isString(f['topic']) && isNumber(f['seq']) && isObject(f['event']),
  close: (f) => isNumber(f['code']),
};

/** Parses one frame's JSON text; `undefined` for anything that is not a frame this client knows. */
export function decodeFrame(text: string): ServerFrame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return asFrame(value);
}

/** The same check for a value already parsed (the REST poller builds frames from response bodies). */
export function asFrame(value: unknown): ServerFrame | undefined {
  if (!isObject(value) || !isString(value['type'])) return undefined;
  const check = (shapes as Record<string, ((frame: Json) => boolean) | undefined>)[value['type']];
  return check?.(value) ? (value as unknown as ServerFrame) : undefined;
}
