/**
 * The fallback chain as configured, less what this browser lacks (no `WebSocket`, no streams): each kind
 * becomes its transport factory, best first. Polling needs only `fetch`, so a chain left empty polls.
 */
import type { Settings } from './options.js';
import type { RestApi } from './rest.js';
import type { TransportFactory } from './transports/transport.js';
import type { Endpoints } from './urls.js';
export declare function transportChain(settings: Settings, endpoints: Endpoints, rest: RestApi): TransportFactory[];
