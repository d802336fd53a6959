/**
 * The process side of the checkpoint simulation (checkpoint-sim-world.ts runs it): what its processes do
 * with messages, barriers and parts.
 * - A shard holds a real KeyGroupState and a real ShardCut behind a CutHost built here; it handles
 *   messages as Shard.visit() does (recorded while the cut records their channel, forwarded when not its
 *   own, else delivered and applied), watches the cut's forwarded barriers and egress, and uploads its
 *   parts.
 * - A source is a node's main thread: a bare source BarrierTracker whose actions it performs; it forwards
 *   messages towards their key group's owner and uploads what it recorded as a channel object.
 * - Every process originates messages at random; sends take FIFO channels with random delays (stalls
 *   when faulty); signals from the coordinator's side reach a process later, unless it died meanwhile.
 * Parts become store objects with the real planUpload and are acknowledged to the coordinator through
 * the world; egress written to thread 0 goes to the checks.
 */
import { EnvelopeKind, readBarrier, readKeyGroup } from '../../../lib/envelope.js';
import type { Message } from '../../../lib/message.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { Types } from '../../../lib/types.js';
import { BarrierTracker, type BarrierAction } from '../../../node/checkpoint/barrier-tracker.js';
import type { CheckpointCoordinator, CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { planUpload } from '../../../node/checkpoint/part-upload.js';
import { ShardCut, type CheckpointPart, type CutHost } from '../../../node/checkpoint/shard-cut.js';
import { MAIN_THREAD } from '../../../node/rings/mailbox.js';
import type { CheckpointChecks } from './checkpoint-sim-checks.js';
import {
  APPLIED,
  COUNTER,
  COUNTER_TYPE,
  COUNTERS_PER_GROUP,
  EGRESS_NAME,
  barrierEnvelope,
  bodyOf,
  encodeInvoke,
  newKeyGroupState,
  type Channel,
  type ChannelItem,
  type MainPart,
  type Proc,
  type ShardPart,
} from './checkpoint-sim-common.js';
import type { SimCore } from './checkpoint-sim-core.js';

/** A main thread's tracker: a source owning no key groups, its inputs the process's input channels. */
export function newTracker(proc: Proc, lastCheckpoint: number): BarrierTracker<Uint8Array, string> {
  return new BarrierTracker<Uint8Array, string>({ inputs: proc.inputs.map((channel) => channel.id), source: true, lastCheckpoint });
}

export class ProcessSide {
  /** The shard whose cut handles a barrier's arrival now, the checkpoint it forwards, and how many times. */
  private barrierArrival: Proc | null = null;
  private forwarded: { checkpoint: number; writes: number } | null = null;

  constructor(
    private readonly core: SimCore,
    private readonly checks: CheckpointChecks,
    /** Hands a call to the coordinator, which runs it a little later unless the epoch or its term moved on. */
    private readonly toCoordinator: (call: (coordinator: CheckpointCoordinator) => CoordinatorAction[]) => void,
  ) {}

  newShardPart(proc: Proc): ShardPart {
    const groups = newKeyGroupState(this.core.keyGroups);
    const core = this.core;
    const host: CutHost = {
      thread: proc.thread,
      threads: this.core.processes.length + 1,
      groups,
      get epoch() {
        return core.epoch;
      },
      owns: (keyGroup) => this.core.owner[keyGroup] === proc.index,
      addWaiting: (images) => {
        for (const item of proc.shard!.local) images.get(item.keyGroup)?.queued.push(item.bytes.slice());
      },
      write: (thread, bytes) => this.onShardWrite(proc, thread, bytes),
      scheduleFlush: () => {},
      flush: () => {},
    };
    const cut = new ShardCut({
      host,
      inputs: proc.inputs.map((channel) => this.core.processes[channel.from]!.thread),
      // Encoding is synchronous here: onPart is called within the barrier's arrival.
      pause: null,
      now: () => this.core.nowMs,
      onPart: (part) => this.onShardPart(proc, part),
    });
    return { groups, cut, local: [], turnScheduled: false, openSnapshot: null };
  }

  // ---- process behaviour ----

  scheduleExternal(proc: Proc): void {
    const epoch = this.core.epoch;
    const incarnation = proc.incarnation;
    this.core.at(this.core.nowMs + 1 + this.core.int(2 * proc.meanGapMs), () => {
      if (epoch !== this.core.epoch || incarnation !== proc.incarnation || !proc.alive) return;
      const hops = this.core.random() < 0.5 ? 0 : 1 + this.core.int(3);
      this.originate(proc, 1 + this.core.int(9), hops);
      this.scheduleExternal(proc);
    });
  }

  /** A counter of `proc` (a shard), of a shard it has a channel to, or of any shard. */
  private pickCounter(proc: Proc): number {
    const near: number[] = [];
    if (proc.shard !== null) near.push(proc.index);
    for (const channel of proc.outputs) if (this.core.processes[channel.to]!.shard !== null) near.push(channel.to);
    const target = near.length === 0 || this.core.random() < 0.25 ? this.core.shardIndexes[this.core.int(this.core.shardIndexes.length)]! : near[this.core.int(near.length)]!;
    const groups = this.core.groupsOf[target]!;
    // Skewed towards one key group per shard, so others often stay unchanged (incremental objects).
    const group = this.core.random() < 0.7 ? groups[0]! : groups[this.core.int(groups.length)]!;
    return group + this.core.keyGroups * this.core.int(COUNTERS_PER_GROUP);
  }

  private originate(proc: Proc, amount: number, hops: number): void {
    const counter = this.pickCounter(proc);
    const id = this.core.nextId++;
    const egress = this.core.random() < 0.5;
    if (egress) this.checks.withEgress.add(id);
    this.core.log.origins.push({ process: proc.index, seq: this.core.seq++, counter, amount });
    this.core.stats.messages++;
    const keyGroup = counter % this.core.keyGroups;
    const bytes = encodeInvoke(keyGroup, counter, { id, amount, hops, egress });
    const target = this.core.owner[keyGroup]!;
    if (target === proc.index) this.enqueueLocal(proc, keyGroup, bytes);
    else this.send(this.core.nextHop[proc.index]![target]!, { kind: 'envelope', bytes });
  }

  /** A message to a shard's own key group: delivered next turn, marked changed now (as Shard.route does). */
  private enqueueLocal(proc: Proc, keyGroup: number, bytes: Uint8Array): void {
    const shard = proc.shard!;
    shard.groups.changed[keyGroup] = 1;
    shard.local.push({ keyGroup, bytes });
    if (shard.turnScheduled) return;
    shard.turnScheduled = true;
    const epoch = this.core.epoch;
    const incarnation = proc.incarnation;
    this.core.at(this.core.nowMs + this.core.int(3), () => {
      if (epoch !== this.core.epoch || incarnation !== proc.incarnation || !proc.alive) return;
      shard.turnScheduled = false;
      // What this turn's deliveries send to themselves waits for the next turn.
      for (const item of shard.local.splice(0)) this.deliverMessage(proc, this.core.decode(item.bytes), false);
    });
  }

  /** Shard.deliver and the function: the counter and the applied record, changed mark, egress, next hop. */
  deliverMessage(proc: Proc, message: Message, fromChannel: boolean): void {
    const shard = proc.shard!;
    const keyGroup = message.keyGroup;
    const body = bodyOf(message);
    if (this.core.owner[keyGroup] !== proc.index) this.core.fail(`${proc.id} got message ${body.id} for key group ${keyGroup}, owned by ${this.core.processes[this.core.owner[keyGroup]!]!.id}`);
    const counter = Number(message.targetId);
    if (counter % this.core.keyGroups !== keyGroup) this.core.fail(`message ${body.id} names key group ${keyGroup} for counter ${counter}`);
    const groups = shard.groups;
    // The breakage strikes where the mark matters: a key group unchanged since its last snapshot.
    if (!(fromChannel && !body.egress && groups.changed[keyGroup] === 0 && this.core.breakNow('skip-changed'))) groups.changed[keyGroup] = 1;
    const appliedId = String(body.id);
    if (groups.records.get(keyGroup, APPLIED, appliedId) !== undefined) this.core.fail(`${proc.id} applies message ${body.id} a second time`);
    const value = (groups.records.get(keyGroup, COUNTER, message.targetId) as number | undefined) ?? 0;
    groups.records.set(keyGroup, COUNTER, message.targetId, value + body.amount);
    groups.records.set(keyGroup, APPLIED, appliedId, body.amount);
    if (body.egress) shard.cut.holdEgress(keyGroup, EGRESS_NAME, COUNTER_TYPE, message.targetId, toTypedValue(body.id, Types.long));
    if (body.hops > 0) this.originate(proc, body.amount, body.hops - 1);
  }

  send(channel: Channel, item: ChannelItem): void {
    let delay = this.core.int(9);
    if (this.core.faulty && this.core.random() < 0.002) delay += 100 + this.core.int(400); // a stall: FIFO holds the rest back
    const timeMs = Math.max(this.core.nowMs + delay, channel.lastDeliveryMs);
    channel.lastDeliveryMs = timeMs;
    const epoch = this.core.epoch;
    this.core.at(timeMs, () => {
      if (epoch === this.core.epoch) this.deliver(channel, item);
    });
  }

  private deliver(channel: Channel, item: ChannelItem): void {
    const proc = this.core.processes[channel.to]!;
    if (!proc.alive) return;
    if (proc.main !== null) this.mainReceives(proc, proc.main, channel, item);
    else this.shardReceives(proc, proc.shard!, channel, item);
  }

  /** A main thread: barriers to its tracker, messages recorded while it records and passed on. */
  private mainReceives(proc: Proc, main: MainPart, channel: Channel, item: ChannelItem): void {
    if (item.kind === 'close') {
      this.perform(proc, main.tracker.channelClosed(channel.id));
      return;
    }
    const bytes = item.bytes;
    if (bytes[0] === EnvelopeKind.Barrier) {
      this.perform(proc, main.tracker.onBarrier(channel.id, readBarrier(bytes, 0)));
      return;
    }
    if (main.tracker.onMessage(channel.id, bytes)) this.core.stats.recordedMessages++;
    this.send(this.core.nextHop[proc.index]![this.core.owner[readKeyGroup(bytes, 0)]!]!, item);
  }

  /** A shard, as Shard.visit() does: record while the cut records, pass on what is not its own, deliver. */
  private shardReceives(proc: Proc, shard: ShardPart, channel: Channel, item: ChannelItem): void {
    // A shard's input rings never close (its node's threads die together): the cut has no word for it.
    if (item.kind === 'close') return;
    const bytes = item.bytes;
    const source = this.core.processes[channel.from]!.thread;
    if (bytes[0] === EnvelopeKind.Barrier) {
      this.barrierArrival = proc;
      this.forwarded = null;
      shard.cut.onBarrier(source, readBarrier(bytes, 0));
      this.barrierArrival = null;
      const forwarded = this.forwarded as { checkpoint: number; writes: number } | null;
      if (forwarded !== null && forwarded.writes !== this.core.processes.length) {
        this.core.fail(`${proc.id} forwarded barrier ${forwarded.checkpoint} to ${forwarded.writes} of the ${this.core.processes.length} other threads`);
      }
      return;
    }
    if (bytes[0] !== EnvelopeKind.Invoke) this.core.fail(`${proc.id} got an envelope of kind ${bytes[0]}`);
    const keyGroup = readKeyGroup(bytes, 0);
    const recording = shard.cut.isRecording(source);
    const owner = this.core.owner[keyGroup]!;
    if (owner !== proc.index) {
      if (recording) this.record(shard, source, bytes);
      this.send(this.core.nextHop[proc.index]![owner]!, item);
      return;
    }
    const message = this.core.decode(bytes);
    if (recording && !this.core.breakNow('drop-recording')) this.record(shard, source, bytes);
    this.deliverMessage(proc, message, true);
  }

  private record(shard: ShardPart, source: number, bytes: Uint8Array): void {
    shard.cut.record(source, bytes.slice());
    this.core.stats.recordedMessages++;
  }

  /** CutHost.write: barriers on the output channel to that thread, egress to thread 0. */
  private onShardWrite(proc: Proc, thread: number, bytes: Uint8Array): void {
    const kind = bytes[0];
    if (kind === EnvelopeKind.Egress) {
      if (thread !== MAIN_THREAD) this.core.fail(`${proc.id} wrote an egress record to thread ${thread}`);
      this.checks.onEgress(bytes);
      return;
    }
    if (kind !== EnvelopeKind.Barrier) this.core.fail(`${proc.id}'s cut wrote an envelope of kind ${kind}`);
    const checkpoint = readBarrier(bytes, 0);
    if (this.barrierArrival !== proc) this.core.fail(`${proc.id} forwarded barrier ${checkpoint} outside a barrier's arrival`);
    if (this.forwarded === null) {
      // The cut snapshots right before it forwards: this is the snapshot.
      if (proc.snapSeq.has(checkpoint)) this.core.fail(`${proc.id} took its snapshot of ${checkpoint} twice`);
      proc.snapSeq.set(checkpoint, this.core.seq++);
      const shard = proc.shard!;
      if (shard.openSnapshot !== null) this.core.stats.superseded++;
      shard.openSnapshot = checkpoint;
      this.forwarded = { checkpoint, writes: 0 };
    } else if (this.forwarded.checkpoint !== checkpoint) {
      this.core.fail(`${proc.id} forwarded barriers ${this.forwarded.checkpoint} and ${checkpoint} on one arrival`);
    }
    this.forwarded.writes++;
    if (thread === proc.thread) this.core.fail(`${proc.id} wrote a barrier to itself`);
    if (thread === MAIN_THREAD) return; // the egress sink is no process of the snapshot
    const channel = proc.outputTo.get(thread - 1);
    if (channel !== undefined) this.send(channel, { kind: 'envelope', bytes: bytes.slice() });
  }

  /** ShardCut.onPart: runs within the barrier's arrival (encoding is synchronous), so it only schedules. */
  private onShardPart(proc: Proc, part: CheckpointPart): void {
    const shard = proc.shard!;
    if (shard.openSnapshot === part.checkpoint) shard.openSnapshot = null;
    this.upload(proc, part);
  }

  /** A signal from the coordinator's side reaches a process later, unless it died or the epoch moved on. */
  signal(proc: Proc, maxDelayMs: number, run: () => void): void {
    const epoch = this.core.epoch;
    const incarnation = proc.incarnation;
    this.core.at(this.core.nowMs + 1 + this.core.int(maxDelayMs), () => {
      if (epoch === this.core.epoch && incarnation === proc.incarnation && proc.alive) run();
    });
  }

  /** A main thread's tracker actions. */
  perform(proc: Proc, actions: BarrierAction<Uint8Array, string>[]): void {
    const main = proc.main!;
    actions.forEach((action, index) => {
      switch (action.type) {
        case 'snapshot': {
          const next = actions[index + 1];
          if (proc.snapSeq.has(action.checkpoint)) this.core.fail(`${proc.id} was told to snapshot ${action.checkpoint} twice`);
          if (next?.type !== 'forward-barrier' || next.checkpoint !== action.checkpoint) this.core.fail(`${proc.id}: snapshot ${action.checkpoint} not followed by forward-barrier`);
          proc.snapSeq.set(action.checkpoint, this.core.seq++);
          main.open.add(action.checkpoint);
          break;
        }
        case 'forward-barrier':
          if (actions[index - 1]?.type !== 'snapshot') this.core.fail(`${proc.id}: forward-barrier ${action.checkpoint} without a snapshot just before`);
          for (const channel of proc.outputs) this.send(channel, { kind: 'envelope', bytes: barrierEnvelope(action.checkpoint) });
          break;
        case 'complete': {
          if (!main.open.delete(action.checkpoint)) this.core.fail(`${proc.id}: complete ${action.checkpoint} without its snapshot`);
          const messages: Uint8Array[] = [];
          for (const list of action.recorded.values()) messages.push(...list);
          this.upload(proc, { checkpoint: action.checkpoint, epoch: this.core.epoch, keyGroups: [], channel: messages.length > 0 ? messages : null, error: null });
          break;
        }
        case 'aborted':
          if (!main.open.delete(action.checkpoint)) this.core.fail(`${proc.id}: aborted ${action.checkpoint}, which it had no snapshot of`);
          if (action.reason === 'superseded') this.core.stats.superseded++;
          break;
      }
    });
  }

  /** A part's objects into the store (planUpload), then the acknowledgement with their references. */
  private upload(proc: Proc, part: CheckpointPart): void {
    const { checkpoint, epoch } = part;
    const incarnation = proc.incarnation;
    if (part.error !== null) {
      const reason = part.error;
      if (epoch === this.core.epoch) this.toCoordinator((coordinator) => coordinator.uploadFailed(this.core.nowMs, proc.id, checkpoint, reason));
      return;
    }
    const { objects, channel, puts } = planUpload(part, `${proc.id}-t${proc.thread}-g${epoch}`);
    const slow = this.core.faulty && this.core.random() < 0.02;
    const broken = this.core.faulty && this.core.random() < 0.02;
    this.core.at(this.core.nowMs + (slow ? 200 + this.core.int(800) : 1 + this.core.int(30)), () => {
      // A crash kills the upload; a recovery does not stop one in flight (a PUT lands late), but the
      // shell fences its acknowledgement.
      if (incarnation !== proc.incarnation) return;
      if (broken) {
        if (epoch === this.core.epoch) this.toCoordinator((coordinator) => coordinator.uploadFailed(this.core.nowMs, proc.id, checkpoint, 'injected upload failure'));
        return;
      }
      for (const [key, bytes] of puts) this.core.store.set(key, { kind: 'object', bytes });
      for (const [, ref] of objects) if (ref === null) this.core.stats.reusedObjects++;
      if (epoch === this.core.epoch) this.toCoordinator((coordinator) => coordinator.acknowledged(this.core.nowMs, proc.id, checkpoint, new Map(objects), channel === null ? [] : [channel]));
    });
  }
}
