/**
 * Notices a connection that went silent. A laptop that sleeps or a network that drops without a FIN leaves a
 * socket that looks open for minutes; the server keeps every connection talking (WebSocket pongs to our
 * pings, SSE keepalive comments), so silence longer than `timeoutMs` means the connection is dead.
 */

import { Timer, type Timers } from '../timers.js';

export class Liveness {
  private readonly timer: Timer;

  constructor(
    timers: Timers,
    private readonly timeoutMs: number,
    private readonly onSilent: () => void,
  ) {
    this.timer = new Timer(timers);
  }

  /** Something arrived: the connection is alive for another `timeoutMs`. */
  kick(): void {
    this.timer.start(this.timeoutMs, this.onSilent);
  }

  stop(): void {
    this.timer.cancel();
  }
}
