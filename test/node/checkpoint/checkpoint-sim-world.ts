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
 *   runs through a CutHost the world's process side implements. Messages are real invoke envelopes (lib/envelope.ts),
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
 * The world wires its parts and runs the event loop, the topology, the placement of key groups, the
 * coordinator and the store's manifest and pointer writes, crashes and recovery:
 * - checkpoint-sim-common.ts: options, statistics, message envelopes, records and small functions;
 * - checkpoint-sim-core.ts: what every part shares (randomness, clock, epoch, topology, store, stats);
 * - checkpoint-sim-processes.ts: the process side (shards and sources);
 * - checkpoint-sim-checks.ts: the checks (a failed one throws a CheckFailure; the caller names the seed),
 *   listed there.
 */
import { readKeyGroup } from '../../../lib/envelope.js';
import type { BarrierTracker } from '../../../node/checkpoint/barrier-tracker.js';
import { CheckpointCoordinator, type CheckpointManifest, type CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { manifestKey, parseObjectRef } from '../../../node/checkpoint/checkpoint-format.js';
import { CheckpointChecks } from './checkpoint-sim-checks.js';
import { counterDifference, type Channel, type Proc, type ReadCheckpoint, type WorldOptions, type WorldStats } from './checkpoint-sim-common.js';
import { SimCore } from './checkpoint-sim-core.js';
import { ProcessSide, newTracker } from './checkpoint-sim-processes.js';

export { CheckFailure, type Breakage, type WorldOptions, type WorldStats } from './checkpoint-sim-common.js';

export class CheckpointWorld {
  readonly stats: WorldStats;
  private readonly core: SimCore;
  private readonly checks: CheckpointChecks;
  private readonly processSide: ProcessSide;
  private readonly calmStartMs: number;
  private readonly endMs: number;
  private readonly intervalMs: number;
  private readonly ackTimeoutMs: number;
  private readonly retain: number;

  private coordinator: CheckpointCoordinator;
  /** Bumped when a new coordinator takes over (a new leader): the old one's writes and ticks are fenced. */
  private coordinatorTerm = 0;
  /** Bumped to cancel the scheduled tick. */
  private tickToken = 0;
  private scheduledTickMs = Infinity;
  /** From a crash's detection until the recovery: the coordinator starts nothing. */
  private fenced = false;

  private pointer: number | null = null;
  /** zombieWrites: the leader paused at a crash; its writes in flight wait until it runs again. */
  private pausedLeader: { term: number; untilMs: number } | null = null;
  private lastStartInTerm = 0;
  private readonly recoveries: number[] = [];
  private recovering = false;

  constructor(private readonly options: WorldOptions) {
    this.core = new SimCore(options);
    this.stats = this.core.stats;
    this.intervalMs = 50 + this.core.int(100);
    this.ackTimeoutMs = 250 + this.core.int(250);
    this.retain = 1 + this.core.int(4);
    this.calmStartMs = options.durationMs;
    this.endMs = this.calmStartMs + 800 + this.ackTimeoutMs + 5 * this.intervalMs;
    const shardCount = this.buildTopology();
    this.core.keyGroups = shardCount + this.core.int(2 * shardCount + 1);
    this.checks = new CheckpointChecks(this.core, this.retain, { calmStartMs: this.calmStartMs, endMs: this.endMs, ackTimeoutMs: this.ackTimeoutMs });
    this.processSide = new ProcessSide(this.core, this.checks, (call) => this.toCoordinator(call));
    for (const proc of this.core.processes) if (proc.main === null) proc.shard = this.processSide.newShardPart(proc);
    this.place();
    this.coordinator = this.newCoordinator([], 0);
    this.stats.processes = this.core.processes.length;
    this.stats.keyGroups = this.core.keyGroups;
  }

  /** The fake clock. */
  get nowMs(): number {
    return this.core.nowMs;
  }

  /** Runs the faulty phase, then the calm phase, then the end-of-run checks. */
  run(): WorldStats {
    for (const proc of this.core.processes) this.processSide.scheduleExternal(proc);
    this.scheduleTick();
    this.scheduleCrash(0);
    for (let event = this.core.nextEvent(this.endMs); event !== null; event = this.core.nextEvent(this.endMs)) {
      if (this.core.faulty && this.core.nowMs >= this.calmStartMs) this.core.faulty = false;
      event.run();
    }
    this.core.nowMs = this.endMs;
    this.checks.finalChecks(this.recovering, this.recoveries);
    return this.stats;
  }

  // ---- topology and placement ----

  /** Builds processes and channels; returns the number of shards. */
  private buildTopology(): number {
    const link = (from: number, to: number) => {
      const channel: Channel = { id: `${this.core.processes[from]!.id}>${this.core.processes[to]!.id}`, from, to, lastDeliveryMs: 0 };
      this.core.channels.push(channel);
      this.core.processes[from]!.outputs.push(channel);
      this.core.processes[from]!.outputTo.set(to, channel);
      this.core.processes[to]!.inputs.push(channel);
    };
    const add = (id: string, source: boolean) => {
      const index = this.core.processes.length;
      this.core.processes.push({
        index,
        id,
        thread: index + 1,
        inputs: [],
        outputs: [],
        outputTo: new Map(),
        meanGapMs: 10 + this.core.int(30),
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
      const nodes = 1 + this.core.int(3);
      const shardCounts = Array.from({ length: nodes }, () => (nodes === 1 ? 1 : 0) + this.core.int(4));
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
      const count = 2 + this.core.int(5);
      const sources = new Set<number>();
      for (let index = 0; index < count; index++) if (this.core.random() < 0.4) sources.add(index);
      if (sources.size === 0) sources.add(this.core.int(count));
      if (sources.size === count) sources.delete(this.core.int(count));
      for (let index = 0; index < count; index++) add(`p${index}`, sources.has(index));
      for (let a = 0; a < count; a++) {
        for (let b = 0; b < count; b++) {
          if (a !== b && (b === (a + 1) % count || this.core.random() < 0.5)) link(a, b);
        }
      }
    }
    for (const proc of this.core.processes) if (proc.main !== null) proc.main.tracker = newTracker(proc, 0);
    this.core.nextHop = this.core.processes.map((proc) => this.routesFrom(proc));
    this.core.shardIndexes = this.core.processes.filter((proc) => proc.main === null).map((proc) => proc.index);
    return this.core.shardIndexes.length;
  }

  /** Breadth-first: the first channel of a shortest path from `proc` to every process. */
  private routesFrom(proc: Proc): (Channel | undefined)[] {
    const first: (Channel | undefined)[] = new Array(this.core.processes.length).fill(undefined);
    const frontier = [proc.index];
    const seen = new Set(frontier);
    while (frontier.length > 0) {
      const at = frontier.shift()!;
      for (const channel of this.core.processes[at]!.outputs) {
        if (seen.has(channel.to)) continue;
        seen.add(channel.to);
        first[channel.to] = at === proc.index ? channel : first[at];
        frontier.push(channel.to);
      }
    }
    return first;
  }

  /** Key groups to shards at random, at least one each. */
  private place(): void {
    const count = this.core.shardIndexes.length;
    const groups = Array.from({ length: this.core.keyGroups }, (_, group) => group);
    for (let index = groups.length - 1; index > 0; index--) {
      const other = this.core.int(index + 1);
      [groups[index], groups[other]] = [groups[other]!, groups[index]!];
    }
    this.core.owner = new Array<number>(this.core.keyGroups);
    groups.forEach((group, position) => (this.core.owner[group] = this.core.shardIndexes[position < count ? position : this.core.int(count)]!));
    this.core.groupsOf = this.core.processes.map(() => []);
    for (let group = 0; group < this.core.keyGroups; group++) this.core.groupsOf[this.core.owner[group]!]!.push(group);
  }

  private newCoordinator(committed: CheckpointManifest[], lastCheckpoint: number): CheckpointCoordinator {
    return new CheckpointCoordinator({
      participants: this.core.processes.filter((proc) => proc.alive).map((proc) => proc.id),
      keyGroups: this.core.keyGroups,
      view: `v${this.core.epoch}`,
      intervalMs: this.intervalMs,
      ackTimeoutMs: this.ackTimeoutMs,
      retain: this.retain,
      committed,
      lastCheckpoint,
      manifestKey,
    });
  }

  // ---- the coordinator and the store ----

  private toCoordinator(call: (coordinator: CheckpointCoordinator) => CoordinatorAction[]): void {
    const epoch = this.core.epoch;
    const term = this.coordinatorTerm;
    this.core.at(this.core.nowMs + 1 + this.core.int(10), () => {
      if (epoch === this.core.epoch && term === this.coordinatorTerm) this.handle(call(this.coordinator));
    });
  }

  private scheduleTick(): void {
    const deadline = this.fenced ? Infinity : this.coordinator.nextDeadline();
    if (deadline === Infinity) {
      this.scheduledTickMs = Infinity;
      return;
    }
    const timeMs = Math.max(this.core.nowMs, deadline);
    if (timeMs === this.scheduledTickMs) return;
    this.scheduledTickMs = timeMs;
    const tick = ++this.tickToken;
    this.core.at(timeMs, () => {
      if (tick !== this.tickToken) return;
      this.scheduledTickMs = Infinity;
      this.handle(this.coordinator.tick(this.core.nowMs));
    });
  }

  private storeWrite(checkpoint: number, what: 'manifest' | 'pointer', write: () => void): void {
    const term = this.coordinatorTerm;
    const broken = this.core.faulty && this.core.random() < 0.03;
    const land = () => {
      const paused = this.pausedLeader;
      if (paused !== null && paused.term === term && paused.untilMs > this.core.nowMs) {
        this.core.at(paused.untilMs, land); // the leader is paused: its write waits for it
        return;
      }
      if (term !== this.coordinatorTerm) {
        // A deposed coordinator's write: dropped (the shell fences them), or, with zombieWrites, landing
        // when the old leader runs again, nobody waiting for it; a manifest is followed by its pointer.
        if (this.options.zombieWrites !== true || broken) return;
        write();
        if (what === 'manifest') this.core.at(this.core.nowMs + 1 + this.core.int(10), () => this.writePointer(checkpoint, term));
        return;
      }
      if (broken) {
        this.handle(this.coordinator.writeFailed(this.core.nowMs, checkpoint, what, 'injected write failure'));
        return;
      }
      write();
      this.handle(what === 'manifest' ? this.coordinator.manifestWritten(this.core.nowMs, checkpoint) : this.coordinator.pointerWritten(this.core.nowMs, checkpoint));
    };
    this.core.at(this.core.nowMs + 1 + this.core.int(10), land);
  }

  /** LATEST := checkpoint, as coordinator `term` writes it. */
  private writePointer(checkpoint: number, term: number): void {
    if (this.pointer !== null && checkpoint <= this.pointer) this.core.fail(`the pointer would go back from ${this.pointer} to ${checkpoint} (written by coordinator ${term}, now ${this.coordinatorTerm})`);
    this.pointer = checkpoint;
    this.checks.pointerHistory.push({ term, checkpoint });
  }

  private outcomeKey(checkpoint: number): string {
    return `${this.coordinatorTerm}:${checkpoint}`;
  }

  private handle(actions: CoordinatorAction[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'start': {
          const { checkpoint } = action;
          const lastCommitted = this.checks.commits.at(-1)?.checkpoint ?? 0;
          if (checkpoint <= this.lastStartInTerm || checkpoint <= lastCommitted) {
            this.core.fail(`checkpoint ${checkpoint} started after ${this.lastStartInTerm} (last committed ${lastCommitted}): numbers must increase strictly`);
          }
          this.lastStartInTerm = checkpoint;
          this.checks.starts.push({ term: this.coordinatorTerm, checkpoint, timeMs: this.core.nowMs });
          this.stats.started++;
          for (const proc of this.core.processes) {
            const main = proc.main;
            if (main !== null && action.participants.includes(proc.id)) this.processSide.signal(proc, 10, () => this.processSide.perform(proc, main.tracker.start(checkpoint)));
          }
          break;
        }
        case 'write-manifest': {
          const { checkpoint, manifest, key } = action;
          if (manifest.objects.length !== this.core.keyGroups) this.core.fail(`manifest ${checkpoint} has ${manifest.objects.length} objects for ${this.core.keyGroups} key groups`);
          manifest.objects.forEach((ref, group) => {
            if (ref !== '' && this.core.store.get(parseObjectRef(ref).key)?.kind !== 'object') this.core.fail(`manifest ${checkpoint} names ${ref} for key group ${group}, which the store does not hold`);
          });
          for (const channelKey of manifest.channels) if (this.core.store.get(channelKey)?.kind !== 'object') this.core.fail(`manifest ${checkpoint} names channel object ${channelKey}, which the store does not hold`);
          const copy = JSON.parse(JSON.stringify(manifest)) as CheckpointManifest;
          this.storeWrite(checkpoint, 'manifest', () => this.core.store.set(key, { kind: 'manifest', manifest: copy }));
          break;
        }
        case 'write-pointer': {
          const { checkpoint } = action;
          const term = this.coordinatorTerm;
          this.storeWrite(checkpoint, 'pointer', () => this.writePointer(checkpoint, term));
          break;
        }
        case 'committed':
          this.onCommitted(action.checkpoint, action.manifest);
          break;
        case 'failed': {
          const { checkpoint } = action;
          this.checks.failed(checkpoint, this.outcomeKey(checkpoint), this.pointer);
          for (const proc of this.core.processes) {
            if (!proc.alive) continue;
            const { main, shard } = proc;
            if (main !== null) this.processSide.signal(proc, 30, () => this.processSide.perform(proc, main.tracker.abort(checkpoint)));
            else {
              this.processSide.signal(proc, 30, () => {
                if (shard!.openSnapshot !== null && shard!.openSnapshot <= checkpoint) shard!.openSnapshot = null;
                shard!.cut.outcome(checkpoint, false);
                if (this.options.breakage === 'release-on-failure') shard!.cut.release(checkpoint);
              });
            }
          }
          break;
        }
        case 'delete':
          this.checks.onDelete(action.keys);
          break;
      }
    }
    this.scheduleTick();
  }

  private onCommitted(checkpoint: number, manifest: CheckpointManifest): void {
    this.checks.committed(checkpoint, manifest, this.outcomeKey(checkpoint), this.pointer);
    for (const proc of this.core.processes) {
      const shard = proc.shard;
      if (proc.alive && shard !== null) this.processSide.signal(proc, 30, () => shard.cut.outcome(checkpoint, true));
    }
  }

  // ---- crashes and recovery ----

  private scheduleCrash(afterMs: number): void {
    const remaining = this.options.crashes - this.recoveries.length;
    if (remaining <= 0) return;
    const earliest = Math.max(afterMs, 200);
    const end = this.calmStartMs - 700;
    if (earliest >= end) {
      // Counted, not dropped silently: the test says how many could not happen.
      this.stats.crashesSkipped += remaining;
      return;
    }
    // Each crash still to come gets its share of the faulty time left, so the later ones have time too.
    const window = Math.max(1, Math.floor((end - earliest) / remaining));
    this.core.at(earliest + this.core.int(window), () => this.crash());
  }

  private crash(): void {
    this.stats.crashes++;
    // zombieWrites: the crash is the leader's pause (SIGSTOP, a partition): what it writes waits.
    if (this.options.zombieWrites === true) this.pausedLeader = { term: this.coordinatorTerm, untilMs: this.core.nowMs + 200 + this.core.int(1800) };
    const proc = this.core.processes[this.core.int(this.core.processes.length)]!;
    proc.alive = false;
    proc.incarnation++;
    // What it sent is still delivered; then its links close.
    for (const channel of proc.outputs) this.processSide.send(channel, { kind: 'close' });
    const epoch = this.core.epoch;
    this.core.at(this.core.nowMs + 20 + this.core.int(130), () => {
      if (epoch !== this.core.epoch) return;
      // The view change fails the running checkpoint; the leader then fences its coordinator.
      this.handle(this.coordinator.viewChanged(this.core.nowMs, this.core.processes.filter((other) => other.alive).map((other) => other.id)));
      this.fenced = true;
      this.tickToken++;
      this.scheduledTickMs = Infinity;
      this.recovering = true;
      this.core.at(this.core.nowMs + this.core.int(300), () => this.recover());
    });
  }

  /** A new epoch: every process reset and loaded from LATEST, key groups placed anew, channels fresh. */
  private recover(): void {
    // The commit point cannot be taken back: wait for an in-flight pointer write to settle (a real
    // cluster cannot wait for a paused or partitioned leader: zombieWrites does not).
    if (this.coordinator.inProgress?.phase === 'pointer' && this.options.zombieWrites !== true) {
      this.core.at(this.core.nowMs + 1, () => this.recover());
      return;
    }
    const latest = this.coordinator.lastCommitted;
    if ((this.pointer ?? 0) !== latest) this.core.fail(`the coordinator's last commit is ${latest}, the pointer ${this.pointer}`);
    this.core.epoch++;
    this.recovering = false;
    this.fenced = false;
    this.recoveries.push(this.core.nowMs);
    this.stats.recoveries++;
    const manifest = latest === 0 ? null : this.readManifest(latest);
    if (this.options.zombieWrites === true || (this.options.coordinatorFailover && this.core.random() < 0.5)) {
      // A new leader: it knows only what the store says.
      const committed = manifest === null ? [] : [...manifest.retained.map((checkpoint) => this.readManifest(checkpoint)), manifest];
      this.coordinatorTerm++;
      this.lastStartInTerm = 0;
      this.tickToken++;
      this.scheduledTickMs = Infinity;
      for (const proc of this.core.processes) proc.alive = true; // the crashed one is replaced in this epoch
      this.coordinator = this.newCoordinator(committed, latest);
      this.stats.coordinators++;
    }
    this.place();
    for (const channel of this.core.channels) channel.lastDeliveryMs = this.core.nowMs;
    // Everyone forgets everything (KeyGroupMoves.reset, CheckpointParticipant.reset).
    for (const proc of this.core.processes) {
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
      read = this.checks.readCheckpoint(latest, manifest);
      // Each shard loads the key groups it owns now (KeyGroupMoves.restore and adopt).
      for (const index of this.core.shardIndexes) this.core.processes[index]!.shard!.cut.restored(latest);
      for (let group = 0; group < this.core.keyGroups; group++) {
        const shard = this.core.processes[this.core.owner[group]!]!.shard!;
        const image = read.images.get(group);
        if (image !== undefined) {
          shard.groups.put(image, shard.cut.heldCheckpoint(latest));
          // Held egress of a committed checkpoint goes out now (subscribers drop repeats).
          shard.cut.release(latest);
        }
        shard.groups.changed[group] = 0;
      }
      const tally = this.checks.tally(latest, read, (group) => this.core.processes[this.core.owner[group]!]!.shard!.groups);
      const commit = this.checks.commits.at(-1)!;
      const difference = counterDifference(tally.counters, commit.counters);
      if (difference !== null) this.core.fail(`restoring ${latest} at recovery: ${difference}`);
      if (tally.applied.length + tally.pending.length !== commit.covered) this.core.fail(`restoring ${latest} at recovery covers ${tally.applied.length + tally.pending.length} messages, its commit ${commit.covered}`);
      baseCounters = tally.counters;
      baseIds = new Uint8Array(this.core.nextId);
      for (const id of [...tally.applied, ...tally.pending]) baseIds[id] = 1;
      baseSize = tally.applied.length + tally.pending.length;
    }
    this.core.log = { epoch: this.core.epoch, baseCounters, baseIds, baseSize, firstId: this.core.nextId, origins: [] };
    // Every shard has loaded: the restored queued messages run first, then the recorded ones, each at
    // its key group's owner. They are applied now (their amounts are in the base) and send their next hops.
    for (const [group, image] of read.images) {
      for (const envelope of image.queued) this.processSide.deliverMessage(this.core.processes[this.core.owner[group]!]!, this.core.decode(envelope), false);
    }
    for (const envelope of read.recorded) this.processSide.deliverMessage(this.core.processes[this.core.owner[readKeyGroup(envelope, 0)]!]!, this.core.decode(envelope), false);
    this.handle(this.coordinator.viewChanged(this.core.nowMs, this.core.processes.map((proc) => proc.id), `v${this.core.epoch}`));
    for (const proc of this.core.processes) this.processSide.scheduleExternal(proc);
    this.scheduleCrash(this.core.nowMs + this.ackTimeoutMs);
  }

  private readManifest(checkpoint: number): CheckpointManifest {
    const stored = this.core.store.get(manifestKey(checkpoint));
    if (stored?.kind !== 'manifest') this.core.fail(`manifest ${checkpoint} is missing from the store`);
    return stored.manifest;
  }

}