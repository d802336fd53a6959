/**
 * Delayed messages of one shard. Sans-I/O: the caller passes the time in and fires what comes out.
 *
 * Entries are grouped in buckets by due millisecond; a binary min-heap orders the distinct due times.
 * Scheduling into an existing bucket is O(1), a new due time O(log buckets); entries due in the same
 * millisecond fire in the order they were scheduled. Cancellation marks the entry (O(1)) and the pop
 * skips it; when cancelled entries outnumber pending ones the queue drops them all at once (amortised
 * O(1) per cancel), so cancelled timers do not stay in memory until they would have been due.
 * Millions of entries cost one small object each.
 *
 * With `owners`, the queue tells how many entries an owner has pending (an instance's delayed messages,
 * which a limit bounds). A small queue counts them when asked (a pass over it); from
 * OWNERS_COUNTED_FROM entries on it keeps a count per owner, which each entry points at (no lookup when
 * it fires), until it is down to half of that: the common case pays nothing.
 */

/** Below this many cancelled entries, compacting is not worth a pass over the queue. */
const COMPACT_CANCELLED_MIN = 1024;
/** Pending entries from which the queue keeps a count per owner (below half of it, it counts when asked). */
export const OWNERS_COUNTED_FROM = 10_000;
/**
 * Owners with nothing pending are forgotten once there are more than this plus four per pending entry:
 * memory stays proportional to what is pending, and owners that come back soon keep their count.
 */
const OWNERS_AT_ZERO_SWEEP_MIN = 4096;

/** One owner's count of pending entries; its entries point at it, so firing one costs no lookup. */
class OwnerCount {
  pending = 0;
}

export class TimerEntry<T> {
  cancelled = false;
  /** @internal The owner's count, when the queue counts owners. */
  owner: OwnerCount | null = null;
  constructor(
    readonly dueMs: number,
    readonly payload: T,
    /** Sender-scoped cancellation key, or null. */
    readonly tokenKey: string | null,
  ) {}
}

/** Who an entry belongs to: a kind (a function type) and an id. */
export interface TimerOwners<T> {
  kind(payload: T): string;
  id(payload: T): string;
}

export class TimerQueue<T> {
  private readonly buckets = new Map<number, TimerEntry<T>[]>();
  private readonly heap: number[] = [];
  private readonly byToken = new Map<string, TimerEntry<T> | TimerEntry<T>[]>();
  private live = 0;
  /** Cancelled entries still held in buckets. */
  private cancelledHeld = 0;
  /** Pending entries per owner's kind and id, while `counting`. */
  private readonly owned = new Map<string, Map<string, OwnerCount>>();
  private counting = false;
  /** Owners in `owned` with nothing pending (see OWNERS_AT_ZERO_SWEEP_MIN). */
  private ownersAtZero = 0;

  constructor(private readonly owners: TimerOwners<T> | null = null) {}

  /** Owners whose counts are held in memory, with entries pending or not (for tests and diagnostics). */
  get ownersHeld(): number {
    let count = 0;
    for (const ids of this.owned.values()) count += ids.size;
    return count;
  }

  /** Pending entries of this owner (0 without `owners`). */
  pendingOf(kind: string, id: string): number {
    if (this.counting) return this.owned.get(kind)?.get(id)?.pending ?? 0;
    const owners = this.owners;
    if (owners === null) return 0;
    let count = 0;
    for (const entry of this.pending()) if (owners.id(entry.payload) === id && owners.kind(entry.payload) === kind) count++;
    return count;
  }

  /** Pending entries with this cancellation key. */
  pendingWithToken(tokenKey: string): number {
    const found = this.byToken.get(tokenKey);
    if (found === undefined) return 0;
    if (!Array.isArray(found)) return found.cancelled ? 0 : 1;
    let count = 0;
    for (const entry of found) if (!entry.cancelled) count++;
    return count;
  }

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
    if (this.counting) this.own(entry);
    else if (this.owners !== null && this.live >= OWNERS_COUNTED_FROM) this.startCounting();
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
        this.disown(entry);
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
        this.disown(entry);
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
        this.disown(entry);
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

  private startCounting(): void {
    this.counting = true;
    for (const entry of this.pending()) this.own(entry);
  }

  private stopCounting(): void {
    this.counting = false;
    this.owned.clear();
    this.ownersAtZero = 0;
    // Pending entries still point at the dropped counts: disown() forgets them; startCounting() replaces them.
  }

  private own(entry: TimerEntry<T>): void {
    const owners = this.owners!;
    const kind = owners.kind(entry.payload);
    let ids = this.owned.get(kind);
    if (ids === undefined) this.owned.set(kind, (ids = new Map()));
    const id = owners.id(entry.payload);
    let owner = ids.get(id);
    if (owner === undefined) ids.set(id, (owner = new OwnerCount()));
    else if (owner.pending === 0) this.ownersAtZero--;
    owner.pending++;
    entry.owner = owner;
  }

  private disown(entry: TimerEntry<T>): void {
    const owner = entry.owner;
    if (owner === null) return;
    entry.owner = null;
    if (!this.counting) return;
    if (this.live < OWNERS_COUNTED_FROM / 2) {
      this.stopCounting();
      return;
    }
    // An owner at 0 stays until a sweep: an instance that keeps one timer going (the common pattern)
    // would otherwise delete and insert its count on every message.
    if (--owner.pending === 0 && ++this.ownersAtZero > OWNERS_AT_ZERO_SWEEP_MIN + 4 * this.live) this.sweepOwners();
  }

  /** Forgets owners with nothing pending. */
  private sweepOwners(): void {
    for (const [kind, ids] of this.owned) {
      for (const [id, owner] of ids) if (owner.pending === 0) ids.delete(id);
      if (ids.size === 0) this.owned.delete(kind);
    }
    this.ownersAtZero = 0;
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
