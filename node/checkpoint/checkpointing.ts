/**
 * A node's checkpoint roles on its main thread (docs/checkpoints.md): the participant every node is
 * (barriers into its shards and to its peers, its part acknowledged to whoever started the checkpoint),
 * and the leader one node is (the coordinator's shell, started and stopped as leadership moves). Control
 * messages between the two travel over the cluster's peer links; a node on its own leads itself.
 */
import type { BlobStore } from '../storage/blob-store.js';
import type { CheckpointControl, ClusterHooks } from '../main/cluster-port.js';
import type { CheckpointManifest } from './checkpoint-coordinator.js';
import { readCommittedManifests } from './checkpoint-format.js';
import { CheckpointLeader, type CheckpointStats } from './checkpoint-leader.js';
import { CheckpointParticipant, type ParticipantHost } from './checkpoint-participant.js';

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
  private leader: CheckpointLeader | null = null;
  /** Which peer started each checkpoint (acks go back to it); absent: this node's own leader. */
  private readonly startedBy = new Map<number, string>();
  /** The checkpoint the node's live state was last restored from (0: none). */
  restoredCheckpoint = 0;
  /**
   * Set when this node restored a checkpoint older than LATEST (LATEST's objects were corrupt): until a
   * new one commits, key groups reported unchanged refer to it, not to LATEST.
   */
  private fallbackBase: number | null = null;
  /** Counts lead calls: a call that finds a later one made meanwhile gives way to it. */
  private leadCalls = 0;

  constructor(
    private readonly host: CheckpointingHost,
    private readonly settings: CheckpointSettings,
    uploadTag: string,
  ) {
    this.participant = new CheckpointParticipant(this.participantHost(), settings.store, uploadTag, 0);
  }

  get store(): BlobStore {
    return this.settings.store;
  }

  /** Figures for /cluster and tests. */
  get leaderStats(): CheckpointStats | null {
    return this.leader === null ? null : { ...this.leader.stats };
  }

  /** The node's live state derives from committed checkpoint `checkpoint` (`fallback`: older than LATEST). */
  restored(checkpoint: number, fallback: boolean): void {
    this.restoredCheckpoint = checkpoint;
    this.fallbackBase = fallback ? checkpoint : null;
  }

  /** A recovery begins here: coordination stops (a manifest or pointer write in flight settles first) and open checkpoints are forgotten. */
  async stopForRecovery(): Promise<void> {
    await this.lead(null);
    this.startedBy.clear();
  }

  /** Runs the coordinator on this node for `lead.participants`, or stops it. */
  async lead(lead: { participants: readonly string[]; view: string } | null): Promise<void> {
    const host = this.host;
    const call = ++this.leadCalls;
    const previous = this.leader;
    this.leader = null;
    await previous?.stop();
    if (lead === null || host.closing) return;
    let committed: CheckpointManifest[];
    let latest: number;
    try {
      ({ latest, manifests: committed } = await readCommittedManifests(this.settings.store, host.log));
    } catch (error) {
      host.log(`checkpoints: cannot read the last committed checkpoint (${(error as Error).message}); this node does not coordinate checkpoints until the next view`);
      return;
    }
    if (call !== this.leadCalls || host.closing) return; // superseded while reading
    this.leader = new CheckpointLeader({
      store: this.settings.store,
      keyGroups: host.keyGroups,
      intervalMs: this.settings.intervalMs,
      retain: this.settings.retain,
      ackTimeoutMs: this.settings.ackTimeoutMs,
      participants: lead.participants,
      view: lead.view,
      // Numbers go above anything used before, also by an earlier epoch or leader.
      lastCheckpoint: Math.max(this.participant.highestCheckpoint, this.restoredCheckpoint, latest),
      // The base for key groups reported unchanged is what the live state derives from: after falling
      // back past a corrupt checkpoint, that is the restored one, not LATEST.
      committed: this.fallbackBase === null ? committed : committed.filter((manifest) => manifest.checkpoint <= this.fallbackBase!),
      start: (participant, checkpoint) => {
        if (participant === host.nodeId) {
          this.startedBy.delete(checkpoint);
          this.participant.start(checkpoint);
        } else host.cluster?.sendCheckpointControl(participant, { type: 'start', checkpoint });
      },
      outcome: (participants, checkpoint, committedNow) => {
        for (const participant of participants) {
          if (participant === host.nodeId) this.outcome(checkpoint, committedNow);
          else host.cluster?.sendCheckpointControl(participant, { type: 'outcome', checkpoint, committed: committedNow });
        }
      },
      log: (line) => host.log(line),
    });
  }

  /** Stops the coordinator here at shutdown (without waiting). */
  stopLeading(): void {
    void this.leader?.stop();
  }

  onControl(from: string, message: CheckpointControl): void {
    const host = this.host;
    switch (message.type) {
      case 'start':
        if (host.restoring) {
          host.cluster?.sendCheckpointControl(from, { type: 'failed', checkpoint: message.checkpoint, reason: `${host.nodeId} is restoring a checkpoint` });
          break;
        }
        // Not for an old number (a previous leader's); the checkpoint may have begun already on a
        // peer's barrier, and its ack still goes to this leader.
        if (message.checkpoint >= this.participant.newestCheckpoint) {
          this.startedBy.set(message.checkpoint, from);
          this.participant.start(message.checkpoint);
        }
        break;
      case 'ack':
        this.leader?.acknowledged(from, message.checkpoint, new Map(message.objects), message.channels);
        break;
      case 'failed':
        this.leader?.uploadFailed(from, message.checkpoint, message.reason);
        break;
      case 'outcome':
        this.outcome(message.checkpoint, message.committed);
        break;
    }
  }

  private outcome(checkpoint: number, committed: boolean): void {
    if (committed) this.fallbackBase = null;
    this.participant.outcome(checkpoint, committed);
    this.host.outcome(checkpoint, committed);
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
      acknowledge: (checkpoint, objects, channels) => {
        const to = this.startedBy.get(checkpoint);
        this.startedBy.delete(checkpoint);
        if (to === undefined) this.leader?.acknowledged(host.nodeId, checkpoint, objects, channels);
        else host.cluster?.sendCheckpointControl(to, { type: 'ack', checkpoint, objects: [...objects], channels });
      },
      failed: (checkpoint, reason) => {
        const to = this.startedBy.get(checkpoint);
        this.startedBy.delete(checkpoint);
        if (to === undefined) this.leader?.uploadFailed(host.nodeId, checkpoint, reason);
        else host.cluster?.sendCheckpointControl(to, { type: 'failed', checkpoint, reason });
      },
      log: (line) => host.log(line),
    };
  }
}
