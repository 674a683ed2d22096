/**
 * How a notification's time reads: relative while recent ("3 minutes ago", "yesterday"), the date after a
 * week; the full date and time always in the `<time>` element's title. The browser's locale formats both.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const full = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});
const short = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

export interface TimeText {
  /** What the page shows. */
  shown: string;
  /** The full date and time, for the title. */
  full: string;
}

export function timeText(rfc3339: string, now: number = Date.now()): TimeText {
  const at = Date.parse(rfc3339);
  if (Number.isNaN(at)) return { shown: rfc3339, full: rfc3339 };
  const date = new Date(at);
  return { shown: shown(at, now, date), full: full.format(date) };
}

function shown(at: number, now: number, date: Date): string {
  // A clock a little ahead of this one must not print "in 2 seconds".
  const ago = Math.max(0, now - at);
  if (ago < 45_000) return 'just now';
  if (ago < HOUR) return relative.format(-Math.max(1, Math.round(ago / MINUTE)), 'minute');
  if (ago < DAY) return relative.format(-Math.round(ago / HOUR), 'hour');
  if (ago < 7 * DAY) return relative.format(-Math.round(ago / DAY), 'day');
  return short.format(date);
}

/** Fills a `<time>` element for `rfc3339`; `refresh` calls it again as time passes. */
export function setTime(time: HTMLTimeElement, rfc3339: string, now?: number): void {
  const text = timeText(rfc3339, now);
  time.dateTime = rfc3339;
  time.textContent = text.shown;
  time.title = text.full;
}

/** Brings every `<time>` under `root` up to date (their `datetime` says when). */
export function refreshTimes(root: ParentNode, now: number = Date.now()): void {
  for (const time of root.querySelectorAll('time')) setTime(time, time.dateTime, now);
}
