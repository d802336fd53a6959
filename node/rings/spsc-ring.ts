/**
 * A single-producer single-consumer ring of length-prefixed records in a SharedArrayBuffer.
 *
 *   byte 0     head   (int32) bytes ever published by the producer, wrapping at 2^32
 *   byte 64    tail   (int32) bytes ever released by the consumer   (own cache line: no false sharing)
 *   byte 128   data   `capacity` bytes, a power of two
 *
 *   record:  [int32 length][payload][pad to 4]        a length of -1 means "skip to the start"
 *
 * A record never straddles the end of the data area, so the consumer reads every payload in place.
 * The producer writes records and advances a private head; `publish()` stores it once per batch, so
 * the consumer sees a whole batch with one atomic load. The consumer likewise releases space once per
 * poll. Positions are free-running 32-bit counters: `head - tail` is the fill level (capacity < 2^31).
 */

export const RING_HEADER_BYTES = 128;
const HEAD_INDEX = 0;
const TAIL_INDEX = 16;
const WRAP_MARKER = -1;

export function ringBufferBytes(capacity: number): number {
  return RING_HEADER_BYTES + capacity;
}

export function createRingBuffer(capacity: number): SharedArrayBuffer {
  if (!Number.isInteger(Math.log2(capacity)) || capacity < 1024 || capacity > 2 ** 30) {
    throw new RangeError(`ring capacity ${capacity} must be a power of two between 1 KiB and 1 GiB`);
  }
  return new SharedArrayBuffer(ringBufferBytes(capacity));
}

function align4(length: number): number {
  return (length + 3) & ~3;
}

/** The largest payload a ring of `capacity` bytes always accepts once it has drained. */
export function recordBytesMax(capacity: number): number {
  return capacity / 2 - 8;
}

export class RingProducer {
  readonly data: Uint8Array;
  private readonly control: Int32Array;
  private readonly lengths: Int32Array;
  private readonly capacity: number;
  private readonly mask: number;
  private head: number;
  private publishedHead: number;
  private tailSeen: number;
  private reservedAt = -1;

  constructor(buffer: SharedArrayBuffer) {
    this.capacity = buffer.byteLength - RING_HEADER_BYTES;
    this.mask = this.capacity - 1;
    this.control = new Int32Array(buffer, 0, RING_HEADER_BYTES / 4);
    this.data = new Uint8Array(buffer, RING_HEADER_BYTES, this.capacity);
    this.lengths = new Int32Array(buffer, RING_HEADER_BYTES, this.capacity / 4);
    this.head = Atomics.load(this.control, HEAD_INDEX);
    this.publishedHead = this.head;
    this.tailSeen = Atomics.load(this.control, TAIL_INDEX);
  }

  /**
   * Reserves room for a record of up to `lengthMax` payload bytes. Returns the payload's offset in
   * `data`, or -1 when the ring has no room now. Call `commit` before the next `reserve`.
   */
  reserve(lengthMax: number): number {
    const needed = 4 + align4(lengthMax);
    if (needed > this.capacity / 2) {
      throw new RangeError(`record of ${lengthMax} bytes exceeds the ring's limit of ${recordBytesMax(this.capacity)} bytes`);
    }
    const position = this.head & this.mask;
    const untilEnd = this.capacity - position;
    const skip = untilEnd < needed ? untilEnd : 0;
    const total = skip + needed;
    if (this.capacity - ((this.head - this.tailSeen) | 0) < total) {
      this.tailSeen = Atomics.load(this.control, TAIL_INDEX);
      if (this.capacity - ((this.head - this.tailSeen) | 0) < total) return -1;
    }
    if (skip !== 0) {
      this.lengths[position >> 2] = WRAP_MARKER;
      this.head = (this.head + skip) | 0;
    }
    const start = this.head & this.mask;
    this.reservedAt = start;
    return start + 4;
  }

  /** Completes the record reserved last with its actual payload length (at most the reserved length). */
  commit(length: number): void {
    const start = this.reservedAt;
    this.lengths[start >> 2] = length;
    this.head = (this.head + 4 + align4(length)) | 0;
    this.reservedAt = -1;
  }

  /** Makes every committed record visible to the consumer; true when there was anything new. */
  publish(): boolean {
    if (this.head === this.publishedHead) return false;
    Atomics.store(this.control, HEAD_INDEX, this.head);
    this.publishedHead = this.head;
    return true;
  }

  /** Bytes in the ring not yet released by the consumer (as of the last look at the tail). */
  get usedBytes(): number {
    return (this.head - this.tailSeen) | 0;
  }
}

/** Called once per record, with the payload in place; the bytes are valid only during the call. */
export interface RecordVisitor {
  visit(data: Uint8Array, offset: number, length: number, source: number): void;
}

export class RingConsumer {
  readonly data: Uint8Array;
  private readonly control: Int32Array;
  private readonly lengths: Int32Array;
  private readonly capacity: number;
  private readonly mask: number;
  private tail: number;

  constructor(buffer: SharedArrayBuffer, readonly source = 0) {
    this.capacity = buffer.byteLength - RING_HEADER_BYTES;
    this.mask = this.capacity - 1;
    this.control = new Int32Array(buffer, 0, RING_HEADER_BYTES / 4);
    this.data = new Uint8Array(buffer, RING_HEADER_BYTES, this.capacity);
    this.lengths = new Int32Array(buffer, RING_HEADER_BYTES, this.capacity / 4);
    this.tail = Atomics.load(this.control, TAIL_INDEX);
  }

  isEmpty(): boolean {
    return Atomics.load(this.control, HEAD_INDEX) === this.tail;
  }

  /** Visits up to `recordsMax` published records in order, then releases their space; returns how many. */
  poll(visitor: RecordVisitor, recordsMax: number): number {
    const head = Atomics.load(this.control, HEAD_INDEX);
    let tail = this.tail;
    let count = 0;
    while (tail !== head && count < recordsMax) {
      const position = tail & this.mask;
      const length = this.lengths[position >> 2]!;
      if (length === WRAP_MARKER) {
        tail = (tail + this.capacity - position) | 0;
        continue;
      }
      visitor.visit(this.data, position + 4, length, this.source);
      tail = (tail + 4 + align4(length)) | 0;
      count++;
    }
    if (tail !== this.tail) {
      this.tail = tail;
      Atomics.store(this.control, TAIL_INDEX, tail);
    }
    return count;
  }
}
