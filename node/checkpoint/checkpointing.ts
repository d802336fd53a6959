/**
 * A node's checkpoint roles on its main thread (docs/checkpoints.md): the participant every node is
 * (barriers into its shards and to its peers, its part acknowledged to whoever started the checkpoint),
 * and the leader one node is (the coordinator's shell, started and stopped as leadership moves). Control
 * messages between the two travel over the cluster's peer links; a node on its own leads itself.
 */
import { CheckpointHealth } from './checkpoint-health.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { CheckpointControl, ClusterHooks } from '../main/cluster-port.js';
import type { CheckpointManifest } from './checkpoint-coordinator.js';
import { readCommittedManifests } from './checkpoint-format.js';
import { beginTerm, sealWriter, setBase, type CommitRecord } from './terms.js';
import type { StatecraftError } from '../../lib/errors.js';
import { CheckpointLeader, type CheckpointStats } from './checkpoint-leader.js';
import { CheckpointParticipant, type ParticipantHost } from './checkpoint-participant.js';

/** How long a leader that could not begin its term, or was deposed by its own node, waits before it begins another. */
const RELEAD_DELAY_MS = 1_000;
/** Tries to begin leading while the store fails back off up to this. */
const RELEAD_DELAY_MAX_MS = 30_000;
/**
 * A leader deposed by another node's term leads again after this, unless the cluster said otherwise
 * meanwhile: that node ran a recovery, after which the cluster may still name this node leader without
 * its view changing (a member declared dead by mistake and back), and then nobody would lead.
 */
const RELEAD_AFTER_OTHER_MS = 5_000;
/** Answers (ack or failure) kept for a leader that asks again: the newest this many checkpoints'. */
const ANSWERS_KEPT = 8;


/** How long a member (not the leader) of a cluster stopping at once waits for the leader's final checkpoint. */
const FINAL_MEMBER_WAIT_MS = 5_000;

/** This node's part of a checkpoint, and the leader it was made for (undefined: begun on a peer's barrier before any leader's start). */
interface Answer {
  leader: string | undefined;
  message: CheckpointControl & { type: 'ack' | 'failed' };
}

export interface CheckpointSettings {
  store: BlobStore;
  intervalMs: number;
  retain: number;
  ackTimeoutMs: number;
}

/** What the checkpoint roles need of the main thread. */
export interface CheckpointingHost {
  readonly nodeId: string;
  readonly keyGroups: number;
  readonly shards: number;
  readonly closing: boolean;
  /** True while a recovery drops what the shards emit: barriers then must not reach peers. */
  readonly discarding: boolean;
  /** True while a recovery restores a checkpoint here. */
  readonly restoring: boolean;
  readonly cluster: ClusterHooks | null;
  /** Writes barrier `checkpoint` into every shard's ring, and publishes. */
  writeBarrierToShards(checkpoint: number): void;
  /** Client events accepted up to now belong to checkpoint `checkpoint`. */
  markEvents(checkpoint: number): void;
  /** Checkpoint `checkpoint` was decided: shards release held egress or mark key groups changed again, clients are confirmed. */
  outcome(checkpoint: number, committed: boolean): void;
  log(line: string): void;
}

export class Checkpointing {
  readonly participant: CheckpointParticipant;
  private readonly health: CheckpointHealth;
  private leader: CheckpointLeader | null = null;
  /** Which peer started each checkpoint (acks go back to it); absent: this node's own leader. */
  private readonly startedBy = new Map<number, string>();
  /** The checkpoint the node's live state was last restored from (0: none). */
  restoredCheckpoint = 0;
  /** Counts lead calls: a call that finds a later one made meanwhile gives way to it. */
  private leadCalls = 0;
  /**
   * The term a lead call is beginning: the next call waits for it, so two calls never pick the same
   * term number (a superseded call's seal could otherwise rank above the live one's and depose it).
   */
  private beginning: Promise<unknown> = Promise.resolve();
  /** Consecutive failed attempts to begin leading (the retry backs off). */
  private failedBegins = 0;
  /**
   * This node's answers to the latest checkpoints (an 'ack' or a 'failed'), until their outcome: given
   * again when a leader asks again — the answer was lost, or made before the leader's 'start' arrived
   * (the checkpoint began on a peer's barrier), when it had nobody to go to.
   */
  private readonly answers = new Map<number, Answer>();
  /** The highest checkpoint number when this node stopped admitting events (null: it has not). */
  private stopAfter: number | null = null;
  /** The whole cluster stops at once (see finalCheckpoint). */
  private together = false;
  /** The highest checkpoint whose committed outcome this node learned. */
  private lastCommittedOutcome = 0;
  /** Members waiting at their stop for a commit of a checkpoint above `after`. */
  private readonly finalWaiters: { after: number; resolve(committed: boolean): void }[] = [];
  /** Checkpoints this node's earlier leaders committed, failed and dropped (the current leader's are in its stats). */
  private readonly earlier = { committed: 0, failed: 0, dropped: 0 };

