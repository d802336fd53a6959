/**
 * A seeded discrete-event world for the checkpoint cores (node/checkpoint/barrier-tracker.ts and
 * node/checkpoint/checkpoint-coordinator.ts): a fake clock, processes joined by FIFO channels with random
 * delays, a fake blob store, and the coordinator over them. Nothing here is real I/O, so a seed replays
 * exactly.
 *
 * Each process is a small state machine whose state is a map of counters, grouped in key groups it
 * owns. It originates messages at random (an increment of a counter owned by itself or a neighbour,
 * sometimes with hops left: the receiver applies it and originates the next hop, so traffic runs in
 * cycles) and runs a BarrierTracker: on 'snapshot' it copies its state, it lets the tracker record
 * channel messages, and on 'complete' it uploads one object per changed key group (state, the ids it
 * applied, the recorded messages aimed at it) and acknowledges. Uploads fail or stall at random, as do
 * manifest and pointer writes and channels; processes crash (their channels close, the coordinator
 * hears of it later) and the world recovers as DESIGN.md says: a new epoch, every process restored from
 * LATEST, key groups placed anew, recorded messages replayed, sometimes under a new coordinator.
 *
 * Checks (a failed one throws a CheckFailure; the caller names the seed):
 * - at every commit: restoring the manifest's objects and replaying their recorded messages gives
 *   exactly the counters of the consistent cut (base state of the epoch plus every message originated
 *   before its originator's snapshot), computed from the world's event log; and at the id level, the
 *   objects cover each such message exactly once (applied or recorded, never both) and no other;
 * - outcomes: a checkpoint commits or fails at most once, never both; the pointer only ever names
 *   committed checkpoints and never goes back; numbers increase strictly, across coordinators too;
 * - the tracker: one snapshot per checkpoint, first, immediately followed by forward-barrier;
 * - retention: a deleted key is referenced by no retained manifest; LATEST's manifest and objects are
 *   always there; at the end, everything of checkpoints past the retain count is gone;
 * - liveness: once faults stop (the calm phase), every checkpoint started commits, also after a crash.
 */
