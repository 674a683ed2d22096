/**
 * A bounded memory of ids, for "no duplicate reaches the application".
 *
 * A resume with `since`, a switch between transports and a leader takeover may each deliver a notification
 * that was already delivered; they overlap by a few frames, never by thousands, so remembering the most
 * recently seen ids (least recently seen dropped first) is enough, and memory stays flat however long the
 * page lives.
 */
export class RecentIds {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number) {
    if (!(capacity >= 1)) throw new RangeError('RecentIds needs a capacity of at least 1');
  }

  get size(): number {
    return this.ids.size;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Remembers `id`; returns whether it is new. Seeing an id again makes it the most recent. */
  add(id: string): boolean {
    const seen = this.ids.delete(id);
    this.ids.add(id);
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next();
      if (!oldest.done) this.ids.delete(oldest.value);
    }
    return !seen;
  }
}