  constructor(
    private readonly host: CheckpointingHost,
    private readonly settings: CheckpointSettings,
    uploadTag: string,
  ) {
    this.participant = new CheckpointParticipant(this.participantHost(), settings.store, uploadTag, 0);
    // A checkpoint that fails waits out its ack timeout at worst; a few intervals more is a stall.
    const ageLimitMs = Math.max(10 * settings.intervalMs, settings.ackTimeoutMs + 2 * settings.intervalMs);
    this.health = new CheckpointHealth(ageLimitMs, (line) => host.log(line), performance.now());
  }

  /** Why checkpoints make this node unhealthy, for /health (empty: they do not). */
  problems(): string[] {
    const problem = this.health.problem(performance.now());
    return problem === null ? [] : [problem];
  }

  /** For /metrics: seconds since this node learned of a commit, and failed outcomes in a row. */
  get figures(): { ageSeconds: number; consecutiveFailures: number } {
    return { ageSeconds: Math.round(this.health.ageMs(performance.now())) / 1000, consecutiveFailures: this.health.consecutiveFailures };
  }

  get store(): BlobStore {
    return this.settings.store;
  }

  /**
   * Begins a term for this node (terms.ts) — for leading, a recovery or a start — one at a time, so that
   * two never pick the same number (a superseded call's seal could otherwise rank above the live one's).
   */
  beginTerm(): Promise<{ term: string; head: CommitRecord }> {
    const begun = this.beginning.then(() => beginTerm(this.settings.store, this.host.nodeId));
    this.beginning = begun.catch(() => undefined);
    return begun;
  }

  /** Figures for /cluster and tests. */
  get leaderStats(): CheckpointStats | null {
    return this.leader === null ? null : { ...this.leader.stats };
  }

  /** Checkpoints this node coordinated since it started, over all its terms as leader (for /metrics). */
  get totals(): { committed: number; failed: number; dropped: number } {
    const stats = this.leader?.stats;
    return { committed: this.earlier.committed + (stats?.committed ?? 0), failed: this.earlier.failed + (stats?.failed ?? 0), dropped: this.earlier.dropped + (stats?.dropped ?? 0) };
  }

  /** The node's live state derives from committed checkpoint `checkpoint`. */
  restored(checkpoint: number): void {
    this.restoredCheckpoint = checkpoint;
  }

  /** A recovery begins here: coordination stops (a manifest or commit write in flight settles first) and open checkpoints are forgotten. */
  async stopForRecovery(): Promise<void> {
    await this.lead(null);
    this.startedBy.clear();
    this.answers.clear();
  }