import { EventQueue } from '../../sim/event-queue.js';
import { BarrierTracker, type BarrierAction } from '../../../node/checkpoint/barrier-tracker.js';
import { CheckpointCoordinator, type AcknowledgedObjects, type CheckpointManifest, type CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { createRandom } from '../../cluster/sim-network.js';

export class CheckFailure extends Error {}

export interface WorldOptions {
  seed: number;
  /** 'nodes': main threads (sources) with shards, as Statecraft has; 'mesh': random graph, random sources. */
  topology: 'nodes' | 'mesh';
  /** Length of the faulty phase; a calm phase (no faults, no crashes) follows. */
  durationMs: number;
  /** Crashes injected during the faulty phase, one at a time (each recovered before the next). */
  crashes: number;
  /** Whether a recovery may also replace the coordinator (a new leader). */
  coordinatorFailover: boolean;
  /** Failed and slow uploads, failed store writes, stalled channels. */
  faults: boolean;
}

export interface WorldStats {
  processes: number;
  keyGroups: number;
  started: number;
  committed: number;
  failed: number;
  superseded: number;
  recordedMessages: number;
  reusedObjects: number;
  recoveries: number;
  coordinators: number;
  messages: number;
  deletedKeys: number;
}

const COUNTERS_PER_GROUP = 3;
const manifestKey = (checkpoint: number) => `checkpoints/${checkpoint}/manifest.json`;

interface SimMessage {
  readonly id: number;
  readonly counter: number;
  readonly amount: number;
  /** Hops left: the receiver originates the next one. */
  readonly hops: number;
}

type ChannelItem = { kind: 'message'; message: SimMessage } | { kind: 'barrier'; checkpoint: number } | { kind: 'close' };

interface Channel {
  readonly id: string;
  readonly from: number;
  readonly to: number;
  /** FIFO: a delivery is never scheduled before the previous one on the channel. */
  lastDeliveryMs: number;
}

/** One key group's object in the store. `appliedIds` is append-only: the first `appliedLength` are its. */
interface GroupObject {
  readonly kind: 'group';
  readonly keyGroup: number;
  readonly counters: readonly (readonly [number, number])[];
  readonly appliedIds: readonly number[];
  readonly appliedLength: number;
  readonly recorded: readonly SimMessage[];
}

type Stored = GroupObject | { readonly kind: 'manifest'; readonly manifest: CheckpointManifest };

interface Snapshot {
  counters: Map<number, number>;
  appliedLengths: Map<number, number>;
  lastChange: Map<number, number>;
}

interface Proc {
  readonly index: number;
  readonly id: string;
  readonly source: boolean;
  readonly inputs: Channel[];
  readonly outputs: Channel[];
  /** Output channel by target process. */
  readonly outputTo: Map<number, Channel>;
  /** Mean gap between messages it originates. */
  readonly meanGapMs: number;
  alive: boolean;
  /** Bumped on a crash: uploads and signals of the dead incarnation are lost. */
  incarnation: number;
  tracker: BarrierTracker<SimMessage, string>;
  counters: Map<number, number>;
  /** Per owned key group: ids of messages applied to it this epoch, in order. */
  applied: Map<number, number[]>;
  /** Per owned key group: the event seq of its last change this epoch. */
  lastChange: Map<number, number>;
  /** Event seq of its snapshot per checkpoint (this epoch; the restored one at the restore). */
  snapSeq: Map<number, number>;
  pending: Map<number, Snapshot>;
  snapshotted: Set<number>;
  /** The newest committed checkpoint it has heard of (this epoch), null: none. */
  base: number | null;
}

interface Origin {
  process: number;
  seq: number;
  counter: number;
  amount: number;
}

interface EpochLog {
  epoch: number;
  baseCounters: Map<number, number>;
  /** Message ids of this epoch start here; origins[id - firstId]. */
  firstId: number;
  origins: Origin[];
}

interface QueuedEvent {
  timeMs: number;
  order: number;
  run: () => void;
}


function addTo(map: Map<number, number>, key: number, amount: number): void {
  map.set(key, (map.get(key) ?? 0) + amount);
}

/** First difference between two counter maps (absent = 0), or null. */
function counterDifference(actual: Map<number, number>, expected: Map<number, number>): string | null {
  for (const key of new Set([...actual.keys(), ...expected.keys()])) {
    const a = actual.get(key) ?? 0;
    const e = expected.get(key) ?? 0;
    if (a !== e) return `counter ${key} is ${a}, the cut says ${e}`;
  }
  return null;
}

export class CheckpointWorld {
  readonly stats: WorldStats;
  private readonly random: () => number;
  private readonly queue = new EventQueue<QueuedEvent>();
  private order = 0;
  nowMs = 0;
  /** Global event sequence: orders origins, applications and snapshots. */
  private seq = 0;
  private nextId = 1;
  private readonly processes: Proc[] = [];
  private readonly channels: Channel[] = [];
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

  private coordinator: CheckpointCoordinator;
  private coordinatorGeneration = 0;
  private tickGeneration = 0;
  private scheduledTickMs = Infinity;

  private readonly store = new Map<string, Stored>();
  private pointer: number | null = null;
  private readonly pointerHistory: { generation: number; checkpoint: number }[] = [];
  /** `${generation}:${checkpoint}` → outcome. */
  private readonly outcomes = new Map<string, 'committed' | 'failed'>();
  private readonly starts: { generation: number; checkpoint: number; timeMs: number }[] = [];
  private lastStartInGeneration = 0;
  /** Every commit, in order, with the cut's counters. */
  private readonly commits: { checkpoint: number; manifest: CheckpointManifest; counters: Map<number, number>; timeMs: number }[] = [];
  private readonly recoveries: number[] = [];
  private recovering = false;

  constructor(private readonly options: WorldOptions) {
    this.random = createRandom(options.seed);
    this.faulty = options.faults;
    this.intervalMs = 50 + this.int(100);
    this.ackTimeoutMs = 250 + this.int(250);
    this.retain = 1 + this.int(4);
    this.calmStartMs = options.durationMs;
    this.endMs = this.calmStartMs + 800 + this.ackTimeoutMs + 5 * this.intervalMs;
    this.buildTopology();
    const count = this.processes.length;
    this.keyGroups = count + this.int(2 * count + 1);
    this.place();
    this.log = { epoch: 0, baseCounters: new Map(), firstId: this.nextId, origins: [] };
    this.coordinator = this.newCoordinator([], 0);
    this.stats = {
      processes: count,
      keyGroups: this.keyGroups,
      started: 0,
      committed: 0,
      failed: 0,
      superseded: 0,
      recordedMessages: 0,
      reusedObjects: 0,
      recoveries: 0,
      coordinators: 1,
      messages: 0,
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

  // ---- topology and placement ----

  private buildTopology(): void {
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
        source,
        inputs: [],
        outputs: [],
        outputTo: new Map(),
        meanGapMs: 4 + this.int(16),
        alive: true,
        incarnation: 0,
        tracker: undefined as unknown as BarrierTracker<SimMessage, string>,
        counters: new Map(),
        applied: new Map(),
        lastChange: new Map(),
        snapSeq: new Map(),
        pending: new Map(),
        snapshotted: new Set(),
        base: null,
      });
      return index;
    };
    if (this.options.topology === 'nodes') {
      // Each node: a main thread (source) and its shards; threads of a node all linked; mains linked.
      const nodes = 1 + this.int(3);
      const mains: number[] = [];
      for (let node = 0; node < nodes; node++) {
        const threads = [add(`n${node}`, true)];
        mains.push(threads[0]!);
        const shards = (nodes === 1 ? 1 : 0) + this.int(4);
        for (let shard = 0; shard < shards; shard++) threads.push(add(`n${node}s${shard}`, false));
        for (const a of threads) for (const b of threads) if (a !== b) link(a, b);
      }
      for (const a of mains) for (const b of mains) if (a !== b) link(a, b);
    } else {
      // A random directed graph with a ring through every process (so barriers reach everyone).
      const count = 2 + this.int(5);
      const sources = new Set<number>();
      for (let index = 0; index < count; index++) if (this.random() < 0.4) sources.add(index);
      if (sources.size === 0) sources.add(this.int(count));
      for (let index = 0; index < count; index++) add(`p${index}`, sources.has(index));
      for (let a = 0; a < count; a++) {
        for (let b = 0; b < count; b++) {
          if (a !== b && (b === (a + 1) % count || this.random() < 0.5)) link(a, b);
        }
      }
    }
    for (const proc of this.processes) proc.tracker = this.newTracker(proc, 0);
  }

  private newTracker(proc: Proc, lastCheckpoint: number): BarrierTracker<SimMessage, string> {
    return new BarrierTracker<SimMessage, string>({ inputs: proc.inputs.map((channel) => channel.id), source: proc.source, lastCheckpoint });
  }

  /** Key groups to processes at random, at least one each (a process without any would hold no state). */
  private place(): void {
    const count = this.processes.length;
    const groups = Array.from({ length: this.keyGroups }, (_, group) => group);
    for (let index = groups.length - 1; index > 0; index--) {
      const other = this.int(index + 1);
      [groups[index], groups[other]] = [groups[other]!, groups[index]!];
    }
    this.owner = new Array<number>(this.keyGroups);
    groups.forEach((group, position) => (this.owner[group] = position < count ? position : this.int(count)));
    this.groupsOf = this.processes.map(() => []);
    for (let group = 0; group < this.keyGroups; group++) this.groupsOf[this.owner[group]!]!.push(group);
    for (const proc of this.processes) {
      proc.applied = new Map(this.groupsOf[proc.index]!.map((group) => [group, []]));
      proc.lastChange = new Map();
    }
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

  /** A counter owned by `proc` or by one of the processes it has an output channel to. */
  private pickCounter(proc: Proc): number {
    const choice = this.int(proc.outputs.length + 1);
    const target = choice === proc.outputs.length ? proc.index : proc.outputs[choice]!.to;
    const groups = this.groupsOf[target]!;
    // Skewed towards one key group per process, so others often stay unchanged (incremental objects).
    const group = this.random() < 0.7 ? groups[0]! : groups[this.int(groups.length)]!;
    return group + this.keyGroups * this.int(COUNTERS_PER_GROUP);
  }

  private originate(proc: Proc, amount: number, hops: number): void {
    const counter = this.pickCounter(proc);
    const message: SimMessage = { id: this.nextId++, counter, amount, hops };
    this.log.origins.push({ process: proc.index, seq: this.seq++, counter, amount });
    this.stats.messages++;
    const target = this.owner[counter % this.keyGroups]!;
    if (target === proc.index) this.apply(proc, message);
    else this.send(proc.outputTo.get(target)!, { kind: 'message', message });
  }

  private apply(proc: Proc, message: SimMessage): void {
    const group = message.counter % this.keyGroups;
    if (this.owner[group] !== proc.index) this.fail(`${proc.id} got message ${message.id} for key group ${group}, owned by ${this.owner[group]}`);
    addTo(proc.counters, message.counter, message.amount);
    proc.applied.get(group)!.push(message.id);
    proc.lastChange.set(group, this.seq++);
    if (message.hops > 0) this.originate(proc, message.amount, message.hops - 1);
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
    switch (item.kind) {
      case 'message':
        if (proc.tracker.onMessage(channel.id, item.message)) this.stats.recordedMessages++;
        this.apply(proc, item.message);
        break;
      case 'barrier':
        this.perform(proc, proc.tracker.onBarrier(channel.id, item.checkpoint));
        break;
      case 'close':
        this.perform(proc, proc.tracker.channelClosed(channel.id));
        break;
    }
  }

  /** A signal from the coordinator's side reaches a process later, unless it died or the epoch moved on. */
  private signal(proc: Proc, maxDelayMs: number, run: () => void): void {
    const epoch = this.epoch;
    const incarnation = proc.incarnation;
    this.at(this.nowMs + 1 + this.int(maxDelayMs), () => {
      if (epoch === this.epoch && incarnation === proc.incarnation && proc.alive) run();
    });
  }

  private perform(proc: Proc, actions: BarrierAction<SimMessage, string>[]): void {
    actions.forEach((action, index) => {
      switch (action.type) {
        case 'snapshot': {
          const next = actions[index + 1];
          if (proc.snapshotted.has(action.checkpoint)) this.fail(`${proc.id} was told to snapshot ${action.checkpoint} twice`);
          if (next?.type !== 'forward-barrier' || next.checkpoint !== action.checkpoint) this.fail(`${proc.id}: snapshot ${action.checkpoint} not followed by forward-barrier`);
          proc.snapshotted.add(action.checkpoint);
          proc.snapSeq.set(action.checkpoint, this.seq++);
          proc.pending.set(action.checkpoint, {
            counters: new Map(proc.counters),
            appliedLengths: new Map([...proc.applied].map(([group, ids]) => [group, ids.length])),
            lastChange: new Map(proc.lastChange),
          });
          break;
        }
        case 'forward-barrier':
          if (actions[index - 1]?.type !== 'snapshot') this.fail(`${proc.id}: forward-barrier ${action.checkpoint} without a snapshot just before`);
          for (const channel of proc.outputs) this.send(channel, { kind: 'barrier', checkpoint: action.checkpoint });
          break;
        case 'complete':
          this.complete(proc, action.checkpoint, action.recorded);
          break;
        case 'aborted':
          if (!proc.pending.delete(action.checkpoint)) this.fail(`${proc.id}: aborted ${action.checkpoint}, which it had no snapshot of`);
          if (action.reason === 'superseded') this.stats.superseded++;
          break;
      }
    });
  }

  private complete(proc: Proc, checkpoint: number, recorded: Map<string, SimMessage[]>): void {
    const snapshot = proc.pending.get(checkpoint);
    if (snapshot === undefined) this.fail(`${proc.id}: complete ${checkpoint} without its snapshot`);
    proc.pending.delete(checkpoint);
    const byGroup = new Map<number, SimMessage[]>();
    for (const messages of recorded.values()) {
      for (const message of messages) {
        const group = message.counter % this.keyGroups;
        const list = byGroup.get(group);
        if (list === undefined) byGroup.set(group, [message]);
        else list.push(message);
      }
    }
    // Unchanged since the committed base: no change before this snapshot after the base's snapshot, and
    // nothing recorded (a recorded message is applied after the snapshot, so the base cannot hold it).
    const baseSeq = proc.base === null ? undefined : proc.snapSeq.get(proc.base);
    const ack = new Map<number, string | null>();
    const uploads: [string, GroupObject][] = [];
    for (const group of this.groupsOf[proc.index]!) {
      const messages = byGroup.get(group) ?? [];
      if (baseSeq !== undefined && messages.length === 0 && (snapshot.lastChange.get(group) ?? -1) < baseSeq) {
        ack.set(group, null);
        continue;
      }
      const key = `checkpoints/${checkpoint}/kg-${group}-e${this.epoch}`;
      const counters: [number, number][] = [];
      for (const [counter, value] of snapshot.counters) if (counter % this.keyGroups === group) counters.push([counter, value]);
      uploads.push([key, { kind: 'group', keyGroup: group, counters, appliedIds: proc.applied.get(group)!, appliedLength: snapshot.appliedLengths.get(group)!, recorded: messages }]);
      ack.set(group, key);
    }
    const slow = this.faulty && this.random() < 0.02;
    const broken = this.faulty && this.random() < 0.02;
    const epoch = this.epoch;
    const incarnation = proc.incarnation;
    this.at(this.nowMs + (slow ? 200 + this.int(800) : 1 + this.int(30)), () => {
      // A crash kills the upload; a recovery does not stop one in flight (a PUT lands late), but the
      // shell fences its acknowledgement.
      if (incarnation !== proc.incarnation) return;
      if (broken) {
        if (epoch === this.epoch) this.toCoordinator((coordinator) => coordinator.uploadFailed(this.nowMs, proc.id, checkpoint, 'injected upload failure'));
        return;
      }
      for (const [key, object] of uploads) this.store.set(key, object);
      for (const group of ack.keys()) if (ack.get(group) === null) this.stats.reusedObjects++;
      if (epoch === this.epoch) this.toCoordinator((coordinator) => coordinator.acknowledged(this.nowMs, proc.id, checkpoint, ack as AcknowledgedObjects));
    });
  }

  // ---- the coordinator and the store ----

  private toCoordinator(call: (coordinator: CheckpointCoordinator) => CoordinatorAction[]): void {
    const epoch = this.epoch;
    const generation = this.coordinatorGeneration;
    this.at(this.nowMs + 1 + this.int(10), () => {
      if (epoch === this.epoch && generation === this.coordinatorGeneration) this.handle(call(this.coordinator));
    });
  }

  private scheduleTick(): void {
    const deadline = this.coordinator.nextDeadline();
    if (deadline === Infinity) {
      this.scheduledTickMs = Infinity;
      return;
    }
    const timeMs = Math.max(this.nowMs, deadline);
    if (timeMs === this.scheduledTickMs) return;
    this.scheduledTickMs = timeMs;
    const tick = ++this.tickGeneration;
    this.at(timeMs, () => {
      if (tick !== this.tickGeneration) return;
      this.scheduledTickMs = Infinity;
      this.handle(this.coordinator.tick(this.nowMs));
    });
  }

  private storeWrite(checkpoint: number, what: 'manifest' | 'pointer', write: () => void): void {
    const generation = this.coordinatorGeneration;
    const broken = this.faulty && this.random() < 0.03;
    this.at(this.nowMs + 1 + this.int(10), () => {
      // A deposed coordinator's writes never land (the shell fences them).
      if (generation !== this.coordinatorGeneration) return;
      if (broken) {
        this.handle(this.coordinator.writeFailed(this.nowMs, checkpoint, what, 'injected write failure'));
        return;
      }
      write();
      this.handle(what === 'manifest' ? this.coordinator.manifestWritten(this.nowMs, checkpoint) : this.coordinator.pointerWritten(this.nowMs, checkpoint));
    });
  }

  private outcomeKey(checkpoint: number): string {
    return `${this.coordinatorGeneration}:${checkpoint}`;
  }

  private handle(actions: CoordinatorAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'start': {
          const { checkpoint } = action;
          const lastCommitted = this.commits.at(-1)?.checkpoint ?? 0;
          if (checkpoint <= this.lastStartInGeneration || checkpoint <= lastCommitted) {
            this.fail(`checkpoint ${checkpoint} started after ${this.lastStartInGeneration} (last committed ${lastCommitted}): numbers must increase strictly`);
          }
          this.lastStartInGeneration = checkpoint;
          this.starts.push({ generation: this.coordinatorGeneration, checkpoint, timeMs: this.nowMs });
          this.stats.started++;
          for (const proc of this.processes) {
            if (proc.source && action.participants.includes(proc.id)) this.signal(proc, 10, () => this.perform(proc, proc.tracker.start(checkpoint)));
          }
          break;
        }
        case 'write-manifest': {
          const { checkpoint, manifest, key } = action;
          if (manifest.objects.length !== this.keyGroups) this.fail(`manifest ${checkpoint} has ${manifest.objects.length} objects for ${this.keyGroups} key groups`);
          manifest.objects.forEach((objectKey, group) => {
            const object = this.store.get(objectKey);
            if (object?.kind !== 'group' || object.keyGroup !== group) this.fail(`manifest ${checkpoint} names ${objectKey} for key group ${group}, which the store does not hold`);
          });
          const copy = JSON.parse(JSON.stringify(manifest)) as CheckpointManifest;
          this.storeWrite(checkpoint, 'manifest', () => this.store.set(key, { kind: 'manifest', manifest: copy }));
          break;
        }
        case 'write-pointer': {
          const { checkpoint } = action;
          this.storeWrite(checkpoint, 'pointer', () => {
            if (this.pointer !== null && checkpoint <= this.pointer) this.fail(`the pointer would go back from ${this.pointer} to ${checkpoint}`);
            this.pointer = checkpoint;
            this.pointerHistory.push({ generation: this.coordinatorGeneration, checkpoint });
          });
          break;
        }
        case 'committed':
          this.onCommitted(action.checkpoint, action.manifest);
          break;
        case 'failed': {
          const key = this.outcomeKey(action.checkpoint);
          if (this.outcomes.has(key)) this.fail(`checkpoint ${action.checkpoint} failed after it ${this.outcomes.get(key)}`);
          if (this.pointer === action.checkpoint) this.fail(`checkpoint ${action.checkpoint} failed, but the pointer names it`);
          this.outcomes.set(key, 'failed');
          this.stats.failed++;
          for (const proc of this.processes) if (proc.alive) this.signal(proc, 30, () => this.perform(proc, proc.tracker.abort(action.checkpoint)));
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

    const counters = this.checkCut(checkpoint, manifest);
    this.commits.push({ checkpoint, manifest, counters, timeMs: this.nowMs });
    this.stats.committed++;
    for (const proc of this.processes) {
      if (proc.alive) this.signal(proc, 30, () => (proc.base = Math.max(proc.base ?? 0, checkpoint)));
    }
  }

  /** Restores from the manifest's objects: counters after replay, and every message id they cover. */
  private restore(checkpoint: number, manifest: CheckpointManifest): { counters: Map<number, number>; covered: number[]; recorded: SimMessage[][] } {
    const counters = new Map<number, number>();
    const covered: number[] = [];
    const recorded: SimMessage[][] = [];
    manifest.objects.forEach((key, group) => {
      const object = this.store.get(key);
      if (object?.kind !== 'group' || object.keyGroup !== group) this.fail(`restoring ${checkpoint}: object ${key} of key group ${group} is missing`);
      for (const [counter, value] of object.counters) {
        if (counter % this.keyGroups !== group) this.fail(`restoring ${checkpoint}: object ${key} holds counter ${counter} of another key group`);
        addTo(counters, counter, value);
      }
      for (let index = 0; index < object.appliedLength; index++) covered.push(object.appliedIds[index]!);
      for (const message of object.recorded) {
        addTo(counters, message.counter, message.amount);
        covered.push(message.id);
      }
      recorded[group] = [...object.recorded];
    });
    return { counters, covered, recorded };
  }

  /**
   * Property (a) and (b): the committed checkpoint restores to the consistent cut. Returns its counters.
   */
  private checkCut(checkpoint: number, manifest: CheckpointManifest): Map<number, number> {
    const { counters, covered } = this.restore(checkpoint, manifest);
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
    let coveredSize = 0;
    for (const id of covered) {
      if (id < log.firstId) continue; // an earlier epoch's message, inside the restored base
      const index = id - log.firstId;
      if (inCut[index] !== 1) this.fail(`checkpoint ${checkpoint} covers message ${id}, originated after its originator's snapshot (${this.describe(index)})`);
      if (seen[index] === 1) this.fail(`checkpoint ${checkpoint} counts message ${id} twice: in a snapshot and in a recorded channel state, or recorded twice (${this.describe(index)})`);
      seen[index] = 1;
      coveredSize++;
    }
    if (coveredSize !== cutSize) {
      const missing = inCut.findIndex((flag, index) => flag === 1 && seen[index] !== 1);
      this.fail(`checkpoint ${checkpoint} misses message ${log.firstId + missing}: originated before the cut, neither in a snapshot nor recorded (${this.describe(missing)})`);
    }
    const difference = counterDifference(counters, expected);
    if (difference !== null) this.fail(`checkpoint ${checkpoint} restores to a state that is not the cut: ${difference}`);
    return expected;
  }

  private describe(index: number): string {
    const origin = this.log.origins[index]!;
    return `from ${this.processes[origin.process]!.id} at seq ${origin.seq}, to ${this.processes[this.owner[origin.counter % this.keyGroups]!]!.id}`;
  }

  /** Property (e): nothing a retained manifest needs is deleted. */
  private onDelete(keys: string[]): void {
    const retained = this.commits.slice(-this.retain);
    for (const key of keys) {
      for (const commit of retained) {
        if (manifestKey(commit.checkpoint) === key) this.fail(`deleting ${key}, the manifest of retained checkpoint ${commit.checkpoint}`);
        const group = commit.manifest.objects.indexOf(key);
        if (group >= 0) this.fail(`deleting ${key}, key group ${group} of retained checkpoint ${commit.checkpoint}`);
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
      this.handle(this.coordinator.viewChanged(this.nowMs, this.processes.filter((other) => other.alive).map((other) => other.id)));
      this.recovering = true;
      this.at(this.nowMs + this.int(300), () => this.recover());
    });
  }

  /** A new epoch: every process restored from LATEST, key groups placed anew, channels fresh. */
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
    this.recoveries.push(this.nowMs);
    this.stats.recoveries++;
    const manifest = latest === 0 ? null : this.readManifest(latest);
    if (this.options.coordinatorFailover && this.random() < 0.5) {
      // A new leader: it knows only what the store says.
      const committed = manifest === null ? [] : [...manifest.retained.map((checkpoint) => this.readManifest(checkpoint)), manifest];
      this.coordinatorGeneration++;
      this.lastStartInGeneration = 0;
      this.tickGeneration++;
      this.scheduledTickMs = Infinity;
      for (const proc of this.processes) proc.alive = true; // the crashed one is replaced in this epoch
      this.coordinator = this.newCoordinator(committed, latest);
      this.stats.coordinators++;
    }
    this.place();
    for (const channel of this.channels) channel.lastDeliveryMs = this.nowMs;
    let restored = new Map<number, number>();
    let recorded: SimMessage[][] = [];
    if (manifest !== null) {
      ({ counters: restored, recorded } = this.restore(latest, manifest));
      const difference = counterDifference(restored, this.commits.at(-1)!.counters);
      if (difference !== null) this.fail(`restoring ${latest} at recovery: ${difference}`);
    }
    for (const proc of this.processes) {
      proc.alive = true;
      proc.tracker = this.newTracker(proc, latest);
      proc.counters = new Map();
      proc.snapSeq = new Map();
      proc.pending = new Map();
      proc.snapshotted = new Set();
      proc.base = manifest === null ? null : latest;
    }
    for (const [counter, value] of restored) addTo(this.processes[this.owner[counter % this.keyGroups]!]!.counters, counter, value);
    const restoreSeq = this.seq++;
    for (const proc of this.processes) if (manifest !== null) proc.snapSeq.set(latest, restoreSeq);
    this.log = { epoch: this.epoch, baseCounters: restored, firstId: this.nextId, origins: [] };
    // Replaying a recorded message applies it (already in `restored`) and sends its next hop.
    recorded.forEach((messages, group) => {
      const proc = this.processes[this.owner[group]!]!;
      for (const message of messages) if (message.hops > 0) this.originate(proc, message.amount, message.hops - 1);
    });
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
    // (c) The pointer only ever named committed checkpoints.
    for (const { generation, checkpoint } of this.pointerHistory) {
      const outcome = this.outcomes.get(`${generation}:${checkpoint}`);
      if (outcome !== 'committed') this.fail(`the pointer named ${checkpoint}, whose outcome is ${outcome ?? 'none'}`);
    }
    // (d) Once calm, every checkpoint started commits (after a crash too).
    const settledMs = this.calmStartMs + 800;
    const calm = this.starts.filter((start) => start.timeMs >= settledMs && start.timeMs <= this.endMs - this.ackTimeoutMs - 50);
    if (calm.length === 0) this.fail('no checkpoint started in the calm phase');
    for (const start of calm) {
      const outcome = this.outcomes.get(`${start.generation}:${start.checkpoint}`);
      if (outcome !== 'committed') this.fail(`checkpoint ${start.checkpoint}, started at ${start.timeMs} ms in the calm phase, ended ${outcome ?? 'never'}`);
    }
    const lastRecovery = this.recoveries.at(-1);
    if (lastRecovery !== undefined && !this.commits.some((commit) => commit.timeMs > lastRecovery)) this.fail(`nothing committed after the recovery at ${lastRecovery} ms`);
    // (e) Everything the retained checkpoints need is there; what only older ones needed is gone.
    const retained = this.commits.slice(-this.retain);
    const needed = new Set<string>();
    for (const commit of retained) {
      needed.add(manifestKey(commit.checkpoint));
      for (const key of commit.manifest.objects) needed.add(key);
    }
    for (const key of needed) if (!this.store.has(key)) this.fail(`${key}, needed by a retained checkpoint, is missing`);
    for (const commit of this.commits.slice(0, -this.retain)) {
      for (const key of [manifestKey(commit.checkpoint), ...commit.manifest.objects]) {
        if (!needed.has(key) && this.store.has(key)) this.fail(`${key} of checkpoint ${commit.checkpoint}, beyond the ${this.retain} retained, was not deleted`);
      }
    }
  }
}
