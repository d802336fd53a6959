/**
 * A shard's part in checkpoints (docs/checkpoints.md): its barrier tracker, the local snapshot taken at
 * the cut, and egress records held until a committed checkpoint covers them.
 *
 * At its first barrier c the shard snapshots at once — for each owned key group changed since its last
 * committed image: its image (state, timers, producer marks, held egress; key-group-state.ts) plus the
 * messages waiting for its instances — and forwards barrier c on every output. It then records what
 * arrives on each input until that input's barrier c. Once all are aligned, the images are encoded
 * (yielding between chunks so turns go on) and handed to `onPart` with the recorded messages. The
 * coordinator's outcome releases held egress (committed) or marks the snapshot's key groups changed
 * again (failed).
 */
import { BARRIER_BYTES, egressLengthMax, writeBarrier, writeEgress } from '../../lib/envelope.js';
import type { TypedValue } from '../../lib/typed-value.js';
import { encodeImage, isEmptyImage, type KeyGroupImage } from '../keygroups/key-group-image.js';
import type { KeyGroupState } from '../keygroups/key-group-state.js';
import { MAIN_THREAD } from '../rings/mailbox.js';
import { BarrierTracker, type BarrierAction } from './barrier-tracker.js';

/** A shard's part of a checkpoint, ready for upload (see part-upload.ts). */
export interface CheckpointPart {
  checkpoint: number;
  /** The recovery epoch the snapshot was taken in (it names the uploads). */
  epoch: number;
  /** Per owned key group: its new image, '' when it holds nothing, or null when unchanged. */
  keyGroups: [number, Uint8Array | '' | null][];
  /** Per key group with a new image: how many instances it holds (the manifest keeps it; a restore checks it). */
  instances?: [number, number][];
  /** Messages recorded in flight on this shard's input channels (null: none). */
  channel: Uint8Array[] | null;
  error: string | null;
}

/** What the cut needs of its shard. */
export interface CutHost {
  readonly thread: number;
  readonly threads: number;
  readonly groups: KeyGroupState;
  /** The shard's recovery epoch now (a part finished after a recovery is dropped). */
  readonly epoch: number;
  /** Whether the shard owns `keyGroup` now (its routing, or an adoption not yet routed). */
  owns(keyGroup: number): boolean;
  /** For each image: the messages waiting for its key group's instances, in delivery order, as invoke envelopes. */
  addWaiting(images: ReadonlyMap<number, KeyGroupImage>): void;
  /** Writes a record to another thread's ring (barriers to shards, egress to the main thread). */
  write(thread: number, bytes: Uint8Array): void;
  scheduleFlush(): void;
  flush(): void;
}

export interface ShardCutOptions {
  host: CutHost;
  /** Threads this shard receives from (default: every other thread of the node). */
  inputs?: readonly number[];
  onPart(part: CheckpointPart): void;
  /** Encoding yields here after each chunk, so a large snapshot does not stall the shard; null: encode in one go. */
  pause: (() => Promise<void>) | null;
  /** Wall-clock ms, stamped on images (default Date.now). */
  now?: () => number;
}

/** A shard's local snapshot of one checkpoint: taken at its first barrier, written once every input is aligned. */
interface OpenSnapshot {
  checkpoint: number;
  /** Key groups this shard owned at the cut. */
  owned: number[];
  /** Key groups changed since their last committed image, captured at the cut. */
  images: Map<number, KeyGroupImage>;
  /** Why this shard's part cannot be used (a message in flight at the cut left with a moving key group). */
  broken: string | null;
  epoch: number;
}

/** Bytes encoded between two pauses. */
const ENCODE_CHUNK_BYTES = 256 * 1024;

export class ShardCut {
  private readonly tracker: BarrierTracker<Uint8Array, number>;
  private readonly host: CutHost;
  private snapshot: OpenSnapshot | null = null;
  /** Checkpoints snapshotted here whose outcome is not known yet, with the key groups they took as changed. */
  private readonly outcomePending = new Map<number, number[]>();
  /** The newest checkpoint this shard took a snapshot for: egress emitted now belongs to the next one. */
  private snapshotsTaken = 0;
  private readonly now: () => number;

