/**
 * A seeded discrete-event world that runs the checkpoint code the shards run: a fake clock, processes
 * joined by FIFO channels with random delays, a fake blob store, and the real CheckpointCoordinator
 * (node/checkpoint/checkpoint-coordinator.ts) over them. Nothing here is real I/O, so a seed replays
 * exactly.
 *
 * Processes are threads 1..n (thread 0 stands for a node's main thread as the sink of released egress).
 * - A shard holds a real KeyGroupState (node/keygroups/key-group-state.ts) with two function types:
 *   `sim/counter` (id: the counter; record: its value) and `sim/applied` (id: a message id; record: its
 *   amount, so a state tells which messages it covers). Its real ShardCut (node/checkpoint/shard-cut.ts)
 *   runs through a CutHost the world implements. Messages are real invoke envelopes (lib/envelope.ts),
 *   handled as Shard.visit() does: recorded while the cut records their channel, forwarded when not its
 *   own, else delivered. Applying one sets its counter, adds its applied record, marks the key group
 *   changed, sometimes emits an egress record (held by the cut until a commit covers it), and with hops
 *   left originates the next hop. A hop to its own key group waits in a local queue for the next turn,
 *   so snapshot images carry it as a queued message.
 * - A source is a node's main thread: a bare source BarrierTracker owning no key groups. It begins on
 *   the coordinator's start (or a barrier), forwards messages towards their key group's owner (recorded
 *   while it records), and uploads what it recorded as a channel object.
 * Every process originates messages at random (a shard as a timer would) to counters of any shard, so
 * traffic runs in cycles. Parts become store objects with the real planUpload (one segment object with
 * slices, one channel object) and are acknowledged with their references and channel keys. Uploads fail
 * or stall at random, as do manifest and pointer writes and channels; processes crash (their channels
 * close; the coordinator hears of it later, fails the running checkpoint and starts nothing more, as a
 * leader fences its coordinator) and the world recovers as docs/checkpoints.md says: a new epoch, every
 * process reset, key groups placed anew and loaded from LATEST with the real sliceImages, decodeImage and
 * KeyGroupState.put (ShardCut.restored and release as KeyGroupMoves.restore does), queued messages
 * delivered, then the recorded channel messages replayed to their owners; sometimes under a new
 * coordinator.
 *
 * Checks (a failed one throws a CheckFailure; the caller names the seed):
 * - at every commit: restoring the manifest (images into a fresh KeyGroupState, their queued messages,
 *   the channel objects' messages) gives exactly the counters of the consistent cut (base of the epoch
 *   plus every message originated before its originator's snapshot), computed from the world's event
 *   log; and at the id level, every message of the epoch's base and of the cut is covered exactly once
 *   (an applied record, a queued message or a recorded channel message, never two) and no other is; an
 *   image's held egress belongs to messages it applied. At recovery the loaded shards give the same;
 * - a shard's state applies a message at most once;
 * - egress: a released record (a thread-0 write; repeats of a key group + seq dropped as clients do)
 *   carries a message applied in some committed checkpoint's restored state; a record id never names two
 *   messages nor a message two ids; per key group seqs have no gaps; at the end every message with
 *   egress that a settled commit applied was released;
 * - outcomes: a checkpoint commits or fails at most once, never both; the pointer only ever names
 *   committed checkpoints and never goes back; numbers increase strictly, across coordinators too;
 * - barriers: a source's tracker snapshots once per checkpoint, first, immediately followed by
 *   forward-barrier; a shard's cut snapshots once per checkpoint and forwards it to every other thread
 *   at once, only on a barrier's arrival;
 * - retention: a deleted object is referenced by no retained manifest; LATEST's manifest and objects are
 *   always there; at the end, everything of checkpoints past the retain count is gone;
 * - liveness: once faults stop (the calm phase), every checkpoint started commits, also after a crash.
 */
