/**
 * Mailboxes: the rings between a node's threads. Thread 0 is the main thread (network I/O); threads
 * 1..S are shards. Every ordered pair of threads has its own single-producer single-consumer ring, so
 * no ring ever has two writers or two readers.
 *
 * `Outbox` is a thread's producing side: it encodes straight into ring memory, keeps an overflow queue
 * per destination when a ring is full (never blocking, never dropping), publishes in batches and rings
 * the destination's doorbell. `Inbox` is the consuming side: it drains every input ring and parks on
 * the thread's doorbell when all are empty.
 */
import { FifoQueue } from '../../lib/fifo-queue.js';
import { Doorbell, ringDoorbell } from './doorbell.js';
import { RingConsumer, RingProducer, createRingBuffer, recordBytesMax, type RecordVisitor } from './spsc-ring.js';

export const MAIN_THREAD = 0;

/**
 * The routing table holds, per key group, the thread its messages go to: a shard that runs it, or the
 * main thread (another node's). `heldAt(shard)` marks a key group that shard owns but may not run now:
 * its messages go to the shard all the same and wait there, in order (shard/held-messages.ts).
 */
export function heldAt(shard: number): number {
  return -shard;
}

/** Below -LEAVING_BASE: leaving entries (shards are numbered far below it). */
const LEAVING_BASE = 1 << 16;

/**
 * `leavingFrom(shard)` marks a key group that shard is releasing for a hand-over: everyone else sends its
 * messages to the main thread (they go after the hand-over's image), but the shard keeps what it still
 * reads for it and puts it in the image, in order ahead of what the release drains from its rings.
 */
export function leavingFrom(shard: number): number {
  return -(LEAVING_BASE + shard);
}

/** The shard a routing entry names (run or held there), or MAIN_THREAD (another node's, or leaving). */
export function shardOfRoute(entry: number): number {
  return entry >= 0 ? entry : entry > -LEAVING_BASE ? -entry : MAIN_THREAD;
}

/** Per-thread figures shared through the control buffer, for admission control and metrics. */
export const Stat = {
  /** Bytes waiting in this thread's overflow queues (int32, Atomics). */
  OverflowBytes: 0,
  /** Messages this thread accepted but has not processed yet (int32, Atomics). */
  Backlog: 1,
  /** Records this shard took from the main thread's ring so far (int32, wraps; the main thread compares). */
  IngressReceived: 2,
  /** Remote requests in flight and messages waiting for them (int32): a stopping node waits for them, admission does not. */
  RemoteWork: 3,
} as const;
const STATS_PER_THREAD = 4;

export interface MailboxLayout {
  readonly threads: number;
  readonly ringCapacity: number;
  /** Ring from thread `from` to thread `to` at index `from * threads + to` (null on the diagonal). */
  readonly rings: readonly (SharedArrayBuffer | null)[];
  /** int32: doorbells [0, threads), then STATS_PER_THREAD stats per thread. */
  readonly control: SharedArrayBuffer;
}

export function createMailboxLayout(threads: number, ringCapacity: number): MailboxLayout {
  const rings: (SharedArrayBuffer | null)[] = [];
  for (let from = 0; from < threads; from++) {
    for (let to = 0; to < threads; to++) rings.push(from === to ? null : createRingBuffer(ringCapacity));
  }
  const control = new SharedArrayBuffer(4 * (threads + threads * STATS_PER_THREAD));
  return { threads, ringCapacity, rings, control };
}

/** Reads and writes the shared per-thread stats. */
export class ThreadStats {
  private readonly words: Int32Array;

  constructor(private readonly layout: MailboxLayout) {
    this.words = new Int32Array(layout.control);
  }

  set(thread: number, stat: number, value: number): void {
    Atomics.store(this.words, this.layout.threads + thread * STATS_PER_THREAD + stat, value);
  }

  get(thread: number, stat: number): number {
    return Atomics.load(this.words, this.layout.threads + thread * STATS_PER_THREAD + stat);
  }

  /** The sum of a stat over every thread. */
  total(stat: number): number {
    let sum = 0;
    for (let thread = 0; thread < this.layout.threads; thread++) sum += this.get(thread, stat);
    return sum;
  }
}

/** Records that found a ring full, in order, with their byte count. */
class OverflowQueue extends FifoQueue<Uint8Array> {
  bytes = 0;

  override push(record: Uint8Array): void {
    super.push(record);
    this.bytes += record.length;
  }

  override shift(): Uint8Array {
    const record = super.shift();
    this.bytes -= record.length;
    return record;
  }
}

export class Outbox {
  /** Where the caller writes the record reserved last (ring memory, or a scratch buffer when overflowing). */
  target: Uint8Array;
  readonly recordBytesMax: number;
  private readonly producers: (RingProducer | null)[] = [];
  private readonly overflows: OverflowQueue[] = [];
  private readonly bells: Int32Array;
  private readonly stats: ThreadStats;
  private scratch = new Uint8Array(64 * 1024);
  private reservedTo = -1;
  private reservedInScratch = false;
  private overflowBytesReported = 0;

