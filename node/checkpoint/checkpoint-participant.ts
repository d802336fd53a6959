/**
 * A node's part in checkpoints, on its main thread (docs/checkpoints.md).
 *
 * The main thread is a process of the snapshot like each shard: its input channels are the rings from
 * its shards and the links from its peers, its outputs the rings to its shards and the links to its
 * peers. It is the source of client events: an event belongs to checkpoint c when the main thread wrote
 * it before barrier c. On the coordinator's start (or a peer's first barrier) it writes barrier c on
 * every output and records what arrives on each input until that input's barrier c. Its part is
 * complete when its own recording is uploaded and every shard has uploaded its part; then the node
 * acknowledges c to the coordinator with the object of each key group it owns.
 */
import type { BlobStore } from '../storage/blob-store.js';
import { BarrierTracker, type BarrierAction } from './barrier-tracker.js';
import { channelObjectKey, encodeChannelObject } from './checkpoint-format.js';

export type Channel = number | string;

export interface ParticipantHost {
  readonly shards: number;
  /** Writes barrier c into the ring to every shard (and publishes). */
  writeBarrierToShards(checkpoint: number): void;
  /** Writes barrier c on the link to every peer of the view. */
  writeBarrierToPeers(checkpoint: number): void;
  /** Why the node cannot take part now (key groups on the move, messages held), or null. */
  blocked(): string | null;
  /** Client events accepted up to now belong to checkpoint c. */
  markEvents(checkpoint: number): void;
  /** The node's part of c is uploaded. */
  acknowledge(checkpoint: number, objects: Map<number, string | null>, channels: string[], instances: Map<number, number>): void;
  /** The node's part of c cannot be made. */
  failed(checkpoint: number, reason: string): void;
  log(line: string): void;
}

interface OpenPart {
  checkpoint: number;
  shardParts: Map<number, { objects: [number, string | null][]; instances: [number, number][]; channel: string | null }>;
  /** The main thread's own recording: undefined while recording, then its object key (null: nothing recorded). */
  mainChannel: string | null | undefined;
  error: string | null;
  reported: boolean;
}

export class CheckpointParticipant {
  private tracker: BarrierTracker<Uint8Array, Channel>;
  private peers: string[] = [];
  private readonly parts = new Map<number, OpenPart>();
  /** Names this node's uploads; changes with every recovery. */
  private tag: string;
  private epoch = 0;
  /** The highest checkpoint number this node has seen, across recoveries (new ones must go above it). */
  private highest = 0;

  constructor(
    private readonly host: ParticipantHost,
    private readonly store: BlobStore,
    private readonly baseTag: string,
    lastCheckpoint: number,
  ) {
    this.tag = `${baseTag}-t0-g0`;
    this.tracker = new BarrierTracker<Uint8Array, Channel>({ inputs: this.inputs(), source: true, lastCheckpoint });
  }

  private inputs(): Channel[] {
    const inputs: Channel[] = [];
    for (let thread = 1; thread <= this.host.shards; thread++) inputs.push(thread);
    for (const peer of this.peers) inputs.push(`peer:${peer}`);
    return inputs;
  }

  /** True when a message arriving on `channel` now must be recorded. */
  recording(channel: Channel): boolean {
    return this.tracker.openCheckpoint !== null && this.tracker.isRecording(channel);
  }

  /** Records an invoke envelope in flight at the cut (copied). */
  record(channel: Channel, bytes: Uint8Array, offset: number, length: number): void {
    this.tracker.onMessage(channel, bytes.slice(offset, offset + length));
  }

  /** The coordinator's start; false when it is old (this node has seen that number already). */
  start(checkpoint: number): boolean {
    const actions = this.tracker.start(checkpoint);
    this.perform(actions);
    return actions.length > 0;
  }

  /**
   * Whether this node's part of `checkpoint` is under way in the current view (begun on a peer's barrier
   * or a start; aligning, or uploading): its answer is still to come.
   */
  inProgress(checkpoint: number): boolean {
    if (this.tracker.openCheckpoint === checkpoint) return true;
    const part = this.parts.get(checkpoint);
    return part !== undefined && !part.reported;
  }

  get highestCheckpoint(): number {
    return Math.max(this.highest, this.tracker.newestCheckpoint);
  }