  /**
   * Runs the coordinator on this node for `lead.participants`, or stops it. Leading begins a term
   * (terms.ts): from then on no earlier leader's commit is announced unless this one continues from it.
   */
  async lead(lead: { participants: readonly string[]; view: string } | null): Promise<void> {
    const host = this.host;
    const call = ++this.leadCalls;
    const previous = this.leader;
    this.leader = null;
    if (previous !== null) {
      const stopping = previous.stop(lead === null ? 'this node no longer coordinates (a recovery, a view where it is not the leader, or a stop)' : `the view changed to ${lead.view}`);
      this.earlier.committed += previous.stats.committed;
      this.earlier.failed += previous.stats.failed;
      this.earlier.dropped += previous.stats.dropped;
      await stopping;
    }
    if (lead === null || host.closing) return;
    await this.beginning;
    if (call !== this.leadCalls || host.closing) return; // superseded while an earlier call began its term
    const store = this.settings.store;
    let committed: CheckpointManifest[];
    let term: string;
    let latest: number;
    try {
      const begun = await this.beginTerm();
      term = begun.term;
      latest = begun.head.checkpoint;
      committed = await readCommittedManifests(store, begun.head, (line) => host.log(line));
      if (latest !== 0 && committed.at(-1)?.checkpoint !== latest) throw new Error(`the manifest of checkpoint ${latest}, the last committed, cannot be read`);
      if (call !== this.leadCalls || host.closing) return; // superseded while reading
      await setBase(store, term, begun.head);
    } catch (error) {
      if ((error as StatecraftError).code === 'SC_ERR_STORE_CORRUPT') {
        host.log(`checkpoints: cannot read the last committed checkpoint (${(error as Error).message}); this node does not coordinate checkpoints until the next view`);
        return;
      }
      // The store failing (unreachable, throttling): try again, backing off, and say so once per error.
      const delay = Math.min(RELEAD_DELAY_MAX_MS, RELEAD_DELAY_MS * 2 ** Math.min(this.failedBegins, 10));
      if (this.failedBegins === 0 || (error as Error).message !== this.lastBeginError) host.log(`checkpoints: cannot begin leading (${(error as Error).message}); trying again in ${delay} ms`);
      this.failedBegins++;
      this.lastBeginError = (error as Error).message;
      this.leadAgainLater(call, lead, delay);
      return;
    }
    this.failedBegins = 0;
    this.lastBeginError = null;
    if (call !== this.leadCalls || host.closing) return; // superseded while reading
    this.leader = new CheckpointLeader({
      store: this.settings.store,
      keyGroups: host.keyGroups,
      intervalMs: this.settings.intervalMs,
      retain: this.settings.retain,
      ackTimeoutMs: this.settings.ackTimeoutMs,
      participants: lead.participants,
      view: lead.view,
      term,
      // Numbers go above anything used before, also by an earlier epoch or leader.
      lastCheckpoint: Math.max(this.participant.highestCheckpoint, this.restoredCheckpoint, latest),
      // The base for key groups reported unchanged: the head this term continues from (after a fall-back
      // past a corrupt checkpoint, the restored one: the restore's term continued from it).
      committed,
      start: (participant, checkpoint) => {
        if (participant !== host.nodeId) host.cluster?.sendCheckpointControl(participant, { type: 'start', checkpoint });
        else if (this.answers.has(checkpoint)) this.answer(undefined, this.answers.get(checkpoint)!.message);
        else {
          this.startedBy.delete(checkpoint);
          this.participant.start(checkpoint);
        }
      },
      outcome: (participants, checkpoint, committedNow) => {
        for (const participant of participants) {
          if (participant === host.nodeId) this.outcome(checkpoint, committedNow);
          else host.cluster?.sendCheckpointControl(participant, { type: 'outcome', checkpoint, committed: committedNow });
        }
      },
      log: (line) => host.log(line),
      failed: (reason, line) => this.health.failure(performance.now(), reason, line),
      deposed: (by) => void this.deposed(call, lead, by),
    });
  }

  /**
   * This node's leader was deposed by term `by`. Sealed by another node, that node leads (or recovers)
   * now: leading on at once would depose it in turn, so this node waits, and leads again only if the
   * cluster has not told it otherwise (a lead call) in RELEAD_AFTER_OTHER_MS. Sealed by this node (a
   * call that began a term and then gave way), nobody else will: lead on in a newer term.
   */
  private async deposed(call: number, lead: { participants: readonly string[]; view: string }, by: string): Promise<void> {
    const writer = await sealWriter(this.settings.store, by).catch(() => null);
    if (call !== this.leadCalls) return;
    if (writer !== this.host.nodeId) {
      this.host.log(`checkpoints: term ${by} was begun by ${writer ?? 'another node'}: this node leads again in a new term in ${RELEAD_AFTER_OTHER_MS} ms, unless the cluster says otherwise meanwhile`);
      this.leadAgainLater(call, lead, RELEAD_AFTER_OTHER_MS);
      return;
    }
    this.host.log(`checkpoints: term ${by} was begun by this node and left: it leads again in a new term in ${RELEAD_DELAY_MS} ms, unless told otherwise meanwhile`);
    this.leadAgainLater(call, lead, RELEAD_DELAY_MS);
  }