import { EventQueue } from '../../sim/event-queue.js';
import { EnvelopeDecoder, EnvelopeKind, readBarrier, readKeyGroup } from '../../../lib/envelope.js';
import type { Message } from '../../../lib/message.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { Types } from '../../../lib/types.js';
import { BarrierTracker, type BarrierAction } from '../../../node/checkpoint/barrier-tracker.js';
import { CheckpointCoordinator, type CheckpointManifest, type CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { decodeChannelObject, manifestKey, parseObjectRef } from '../../../node/checkpoint/checkpoint-format.js';
import { planUpload, sliceImages } from '../../../node/checkpoint/part-upload.js';
import { ShardCut, type CheckpointPart, type CutHost } from '../../../node/checkpoint/shard-cut.js';
import { decodeImage, type KeyGroupImage } from '../../../node/keygroups/key-group-image.js';
import type { KeyGroupState } from '../../../node/keygroups/key-group-state.js';
import { MAIN_THREAD } from '../../../node/rings/mailbox.js';
import { createRandom } from '../../cluster/sim-network.js';
import {
  APPLIED,
  BREAKAGE_FROM_MS,
  COUNTER,
  COUNTER_TYPE,
  COUNTERS_PER_GROUP,
  CheckFailure,
  EGRESS_NAME,
  addTo,
  barrierEnvelope,
  bodyOf,
  counterDifference,
  encodeInvoke,
  newKeyGroupState,
  referencedKeys,
  type Breakage,
  type Channel,
  type ChannelItem,
  type Commit,
  type EpochLog,
  type MainPart,
  type Proc,
  type QueuedEvent,
  type ReadCheckpoint,
  type ShardPart,
  type Stored,
  type Tally,
  type WorldOptions,
  type WorldStats,
} from './checkpoint-sim-common.js';

export { CheckFailure, type Breakage, type WorldOptions, type WorldStats } from './checkpoint-sim-common.js';

export class CheckpointWorld {
  readonly stats: WorldStats;
  private readonly random: () => number;
  private readonly queue = new EventQueue<QueuedEvent>();
  private readonly decoder = new EnvelopeDecoder();
  private order = 0;
  nowMs = 0;
  /** Global event sequence: orders origins and snapshots. */
  private seq = 0;
  private nextId = 1;
  private readonly processes: Proc[] = [];
  private readonly channels: Channel[] = [];
  /** The channel a message from process `from` takes towards process `to`: nextHop[from][to]. */
  private nextHop: (Channel | undefined)[][] = [];
  /** Indexes of the shards (the processes that own key groups). */
  private shardIndexes: number[] = [];
  private readonly keyGroups: number;
  /** Key group → owning process index (this epoch). */
  private owner: number[] = [];
  private groupsOf: number[][] = [];
  private epoch = 0;
  private log: EpochLog;
  private faulty: boolean;
  private readonly calmStartMs: number;
  private readonly endMs: number;
  private readonly intervalMs: number;
  private readonly ackTimeoutMs: number;
  private readonly retain: number;
  private breakagePending: boolean;

  private coordinator: CheckpointCoordinator;
  /** Bumped when a new coordinator takes over (a new leader): the old one's writes and ticks are fenced. */
  private coordinatorTerm = 0;
  /** Bumped to cancel the scheduled tick. */
  private tickToken = 0;
  private scheduledTickMs = Infinity;
  /** From a crash's detection until the recovery: the coordinator starts nothing. */
  private fenced = false;

  private readonly store = new Map<string, Stored>();
  private pointer: number | null = null;
  private readonly pointerHistory: { term: number; checkpoint: number }[] = [];
  /** `${term}:${checkpoint}` → outcome. */
  private readonly outcomes = new Map<string, 'committed' | 'failed'>();
  private readonly starts: { term: number; checkpoint: number; timeMs: number }[] = [];
  private lastStartInTerm = 0;
  private readonly commits: Commit[] = [];
  private readonly recoveries: number[] = [];
  private recovering = false;

  /** Messages whose application emits egress. */
  private readonly withEgress = new Set<number>();
  /** Messages applied in the restored state of some committed checkpoint. */
  private readonly committedApplied = new Set<number>();
  /** Per key group: the message of each egress seq released (index: seq). */
  private readonly releasedBySeq: number[][];
  /** Message id → its released record id. */
  private readonly releasedMessages = new Map<number, string>();

  /** The shard whose cut handles a barrier's arrival now, the checkpoint it forwards, and how many times. */
  private barrierArrival: Proc | null = null;
  private forwarded: { checkpoint: number; writes: number } | null = null;

  constructor(private readonly options: WorldOptions) {
    this.random = createRandom(options.seed);
    this.faulty = options.faults;
    this.breakagePending = options.breakage !== undefined;
    this.intervalMs = 50 + this.int(100);
    this.ackTimeoutMs = 250 + this.int(250);
    this.retain = 1 + this.int(4);
    this.calmStartMs = options.durationMs;
    this.endMs = this.calmStartMs + 800 + this.ackTimeoutMs + 5 * this.intervalMs;
    const shardCount = this.buildTopology();
    this.keyGroups = shardCount + this.int(2 * shardCount + 1);
    this.releasedBySeq = Array.from({ length: this.keyGroups }, () => []);
    for (const proc of this.processes) if (proc.main === null) proc.shard = this.newShardPart(proc);
    this.place();
    this.log = { epoch: 0, baseCounters: new Map(), baseIds: new Uint8Array(0), baseSize: 0, firstId: this.nextId, origins: [] };
    this.coordinator = this.newCoordinator([], 0);
    this.stats = {
      processes: this.processes.length,
      keyGroups: this.keyGroups,
      started: 0,
      committed: 0,
      failed: 0,
      superseded: 0,
      recordedMessages: 0,
      queuedMessages: 0,
      reusedObjects: 0,
      recoveries: 0,
      coordinators: 1,
      messages: 0,
      egressReleased: 0,
      egressRepeats: 0,
      deletedKeys: 0,
    };
  }

  /** Runs the faulty phase, then the calm phase, then the end-of-run checks. */
  run(): WorldStats {
    for (const proc of this.processes) this.scheduleExternal(proc);
    this.scheduleTick();
    this.scheduleCrash(0);
    while (this.queue.size > 0 && this.queue.peek()!.timeMs <= this.endMs) {
      const event = this.queue.pop()!;
      this.nowMs = event.timeMs;
      if (this.faulty && this.nowMs >= this.calmStartMs) this.faulty = false;
      event.run();
    }
    this.nowMs = this.endMs;
    this.finalChecks();
    return this.stats;
  }

  // ---- randomness and scheduling ----

  private int(bound: number): number {
    return Math.floor(this.random() * bound);
  }

  private at(timeMs: number, run: () => void): void {
    this.queue.push({ timeMs, order: this.order++, run });
  }

  private fail(message: string): never {
    throw new CheckFailure(`at ${this.nowMs} ms (epoch ${this.epoch}): ${message}`);
  }

  /** True once, at the first chance for the breakage `kind` (negative controls only). */
  private breakNow(kind: Breakage): boolean {
    if (!this.breakagePending || this.options.breakage !== kind || this.nowMs < BREAKAGE_FROM_MS) return false;
    this.breakagePending = false;
    return true;
  }

  // ---- topology and placement ----

  /** Builds processes and channels; returns the number of shards. */
  private buildTopology(): number {
    const link = (from: number, to: number) => {
      const channel: Channel = { id: `${this.processes[from]!.id}>${this.processes[to]!.id}`, from, to, lastDeliveryMs: 0 };
      this.channels.push(channel);
      this.processes[from]!.outputs.push(channel);
      this.processes[from]!.outputTo.set(to, channel);
      this.processes[to]!.inputs.push(channel);
    };
    const add = (id: string, source: boolean) => {
      const index = this.processes.length;
      this.processes.push({
        index,
        id,
        thread: index + 1,
        inputs: [],
        outputs: [],
        outputTo: new Map(),
        meanGapMs: 10 + this.int(30),
        alive: true,
        incarnation: 0,
        // Filled in once the channels exist (sources) and the key groups are known (shards).
        main: source ? { tracker: undefined as unknown as BarrierTracker<Uint8Array, string>, open: new Set() } : null,
        shard: null,
        snapSeq: new Map(),
      });
      return index;
    };
    if (this.options.topology === 'nodes') {
      // Each node: a main thread (source) and its shards; threads of a node all linked; mains linked.
      const nodes = 1 + this.int(3);
      const shardCounts = Array.from({ length: nodes }, () => (nodes === 1 ? 1 : 0) + this.int(4));
      if (!shardCounts.some((count) => count > 0)) shardCounts[0] = 1;
      const mains: number[] = [];
      for (let node = 0; node < nodes; node++) {
        const threads = [add(`n${node}`, true)];
        mains.push(threads[0]!);
        for (let shard = 0; shard < shardCounts[node]!; shard++) threads.push(add(`n${node}s${shard}`, false));
        for (const a of threads) for (const b of threads) if (a !== b) link(a, b);
      }
      for (const a of mains) for (const b of mains) if (a !== b) link(a, b);
    } else {
      // A random directed graph with a ring through every process (so barriers reach everyone); at least
      // one source and one shard.
      const count = 2 + this.int(5);
      const sources = new Set<number>();
      for (let index = 0; index < count; index++) if (this.random() < 0.4) sources.add(index);
      if (sources.size === 0) sources.add(this.int(count));
      if (sources.size === count) sources.delete(this.int(count));
      for (let index = 0; index < count; index++) add(`p${index}`, sources.has(index));
      for (let a = 0; a < count; a++) {
        for (let b = 0; b < count; b++) {
          if (a !== b && (b === (a + 1) % count || this.random() < 0.5)) link(a, b);
        }
      }
    }
    for (const proc of this.processes) if (proc.main !== null) proc.main.tracker = this.newTracker(proc, 0);
    this.nextHop = this.processes.map((proc) => this.routesFrom(proc));
    this.shardIndexes = this.processes.filter((proc) => proc.main === null).map((proc) => proc.index);
    return this.shardIndexes.length;
  }

  /** Breadth-first: the first channel of a shortest path from `proc` to every process. */
  private routesFrom(proc: Proc): (Channel | undefined)[] {
    const first: (Channel | undefined)[] = new Array(this.processes.length).fill(undefined);
    const frontier = [proc.index];
    const seen = new Set(frontier);
    while (frontier.length > 0) {
      const at = frontier.shift()!;
      for (const channel of this.processes[at]!.outputs) {
        if (seen.has(channel.to)) continue;
        seen.add(channel.to);
        first[channel.to] = at === proc.index ? channel : first[at];
        frontier.push(channel.to);
      }
    }
    return first;
  }

  private newTracker(proc: Proc, lastCheckpoint: number): BarrierTracker<Uint8Array, string> {
    return new BarrierTracker<Uint8Array, string>({ inputs: proc.inputs.map((channel) => channel.id), source: true, lastCheckpoint });
  }

  private newShardPart(proc: Proc): ShardPart {
    const groups = newKeyGroupState(this.keyGroups);
    const world = this;
    const host: CutHost = {
      thread: proc.thread,
      threads: this.processes.length + 1,
      groups,
      get epoch() {
        return world.epoch;
      },
      owns: (keyGroup) => this.owner[keyGroup] === proc.index,
      addWaiting: (images) => {
        for (const item of proc.shard!.local) images.get(item.keyGroup)?.queued.push(item.bytes.slice());
      },
      write: (thread, bytes) => this.onShardWrite(proc, thread, bytes),
      scheduleFlush: () => {},
      flush: () => {},
    };
    const cut = new ShardCut({
      host,
      inputs: proc.inputs.map((channel) => this.processes[channel.from]!.thread),
      // Encoding is synchronous here: onPart is called within the barrier's arrival.
      pause: null,
      now: () => this.nowMs,
      onPart: (part) => this.onShardPart(proc, part),
    });
    return { groups, cut, local: [], turnScheduled: false, openSnapshot: null };
  }

  /** Key groups to shards at random, at least one each. */
  private place(): void {
    const count = this.shardIndexes.length;
    const groups = Array.from({ length: this.keyGroups }, (_, group) => group);
    for (let index = groups.length - 1; index > 0; index--) {
      const other = this.int(index + 1);
      [groups[index], groups[other]] = [groups[other]!, groups[index]!];
    }
    this.owner = new Array<number>(this.keyGroups);
    groups.forEach((group, position) => (this.owner[group] = this.shardIndexes[position < count ? position : this.int(count)]!));
    this.groupsOf = this.processes.map(() => []);
    for (let group = 0; group < this.keyGroups; group++) this.groupsOf[this.owner[group]!]!.push(group);
  }

  private newCoordinator(committed: CheckpointManifest[], lastCheckpoint: number): CheckpointCoordinator {
    return new CheckpointCoordinator({
      participants: this.processes.filter((proc) => proc.alive).map((proc) => proc.id),
      keyGroups: this.keyGroups,
      view: `v${this.epoch}`,
      intervalMs: this.intervalMs,
      ackTimeoutMs: this.ackTimeoutMs,
      retain: this.retain,
      committed,
      lastCheckpoint,
      manifestKey,
    });
  }

  // ---- process behaviour ----

  private scheduleExternal(proc: Proc): void {
    const epoch = this.epoch;
    const incarnation = proc.incarnation;
    this.at(this.nowMs + 1 + this.int(2 * proc.meanGapMs), () => {
      if (epoch !== this.epoch || incarnation !== proc.incarnation || !proc.alive) return;
      const hops = this.random() < 0.5 ? 0 : 1 + this.int(3);
      this.originate(proc, 1 + this.int(9), hops);
      this.scheduleExternal(proc);
    });
  }

  /** A counter of `proc` (a shard), of a shard it has a channel to, or of any shard. */
  private pickCounter(proc: Proc): number {
    const near: number[] = [];
    if (proc.shard !== null) near.push(proc.index);
    for (const channel of proc.outputs) if (this.processes[channel.to]!.shard !== null) near.push(channel.to);
    const target = near.length === 0 || this.random() < 0.25 ? this.shardIndexes[this.int(this.shardIndexes.length)]! : near[this.int(near.length)]!;
    const groups = this.groupsOf[target]!;
    // Skewed towards one key group per shard, so others often stay unchanged (incremental objects).
    const group = this.random() < 0.7 ? groups[0]! : groups[this.int(groups.length)]!;
    return group + this.keyGroups * this.int(COUNTERS_PER_GROUP);
  }

  private originate(proc: Proc, amount: number, hops: number): void {
    const counter = this.pickCounter(proc);
    const id = this.nextId++;
    const egress = this.random() < 0.5;
    if (egress) this.withEgress.add(id);
    this.log.origins.push({ process: proc.index, seq: this.seq++, counter, amount });
    this.stats.messages++;
    const keyGroup = counter % this.keyGroups;
    const bytes = encodeInvoke(keyGroup, counter, { id, amount, hops, egress });
    const target = this.owner[keyGroup]!;
    if (target === proc.index) this.enqueueLocal(proc, keyGroup, bytes);
    else this.send(this.nextHop[proc.index]![target]!, { kind: 'envelope', bytes });
  }

  /** A message to a shard's own key group: delivered next turn, marked changed now (as Shard.route does). */
  private enqueueLocal(proc: Proc, keyGroup: number, bytes: Uint8Array): void {
    const shard = proc.shard!;
    shard.groups.changed[keyGroup] = 1;
    shard.local.push({ keyGroup, bytes });
    if (shard.turnScheduled) return;
    shard.turnScheduled = true;
    const epoch = this.epoch;
    const incarnation = proc.incarnation;
    this.at(this.nowMs + this.int(3), () => {
      if (epoch !== this.epoch || incarnation !== proc.incarnation || !proc.alive) return;
      shard.turnScheduled = false;
      // What this turn's deliveries send to themselves waits for the next turn.
      for (const item of shard.local.splice(0)) this.deliverMessage(proc, this.decode(item.bytes), false);
    });
  }

  private decode(bytes: Uint8Array): Message {
    return this.decoder.decodeInvoke(bytes, 0, bytes.length);
  }

  /** Shard.deliver and the function: the counter and the applied record, changed mark, egress, next hop. */
  private deliverMessage(proc: Proc, message: Message, fromChannel: boolean): void {
    const shard = proc.shard!;
    const keyGroup = message.keyGroup;
    const body = bodyOf(message);
    if (this.owner[keyGroup] !== proc.index) this.fail(`${proc.id} got message ${body.id} for key group ${keyGroup}, owned by ${this.processes[this.owner[keyGroup]!]!.id}`);
    const counter = Number(message.targetId);
    if (counter % this.keyGroups !== keyGroup) this.fail(`message ${body.id} names key group ${keyGroup} for counter ${counter}`);
    const groups = shard.groups;
    // The breakage strikes where the mark matters: a key group unchanged since its last snapshot.
    if (!(fromChannel && !body.egress && groups.changed[keyGroup] === 0 && this.breakNow('skip-changed'))) groups.changed[keyGroup] = 1;
    const appliedId = String(body.id);
    if (groups.records.get(keyGroup, APPLIED, appliedId) !== undefined) this.fail(`${proc.id} applies message ${body.id} a second time`);
    const value = (groups.records.get(keyGroup, COUNTER, message.targetId) as number | undefined) ?? 0;
    groups.records.set(keyGroup, COUNTER, message.targetId, value + body.amount);
    groups.records.set(keyGroup, APPLIED, appliedId, body.amount);
    if (body.egress) shard.cut.holdEgress(keyGroup, EGRESS_NAME, COUNTER_TYPE, message.targetId, toTypedValue(body.id, Types.long));
    if (body.hops > 0) this.originate(proc, body.amount, body.hops - 1);
  }

  private send(channel: Channel, item: ChannelItem): void {
    let delay = this.int(9);
    if (this.faulty && this.random() < 0.002) delay += 100 + this.int(400); // a stall: FIFO holds the rest back
    const timeMs = Math.max(this.nowMs + delay, channel.lastDeliveryMs);
    channel.lastDeliveryMs = timeMs;
    const epoch = this.epoch;
    this.at(timeMs, () => {
      if (epoch === this.epoch) this.deliver(channel, item);
    });
  }

  private deliver(channel: Channel, item: ChannelItem): void {
    const proc = this.processes[channel.to]!;
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
    if (main.tracker.onMessage(channel.id, bytes)) this.stats.recordedMessages++;
    this.send(this.nextHop[proc.index]![this.owner[readKeyGroup(bytes, 0)]!]!, item);
  }

  /** A shard, as Shard.visit() does: record while the cut records, pass on what is not its own, deliver. */
  private shardReceives(proc: Proc, shard: ShardPart, channel: Channel, item: ChannelItem): void {
    // A shard's input rings never close (its node's threads die together): the cut has no word for it.
    if (item.kind === 'close') return;
    const bytes = item.bytes;
    const source = this.processes[channel.from]!.thread;
    if (bytes[0] === EnvelopeKind.Barrier) {
      this.barrierArrival = proc;
      this.forwarded = null;
      shard.cut.onBarrier(source, readBarrier(bytes, 0));
      this.barrierArrival = null;
      const forwarded = this.forwarded as { checkpoint: number; writes: number } | null;
      if (forwarded !== null && forwarded.writes !== this.processes.length) {
        this.fail(`${proc.id} forwarded barrier ${forwarded.checkpoint} to ${forwarded.writes} of the ${this.processes.length} other threads`);
      }
      return;
    }
    if (bytes[0] !== EnvelopeKind.Invoke) this.fail(`${proc.id} got an envelope of kind ${bytes[0]}`);
    const keyGroup = readKeyGroup(bytes, 0);
    const recording = shard.cut.isRecording(source);
    const owner = this.owner[keyGroup]!;
    if (owner !== proc.index) {
      if (recording) this.record(shard, source, bytes);
      this.send(this.nextHop[proc.index]![owner]!, item);
      return;
    }
    const message = this.decode(bytes);
    if (recording && !this.breakNow('drop-recording')) this.record(shard, source, bytes);
    this.deliverMessage(proc, message, true);
  }

  private record(shard: ShardPart, source: number, bytes: Uint8Array): void {
    shard.cut.record(source, bytes.slice());
    this.stats.recordedMessages++;
  }

  /** CutHost.write: barriers on the output channel to that thread, egress to thread 0. */
  private onShardWrite(proc: Proc, thread: number, bytes: Uint8Array): void {
    const kind = bytes[0];
    if (kind === EnvelopeKind.Egress) {
      if (thread !== MAIN_THREAD) this.fail(`${proc.id} wrote an egress record to thread ${thread}`);
      this.onEgress(bytes);
      return;
    }
    if (kind !== EnvelopeKind.Barrier) this.fail(`${proc.id}'s cut wrote an envelope of kind ${kind}`);
    const checkpoint = readBarrier(bytes, 0);
    if (this.barrierArrival !== proc) this.fail(`${proc.id} forwarded barrier ${checkpoint} outside a barrier's arrival`);
    if (this.forwarded === null) {
      // The cut snapshots right before it forwards: this is the snapshot.
      if (proc.snapSeq.has(checkpoint)) this.fail(`${proc.id} took its snapshot of ${checkpoint} twice`);
      proc.snapSeq.set(checkpoint, this.seq++);
      const shard = proc.shard!;
      if (shard.openSnapshot !== null) this.stats.superseded++;
      shard.openSnapshot = checkpoint;
      this.forwarded = { checkpoint, writes: 0 };
    } else if (this.forwarded.checkpoint !== checkpoint) {
      this.fail(`${proc.id} forwarded barriers ${this.forwarded.checkpoint} and ${checkpoint} on one arrival`);
    }
    this.forwarded.writes++;
    if (thread === proc.thread) this.fail(`${proc.id} wrote a barrier to itself`);
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
  private signal(proc: Proc, maxDelayMs: number, run: () => void): void {
    const epoch = this.epoch;
    const incarnation = proc.incarnation;
    this.at(this.nowMs + 1 + this.int(maxDelayMs), () => {
      if (epoch === this.epoch && incarnation === proc.incarnation && proc.alive) run();
    });
  }

  /** A main thread's tracker actions. */
  private perform(proc: Proc, actions: BarrierAction<Uint8Array, string>[]): void {
    const main = proc.main!;
    actions.forEach((action, index) => {
      switch (action.type) {
        case 'snapshot': {
          const next = actions[index + 1];
          if (proc.snapSeq.has(action.checkpoint)) this.fail(`${proc.id} was told to snapshot ${action.checkpoint} twice`);
          if (next?.type !== 'forward-barrier' || next.checkpoint !== action.checkpoint) this.fail(`${proc.id}: snapshot ${action.checkpoint} not followed by forward-barrier`);
          proc.snapSeq.set(action.checkpoint, this.seq++);
          main.open.add(action.checkpoint);
          break;
        }
        case 'forward-barrier':
          if (actions[index - 1]?.type !== 'snapshot') this.fail(`${proc.id}: forward-barrier ${action.checkpoint} without a snapshot just before`);
          for (const channel of proc.outputs) this.send(channel, { kind: 'envelope', bytes: barrierEnvelope(action.checkpoint) });
          break;
        case 'complete': {
          if (!main.open.delete(action.checkpoint)) this.fail(`${proc.id}: complete ${action.checkpoint} without its snapshot`);
          const messages: Uint8Array[] = [];
          for (const list of action.recorded.values()) messages.push(...list);
          this.upload(proc, { checkpoint: action.checkpoint, epoch: this.epoch, keyGroups: [], channel: messages.length > 0 ? messages : null, error: null });
          break;
        }
        case 'aborted':
          if (!main.open.delete(action.checkpoint)) this.fail(`${proc.id}: aborted ${action.checkpoint}, which it had no snapshot of`);
          if (action.reason === 'superseded') this.stats.superseded++;
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
      if (epoch === this.epoch) this.toCoordinator((coordinator) => coordinator.uploadFailed(this.nowMs, proc.id, checkpoint, reason));
      return;
    }
    const { objects, channel, puts } = planUpload(part, `${proc.id}-t${proc.thread}-g${epoch}`);
    const slow = this.faulty && this.random() < 0.02;
    const broken = this.faulty && this.random() < 0.02;
    this.at(this.nowMs + (slow ? 200 + this.int(800) : 1 + this.int(30)), () => {
      // A crash kills the upload; a recovery does not stop one in flight (a PUT lands late), but the
      // shell fences its acknowledgement.
      if (incarnation !== proc.incarnation) return;
      if (broken) {
        if (epoch === this.epoch) this.toCoordinator((coordinator) => coordinator.uploadFailed(this.nowMs, proc.id, checkpoint, 'injected upload failure'));
        return;
      }
      for (const [key, bytes] of puts) this.store.set(key, { kind: 'object', bytes });
      for (const [, ref] of objects) if (ref === null) this.stats.reusedObjects++;
      if (epoch === this.epoch) this.toCoordinator((coordinator) => coordinator.acknowledged(this.nowMs, proc.id, checkpoint, new Map(objects), channel === null ? [] : [channel]));
    });
  }

  // ---- egress ----

  /** A released egress record at the sink, as a subscription sees it: repeats (same key group and seq) dropped. */
  private onEgress(bytes: Uint8Array): void {
    const record = this.decoder.decodeEgress(bytes, 0, bytes.length);
    const { keyGroup, recordSeq: seq } = record;
    const id = record.decoded as number;
    if (seq === null) this.fail(`an egress record of key group ${keyGroup} without a seq`);
    const released = this.releasedBySeq[keyGroup]!;
    const recordId = `${keyGroup}:${seq}`;
    if (seq < released.length) {
      if (released[seq] !== id) this.fail(`egress record ${recordId} was released for message ${released[seq]}, and again for message ${id}`);
      this.stats.egressRepeats++;
      return;
    }
    if (seq !== released.length) this.fail(`egress of key group ${keyGroup} jumps from seq ${released.length - 1} to ${seq}`);
    if (!this.committedApplied.has(id)) this.fail(`egress record ${recordId} of message ${id} was released, but no committed checkpoint covers that message`);
    const earlier = this.releasedMessages.get(id);
    if (earlier !== undefined) this.fail(`message ${id} was released as egress record ${earlier} and again as ${recordId}`);
    released.push(id);
    this.releasedMessages.set(id, recordId);
    this.stats.egressReleased++;
  }

  // ---- the coordinator and the store ----

  private toCoordinator(call: (coordinator: CheckpointCoordinator) => CoordinatorAction[]): void {
    const epoch = this.epoch;
    const term = this.coordinatorTerm;
    this.at(this.nowMs + 1 + this.int(10), () => {
      if (epoch === this.epoch && term === this.coordinatorTerm) this.handle(call(this.coordinator));
    });
  }

  private scheduleTick(): void {
    const deadline = this.fenced ? Infinity : this.coordinator.nextDeadline();
    if (deadline === Infinity) {
      this.scheduledTickMs = Infinity;
      return;
    }
    const timeMs = Math.max(this.nowMs, deadline);
    if (timeMs === this.scheduledTickMs) return;
    this.scheduledTickMs = timeMs;
    const tick = ++this.tickToken;
    this.at(timeMs, () => {
      if (tick !== this.tickToken) return;
      this.scheduledTickMs = Infinity;
      this.handle(this.coordinator.tick(this.nowMs));
    });
  }

  private storeWrite(checkpoint: number, what: 'manifest' | 'pointer', write: () => void): void {
    const term = this.coordinatorTerm;
    const broken = this.faulty && this.random() < 0.03;
    this.at(this.nowMs + 1 + this.int(10), () => {
      // A deposed coordinator's writes never land (the shell fences them).
      if (term !== this.coordinatorTerm) return;
      if (broken) {
        this.handle(this.coordinator.writeFailed(this.nowMs, checkpoint, what, 'injected write failure'));
        return;
      }
      write();
      this.handle(what === 'manifest' ? this.coordinator.manifestWritten(this.nowMs, checkpoint) : this.coordinator.pointerWritten(this.nowMs, checkpoint));
    });
  }

  private outcomeKey(checkpoint: number): string {
    return `${this.coordinatorTerm}:${checkpoint}`;
  }

  private handle(actions: CoordinatorAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'start': {
          const { checkpoint } = action;
          const lastCommitted = this.commits.at(-1)?.checkpoint ?? 0;
          if (checkpoint <= this.lastStartInTerm || checkpoint <= lastCommitted) {
            this.fail(`checkpoint ${checkpoint} started after ${this.lastStartInTerm} (last committed ${lastCommitted}): numbers must increase strictly`);
          }
          this.lastStartInTerm = checkpoint;
          this.starts.push({ term: this.coordinatorTerm, checkpoint, timeMs: this.nowMs });
          this.stats.started++;
          for (const proc of this.processes) {
            const main = proc.main;
            if (main !== null && action.participants.includes(proc.id)) this.signal(proc, 10, () => this.perform(proc, main.tracker.start(checkpoint)));
          }
          break;
        }
        case 'write-manifest': {
          const { checkpoint, manifest, key } = action;
          if (manifest.objects.length !== this.keyGroups) this.fail(`manifest ${checkpoint} has ${manifest.objects.length} objects for ${this.keyGroups} key groups`);
          manifest.objects.forEach((ref, group) => {
            if (ref !== '' && this.store.get(parseObjectRef(ref).key)?.kind !== 'object') this.fail(`manifest ${checkpoint} names ${ref} for key group ${group}, which the store does not hold`);
          });
          for (const channelKey of manifest.channels) if (this.store.get(channelKey)?.kind !== 'object') this.fail(`manifest ${checkpoint} names channel object ${channelKey}, which the store does not hold`);
          const copy = JSON.parse(JSON.stringify(manifest)) as CheckpointManifest;
          this.storeWrite(checkpoint, 'manifest', () => this.store.set(key, { kind: 'manifest', manifest: copy }));
          break;
        }
        case 'write-pointer': {
          const { checkpoint } = action;
          this.storeWrite(checkpoint, 'pointer', () => {
            if (this.pointer !== null && checkpoint <= this.pointer) this.fail(`the pointer would go back from ${this.pointer} to ${checkpoint}`);
            this.pointer = checkpoint;
            this.pointerHistory.push({ term: this.coordinatorTerm, checkpoint });
          });
          break;
        }
        case 'committed':
          this.onCommitted(action.checkpoint, action.manifest);
          break;
        case 'failed': {
          const { checkpoint } = action;
          const key = this.outcomeKey(checkpoint);
          if (this.outcomes.has(key)) this.fail(`checkpoint ${checkpoint} failed after it ${this.outcomes.get(key)}`);
          if (this.pointer === checkpoint) this.fail(`checkpoint ${checkpoint} failed, but the pointer names it`);
          this.outcomes.set(key, 'failed');
          this.stats.failed++;
          for (const proc of this.processes) {
            if (!proc.alive) continue;
            const { main, shard } = proc;
            if (main !== null) this.signal(proc, 30, () => this.perform(proc, main.tracker.abort(checkpoint)));
            else {
              this.signal(proc, 30, () => {
                if (shard!.openSnapshot !== null && shard!.openSnapshot <= checkpoint) shard!.openSnapshot = null;
                shard!.cut.outcome(checkpoint, false);
                if (this.options.breakage === 'release-on-failure') shard!.cut.release(checkpoint);
              });
            }
          }
          break;
        }
        case 'delete':
          this.onDelete(action.keys);
          break;
      }
    }
    this.scheduleTick();
  }

  private onCommitted(checkpoint: number, manifest: CheckpointManifest): void {
    const key = this.outcomeKey(checkpoint);
    if (this.outcomes.has(key)) this.fail(`checkpoint ${checkpoint} committed after it ${this.outcomes.get(key)}`);
    this.outcomes.set(key, 'committed');
    if (this.pointer !== checkpoint) this.fail(`checkpoint ${checkpoint} committed, but the pointer is ${this.pointer}`);
    const previous = this.commits.at(-1)?.checkpoint ?? 0;
    if (checkpoint <= previous) this.fail(`checkpoint ${checkpoint} committed after ${previous}`);
    const stored = this.store.get(manifestKey(checkpoint));
    if (stored?.kind !== 'manifest' || JSON.stringify(stored.manifest) !== JSON.stringify(manifest)) this.fail(`committed manifest ${checkpoint} is not the one in the store`);
    const expectedRetained = this.commits.slice(Math.max(0, this.commits.length - (this.retain - 1))).map((commit) => commit.checkpoint);
    if (JSON.stringify(manifest.retained) !== JSON.stringify(expectedRetained)) this.fail(`manifest ${checkpoint} retains [${manifest.retained}], expected [${expectedRetained}]`);

    const tally = this.checkCut(checkpoint, manifest);
    for (const id of tally.applied) this.committedApplied.add(id);
    this.stats.queuedMessages += tally.queued;
    this.commits.push({
      checkpoint,
      manifest,
      keys: referencedKeys(manifest),
      counters: tally.counters,
      covered: tally.applied.length + tally.pending.length,
      applied: tally.applied,
      timeMs: this.nowMs,
    });
    this.stats.committed++;
    for (const proc of this.processes) {
      const shard = proc.shard;
      if (proc.alive && shard !== null) this.signal(proc, 30, () => shard.cut.outcome(checkpoint, true));
    }
  }

  /** A committed checkpoint's objects, read as a restore reads them (sliceImages, decodeImage, decodeChannelObject). */
  private readCheckpoint(checkpoint: number, manifest: CheckpointManifest): ReadCheckpoint {
    const refs: string[] = [];
    const refGroups: number[] = [];
    manifest.objects.forEach((ref, group) => {
      if (ref === '') return;
      refs.push(ref);
      refGroups.push(group);
    });
    const objects = new Map<string, Uint8Array>();
    refs.forEach((ref, index) => {
      const { key } = parseObjectRef(ref);
      if (objects.has(key)) return;
      const stored = this.store.get(key);
      if (stored?.kind !== 'object') this.fail(`restoring ${checkpoint}: object ${key} of key group ${refGroups[index]} is missing`);
      objects.set(key, stored.bytes);
    });
    const images = new Map<number, KeyGroupImage>();
    sliceImages(refs, objects).forEach((body, index) => {
      const image = decodeImage(body);
      if (image.keyGroup !== refGroups[index]) this.fail(`restoring ${checkpoint}: ${refs[index]} holds key group ${image.keyGroup}, the manifest says ${refGroups[index]}`);
      images.set(image.keyGroup, image);
    });
    const recorded: Uint8Array[] = [];
    for (const key of manifest.channels) {
      const stored = this.store.get(key);
      if (stored?.kind !== 'object') this.fail(`restoring ${checkpoint}: channel object ${key} is missing`);
      recorded.push(...decodeChannelObject(stored.bytes));
    }
    return { images, recorded };
  }

  /**
   * What a restored checkpoint holds: each key group's records (from the state `stateOf` gives, with the
   * images loaded), the messages queued in its images and the recorded ones; counters as after they are
   * applied.
   */
  private tally(checkpoint: number, read: ReadCheckpoint, stateOf: (keyGroup: number) => KeyGroupState): Tally {
    const counters = new Map<number, number>();
    const applied: number[] = [];
    const pending: number[] = [];
    let queued = 0;
    const addPending = (envelope: Uint8Array, where: string) => {
      const message = this.decode(envelope);
      const body = bodyOf(message);
      if (Number(message.targetId) % this.keyGroups !== message.keyGroup) this.fail(`restoring ${checkpoint}: ${where} holds message ${body.id} with a wrong key group`);
      addTo(counters, Number(message.targetId), body.amount);
      pending.push(body.id);
    };
    for (let group = 0; group < this.keyGroups; group++) {
      const tables = stateOf(group).records.peekKeyGroup(group);
      for (const [id, value] of tables?.[COUNTER] ?? []) {
        const counter = Number(id);
        if (counter % this.keyGroups !== group) this.fail(`restoring ${checkpoint}: key group ${group} holds counter ${counter} of another key group`);
        addTo(counters, counter, value as number);
      }
      const appliedHere = tables?.[APPLIED];
      for (const id of appliedHere?.keys() ?? []) applied.push(Number(id));
      const image = read.images.get(group);
      if (image === undefined) continue;
      for (const [seq, bytes] of image.egress ?? []) {
        const egress = this.decoder.decodeEgress(bytes, 0, bytes.length);
        if (egress.recordSeq !== seq || seq >= (image.egressSeq ?? 0)) this.fail(`restoring ${checkpoint}: key group ${group} holds egress seq ${seq} (record ${egress.recordSeq}, next ${image.egressSeq})`);
        if (appliedHere?.has(String(egress.decoded)) !== true) this.fail(`restoring ${checkpoint}: key group ${group} holds egress of message ${egress.decoded}, which it has not applied`);
      }
      for (const envelope of image.queued) {
        if (readKeyGroup(envelope, 0) !== group) this.fail(`restoring ${checkpoint}: key group ${group} queues a message of key group ${readKeyGroup(envelope, 0)}`);
        addPending(envelope, `key group ${group}'s queue`);
        queued++;
      }
    }
    for (const envelope of read.recorded) addPending(envelope, 'a channel object');
    return { counters, applied, pending, queued };
  }

  /**
   * The committed checkpoint restores to the consistent cut, each message covered once. Returns what it
   * holds.
   */
  private checkCut(checkpoint: number, manifest: CheckpointManifest): Tally {
    const read = this.readCheckpoint(checkpoint, manifest);
    const groups = newKeyGroupState(this.keyGroups);
    for (const image of read.images.values()) groups.put(image, checkpoint);
    const tally = this.tally(checkpoint, read, () => groups);
    const log = this.log;
    const expected = new Map(log.baseCounters);
    const inCut = new Uint8Array(log.origins.length);
    let cutSize = 0;
    const snapSeqs = this.processes.map((proc) => proc.snapSeq.get(checkpoint));
    log.origins.forEach((origin, index) => {
      const snapSeq = snapSeqs[origin.process];
      if (snapSeq === undefined) this.fail(`checkpoint ${checkpoint} committed, but ${this.processes[origin.process]!.id} never took its snapshot`);
      if (origin.seq < snapSeq) {
        addTo(expected, origin.counter, origin.amount);
        inCut[index] = 1;
        cutSize++;
      }
    });
    const seen = new Uint8Array(log.origins.length);
    const baseSeen = new Uint8Array(log.baseIds.length);
    let coveredSize = 0;
    let baseCovered = 0;
    const cover = (id: number) => {
      if (id < log.firstId) {
        if (log.baseIds[id] !== 1) this.fail(`checkpoint ${checkpoint} covers message ${id} of an earlier epoch, which the restored checkpoint did not cover`);
        if (baseSeen[id] === 1) this.fail(`checkpoint ${checkpoint} counts message ${id} of the epoch's base twice`);
        baseSeen[id] = 1;
        baseCovered++;
        return;
      }
      const index = id - log.firstId;
      if (inCut[index] !== 1) this.fail(`checkpoint ${checkpoint} covers message ${id}, originated after its originator's snapshot (${this.describe(index)})`);
      if (seen[index] === 1) this.fail(`checkpoint ${checkpoint} counts message ${id} twice: applied, queued or recorded more than once (${this.describe(index)})`);
      seen[index] = 1;
      coveredSize++;
    };
    for (const id of tally.applied) cover(id);
    for (const id of tally.pending) cover(id);
    if (baseCovered !== log.baseSize) {
      const missing = log.baseIds.findIndex((flag, id) => flag === 1 && baseSeen[id] !== 1);
      this.fail(`checkpoint ${checkpoint} misses message ${missing} of the epoch's base (covered by the restored checkpoint)`);
    }
    if (coveredSize !== cutSize) {
      const missing = inCut.findIndex((flag, index) => flag === 1 && seen[index] !== 1);
      this.fail(`checkpoint ${checkpoint} misses message ${log.firstId + missing}: originated before the cut, neither applied, queued nor recorded (${this.describe(missing)})`);
    }
    const difference = counterDifference(tally.counters, expected);
    if (difference !== null) this.fail(`checkpoint ${checkpoint} restores to a state that is not the cut: ${difference}`);
    return tally;
  }

  private describe(index: number): string {
    const origin = this.log.origins[index]!;
    return `from ${this.processes[origin.process]!.id} at seq ${origin.seq}, to ${this.processes[this.owner[origin.counter % this.keyGroups]!]!.id}`;
  }

  /** Nothing a retained manifest needs is deleted. */
  private onDelete(keys: string[]): void {
    const retained = this.commits.slice(-this.retain);
    for (const key of keys) {
      for (const commit of retained) {
        if (manifestKey(commit.checkpoint) === key) this.fail(`deleting ${key}, the manifest of retained checkpoint ${commit.checkpoint}`);
        if (commit.keys.has(key)) this.fail(`deleting ${key}, an object of retained checkpoint ${commit.checkpoint}`);
      }
      if (this.store.delete(key)) this.stats.deletedKeys++;
    }
    const latest = this.commits.at(-1)!;
    if (this.store.get(manifestKey(latest.checkpoint))?.kind !== 'manifest') this.fail(`LATEST's manifest ${latest.checkpoint} is gone`);
  }

  // ---- crashes and recovery ----

  private scheduleCrash(afterMs: number): void {
    if (this.options.crashes <= this.recoveries.length) return;
    const earliest = Math.max(afterMs, 200);
    const latest = this.calmStartMs - 700;
    if (earliest >= latest) return;
    this.at(earliest + this.int(latest - earliest), () => this.crash());
  }

  private crash(): void {
    const proc = this.processes[this.int(this.processes.length)]!;
    proc.alive = false;
    proc.incarnation++;
    // What it sent is still delivered; then its links close.
    for (const channel of proc.outputs) this.send(channel, { kind: 'close' });
    const epoch = this.epoch;
    this.at(this.nowMs + 20 + this.int(130), () => {
      if (epoch !== this.epoch) return;
      // The view change fails the running checkpoint; the leader then fences its coordinator.
      this.handle(this.coordinator.viewChanged(this.nowMs, this.processes.filter((other) => other.alive).map((other) => other.id)));
      this.fenced = true;
      this.tickToken++;
      this.scheduledTickMs = Infinity;
      this.recovering = true;
      this.at(this.nowMs + this.int(300), () => this.recover());
    });
  }

  /** A new epoch: every process reset and loaded from LATEST, key groups placed anew, channels fresh. */
  private recover(): void {
    // The commit point cannot be taken back: wait for an in-flight pointer write to settle.
    if (this.coordinator.inProgress?.phase === 'pointer') {
      this.at(this.nowMs + 1, () => this.recover());
      return;
    }
    const latest = this.coordinator.lastCommitted;
    if ((this.pointer ?? 0) !== latest) this.fail(`the coordinator's last commit is ${latest}, the pointer ${this.pointer}`);
    this.epoch++;
    this.recovering = false;
    this.fenced = false;
    this.recoveries.push(this.nowMs);
    this.stats.recoveries++;
    const manifest = latest === 0 ? null : this.readManifest(latest);
    if (this.options.coordinatorFailover && this.random() < 0.5) {
      // A new leader: it knows only what the store says.
      const committed = manifest === null ? [] : [...manifest.retained.map((checkpoint) => this.readManifest(checkpoint)), manifest];
      this.coordinatorTerm++;
      this.lastStartInTerm = 0;
      this.tickToken++;
      this.scheduledTickMs = Infinity;
      for (const proc of this.processes) proc.alive = true; // the crashed one is replaced in this epoch
      this.coordinator = this.newCoordinator(committed, latest);
      this.stats.coordinators++;
    }
    this.place();
    for (const channel of this.channels) channel.lastDeliveryMs = this.nowMs;
    // Everyone forgets everything (KeyGroupMoves.reset, CheckpointParticipant.reset).
    for (const proc of this.processes) {
      proc.alive = true;
      proc.snapSeq = new Map();
      if (proc.main !== null) {
        proc.main.tracker.reset(latest, proc.inputs.map((channel) => channel.id));
        proc.main.open.clear();
      } else {
        const shard = proc.shard!;
        shard.groups.clear();
        shard.cut.reset();
        shard.local = [];
        shard.turnScheduled = false;
        shard.openSnapshot = null;
      }
    }
    let baseCounters = new Map<number, number>();
    let baseIds = new Uint8Array(0);
    let baseSize = 0;
    let read: ReadCheckpoint = { images: new Map(), recorded: [] };
    if (manifest !== null) {
      read = this.readCheckpoint(latest, manifest);
      // Each shard loads the key groups it owns now (KeyGroupMoves.restore and adopt).
      for (const index of this.shardIndexes) this.processes[index]!.shard!.cut.restored(latest);
      for (let group = 0; group < this.keyGroups; group++) {
        const shard = this.processes[this.owner[group]!]!.shard!;
        const image = read.images.get(group);
        if (image !== undefined) {
          shard.groups.put(image, shard.cut.heldCheckpoint(latest));
          // Held egress of a committed checkpoint goes out now (subscribers drop repeats).
          shard.cut.release(latest);
        }
        shard.groups.changed[group] = 0;
      }
      const tally = this.tally(latest, read, (group) => this.processes[this.owner[group]!]!.shard!.groups);
      const commit = this.commits.at(-1)!;
      const difference = counterDifference(tally.counters, commit.counters);
      if (difference !== null) this.fail(`restoring ${latest} at recovery: ${difference}`);
      if (tally.applied.length + tally.pending.length !== commit.covered) this.fail(`restoring ${latest} at recovery covers ${tally.applied.length + tally.pending.length} messages, its commit ${commit.covered}`);
      baseCounters = tally.counters;
      baseIds = new Uint8Array(this.nextId);
      for (const id of [...tally.applied, ...tally.pending]) baseIds[id] = 1;
      baseSize = tally.applied.length + tally.pending.length;
    }
    this.log = { epoch: this.epoch, baseCounters, baseIds, baseSize, firstId: this.nextId, origins: [] };
    // Every shard has loaded: the restored queued messages run first, then the recorded ones, each at
    // its key group's owner. They are applied now (their amounts are in the base) and send their next hops.
    for (const [group, image] of read.images) {
      for (const envelope of image.queued) this.deliverMessage(this.processes[this.owner[group]!]!, this.decode(envelope), false);
    }
    for (const envelope of read.recorded) this.deliverMessage(this.processes[this.owner[readKeyGroup(envelope, 0)]!]!, this.decode(envelope), false);
    this.handle(this.coordinator.viewChanged(this.nowMs, this.processes.map((proc) => proc.id), `v${this.epoch}`));
    for (const proc of this.processes) this.scheduleExternal(proc);
    this.scheduleCrash(this.nowMs + this.ackTimeoutMs);
  }

  private readManifest(checkpoint: number): CheckpointManifest {
    const stored = this.store.get(manifestKey(checkpoint));
    if (stored?.kind !== 'manifest') this.fail(`manifest ${checkpoint} is missing from the store`);
    return stored.manifest;
  }

  // ---- end of run ----

  private finalChecks(): void {
    if (this.recovering) this.fail('a recovery was still pending at the end');
    // The pointer only ever named committed checkpoints.
    for (const { term, checkpoint } of this.pointerHistory) {
      const outcome = this.outcomes.get(`${term}:${checkpoint}`);
      if (outcome !== 'committed') this.fail(`the pointer named ${checkpoint}, whose outcome is ${outcome ?? 'none'}`);
    }
    // Once calm, every checkpoint started commits (after a crash too).
    const settledMs = this.calmStartMs + 800;
    const calm = this.starts.filter((start) => start.timeMs >= settledMs && start.timeMs <= this.endMs - this.ackTimeoutMs - 50);
    if (calm.length === 0) this.fail('no checkpoint started in the calm phase');
    for (const start of calm) {
      const outcome = this.outcomes.get(`${start.term}:${start.checkpoint}`);
      if (outcome !== 'committed') this.fail(`checkpoint ${start.checkpoint}, started at ${start.timeMs} ms in the calm phase, ended ${outcome ?? 'never'}`);
    }
    const lastRecovery = this.recoveries.at(-1);
    if (lastRecovery !== undefined && !this.commits.some((commit) => commit.timeMs > lastRecovery)) this.fail(`nothing committed after the recovery at ${lastRecovery} ms`);
    // Every message with egress that a settled commit applied was released (its outcome reached every shard).
    const settled = this.commits.filter((commit) => commit.timeMs <= this.endMs - 50).at(-1);
    if (settled === undefined) this.fail('no commit settled before the end');
    for (const id of settled.applied) {
      if (this.withEgress.has(id) && !this.releasedMessages.has(id)) this.fail(`checkpoint ${settled.checkpoint} committed message ${id}, but its egress was never released`);
    }
    // Everything the retained checkpoints need is there; what only older ones needed is gone.
    const retained = this.commits.slice(-this.retain);
    const needed = new Set<string>();
    for (const commit of retained) {
      needed.add(manifestKey(commit.checkpoint));
      for (const key of commit.keys) needed.add(key);
    }
    for (const key of needed) if (!this.store.has(key)) this.fail(`${key}, needed by a retained checkpoint, is missing`);
    for (const commit of this.commits.slice(0, -this.retain)) {
      for (const key of [manifestKey(commit.checkpoint), ...commit.keys]) {
        if (!needed.has(key) && this.store.has(key)) this.fail(`${key} of checkpoint ${commit.checkpoint}, beyond the ${this.retain} retained, was not deleted`);
      }
    }
  }
}
