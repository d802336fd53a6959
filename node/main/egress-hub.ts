/**
 * Egress on the main thread: one bounded log per egress name, and subscribers reading each log with a
 * cursor. Records get consecutive ids per egress. A subscriber is pushed records while its connection
 * can take them; when it lags it keeps its cursor and catches up from the log, and if the log has
 * already dropped what it still needed it is told so with a gap notice.
 *
 * The log keeps each record as the egress envelope bytes the shard wrote, packed into 1 MiB chunks,
 * plus three small integers per record (chunk, offset, length): retaining records creates no object per
 * record, so a long log costs the garbage collector nothing. Frames to subscribers are built by copying
 * those bytes. Retention is bounded by record count and by bytes (whole chunks are dropped).
 */
import { Frame, RECORDS_HEADER_BYTES } from '../../lib/client-protocol.js';
import { ProtocolError } from '../../lib/errors.js';
import { FifoQueue } from '../../lib/fifo-queue.js';
import { readEgressRecordSeq, readKeyGroup } from '../../lib/envelope.js';

export interface EgressSink {
  /** True when the connection has room for more records now. */
  writable(): boolean;
  /** A RECORDS frame (see client-protocol.ts). */
  sendRecords(frame: Uint8Array): void;
  sendGap(subscription: number, fromId: number, toId: number): void;
}

export interface EgressRetention {
  recordsMax: number;
  bytesMax: number;
}

const CHUNK_BYTES = 1024 * 1024;
const FRAME_RECORDS_MAX = 1024;
const FRAME_BYTES_MAX = 1024 * 1024;

class EgressLog {
  /** Chunks in use; `chunks[0]` has the number `firstChunk`. */
  private chunks: Uint8Array[] = [];
  private firstChunk = 0;
  private used = 0; // bytes used in the last chunk
  /** Per record from `firstId` on: chunk number, offset, length (three entries each). */
  private readonly index = new FifoQueue<number>();
  /** Id of the oldest retained record. */
  firstId = 1;
  /** Id the next record gets. */
  nextId = 1;
  /**
   * Per source key group, the highest record seq appended (checkpoints on): where the log stands in
   * stable ids, given to a subscriber from 'latest' so that after failing over to another node's log
   * it drops what was produced before it subscribed. Retention does not lower it.
   */
  readonly marks = new Map<number, number>();

  constructor(private readonly retention: EgressRetention) {}

  append(source: Uint8Array, offset: number, length: number): void {
    const seq = length >= 16 ? readEgressRecordSeq(source, offset) : null;
    if (seq !== null && Number.isSafeInteger(seq) && seq >= 0) {
      const keyGroup = readKeyGroup(source, offset);
      if (seq > (this.marks.get(keyGroup) ?? -1)) this.marks.set(keyGroup, seq);
    }
    let chunk = this.chunks[this.chunks.length - 1];
    if (chunk === undefined || this.used + length > chunk.length) {
      chunk = new Uint8Array(Math.max(CHUNK_BYTES, length));
      this.chunks.push(chunk);
      this.used = 0;
    }
    chunk.set(source.subarray(offset, offset + length), this.used);
    this.index.push(this.firstChunk + this.chunks.length - 1);
    this.index.push(this.used);
    this.index.push(length);
    this.used += length;
    this.nextId++;
    this.trim();
  }

  private trim(): void {
    while (this.nextId - this.firstId > this.retention.recordsMax) this.dropOldest();
    while (this.chunks.length > 1 && this.chunks.length * CHUNK_BYTES > this.retention.bytesMax) {
      const doomed = this.firstChunk;
      while (this.firstId < this.nextId && this.index.peek() === doomed) this.dropOldest();
      if (this.firstChunk === doomed) this.dropChunk();
    }
  }

  private dropOldest(): void {
    this.index.shift();
    this.index.shift();
    this.index.shift();
    this.firstId++;
    // Free chunks no retained record uses any more.
    const oldestChunk = this.firstId < this.nextId ? this.index.peek()! : this.firstChunk + this.chunks.length - 1;
    while (this.firstChunk < oldestChunk) this.dropChunk();
  }

  private dropChunk(): void {
    this.chunks.shift();
    this.firstChunk++;
  }

  /** A RECORDS frame with records from `fromId` (retained) on, as many as fit. */
  frame(subscription: number, fromId: number): { frame: Uint8Array; count: number } {
    let count = 0;
    let bytes = RECORDS_HEADER_BYTES;
    const start = 3 * (fromId - this.firstId);
    const index = this.index;
    while (fromId + count < this.nextId && count < FRAME_RECORDS_MAX) {
      const length = index.at(start + 3 * count + 2)!;
      if (count > 0 && bytes + 4 + length > FRAME_BYTES_MAX) break;
      bytes += 4 + length;
      count++;
    }
    const frame = Buffer.allocUnsafe(bytes);
    frame[0] = Frame.Records;
    frame.writeUInt32LE(subscription, 1);
    frame.writeDoubleLE(fromId, 5);
    frame.writeUInt32LE(count, 13);
    let cursor = RECORDS_HEADER_BYTES;
    for (let record = 0; record < count; record++) {
      const at = start + 3 * record;
      const chunk = this.chunks[index.at(at)! - this.firstChunk]!;
      const offset = index.at(at + 1)!;
      const length = index.at(at + 2)!;
      frame.writeUInt32LE(length, cursor);
      frame.set(chunk.subarray(offset, offset + length), cursor + 4);
      cursor += 4 + length;
    }
    return { frame, count };
  }
}

