/**
 * Notices a connection that went silent. A laptop that sleeps or a network that drops without a FIN leaves a
 * socket that looks open for minutes; the server keeps every connection talking (WebSocket pongs to our
 * pings, SSE keepalive comments), so silence longer than `timeoutMs` means the connection is dead.
 */
import { type Timers } from '../timers.js';
export declare class Liveness {
    private readonly timeoutMs;
    private readonly onSilent;
    private readonly timer;
    constructor(timers: Timers, timeoutMs: number, onSilent: () => void);
    /** Something arrived: the connection is alive for another `timeoutMs`. */
    kick(): void;
    stop(): void;
}
