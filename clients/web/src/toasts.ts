/**
 * Toasts for notifications as they arrive: a few at a time in the page's live region, each gone after a
 * while unless the pointer or the keyboard is on it — a toast must not vanish while someone reads it or is
 * about to press its button.
 */

import type { Notification } from '../../js/src/index.js';
import { element, holdsFocus, icon } from './dom.js';
import { displayTitle } from './list.js';
import { setTime } from './time.js';

export interface ToastOptions {
  /** Toasts shown at once; a new one pushes the oldest out. */
  max: number;
  /** How long a toast stays, not counting the time it is hovered or focused. */
  durationMs: number;
  /** A toast that held focus closed with none left to take it: where focus goes instead. */
  focusElsewhere: () => void;
}

class Toast {
  readonly element: HTMLDivElement;
  private readonly close: HTMLButtonElement;
  private remainingMs: number;
  private startedAt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private hovered = false;
  private focused = false;
  private gone = false;

  constructor(
    notification: Notification,
    durationMs: number,
    private readonly dismiss: (toast: Toast) => void,
  ) {
    this.remainingMs = durationMs;
    const title = displayTitle(notification);
    this.element = element('div', 'toast');
    this.element.dataset.id = notification.id;

    const body = element('div', 'toast-body');
    const time = element('time', 'toast-time');
    setTime(time, notification.created_at);
    body.append(element('p', 'toast-title', title));
    if (notification.message) body.append(element('p', 'toast-message', notification.message));
    body.append(time);

    this.close = element('button', 'toast-close icon-button');
    this.close.type = 'button';
    this.close.setAttribute('aria-label', `Dismiss: ${title}`);
    this.close.title = 'Dismiss';
    this.close.append(icon('close'));
    this.close.addEventListener('click', () => this.dismiss(this));

    this.element.append(body, this.close);
    this.element.addEventListener('mouseenter', () => this.hold('hovered', true));
    this.element.addEventListener('mouseleave', () => this.hold('hovered', false));
    this.element.addEventListener('focusin', () => this.hold('focused', true));
    this.element.addEventListener('focusout', (event) => {
      if (!(event.relatedTarget instanceof Node && this.element.contains(event.relatedTarget))) {
        this.hold('focused', false);
      }
    });
    this.run();
  }

  get held(): boolean {
    return this.hovered || this.focused;
  }

  focus(): void {
    this.close.focus();
  }

  /** Gone for good: no timer, and leaving it (a removed element may still report focusout) restarts none. */
  stop(): void {
    this.gone = true;
    this.pause();
  }

  private pause(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private hold(reason: 'hovered' | 'focused', on: boolean): void {
    const wasHeld = this.held;
    this[reason] = on;
    if (!wasHeld && this.held) {
      this.pause();
      this.remainingMs -= Date.now() - this.startedAt;
    } else if (wasHeld && !this.held) {
      this.run();
    }
  }

  private run(): void {
    if (this.gone) return;
    this.pause();
    this.startedAt = Date.now();
    // After a long hover, the toast still gets a moment before it goes.
    this.timer = setTimeout(() => this.dismiss(this), Math.max(this.remainingMs, 1_500));
  }
}

export class Toasts {
  private shown: Toast[] = [];

  constructor(
    private readonly region: HTMLElement,
    private readonly options: ToastOptions,
  ) {}

  show(notification: Notification): void {
    if (this.shown.some((toast) => toast.element.dataset.id === notification.id)) return;
    const toast = new Toast(notification, this.options.durationMs, (closed) => this.remove(closed));
    this.shown.push(toast);
    this.region.append(toast.element);
    while (this.shown.length > this.options.max) {
      // The oldest goes first, unless someone is on it.
      const victim = this.shown.find((shown) => !shown.held) ?? this.shown[0];
      if (victim === undefined) break;
      this.remove(victim);
    }
  }

  clear(): void {
    for (const toast of this.shown) toast.stop();
    this.shown = [];
    this.region.replaceChildren();
  }

  private remove(toast: Toast): void {
    const index = this.shown.indexOf(toast);
    if (index < 0) return;
    const hadFocus = holdsFocus(toast.element);
    toast.stop();
    this.shown.splice(index, 1);
    toast.element.remove();
    if (!hadFocus) return;
    const next = this.shown[index] ?? this.shown[index - 1];
    if (next !== undefined) next.focus();
    else this.options.focusElsewhere();
  }
}
