/**
 * Barrier tracking for one process of a checkpoint (Chandy–Lamport with barriers), sans-I/O.
 *
 * One tracker per process: a shard, or a node's main thread. The process's input channels are FIFO
 * (rings, peer-link streams) and carry barriers inline with the data. The class owns no channel, timer
 * or clock: the shell reports what arrived and performs the actions returned, in order.
 *
 *   first barrier c (or, for a source, the coordinator's start c)
 *     → snapshot c        take the local snapshot now
 *     → forward-barrier c write barrier c on every output channel, before any later message
 *     then every message on input i is processed as usual and also recorded for c, until barrier c
 *     arrives on i (the channel the first barrier came on records nothing)
 *   barrier c on every open input (a closed channel counts as aligned)
 *     → complete c        the snapshot plus the recorded channel states are the process's part of c
 *
 * Rules:
 * - A barrier or start for a checkpoint not above the newest one this tracker has seen is ignored
 *   (old, duplicate, or already aborted).
 * - A source snapshots on the start signal or on the first barrier c from a peer, whichever comes
 *   first: a peer that already forwarded barrier c sends messages after it that belong to c + 1, and
 *   processing them before our own snapshot would put them into c.
 * - Newer checkpoint while c is open (barrier or start for c' > c before c completes): c is aborted
 *   (`aborted`, reason 'superseded') and c' begins at once. The coordinator starts c' only after c
 *   committed or failed, and c cannot have committed without this process completing it, so c already
 *   failed; queueing it would only delay c'. The c' cut stays consistent: c's recording simply ends, and
 *   c's later barriers are old and ignored.
 * - `abort(c)` (the coordinator failed c) drops c if open; for a c not begun yet it raises the newest
 *   seen number, so c's barriers arriving later are ignored rather than snapshotted for nothing.
 */
import { invariant } from '../../lib/errors.js';

/** Actions for the shell, in the order they must be performed. */
export type BarrierAction<Message, Channel = string> =
  /** Take the local snapshot now, before handling any further input. Once per checkpoint, first of all. */
  | { type: 'snapshot'; checkpoint: number }
  /** Write barrier `checkpoint` on every output channel now (right after the snapshot). */
  | { type: 'forward-barrier'; checkpoint: number }
  /**
   * This process's part of `checkpoint` is complete: the snapshot plus `recorded`, the messages that
   * were in flight on each input channel at the cut, in arrival order. Channels with none are absent.
   */
  | { type: 'complete'; checkpoint: number; recorded: Map<Channel, Message[]> }
  /** An open checkpoint was dropped: discard its snapshot and recorded messages. */
  | { type: 'aborted'; checkpoint: number; reason: 'failed' | 'superseded' };

export interface BarrierTrackerConfig<Channel> {
  /** Input channel ids. A channel whose other end is gone should be reported through channelClosed. */
  inputs: Iterable<Channel>;
  /** A main thread: begins a checkpoint on the coordinator's `start`, not only on a barrier. */
  source?: boolean;
  /**
   * Checkpoints up to this number are old and ignored (default 0): after a restore, the restored
   * checkpoint's number, so barriers of a previous epoch cannot begin anything.
   */
  lastCheckpoint?: number;
}

interface OpenCheckpoint<Message, Channel> {
  checkpoint: number;
  /** Open input channels barrier `checkpoint` has not arrived on yet: the ones being recorded. */
  waiting: Set<Channel>;
  recorded: Map<Channel, Message[]>;
}


export class BarrierTracker<Message, Channel = string> {
  readonly source: boolean;
  /** Input channels not closed. */
  private readonly inputs = new Set<Channel>();
  private readonly closed = new Set<Channel>();
  /** The newest checkpoint begun, completed or aborted: anything at or below it cannot begin again. */
  private newest: number;
  private open: OpenCheckpoint<Message, Channel> | null = null;

  constructor(config: BarrierTrackerConfig<Channel>) {
    this.source = config.source === true;
    this.newest = config.lastCheckpoint ?? 0;
    invariant(Number.isSafeInteger(this.newest) && this.newest >= 0, `lastCheckpoint must be an integer >= 0 (got ${this.newest})`);
    for (const channel of config.inputs) this.inputs.add(channel);
  }

  /** The checkpoint being recorded, or null. */
  get openCheckpoint(): number | null {
    return this.open?.checkpoint ?? null;
  }

  /** The newest checkpoint number this tracker has begun, completed or aborted. */
  get newestCheckpoint(): number {
    return this.newest;
  }

  /** Input channels still open. */
  get openInputs(): Channel[] {
    return [...this.inputs];
  }

  /** Whether a message arriving on `channel` now would be recorded. */
  isRecording(channel: Channel): boolean {
    return this.open !== null && this.open.waiting.has(channel);
  }

