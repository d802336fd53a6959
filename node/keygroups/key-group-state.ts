/**
 * Everything the key groups of one shard hold, in one home: the instances' state records (per function
 * type), the delayed messages their instances scheduled, the producer marks of client sessions, the
 * egress records held until a checkpoint covers them, the next egress sequence number, and whether the
 * key group changed since its last committed image.
 *
 * A key group leaves and arrives as one image (key-group-image.ts):
 *
 *   take(groups)   removes them and returns their images    hand-over release
 *   peek(groups)   returns their images, keeps everything   checkpoint snapshot
 *   put(image)     adds an image's contents                 hand-over adopt, restore
 *   clear()        forgets every key group                  recovery reset
 *
 * Messages waiting for an instance are not kept here (they sit in the shard's queues); the caller adds
 * them to an image's `queued`, and delivers an image's `queued` itself. Sans-I/O: no threads, timers
 * or clock; the time comes in as arguments.
 */
import { StatecraftError } from '../../lib/errors.js';
import { TypedValue } from '../../lib/typed-value.js';
import type { ProducerMark as EventProducer } from '../../lib/envelope.js';
import { primitiveType } from '../../lib/types.js';
import { DELAYED_OWNERS, DelayedMessage } from './delayed-message.js';
import { IMAGE_VERSION, type ImageTimer, type KeyGroupImage } from './key-group-image.js';
import { ProducerMark } from './producer-marks.js';
import { StateStore, type RecordLayout } from './state-store.js';
import { TimerQueue } from './timer-queue.js';

/** Client sessions remembered per key group: past it, the least recently active one is forgotten. */
export const PRODUCER_MARKS_PER_KEY_GROUP_MAX = 10_000;

/** An egress record held until the checkpoint it belongs to commits. */
export interface HeldEgress {
  /** Stable per key group: with the key group, the record's id. */
  seq: number;
  /** The first checkpoint that covers it: released when that one (or a later one) commits. */
  checkpoint: number;
  /** The egress envelope, carrying `seq`. */
  bytes: Uint8Array;
}

export interface PutResult {
  /** Instances whose state came in. */
  instances: number;
  /** Function types the image holds state of that this shard does not run, with their instance counts (dropped). */
  unknown: [typename: string, instances: number][];
}

export class KeyGroupState {
  /** State records: [keyGroup][function index] → id → record. */
  readonly records: StateStore;
  readonly timers = new TimerQueue<DelayedMessage>(DELAYED_OWNERS);
  /** 1 for a key group changed since the last image of it a committed checkpoint holds. */
  readonly changed: Uint8Array;
  /** Per function index: its type name (an image names state by type). */
  private readonly typenames: string[] = [];
  private readonly layouts: RecordLayout[] = [];
  private readonly marks: (Map<string, ProducerMark> | undefined)[];
  private readonly egress: (HeldEgress[] | undefined)[];
  private readonly egressSeq: number[];
  private held = 0;

  constructor(
    readonly count: number,
    /** Checkpoints on: images carry held egress and the egress sequence. */
    private readonly holdsEgress: boolean,
  ) {
    this.records = new StateStore(count, this.layouts);
    // Nothing is committed yet: the first checkpoint writes every key group.
    this.changed = new Uint8Array(count).fill(1);
    this.marks = new Array(count).fill(undefined);
    this.egress = new Array(count).fill(undefined);
    this.egressSeq = new Array<number>(count).fill(0);
  }

  /** Adds a function type; returns its index in the records (types added later get higher ones). */
  addType(typename: string, layout: RecordLayout): number {
    this.typenames.push(typename);
    this.layouts.push(layout);
    return this.layouts.length - 1;
  }

  /** The index of a function type added before, or undefined. */
  indexOf(typename: string): number | undefined {
    const index = this.typenames.indexOf(typename);
    return index < 0 ? undefined : index;
  }

  // ---- producer marks ----

  /**
   * A client event carries its session's sequence number for its key group: the key group remembers
   * the last one it applied per session. False for an event it has applied already (re-sent after a
   * reconnect, possibly through another node).
   */
  acceptEvent(keyGroup: number, producer: EventProducer, nowMs = 0, onForgotten?: (idleMs: number) => void): boolean {
    let marks = this.marks[keyGroup];
    if (marks === undefined) this.marks[keyGroup] = marks = new Map();
    const mark = marks.get(producer.session);
    if (mark === undefined) {
      // Past the bound the least recently active session is forgotten (a re-send from it would apply
      // again): never one in use, unless the key group really has that many sessions in use at once.
      if (marks.size >= PRODUCER_MARKS_PER_KEY_GROUP_MAX) this.forgetLeastRecent(marks, nowMs, onForgotten);
      const fresh = new ProducerMark(0);
      fresh.accept(producer.seq);
      fresh.usedMs = nowMs;
      marks.set(producer.session, fresh);
      return true;
    }
    mark.usedMs = nowMs;
    return mark.accept(producer.seq);
  }

