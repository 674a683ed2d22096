/**
 * @herald/client — the browser client for Herald: live notifications and status topics over a WebSocket,
 * Server-Sent Events or REST polling, one connection per browser shared by its tabs.
 */

export { createClient, type HeraldClient } from './client.js';
export type { ClientOptions, Environment, OnlineEvents } from './options.js';
export {
  AuthError,
  ServerError,
  type BacklogInfo,
  type ClientEvents,
  type ConnectionState,
  type ConnectionStatus,
  type NotificationMeta,
  type ReadEvent,
  type StateDetail,
} from './events.js';
export type { TopicHandler, TopicMessage } from './topics.js';
export { HttpError, type FetchLike, type ListOptions } from './rest.js';
export type { TransportKind } from './transports/transport.js';
export type { WebSocketConstructor, WebSocketLike } from './transports/websocket.js';
export type { ChannelConstructor, ChannelLike, LocksLike } from './tabs/browser.js';
export type { Timers } from './timers.js';
export type { Notification, NotificationPage, TopicEvent, TopicState } from './types.js';