  /** The coordinator's start signal; sources only. */
  start(checkpoint: number): BarrierAction<Message, Channel>[] {
    invariant(this.source, 'start() is for a source (a main thread); other processes begin on a barrier');
    checkNumber(checkpoint);
    const actions: BarrierAction<Message, Channel>[] = [];
    // Already begun on a peer's barrier, or old.
    if (checkpoint <= this.newest) return actions;
    this.begin(checkpoint, null, actions);
    return actions;
  }

  /** Barrier `checkpoint` arrived on `channel`. */
  onBarrier(channel: Channel, checkpoint: number): BarrierAction<Message, Channel>[] {
    this.checkOpenChannel(channel);
    checkNumber(checkpoint);
    const actions: BarrierAction<Message, Channel>[] = [];
    const open = this.open;
    if (open !== null && open.checkpoint === checkpoint) {
      // A repeated barrier on an aligned channel changes nothing.
      if (open.waiting.delete(channel)) this.completeIfAligned(actions);
      return actions;
    }
    if (checkpoint <= this.newest) return actions;
    this.begin(checkpoint, channel, actions);
    return actions;
  }

  /**
   * A data message arrived on `channel`; the shell processes it as usual in any case. True when it is
   * also recorded for the open checkpoint (the tracker keeps the reference: do not mutate the message).
   */
  onMessage(channel: Channel, message: Message): boolean {
    const open = this.open;
    if (open === null || !open.waiting.has(channel)) {
      // A recorded message's channel is known (it is in `waiting`); here unknown or closed ones are caught.
      if (!this.inputs.has(channel)) this.checkOpenChannel(channel);
      return false;
    }
    const list = open.recorded.get(channel);
    if (list === undefined) open.recorded.set(channel, [message]);
    else list.push(message);
    return true;
  }

  /**
   * `channel` will deliver nothing more (its sender stopped). It counts as aligned for the open
   * checkpoint (what it recorded so far is kept) and is not waited for by later ones. Idempotent.
   */
  channelClosed(channel: Channel): BarrierAction<Message, Channel>[] {
    const actions: BarrierAction<Message, Channel>[] = [];
    if (this.closed.has(channel)) return actions;
    invariant(this.inputs.has(channel), `unknown input channel ${String(channel)}`);
    this.inputs.delete(channel);
    this.closed.add(channel);
    if (this.open !== null && this.open.waiting.delete(channel)) this.completeIfAligned(actions);
    return actions;
  }

  /** The coordinator failed `checkpoint`: stop recording it (and anything older still open). */
  abort(checkpoint: number): BarrierAction<Message, Channel>[] {
    checkNumber(checkpoint);
    const actions: BarrierAction<Message, Channel>[] = [];
    const open = this.open;
    if (open !== null && open.checkpoint <= checkpoint) {
      this.open = null;
      // An older open one is dead too: `checkpoint` was started after it ended.
      actions.push({ type: 'aborted', checkpoint: open.checkpoint, reason: open.checkpoint === checkpoint ? 'failed' : 'superseded' });
    }
    if (checkpoint > this.newest) this.newest = checkpoint;
    return actions;
  }

  /**
   * A recovery: drops the open checkpoint without a word and starts over after `lastCheckpoint` (the
   * restored one), every channel open again: numbers above it may be reused by the new coordinator.
   */
  reset(lastCheckpoint: number, inputs: Iterable<Channel> = [...this.inputs, ...this.closed]): void {
    this.open = null;
    this.newest = lastCheckpoint;
    this.inputs.clear();
    this.closed.clear();
    for (const channel of inputs) this.inputs.add(channel);
  }

  private begin(checkpoint: number, alignedChannel: Channel | null, actions: BarrierAction<Message, Channel>[]): void {
    if (this.open !== null) actions.push({ type: 'aborted', checkpoint: this.open.checkpoint, reason: 'superseded' });
    this.newest = checkpoint;
    const waiting = new Set(this.inputs);
    // The channel the barrier came on is aligned already: what follows it belongs to later checkpoints.
    if (alignedChannel !== null) waiting.delete(alignedChannel);
    this.open = { checkpoint, waiting, recorded: new Map() };
    actions.push({ type: 'snapshot', checkpoint }, { type: 'forward-barrier', checkpoint });
    this.completeIfAligned(actions);
  }

  private completeIfAligned(actions: BarrierAction<Message, Channel>[]): void {
    const open = this.open;
    if (open === null || open.waiting.size > 0) return;
    this.open = null;
    actions.push({ type: 'complete', checkpoint: open.checkpoint, recorded: open.recorded });
  }

  private checkOpenChannel(channel: Channel): void {
    invariant(!this.closed.has(channel), `input channel ${String(channel)} was closed; nothing may arrive on it`);
    invariant(this.inputs.has(channel), `unknown input channel ${String(channel)}`);
  }
}

function checkNumber(checkpoint: number): void {
  invariant(Number.isSafeInteger(checkpoint) && checkpoint > 0, `checkpoint numbers are integers >= 1 (got ${checkpoint})`);
}