  /** Forgets the session that sent here least recently (a scan, only when a key group is full). */
  private forgetLeastRecent(marks: Map<string, ProducerMark>, nowMs: number, onForgotten?: (idleMs: number) => void): void {
    let oldest: string | null = null;
    let oldestMs = Infinity;
    for (const [session, mark] of marks) {
      if (mark.usedMs < oldestMs) {
        oldest = session;
        oldestMs = mark.usedMs;
      }
    }
    if (oldest === null) return;
    marks.delete(oldest);
    onForgotten?.(nowMs - oldestMs);
  }

  // ---- held egress ----

  /** The seq of the key group's next egress record (taken). */
  nextEgressSeq(keyGroup: number): number {
    const seq = this.egressSeq[keyGroup]!;
    this.egressSeq[keyGroup] = seq + 1;
    return seq;
  }

  /** Egress records held, over all key groups. */
  get heldEgress(): number {
    return this.held;
  }

  hold(keyGroup: number, record: HeldEgress): void {
    let held = this.egress[keyGroup];
    if (held === undefined) this.egress[keyGroup] = held = [];
    held.push(record);
    this.held++;
  }

  /** Hands `write` the held records that checkpoints up to `checkpoint` cover, per key group in order, and forgets them. */
  release(checkpoint: number, write: (bytes: Uint8Array) => void): void {
    if (this.held === 0) return;
    for (let keyGroup = 0; keyGroup < this.count; keyGroup++) {
      const held = this.egress[keyGroup];
      if (held === undefined) continue;
      let released = 0;
      while (released < held.length && held[released]!.checkpoint <= checkpoint) write(held[released++]!.bytes);
      if (released === 0) continue;
      this.held -= released;
      if (released === held.length) this.egress[keyGroup] = undefined;
      else held.splice(0, released);
    }
  }

  /**
   * After restoring from a checkpoint older than the last committed one: records after it may have
   * been released already, so new ones get seqs above anything released.
   */
  skipEgressSeq(keyGroup: number): void {
    this.egressSeq[keyGroup] = this.egressSeq[keyGroup]! + 2 ** 32;
  }

  // ---- images ----