  constructor(private readonly options: ShardCutOptions) {
    this.host = options.host;
    this.now = options.now ?? Date.now;
    const inputs: number[] = [];
    for (let thread = 0; thread < this.host.threads; thread++) if (thread !== this.host.thread) inputs.push(thread);
    this.tracker = new BarrierTracker<Uint8Array, number>({ inputs: options.inputs ?? inputs });
  }

  /** True when a message arriving from `source` now is in flight at the cut (record it). */
  isRecording(source: number): boolean {
    return this.snapshot !== null && this.tracker.isRecording(source);
  }

  /** Records a message in flight at the cut (`bytes` must be a copy). */
  record(source: number, bytes: Uint8Array): void {
    this.tracker.onMessage(source, bytes);
  }

  onBarrier(source: number, checkpoint: number): void {
    this.perform(this.tracker.onBarrier(source, checkpoint));
  }

  /** Key groups are handed over while a snapshot is open: this shard's part of it cannot be used. */
  breakOpen(reason: string): void {
    if (this.snapshot !== null) this.snapshot.broken = reason;
  }

  /** The coordinator decided: egress a committed checkpoint covers goes out; a failed one's key groups are changed again. */
  outcome(checkpoint: number, committed: boolean): void {
    if (committed) {
      for (const earlier of [...this.outcomePending.keys()]) if (earlier <= checkpoint) this.forgetOutcome(earlier, true);
      this.release(checkpoint);
      this.host.flush();
      return;
    }
    this.perform(this.tracker.abort(checkpoint));
    this.forgetOutcome(checkpoint, false);
  }

  /** Exactly-once egress: the record waits until a committed checkpoint covers the invocation that emitted it. */
  holdEgress(keyGroup: number, egress: string, sourceTypename: string, sourceId: string, value: TypedValue): void {
    const groups = this.host.groups;
    groups.changed[keyGroup] = 1;
    const seq = groups.nextEgressSeq(keyGroup);
    const buffer = new Uint8Array(egressLengthMax(egress, sourceTypename, sourceId, value));
    const end = writeEgress(buffer, 0, keyGroup, egress, sourceTypename, sourceId, value, seq);
    groups.hold(keyGroup, { seq, checkpoint: this.snapshotsTaken + 1, bytes: buffer.subarray(0, end) });
  }

  /**
   * The checkpoint held egress of an image put here waits for: from a hand-over, the next one here (the
   * old owner's commit may not have covered it); from a restore of committed checkpoint c, c itself.
   */
  heldCheckpoint(restoredFrom: number | null): number {
    return restoredFrom ?? this.snapshotsTaken + 1;
  }

  /** Writes the held egress that checkpoints up to `checkpoint` cover to the main thread, in order. */
  release(checkpoint: number): void {
    this.host.groups.release(checkpoint, (bytes) => this.host.write(MAIN_THREAD, bytes));
  }

  /** A recovery: everything open is dropped. */
  reset(): void {
    this.snapshot = null;
    this.outcomePending.clear();
    this.snapshotsTaken = 0;
    this.tracker.reset(0);
  }

  /** Key groups were restored from committed checkpoint `checkpoint`: numbering goes on from there. */
  restored(checkpoint: number): void {
    this.snapshotsTaken = Math.max(this.snapshotsTaken, checkpoint);
  }

