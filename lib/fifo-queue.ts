/**
 * A first-in first-out queue on an array with a moving head: `shift` is O(1) and drops its reference,
 * and the taken front is cut off once it is most of the array (amortised O(1), no per-item node).
 *
 *   items: [ taken, taken, taken | a, b, c ]      head = 3, length = 3
 *                                 ^ head
 * The one queue of the project: shard queues, overflow queues, the egress index and the client's
 * event lists all use it.
 */

/** A taken front shorter than this is never cut off (cutting copies the rest). */
const COMPACT_AFTER = 1024;

export class FifoQueue<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  get isEmpty(): boolean {
    return this.head === this.items.length;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The oldest item, left in place (undefined when empty). */
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  /** The item `index` places behind the oldest (0: the oldest), or undefined. */
  at(index: number): T | undefined {
    return index >= 0 && this.head + index < this.items.length ? this.items[this.head + index] : undefined;
  }

  /** Removes and returns the oldest item; the queue must not be empty. */
  shift(): T {
    const item = this.items[this.head]!;
    this.items[this.head++] = undefined as T;
    this.compact();
    return item;
  }

  /** Removes and returns up to `count` of the oldest items, oldest first. */
  take(count: number): T[] {
    if (count >= this.items.length - this.head) return this.drain(); // all of them: no copy when nothing was taken before
    const taken = this.items.slice(this.head, this.head + count);
    this.items.fill(undefined as T, this.head, this.head + taken.length);
    this.head += taken.length;
    this.compact();
    return taken;
  }

  /** Puts items back at the front, in their order (they come out before everything queued). */
  unshiftAll(items: readonly T[]): void {
    this.items = [...items, ...this.items.slice(this.head)];
    this.head = 0;
  }

  /** The queued items, oldest first (a copy). */
  toArray(): T[] {
    return this.items.slice(this.head);
  }

  /** Removes everything; returns what was queued, oldest first. */
  drain(): T[] {
    const items = this.head === 0 ? this.items : this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return items;
  }

  /** Removes the items `take` says yes to and returns them, in order; the others stay, in order. */
  extract(take: (item: T) => boolean): T[] {
    const kept: T[] = [];
    const taken: T[] = [];
    for (let index = this.head; index < this.items.length; index++) {
      const item = this.items[index]!;
      if (take(item)) taken.push(item);
      else kept.push(item);
    }
    this.items = kept;
    this.head = 0;
    return taken;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }

  *[Symbol.iterator](): Iterator<T> {
    for (let index = this.head; index < this.items.length; index++) yield this.items[index]!;
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