  /** Throws SC_ERR_MALFORMED_IMAGE unless `keyGroup` is one of this state's. */
  checkKeyGroup(keyGroup: number): void {
    if (!Number.isInteger(keyGroup) || keyGroup < 0 || keyGroup >= this.count) {
      throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `an image of key group ${keyGroup}, but there are ${this.count}`);
    }
  }

  /** Images of `keyGroups` (their `queued` empty), everything kept: a snapshot. Records are immutable, so a shallow copy suffices. */
  peek(keyGroups: Iterable<number>, frozenAt: number): Map<number, KeyGroupImage> {
    const images = new Map<number, KeyGroupImage>();
    for (const keyGroup of keyGroups) {
      const image = this.emptyImage(keyGroup, frozenAt);
      this.addRecords(image, this.records.peekKeyGroup(keyGroup));
      this.addMarks(image, this.marks[keyGroup]);
      if (this.holdsEgress) {
        image.egress = (this.egress[keyGroup] ?? []).map((record) => [record.seq, record.bytes]);
        image.egressSeq = this.egressSeq[keyGroup]!;
      }
      images.set(keyGroup, image);
    }
    if (images.size > 0) {
      for (const entry of this.timers.pending()) {
        const image = images.get(entry.payload.senderKeyGroup);
        if (image !== undefined) image.timers.push(timerOf(entry.dueMs, entry.tokenKey, entry.payload));
      }
    }
    return images;
  }

  /** Images of `keyGroups` (their `queued` empty), and the key groups forgotten here: a hand-over. */
  take(keyGroups: ReadonlySet<number>, frozenAt: number): Map<number, KeyGroupImage> {
    const images = new Map<number, KeyGroupImage>();
    for (const keyGroup of keyGroups) images.set(keyGroup, this.emptyImage(keyGroup, frozenAt));
    for (const entry of this.timers.extract((delayed) => keyGroups.has(delayed.senderKeyGroup))) {
      images.get(entry.payload.senderKeyGroup)!.timers.push(timerOf(entry.dueMs, entry.tokenKey, entry.payload));
    }
    for (const keyGroup of keyGroups) {
      const image = images.get(keyGroup)!;
      this.addMarks(image, this.marks[keyGroup]);
      this.marks[keyGroup] = undefined;
      if (this.holdsEgress) {
        image.egressSeq = this.egressSeq[keyGroup]!;
        const held = this.egress[keyGroup];
        if (held !== undefined) {
          image.egress = held.map((record) => [record.seq, record.bytes]);
          this.held -= held.length;
          this.egress[keyGroup] = undefined;
        }
      }
      this.addRecords(image, this.records.takeKeyGroup(keyGroup));
    }
    return images;
  }

  /**
   * Adds an image's state, timers, producer marks and (checkpoints on) held egress, which wait for
   * checkpoint `heldCheckpoint`. The key group counts as changed. Its `queued` messages are the caller's.
   * `indexOf` finds a function type's index (it may add a type seen for the first time); by default,
   * the types added so far.
   */
  put(image: KeyGroupImage, heldCheckpoint: number, indexOf: (typename: string) => number | undefined = (typename) => this.indexOf(typename), nowMs = 0): PutResult {
    const keyGroup = image.keyGroup;
    this.checkKeyGroup(keyGroup);
    this.changed[keyGroup] = 1;
    if (this.holdsEgress) {
      if (image.egressSeq !== undefined) this.egressSeq[keyGroup] = Math.max(this.egressSeq[keyGroup]!, image.egressSeq);
      for (const [seq, bytes] of image.egress ?? []) this.hold(keyGroup, { seq, checkpoint: heldCheckpoint, bytes });
    }
    const result: PutResult = { instances: 0, unknown: [] };
    for (const [typename, entries] of image.state) {
      const index = indexOf(typename);
      if (index === undefined) {
        result.unknown.push([typename, entries.length]);
        continue;
      }
      for (const [id, record] of entries) this.records.set(keyGroup, index, id, record);
      result.instances += entries.length;
    }
    for (const [dueMs, key, targetTypename, targetId, callerTypename, callerId, valueTypename, bytes] of image.timers) {
      const primitive = primitiveType(valueTypename);
      const value = primitive ? new TypedValue(valueTypename, primitive.deserialize(bytes), null) : new TypedValue(valueTypename, undefined, bytes);
      this.timers.schedule(dueMs, new DelayedMessage(targetTypename, targetId, callerTypename, callerId, value, keyGroup), key);
    }
    if (image.marks !== undefined && image.marks.length > 0) {
      let marks = this.marks[keyGroup];
      if (marks === undefined) this.marks[keyGroup] = marks = new Map();
      for (const [session, highest, seen] of image.marks) {
        const incoming = new ProducerMark(highest, new Uint32Array(Uint8Array.from(seen).buffer));
        // Arrived now (a hand-over, a restore): counts as in use, so it is not the first forgotten.
        incoming.usedMs = nowMs;
        const kept = marks.get(session);
        if (kept === undefined) marks.set(session, incoming);
        else kept.merge(incoming);
      }
    }
    return result;
  }

  /** Forgets every key group (a recovery); all count as changed. */
  clear(): void {
    for (let keyGroup = 0; keyGroup < this.count; keyGroup++) {
      this.records.takeKeyGroup(keyGroup);
      this.marks[keyGroup] = undefined;
      this.egress[keyGroup] = undefined;
      this.egressSeq[keyGroup] = 0;
    }
    this.held = 0;
    this.timers.extract(() => true);
    this.changed.fill(1);
  }

  private emptyImage(keyGroup: number, frozenAt: number): KeyGroupImage {
    return { v: IMAGE_VERSION, keyGroup, frozenAt, state: [], timers: [], queued: [] };
  }

  private addRecords(image: KeyGroupImage, tables: Map<string, unknown>[] | undefined): void {
    if (tables === undefined) return;
    for (let index = 0; index < this.typenames.length; index++) {
      const table = tables[index];
      if (table !== undefined && table.size > 0) image.state.push([this.typenames[index]!, [...table]]);
    }
  }

  private addMarks(image: KeyGroupImage, marks: Map<string, ProducerMark> | undefined): void {
    if (marks !== undefined) image.marks = [...marks].map(([session, mark]) => [session, mark.highest, new Uint8Array(mark.seen.buffer.slice(0))]);
  }
}

function timerOf(dueMs: number, key: string | null, delayed: DelayedMessage): ImageTimer {
  const value = delayed.value;
  const bytes = value.bytes ?? primitiveType(value.typename)!.serialize(value.value as never);
  return [dueMs, key, delayed.targetTypename, delayed.targetId, delayed.callerTypename, delayed.callerId, value.typename, bytes];
}