  private perform(actions: BarrierAction<Uint8Array, number>[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'snapshot':
          this.take(action.checkpoint);
          break;
        case 'forward-barrier': {
          const barrier = new Uint8Array(BARRIER_BYTES);
          writeBarrier(barrier, 0, action.checkpoint);
          for (let thread = 0; thread < this.host.threads; thread++) if (thread !== this.host.thread) this.host.write(thread, barrier);
          this.host.scheduleFlush();
          break;
        }
        case 'complete':
          this.complete(action.checkpoint, action.recorded);
          break;
        case 'aborted':
          if (this.snapshot?.checkpoint === action.checkpoint) this.snapshot = null;
          break;
      }
    }
  }

  /**
   * The local snapshot at the cut: the images of the owned key groups changed since their last
   * committed image (records are immutable: a shallow copy suffices), with the messages waiting for
   * their instances (an async invocation running now is re-queued: its effects land after the cut).
   */
  private take(checkpoint: number): void {
    // Checkpoints before this one whose commit was not heard of have failed (one runs at a time): their
    // key groups count as changed again. A commit notice merely late costs a re-upload, nothing more.
    for (const earlier of [...this.outcomePending.keys()]) if (earlier < checkpoint) this.forgetOutcome(earlier, false);
    this.snapshotsTaken = checkpoint;
    const groups = this.host.groups;
    const owned: number[] = [];
    const changed: number[] = [];
    for (let keyGroup = 0; keyGroup < groups.count; keyGroup++) {
      if (!this.host.owns(keyGroup)) continue;
      owned.push(keyGroup);
      if (groups.changed[keyGroup] === 0) continue;
      groups.changed[keyGroup] = 0;
      changed.push(keyGroup);
    }
    const images = groups.peek(changed, this.now());
    if (images.size > 0) this.host.addWaiting(images);
    this.outcomePending.set(checkpoint, changed);
    this.snapshot = { checkpoint, owned, images, broken: null, epoch: this.host.epoch };
  }

  /** Every input is aligned: encode the snapshot and the recorded messages, and hand them on. */
  private complete(checkpoint: number, recorded: Map<number, Uint8Array[]>): void {
    const snapshot = this.snapshot;
    if (snapshot === null || snapshot.checkpoint !== checkpoint) return;
    this.snapshot = null;
    const messages: Uint8Array[] = [];
    for (const list of recorded.values()) for (const message of list) messages.push(message);
    if (snapshot.broken !== null) {
      this.options.onPart({ checkpoint, epoch: snapshot.epoch, keyGroups: [], channel: null, error: snapshot.broken });
      return;
    }
    void this.encode(snapshot, messages);
  }

  private async encode(snapshot: OpenSnapshot, messages: Uint8Array[]): Promise<void> {
    const keyGroups: CheckpointPart['keyGroups'] = [];
    const instances: [number, number][] = [];
    let encodedSinceYield = 0;
    for (const keyGroup of snapshot.owned) {
      const image = snapshot.images.get(keyGroup);
      if (image === undefined) {
        keyGroups.push([keyGroup, null]);
        continue;
      }
      if (isEmptyImage(image)) {
        keyGroups.push([keyGroup, '']);
        continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = encodeImage(image);
      } catch (error) {
        this.options.onPart({ checkpoint: snapshot.checkpoint, epoch: snapshot.epoch, keyGroups: [], channel: null, error: `key group ${keyGroup} could not be encoded: ${(error as Error).message}` });
        return;
      }
      keyGroups.push([keyGroup, bytes]);
      let count = 0;
      for (const [, records] of image.state) count += records.length;
      instances.push([keyGroup, count]);
      encodedSinceYield += bytes.length;
      if (encodedSinceYield > ENCODE_CHUNK_BYTES && this.options.pause !== null) {
        encodedSinceYield = 0;
        await this.options.pause();
        if (snapshot.epoch !== this.host.epoch) return; // a recovery meanwhile: this part is void
      }
    }
    if (snapshot.epoch !== this.host.epoch) return;
    this.options.onPart({ checkpoint: snapshot.checkpoint, epoch: snapshot.epoch, keyGroups, instances, channel: messages.length > 0 ? messages : null, error: null });
  }

  /** A checkpoint's outcome is known: if it did not commit, the key groups it took count as changed again. */
  private forgetOutcome(checkpoint: number, committed: boolean): void {
    const taken = this.outcomePending.get(checkpoint);
    if (taken === undefined) return;
    this.outcomePending.delete(checkpoint);
    if (!committed) for (const keyGroup of taken) this.host.groups.changed[keyGroup] = 1;
  }
}