  private lastBeginError: string | null = null;

  /** Calls lead(lead) again after `delayMs`, if no other lead call was made meanwhile. */
  private leadAgainLater(call: number, lead: { participants: readonly string[]; view: string }, delayMs: number): void {
    setTimeout(() => {
      if (call === this.leadCalls && !this.host.closing) void this.lead(lead);
    }, delayMs).unref();
  }

  /** The node stops admitting events: a checkpoint begun from now on covers everything it accepted. */
  stopping(): void {
    this.stopAfter ??= this.participant.highestCheckpoint;
  }

  /** The whole cluster stops at once: this node's final checkpoint is the cluster's (see finalCheckpoint). */
  stoppingTogether(): void {
    this.together = true;
  }

  /**
   * At a graceful stop, one more checkpoint, so that everything the node accepted is durable and its
   * clients are confirmed: when it checkpoints alone (no cluster, or a cluster of one); or when the
   * whole cluster stops at once (`stoppingTogether`), across the cluster: the leader runs it, and every
   * other member stays until a checkpoint begun after it stopped admitting has committed (at most
   * `timeoutMs`, less for a member: FINAL_MEMBER_WAIT_MS). Resolves with whether it committed in time;
   * false at once otherwise (a node that handed its key groups over needs none).
   */
  async finalCheckpoint(timeoutMs: number): Promise<boolean> {
    const leader = this.leader;
    const alone = leader !== null && leader.participants.length === 1 && leader.participants[0] === this.host.nodeId;
    if (!alone && !this.together) return false;
    const across = alone ? '' : ' across the stopping cluster';
    if (leader !== null) {
      const committed = await leader.checkpointNow(timeoutMs);
      this.host.log(committed ? `checkpoints: final checkpoint ${leader.lastCommitted}${across} committed` : `checkpoints: the final checkpoint${across} did not commit: what was accepted since the last one is not durable`);
      return committed;
    }
    const after = this.stopAfter ?? this.participant.highestCheckpoint;
    const committed =
      this.lastCommittedOutcome > after ||
      (await new Promise<boolean>((resolve) => {
        this.finalWaiters.push({ after, resolve });
        setTimeout(() => resolve(false), Math.min(timeoutMs, FINAL_MEMBER_WAIT_MS)).unref();
      }));
    this.host.log(committed ? `checkpoints: the leader's final checkpoint${across} committed` : `checkpoints: no final checkpoint${across} committed in time: what this node accepted since the last one is not durable`);
    return committed;
  }

  /**
   * The peers of a new view (the checkpoint channels). Answers kept for leaders asking again are
   * forgotten: they were cuts of the old view, and a leader of the new one may reuse their numbers.
   */
  setPeers(peers: readonly string[]): void {
    if (!this.participant.setPeers(peers)) return;
    this.answers.clear();
    this.startedBy.clear();
  }

  /** Stops the coordinator here at shutdown (without waiting). */
  stopLeading(): void {
    void this.leader?.stop('the node stops');
  }