  onBarrier(channel: Channel, checkpoint: number): void {
    if (!this.tracker.openInputs.includes(channel) && typeof channel === 'string') return; // a peer not in our view
    this.perform(this.tracker.onBarrier(channel, checkpoint));
  }

  onShardPart(thread: number, checkpoint: number, epoch: number, objects: [number, string | null][], channel: string | null, error: string | null, instances: [number, number][] = []): void {
    const part = this.parts.get(checkpoint);
    if (part === undefined || epoch !== this.epoch) return; // aborted meanwhile, or from before a recovery
    if (error !== null) part.error ??= `shard ${thread}: ${error}`;
    part.shardParts.set(thread, { objects, instances, channel });
    this.maybeReport(part);
  }

  /** The coordinator's decision: a failed checkpoint stops recording here too. */
  outcome(checkpoint: number, committed: boolean): void {
    for (const number of [...this.parts.keys()]) if (number <= checkpoint) this.parts.delete(number);
    if (!committed) this.perform(this.tracker.abort(checkpoint));
  }

  /** The peers of the new view: their links are input channels from now on. An open checkpoint is dropped (the view change fails it). False: the same peers. */
  setPeers(peers: readonly string[]): boolean {
    const same = peers.length === this.peers.length && peers.every((peer) => this.peers.includes(peer));
    if (same) return false;
    this.peers = [...peers];
    this.tracker.reset(this.tracker.newestCheckpoint, this.inputs());
    this.parts.clear();
    return true;
  }

  /** A recovery from checkpoint `restored`: everything open is dropped; uploads get a new name. */
  reset(restored: number, epoch: number): void {
    this.highest = this.highestCheckpoint;
    this.epoch = epoch;
    this.tag = `${this.baseTag}-t0-g${epoch}`;
    this.tracker.reset(restored, this.inputs());
    this.parts.clear();
  }

  get newestCheckpoint(): number {
    return this.tracker.newestCheckpoint;
  }

  private perform(actions: BarrierAction<Uint8Array, Channel>[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'snapshot': {
          const part: OpenPart = { checkpoint: action.checkpoint, shardParts: new Map(), mainChannel: undefined, error: null, reported: false };
          this.parts.set(action.checkpoint, part);
          const blocked = this.host.blocked();
          if (blocked !== null) part.error = blocked;
          this.host.markEvents(action.checkpoint);
          break;
        }
        case 'forward-barrier':
          this.host.writeBarrierToShards(action.checkpoint);
          this.host.writeBarrierToPeers(action.checkpoint);
          break;
        case 'complete':
          void this.uploadRecorded(action.checkpoint, action.recorded);
          break;
        case 'aborted':
          this.parts.delete(action.checkpoint);
          break;
      }
    }
  }

  private async uploadRecorded(checkpoint: number, recorded: Map<Channel, Uint8Array[]>): Promise<void> {
    const part = this.parts.get(checkpoint);
    if (part === undefined) return;
    const messages: Uint8Array[] = [];
    for (const list of recorded.values()) messages.push(...list);
    if (messages.length === 0) {
      part.mainChannel = null;
    } else {
      const key = channelObjectKey(checkpoint, this.tag);
      try {
        await this.store.put(key, encodeChannelObject(checkpoint, messages));
        part.mainChannel = key;
      } catch (error) {
        part.error ??= `upload failed: ${(error as Error).message}`;
        part.mainChannel = null;
      }
    }
    if (this.parts.get(checkpoint) !== part) return; // dropped while uploading (a failure, a recovery)
    this.maybeReport(part);
  }

  private maybeReport(part: OpenPart): void {
    if (this.parts.get(part.checkpoint) !== part) return;
    if (part.reported || part.mainChannel === undefined || part.shardParts.size < this.host.shards) return;
    part.reported = true;
    if (part.error !== null) {
      this.host.failed(part.checkpoint, part.error);
      return;
    }
    const objects = new Map<number, string | null>();
    const instances = new Map<number, number>();
    const channels: string[] = [];
    if (part.mainChannel !== null) channels.push(part.mainChannel);
    for (const shard of part.shardParts.values()) {
      for (const [keyGroup, key] of shard.objects) objects.set(keyGroup, key);
      for (const [keyGroup, count] of shard.instances) instances.set(keyGroup, count);
      if (shard.channel !== null) channels.push(shard.channel);
    }
    this.host.acknowledge(part.checkpoint, objects, channels, instances);
  }
}