  constructor(
    layout: MailboxLayout,
    readonly thread: number,
  ) {
    for (let to = 0; to < layout.threads; to++) {
      const ring = layout.rings[thread * layout.threads + to];
      this.producers.push(ring ? new RingProducer(ring) : null);
      this.overflows.push(new OverflowQueue());
    }
    this.bells = new Int32Array(layout.control, 0, layout.threads);
    this.stats = new ThreadStats(layout);
    this.recordBytesMax = recordBytesMax(layout.ringCapacity);
    this.target = this.scratch;
  }

  /**
   * Reserves room for a record of at most `lengthMax` bytes to thread `to`; returns the offset in
   * `this.target` to write it at. Follow with `commit(length)`.
   */
  reserve(to: number, lengthMax: number): number {
    if (lengthMax > this.recordBytesMax) {
      throw new RangeError(`a record of up to ${lengthMax} bytes exceeds the mailbox limit of ${this.recordBytesMax} bytes`);
    }
    this.reservedTo = to;
    const producer = this.producers[to]!;
    if (this.overflows[to]!.isEmpty) {
      const offset = producer.reserve(lengthMax);
      if (offset >= 0) {
        this.reservedInScratch = false;
        this.target = producer.data;
        return offset;
      }
    }
    // Ring full, or older records still wait in the overflow queue (order per destination is kept).
    if (this.scratch.length < lengthMax) this.scratch = new Uint8Array(Math.max(lengthMax, this.scratch.length * 2));
    this.reservedInScratch = true;
    this.target = this.scratch;
    return 0;
  }

  commit(length: number): void {
    const to = this.reservedTo;
    if (this.reservedInScratch) {
      this.overflows[to]!.push(this.scratch.slice(0, length));
    } else {
      this.producers[to]!.commit(length);
    }
    this.reservedTo = -1;
  }

  /** Rings thread `to`'s doorbell, so a parked thread looks again (its routing changed). */
  wake(to: number): void {
    ringDoorbell(this.bells, to);
  }

  /** Copies an already encoded record to thread `to`. */
  writeBytes(to: number, source: Uint8Array, offset: number, length: number): void {
    const at = this.reserve(to, length);
    this.target.set(source.subarray(offset, offset + length), at);
    this.commit(length);
  }

  /** Moves overflowed records into rings that have room, publishes, and rings the doorbells of destinations with news. */
  flush(): void {
    let overflowBytes = 0;
    for (let to = 0; to < this.producers.length; to++) {
      const producer = this.producers[to];
      if (producer === null || producer === undefined) continue;
      const overflow = this.overflows[to]!;
      while (!overflow.isEmpty) {
        const record = overflow.peek()!;
        const offset = producer.reserve(record.length);
        if (offset < 0) break;
        producer.data.set(record, offset);
        producer.commit(record.length);
        overflow.shift();
      }
      overflowBytes += overflow.bytes;
      if (producer.publish()) ringDoorbell(this.bells, to);
    }
    if (overflowBytes !== this.overflowBytesReported) {
      this.overflowBytesReported = overflowBytes;
      this.stats.set(this.thread, Stat.OverflowBytes, Math.min(overflowBytes, 0x7fffffff));
    }
  }

  /** A recovery: records still waiting in overflow queues were sent before it and are dropped. */
  discardOverflow(): void {
    for (let to = 0; to < this.overflows.length; to++) this.overflows[to] = new OverflowQueue();
  }

  /** Bytes waiting in overflow queues (as of the last flush). */
  get overflowBytes(): number {
    return this.overflowBytesReported;
  }

  /** True when records wait in an overflow queue and a later flush must retry them. */
  get hasOverflow(): boolean {
    for (const overflow of this.overflows) if (!overflow.isEmpty) return true;
    return false;
  }
}

export class Inbox {
  private readonly consumers: RingConsumer[] = [];
  private readonly doorbell: Doorbell;
  private next = 0;

  constructor(
    layout: MailboxLayout,
    readonly thread: number,
    private readonly visitor: RecordVisitor,
  ) {
    for (let from = 0; from < layout.threads; from++) {
      const ring = layout.rings[from * layout.threads + thread];
      if (ring) this.consumers.push(new RingConsumer(ring, from));
    }
    this.doorbell = new Doorbell(new Int32Array(layout.control, 0, layout.threads), thread);
  }

  /** Drains up to `recordsMaxPerRing` records from each input ring, starting at a rotating ring for fairness. */
  poll(recordsMaxPerRing: number): number {
    let count = 0;
    const rings = this.consumers.length;
    for (let step = 0; step < rings; step++) {
      count += this.consumers[(this.next + step) % rings]!.poll(this.visitor, recordsMaxPerRing);
    }
    this.next = (this.next + 1) % rings;
    return count;
  }

  hasWork(): boolean {
    for (const consumer of this.consumers) if (!consumer.isEmpty()) return true;
    return false;
  }

  /** Sleeps until a producer rings (or `timeoutMs` passes), unless there is work already. */
  park(timeoutMs = Infinity): Promise<void> {
    return this.doorbell.park(() => this.hasWork(), timeoutMs);
  }

  /** Interrupts a pending park of this thread. */
  wake(): void {
    this.doorbell.wake();
  }
}
