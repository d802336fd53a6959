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
 * or stall at random, as do manifest and commit writes and channels; processes crash (their channels
 * close; the coordinator hears of it later, fails the running checkpoint and starts nothing more, as a
 * leader fences its coordinator) and the world recovers as docs/checkpoints.md says: a term begun (sealed,
 * then the head read with the real term rules of node/checkpoint/terms.ts), a new epoch, every process
 * reset, key groups placed anew and loaded from the head with the real sliceImages, decodeImage and
 * KeyGroupState.put (ShardCut.restored and release as KeyGroupMoves.restore does), queued messages
 * delivered, then the recorded channel messages replayed to their owners; then a new coordinator in a
 * term of its own. With zombieWrites the old leader is paused instead of waited for: its manifest and
 * commit writes, and the check after them, land whenever it runs again, and go to its own coordinator.
 *
 * The world wires its parts and runs the event loop, the topology, the placement of key groups, the
 * coordinator and the store's manifest, term and commit writes, crashes and recovery:
 * - checkpoint-sim-common.ts: options, statistics, message envelopes, records and small functions;
 * - checkpoint-sim-core.ts: what every part shares (randomness, clock, epoch, topology, store, stats);
 * - checkpoint-sim-processes.ts: the process side (shards and sources);
 * - checkpoint-sim-checks.ts: the checks (a failed one throws a CheckFailure; the caller names the seed),
 *   listed there.
 */
