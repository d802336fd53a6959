/**
 * Delayed messages of one shard. Sans-I/O: the caller passes the time in and fires what comes out.
 *
 * Entries are grouped in buckets by due millisecond; a binary min-heap orders the distinct due times.
 * Scheduling into an existing bucket is O(1), a new due time O(log buckets); entries due in the same
 * millisecond fire in the order they were scheduled. Cancellation marks the entry (O(1)) and the pop
 * skips it; when cancelled entries outnumber pending ones the queue drops them all at once (amortised
 * O(1) per cancel), so cancelled timers do not stay in memory until they would have been due.
 * Millions of entries cost one small object each.
 */

/** Below this many cancelled entries, compacting is not worth a pass over the queue. */
const COMPACT_CANCELLED_MIN = 1024;

export class TimerEntry<T> {
  cancelled = false;
  constructor(
    readonly dueMs: number,
    readonly payload: T,
    /** Sender-scoped cancellation key, or null. */
    readonly tokenKey: string | null,
  ) {}
}

export class TimerQueue<T> {
  private readonly buckets = new Map<number, TimerEntry<T>[]>();
  private readonly heap: number[] = [];
  private readonly byToken = new Map<string, TimerEntry<T> | TimerEntry<T>[]>();
  private live = 0;
  /** Cancelled entries still held in buckets. */
  private cancelledHeld = 0;

  /** Pending (not cancelled, not fired) entries. */
  get size(): number {
    return this.live;
  }

  /** Entries held in memory, pending or cancelled (for tests and diagnostics). */
  get held(): number {
    return this.live + this.cancelledHeld;
  }

  schedule(dueMs: number, payload: T, tokenKey: string | null = null): TimerEntry<T> {
    const due = Math.ceil(dueMs);
    const entry = new TimerEntry(due, payload, tokenKey);
    let bucket = this.buckets.get(due);
    if (bucket === undefined) {
      bucket = [];
      this.buckets.set(due, bucket);
      this.heapPush(due);
    }
    bucket.push(entry);
    if (tokenKey !== null) {
      const existing = this.byToken.get(tokenKey);
      if (existing === undefined) this.byToken.set(tokenKey, entry);
      else if (Array.isArray(existing)) existing.push(entry);
      else this.byToken.set(tokenKey, [existing, entry]);
    }
    this.live++;
    return entry;
  }

  /** Cancels every pending entry with this key; returns how many. */
  cancel(tokenKey: string): number {
    const found = this.byToken.get(tokenKey);
    if (found === undefined) return 0;
    this.byToken.delete(tokenKey);
    const entries = Array.isArray(found) ? found : [found];
    let cancelled = 0;
    for (const entry of entries) {
      if (!entry.cancelled) {
        entry.cancelled = true;
        this.live--;
        cancelled++;
      }
    }
    this.cancelledHeld += cancelled;
    if (this.cancelledHeld >= COMPACT_CANCELLED_MIN && this.cancelledHeld > this.live) this.compact();
    return cancelled;
  }

  /** Drops every cancelled entry, and the buckets (and due times) left empty. */
  private compact(): void {
    for (const [due, bucket] of this.buckets) {
      const kept = bucket.filter((entry) => !entry.cancelled);
      if (kept.length === 0) this.buckets.delete(due);
      else if (kept.length !== bucket.length) this.buckets.set(due, kept);
    }
    // A sorted array is a valid min-heap.
    const dues = [...this.buckets.keys()].sort((a, b) => a - b);
    this.heap.length = 0;
    for (const due of dues) this.heap.push(due);
    this.cancelledHeld = 0;
  }

  /** The earliest due time of a bucket (may hold only cancelled entries), or Infinity. */
  nextDueMs(): number {
    return this.heap.length === 0 ? Infinity : this.heap[0]!;
  }

  /** Removes and returns the payloads due at or before `nowMs`, in due order, at most `limit`. */
  popDue(nowMs: number, limit = Infinity): T[] {
    const due: T[] = [];
    while (this.heap.length > 0 && this.heap[0]! <= nowMs && due.length < limit) {
      const time = this.heap[0]!;
      const bucket = this.buckets.get(time)!;
      let taken = 0;
      while (taken < bucket.length && due.length < limit) {
        const entry = bucket[taken++]!;
        if (entry.cancelled) {
          this.cancelledHeld--;
          continue;
        }
        entry.cancelled = true; // fired: a later cancel finds nothing pending
        this.live--;
        if (entry.tokenKey !== null) this.forgetToken(entry);
        due.push(entry.payload);
      }
      if (taken === bucket.length) {
        this.buckets.delete(time);
        this.heapPop();
      } else {
        bucket.splice(0, taken);
      }
    }
    return due;
  }

  /** Removes and returns the pending entries whose payload matches (a key group handed over). */
  extract(matches: (payload: T) => boolean): TimerEntry<T>[] {
    const taken: TimerEntry<T>[] = [];
    for (const bucket of this.buckets.values()) {
      for (const entry of bucket) {
        if (entry.cancelled || !matches(entry.payload)) continue;
        // Marked like a cancelled entry (the pop and compaction drop it), without counting as one.
        entry.cancelled = true;
        this.live--;
        this.cancelledHeld++;
        if (entry.tokenKey !== null) this.forgetToken(entry);
        taken.push(entry);
      }
    }
    if (this.cancelledHeld >= COMPACT_CANCELLED_MIN && this.cancelledHeld > this.live) this.compact();
    return taken;
  }

  /** Every pending entry, in no particular order (for snapshots and hand-over). */
  *pending(): IterableIterator<TimerEntry<T>> {
    for (const bucket of this.buckets.values()) {
      for (const entry of bucket) if (!entry.cancelled) yield entry;
    }
  }

  private forgetToken(entry: TimerEntry<T>): void {
    const key = entry.tokenKey!;
    const found = this.byToken.get(key);
    if (found === entry) this.byToken.delete(key);
    else if (Array.isArray(found)) {
      const index = found.indexOf(entry);
      if (index >= 0) found.splice(index, 1);
      if (found.length === 0) this.byToken.delete(key);
      else if (found.length === 1) this.byToken.set(key, found[0]!);
    }
  }

  private heapPush(value: number): void {
    const heap = this.heap;
    let index = heap.length;
    heap.push(value);
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (heap[parent]! <= value) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = value;
  }

  private heapPop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let index = 0;
    const length = heap.length;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      const child = right < length && heap[right]! < heap[left]! ? right : left;
      if (heap[child]! >= last) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
  }
}