class Subscription {
  paused = false;
  constructor(
    readonly id: number,
    readonly log: EgressLog,
    readonly sink: EgressSink,
    /** Id of the next record to send. */
    public cursor: number,
  ) {}
}

export class EgressHub {
  private readonly logs = new Map<string, EgressLog>();
  private readonly subscriptions = new Map<EgressSink, Map<number, Subscription>>();
  private readonly byLog = new Map<EgressLog, Set<Subscription>>();
  /** Records appended since start (for metrics). */
  appended = 0;

  constructor(private readonly retention: EgressRetention) {}

  private log(name: string): EgressLog {
    let log = this.logs.get(name);
    if (log === undefined) {
      log = new EgressLog(this.retention);
      this.logs.set(name, log);
      this.byLog.set(log, new Set());
    }
    return log;
  }

  /** Appends one egress envelope (copied out of `source`). */
  append(egress: string, source: Uint8Array, offset: number, length: number): void {
    this.log(egress).append(source, offset, length);
    this.appended++;
  }

  /**
   * Subscribes `sink` to `egress`. `after`: the id of the last record the subscriber has seen (resume),
   * -1 for the oldest retained record, undefined for new records only. Returns the id the subscription
   * starts after.
   */
  subscribe(sink: EgressSink, subscriptionId: number, egress: string, after?: number): number {
    // RECORDS frames carry the id as a u32: checked here, not where a frame is written (too late to refuse).
    if (!Number.isInteger(subscriptionId) || subscriptionId < 0 || subscriptionId > 0xffff_ffff) {
      throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `subscription id ${subscriptionId} is not an integer from 0 to 4294967295`);
    }
    const log = this.log(egress);
    const cursor = after === undefined ? log.nextId : after < 0 ? log.firstId : Math.min(after + 1, log.nextId);
    let bySink = this.subscriptions.get(sink);
    if (bySink === undefined) {
      bySink = new Map();
      this.subscriptions.set(sink, bySink);
    }
    const previous = bySink.get(subscriptionId);
    if (previous) this.byLog.get(previous.log)!.delete(previous);
    const subscription = new Subscription(subscriptionId, log, sink, cursor);
    bySink.set(subscriptionId, subscription);
    this.byLog.get(log)!.add(subscription);
    return cursor - 1;
  }

  /** Where `egress`'s log stands, per source key group: [key group, highest record seq] (see EgressLog.marks). */
  marks(egress: string): [number, number][] {
    return [...this.log(egress).marks];
  }

  unsubscribe(sink: EgressSink, subscriptionId: number): void {
    const subscription = this.subscriptions.get(sink)?.get(subscriptionId);
    if (subscription === undefined) return;
    this.subscriptions.get(sink)!.delete(subscriptionId);
    this.byLog.get(subscription.log)!.delete(subscription);
  }

  setPaused(sink: EgressSink, subscriptionId: number, paused: boolean): void {
    const subscription = this.subscriptions.get(sink)?.get(subscriptionId);
    if (subscription) subscription.paused = paused;
  }

  removeSink(sink: EgressSink): void {
    const bySink = this.subscriptions.get(sink);
    if (bySink === undefined) return;
    for (const subscription of bySink.values()) this.byLog.get(subscription.log)!.delete(subscription);
    this.subscriptions.delete(sink);
  }

  /**
   * Sends every subscriber what it has not seen, as far as its connection takes it. Returns true when
   * some subscriber still lags behind a blocked connection (call again later).
   */
  pump(): boolean {
    let lagging = false;
    for (const subscriptions of this.byLog.values()) {
      for (const subscription of subscriptions) {
        const log = subscription.log;
        if (subscription.paused) continue;
        if (subscription.cursor < log.firstId) {
          subscription.sink.sendGap(subscription.id, subscription.cursor, log.firstId - 1);
          subscription.cursor = log.firstId;
        }
        while (subscription.cursor < log.nextId) {
          if (!subscription.sink.writable()) {
            lagging = true;
            break;
          }
          const { frame, count } = log.frame(subscription.id, subscription.cursor);
          subscription.sink.sendRecords(frame);
          subscription.cursor += count;
        }
      }
    }
    return lagging;
  }

  /** Oldest retained and next id per egress (for tests and diagnostics). */
  describe(): Record<string, { firstId: number; nextId: number }> {
    const result: Record<string, { firstId: number; nextId: number }> = {};
    for (const [name, log] of this.logs) result[name] = { firstId: log.firstId, nextId: log.nextId };
    return result;
  }
}