import { readKeyGroup } from '../../../lib/envelope.js';
import type { BarrierTracker } from '../../../node/checkpoint/barrier-tracker.js';
import { CheckpointCoordinator, type CheckpointManifest, type CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { manifestKey, parseObjectRef, unreferencedKeys } from '../../../node/checkpoint/checkpoint-format.js';
import { NO_COMMIT, baseKey, commitKey, headKey, newerTerm, nextTerm, olderTermKeysOf, parseTermKeys, sealKey, type CheckpointRef, type CommitRecord } from '../../../node/checkpoint/terms.js';
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
  /** Bumped when a new coordinator takes over (a new leader): the old one's ticks and acks are fenced. */
  private coordinatorTerm = 0;
  /** The store term (terms.ts) of each coordinator, by coordinatorTerm. */
  private readonly termIds: string[] = [];
  /** Bumped to cancel the scheduled tick. */
  private tickToken = 0;
  private scheduledTickMs = Infinity;
  /** From a crash's detection until the recovery: the coordinator starts nothing. */
  private fenced = false;

  /** The coordinator term that last swept after its first commit. */
  private sweptTerm = -1;
  /** The head as last read (it must never go back). */
  private head: CommitRecord = NO_COMMIT;
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
    // The first leader's term: based on nothing committed.
    const first = this.beginTerm();
    this.setBase(first.term, first.head);
    this.termIds.push(first.term);
    this.coordinator = this.newCoordinator([], 0, first.term);
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
    // A commit record that landed with its check still to come names the head, its outcome open.
    const running = this.coordinator.inProgress;
    if (running?.phase === 'commit') this.checks.uncertain.add(`${this.termIds[this.coordinatorTerm]}:${running.checkpoint}`);
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

  private newCoordinator(committed: CheckpointManifest[], lastCheckpoint: number, term: string): CheckpointCoordinator {
    return new CheckpointCoordinator({
      participants: this.core.processes.filter((proc) => proc.alive).map((proc) => proc.id),
      keyGroups: this.core.keyGroups,
      view: `v${this.core.epoch}`,
      intervalMs: this.intervalMs,
      ackTimeoutMs: this.ackTimeoutMs,
      askAgainMs: 50 + this.core.int(100),
      retain: this.retain,
      committed,
      lastCheckpoint,
      term,
      manifestKey,
    });
  }

  // ---- terms (node/checkpoint/terms.ts, on the simulated store) ----

  /** The head, read as readHead does: by the real rules, from the store's keys. */
  private readHead(): CommitRecord {
    const keys = [...this.core.store.keys()];
    const key = headKey(keys, keys);
    if (key === null) return NO_COMMIT;
    const stored = this.core.store.get(key);
    if (stored?.kind !== 'record') this.core.fail(`the head's record ${key} is missing`);
    return stored.record;
  }

  /** Re-reads the head after a write that may move it: it never goes back. */
  private checkHead(): void {
    const head = this.readHead();
    if (head.checkpoint < this.head.checkpoint) this.core.fail(`the head went back from ${this.head.checkpoint} (${this.head.term}) to ${head.checkpoint} (${head.term})`);
    if (head.checkpoint !== this.head.checkpoint || head.term !== this.head.term) this.checks.headHistory.push({ checkpoint: head.checkpoint, term: head.term });
    this.head = head;
  }

  /** As beginTerm does: seal a term above every one listed, then read the head. */
  private beginTerm(): { term: string; head: CommitRecord } {
    const random = Math.floor(this.core.random() * 2 ** 32).toString(16).padStart(8, '0');
    const term = nextTerm(parseTermKeys([...this.core.store.keys()]).terms, random);
    this.core.store.set(sealKey(term), { kind: 'seal' });
    this.stats.terms++;
    return { term, head: this.readHead() };
  }

  private setBase(term: string, head: CommitRecord): void {
    this.core.store.set(baseKey(term), { kind: 'record', record: head });
    this.checkHead();
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

  /**
   * A write of coordinator `term` (its number) lands 1–10 ms later, or, while its leader is paused, when
   * it runs again; then that coordinator hears of it. A commit is followed by the check for a newer term,
   * as the leader's shell does it (a separate step, so a term can be sealed between the two).
   */
  private storeWrite(checkpoint: number, what: 'manifest' | 'commit', write: () => void, term = this.coordinatorTerm, coordinator = this.coordinator): void {
    const broken = this.core.faulty && this.core.random() < 0.03;
    // A commit record that lands, but the check after it fails: the outcome is unknown to the leader.
    const checkFails = what === 'commit' && !broken && this.core.faulty && this.core.random() < 0.03;
    const paused = (): boolean => {
      const pause = this.pausedLeader;
      return pause !== null && pause.term === term && pause.untilMs > this.core.nowMs;
    };
    const afterPause = (run: () => void) => {
      const later = () => (paused() ? this.core.at(this.pausedLeader!.untilMs, later) : run());
      later();
    };
    const land = () =>
      afterPause(() => {
        if (term !== this.coordinatorTerm && this.options.zombieWrites !== true) return; // deposed, and its writes never land
        if (broken) {
          if (term === this.coordinatorTerm) this.handle(coordinator.writeFailed(this.core.nowMs, checkpoint, what, 'injected write failure'));
          return;
        }
        write();
        if (what === 'manifest') {
          this.handleOf(term, coordinator, coordinator.manifestWritten(this.core.nowMs, checkpoint));
          return;
        }
        this.core.at(this.core.nowMs + 1 + this.core.int(10), () =>
          afterPause(() => {
            if (checkFails) {
              this.checks.uncertain.add(`${this.termIds[term]}:${checkpoint}`);
              this.handleOf(term, coordinator, coordinator.writeFailed(this.core.nowMs, checkpoint, 'commit', 'injected failure of the check after the commit'));
              return;
            }
            // The breakage: a leader that never looks for a newer term (no fence at all).
            const newer = this.options.breakage === 'unfenced-commit' ? null : newerTerm(parseTermKeys([...this.core.store.keys()]).terms, this.termIds[term]!);
            this.handleOf(term, coordinator, newer === null ? coordinator.commitWritten(this.core.nowMs, checkpoint) : coordinator.deposed(this.core.nowMs, checkpoint, newer));
          }),
        );
      });
    this.core.at(this.core.nowMs + 1 + this.core.int(10), land);
  }

  /** The actions of coordinator `term`: the current one's are handled; a deposed one may only learn it was deposed. */
  private handleOf(term: number, coordinator: CheckpointCoordinator, actions: CoordinatorAction[]): void {
    if (term === this.coordinatorTerm) {
      this.handle(actions);
      return;
    }
    for (const action of actions) {
      switch (action.type) {
        case 'write-commit': {
          const { record } = action;
          this.storeWrite(action.checkpoint, 'commit', () => this.writeRecord(record), term, coordinator);
          break;
        }
        case 'deposed':
          this.checks.deposed(action.checkpoint, `${term}:${action.checkpoint}`);
          this.stats.deposed++;
          break;
        case 'failed':
          this.checks.failed(action.checkpoint, `${term}:${action.checkpoint}`, this.head, this.termIds[term]!);
          break;
        default:
          this.core.fail(`coordinator ${term}, deposed by ${this.coordinatorTerm}, acted: ${action.type} ${'checkpoint' in action ? action.checkpoint : ''}`);
      }
    }
  }

  /** A commit record lands. */
  private writeRecord(record: CommitRecord): void {
    this.core.store.set(commitKey(record.term, record.checkpoint), { kind: 'record', record });
    this.checkHead();
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
        case 'ask-again': {
          // The sim's control messages are never lost: asked again, a process that has not begun begins
          // (a no-op for one that has: its answer is on its way).
          this.stats.askedAgain++;
          for (const proc of this.core.processes) {
            const main = proc.main;
            if (main !== null && action.participants.includes(proc.id)) this.processSide.signal(proc, 10, () => this.processSide.perform(proc, main.tracker.start(action.checkpoint)));
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
        case 'write-commit': {
          const { checkpoint, record } = action;
          this.storeWrite(checkpoint, 'commit', () => this.writeRecord(record));
          break;
        }
        case 'deposed':
          // Only a coordinator of an older term is deposed: the current one's term is the newest.
          this.core.fail(`the current coordinator was deposed by ${action.by} at checkpoint ${action.checkpoint}`);
          break;
        case 'committed':
          this.onCommitted(action.checkpoint, action.manifest);
          break;
        case 'failed': {
          const { checkpoint } = action;
          this.checks.failed(checkpoint, this.outcomeKey(checkpoint), this.head, this.termIds[this.coordinatorTerm]!);
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
    this.checks.committed(checkpoint, manifest, this.outcomeKey(checkpoint), this.head);
    for (const proc of this.core.processes) {
      const shard = proc.shard;
      if (proc.alive && shard !== null) this.processSide.signal(proc, 30, () => shard.cut.outcome(checkpoint, true));
    }
    if (this.sweptTerm !== this.coordinatorTerm) {
      // The leader's sweep after its term's first commit (CheckpointLeader.sweep).
      this.sweptTerm = this.coordinatorTerm;
      const keys = [...this.core.store.keys()];
      for (const key of olderTermKeysOf(keys, this.termIds[this.coordinatorTerm]!)) this.core.store.delete(key);
      this.checkHead();
      this.checks.onDelete(unreferencedKeys(keys, this.coordinator.retained, checkpoint));
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

  /**
   * A new epoch: a term sealed, then the head read and restored — every process reset and loaded from
   * it, key groups placed anew, channels fresh — then a new coordinator in a term of its own.
   */
  private recover(): void {
    // When the leader is the recovering node it lets a commit write in flight settle first (lead(null));
    // a paused or cut-off leader cannot be waited for: zombieWrites does not.
    if (this.coordinator.inProgress?.phase === 'commit' && this.options.zombieWrites !== true) {
      this.core.at(this.core.nowMs + 1, () => this.recover());
      return;
    }
    const recovery = this.beginTerm();
    const head = recovery.head;
    this.setBase(recovery.term, head);
    const latest = head.checkpoint;
    const announced = this.checks.commits.at(-1);
    if (latest < (announced?.checkpoint ?? 0)) this.core.fail(`the recovery restores checkpoint ${latest}, but ${announced!.checkpoint} was announced committed`);
    const manifest = latest === 0 ? null : this.readManifest(head);
    // A head nobody announced (its leader was deposed, or its check failed after the record landed) is
    // a checkpoint like any other from now on: it must restore to its cut, checked as a commit is.
    if (manifest !== null && (announced?.checkpoint !== latest || announced.manifest.term !== head.term)) this.checks.adopt(manifest, head, `${this.termIds.indexOf(head.term)}:${latest}`);
    this.core.epoch++;
    this.recovering = false;
    this.fenced = false;
    this.recoveries.push(this.core.nowMs);
    this.stats.recoveries++;
    // The new leader begins its term: it continues from the head. A leader on a node that led before
    // (coordinatorFailover off, or by chance) knows the numbers it used; a fresh one only the store's.
    const lead = this.beginTerm();
    this.setBase(lead.term, lead.head);
    if (lead.head.checkpoint !== latest || lead.head.term !== head.term) this.core.fail(`the leader's term continues from ${lead.head.checkpoint}, the recovery restored ${latest}`);
    const committed = manifest === null ? [] : [...head.retained.map((ref) => this.readManifest(ref)), manifest];
    const fresh = this.options.zombieWrites === true || (this.options.coordinatorFailover && this.core.random() < 0.5);
    const lastCheckpoint = fresh ? latest : Math.max(latest, this.coordinator.lastStarted);
    this.coordinatorTerm++;
    this.termIds.push(lead.term);
    this.lastStartInTerm = 0;
    this.tickToken++;
    this.scheduledTickMs = Infinity;
    for (const proc of this.core.processes) proc.alive = true; // the crashed one is replaced in this epoch
    this.coordinator = this.newCoordinator(committed, lastCheckpoint, lead.term);
    this.stats.coordinators++;
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

  private readManifest(ref: CheckpointRef): CheckpointManifest {
    const stored = this.core.store.get(manifestKey(ref.checkpoint, ref.term));
    if (stored?.kind !== 'manifest') this.core.fail(`manifest ${ref.checkpoint} of term ${ref.term} is missing from the store`);
    return stored.manifest;
  }

}