  onControl(from: string, message: CheckpointControl): void {
    const host = this.host;
    switch (message.type) {
      case 'start':
        if (host.restoring) {
          host.cluster?.sendCheckpointControl(from, { type: 'failed', checkpoint: message.checkpoint, reason: `${host.nodeId} is restoring a checkpoint` });
          break;
        }
      {
        // Answered already (asked again: the answer was lost, or made before this 'start' came, on a
        // peer's barrier). Only to the leader it was made for: another leader's checkpoint of the same
        // number (a leader that restarted, or took over) is another cut.
        const kept = this.answers.get(message.checkpoint);
        if (kept !== undefined && (kept.leader === undefined || kept.leader === from)) {
          this.answer(from, kept.message);
          break;
        }
        // A new number, or the one under way here (begun on a peer's barrier: its ack goes to this leader).
        const newest = this.participant.newestCheckpoint;
        if (message.checkpoint > newest || (message.checkpoint === newest && kept === undefined && this.participant.inProgress(newest))) {
          this.startedBy.set(message.checkpoint, from);
          this.participant.start(message.checkpoint);
          break;
        }
        // An old number: said at once, so the leader goes above it instead of waiting out its timeout.
        const seen = this.participant.highestCheckpoint;
        host.cluster?.sendCheckpointControl(from, { type: 'failed', checkpoint: message.checkpoint, reason: `${host.nodeId} has begun checkpoint ${seen} already: the next one starts above it`, seen });
        break;
      }
      case 'ack':
        this.leader?.acknowledged(from, message.checkpoint, new Map(message.objects), message.channels, message.instances === undefined ? undefined : new Map(message.instances));
        break;
      case 'failed':
        this.leader?.uploadFailed(from, message.checkpoint, message.reason, message.seen);
        break;
      case 'outcome':
        this.outcome(message.checkpoint, message.committed);
        break;
    }
  }

  private outcome(checkpoint: number, committed: boolean): void {
    if (committed) this.health.committed(performance.now());
    else this.health.failed();
    if (committed) {
      this.lastCommittedOutcome = Math.max(this.lastCommittedOutcome, checkpoint);
      for (let index = this.finalWaiters.length - 1; index >= 0; index--) {
        const waiter = this.finalWaiters[index]!;
        if (checkpoint <= waiter.after) continue;
        this.finalWaiters.splice(index, 1);
        waiter.resolve(true);
      }
    }
    for (const number of this.answers.keys()) if (number <= checkpoint) this.answers.delete(number);
    this.participant.outcome(checkpoint, committed);
    this.host.outcome(checkpoint, committed);
  }

  /** This node's part of `checkpoint` is done: kept (for a leader that asks again), and sent to whoever started it. */
  private answerFirst(checkpoint: number, message: CheckpointControl & { type: 'ack' | 'failed' }): void {
    if (message.type === 'failed') this.health.ownFailure(`${this.host.nodeId}'s part of checkpoint ${checkpoint}: ${message.reason}`);
    const to = this.startedBy.get(checkpoint);
    this.answers.set(checkpoint, { leader: to, message });
    for (const number of this.answers.keys()) if (this.answers.size > ANSWERS_KEPT) this.answers.delete(number);
    this.startedBy.delete(checkpoint);
    this.answer(to, message);
  }

  /** Sends an answer to the peer that started the checkpoint, or (undefined) to this node's own leader. */
  private answer(to: string | undefined, message: CheckpointControl & { type: 'ack' | 'failed' }): void {
    if (to !== undefined) this.host.cluster?.sendCheckpointControl(to, message);
    else if (message.type === 'ack') this.leader?.acknowledged(this.host.nodeId, message.checkpoint, new Map(message.objects), message.channels, new Map(message.instances ?? []));
    else this.leader?.uploadFailed(this.host.nodeId, message.checkpoint, message.reason);
  }

  private participantHost(): ParticipantHost {
    const host = this.host;
    return {
      shards: host.shards,
      writeBarrierToShards: (checkpoint) => host.writeBarrierToShards(checkpoint),
      writeBarrierToPeers: (checkpoint) => {
        if (!host.discarding) host.cluster?.writeBarrier(checkpoint);
      },
      blocked: () => host.cluster?.checkpointBlocked() ?? null,
      markEvents: (checkpoint) => host.markEvents(checkpoint),
      acknowledge: (checkpoint, objects, channels, instances) => this.answerFirst(checkpoint, { type: 'ack', checkpoint, objects: [...objects], channels, instances: [...instances] }),
      failed: (checkpoint, reason) => this.answerFirst(checkpoint, { type: 'failed', checkpoint, reason }),
      log: (line) => host.log(line),
    };
  }
}
