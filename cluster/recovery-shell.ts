/**
 * The recovery shell: fences peer envelopes by recovery epoch (older ones are dropped, newer ones wait
 * here until this node reaches their epoch), takes the recovery messages among the checkpoint control
 * messages (rollback orders, restart reports, "behind" requests), and runs a recovery: the leader reads
 * the checkpoint every member must restore and orders it; every member restores it, then delivers what
 * waited. When to recover, and who leads, is decided in view-core.ts; this file does the I/O.
 *
 * Control is authorised even among peers that proved the cluster secret: a rollback order is taken only
 * when the store holds its claimant's claim of that recovery (node/checkpoint/recovery-claims.ts), and a
 * checkpoint's start and outcome only from the leader of this node's view. Each refusal is logged and
 * counted (statecraft_control_refused_total).
 */
import { EnvelopeKind } from '../lib/envelope.js';
import type { CheckpointControl, CheckpointRef, ClusterPort } from '../node/index.js';
import { isRecoveryRequest, mayBeRollback } from './checkpoint-control.js';
import type { Member } from './membership.js';
import type { ClusterView, RecoveryPlan } from './view-core.js';

/** Envelopes waiting for this node to reach their recovery epoch, at most. */
const STASHED_MAX = 1_000_000;
/** How long the leader waits before trying again to read the checkpoint a recovery restores. */
const PREPARE_RETRY_MS = 1_000;
/** How long before a rollback order whose claim could not be read (the store failed) is checked again. */
const ORDER_CHECK_RETRY_MS = 1_000;
/** A restore that failed is tried again after this, doubling up to RESTORE_RETRY_MAX_MS. */
const RESTORE_RETRY_MS = 1_000;
const RESTORE_RETRY_MAX_MS = 30_000;

export interface RecoveryShellOptions {
  core: ClusterView;
  port: Pick<ClusterPort, 'beginRecovery' | 'prepareRollBack' | 'checkRollback' | 'rollBack' | 'onCheckpointControl' | 'flush' | 'recheckAdmission'>;
  /** Sends a checkpoint control message to a peer. */
  sendControl(peer: string, message: CheckpointControl): void;
  /** Stamps peer frames with this recovery epoch from now on. */
  setEpoch(epoch: number): void;
  /** Delivers an envelope that waited for its epoch, as if it just arrived from `from`. */
  redeliver(bytes: Uint8Array, offset: number, length: number, from: string, epoch: number): void;
  /** The membership's members now (a finished recovery recomputes the view). */
  members(): readonly Member[];
  /** Messages held while this node could not route them may go now. */
  releaseHeld(): void;
  log(line: string): void;
  /** The first wait before a failed restore is tried again (default 1 s; it doubles up to 30 s). */
  restoreRetryMs?: number;
}

export class RecoveryShell {
  private readonly core: ClusterView;
  /** Envelopes of a newer epoch (or any, while recovering), in arrival order. */
  private stashed: { from: string; epoch: number; bytes: Uint8Array }[] = [];
  /** Control messages refused: rollback orders without their claim, checkpoint control from a node that does not lead. */
  refused = 0;

  constructor(private readonly options: RecoveryShellOptions) {
    this.core = options.core;
  }

  get stashedCount(): number {
    return this.stashed.length;
  }

  /**
   * Fences a peer envelope by recovery epoch (checkpoints on): older ones are dropped, newer ones (and
   * all while this node restores) wait. A rollback order of a newer epoch, and a request from a member
   * behind, are taken whatever their epoch. True: deliver it now.
   */
  accept(bytes: Uint8Array, offset: number, length: number, from: string, epoch: number): boolean {
    // Possibly the rollback that takes us to that epoch (or the order of an epoch this node claimed and lost).
    if (bytes[offset] === EnvelopeKind.CheckpointControl && this.core.takesOrder(epoch) && mayBeRollback(bytes, offset, length)) return true;
    // A member behind asks for the order it missed from its older epoch: the fence must not drop that.
    if (bytes[offset] === EnvelopeKind.CheckpointControl && epoch < this.core.epoch && isRecoveryRequest(bytes, offset, length)) return true;
    const verdict = this.core.fence(epoch, from, performance.now());
    if (verdict !== 'stash') return verdict === 'deliver';
    if (this.stashed.length >= STASHED_MAX) {
      this.options.log(`cluster: dropped a message from ${from} of recovery epoch ${epoch}: ${STASHED_MAX} wait already`);
      return false;
    }
    this.stashed.push({ from, epoch, bytes: bytes.slice(offset, offset + length) });
    return false;
  }

  /** A checkpoint control message from a peer: the recovery ones are the cluster's, the rest the node's. */
  onControl(from: string, message: CheckpointControl): void {
    switch (message.type) {
      case 'rollback':
        this.checkOrder(from, message);
        return;
      case 'behind':
        this.core.behindReported(from, message.epoch);
        return;
      case 'restarted':
        this.core.restartReported(from, message.node, message.epoch);
        return;
    }
    if (!this.core.placement.members.includes(from)) return; // not a member of our view: nothing of it counts
    const leader = this.core.leaderId();
    if ((message.type === 'start' || message.type === 'outcome') && from !== leader) {
      this.refuse(from, `the ${message.type} of checkpoint ${message.checkpoint}`, `${from} does not lead this node's view (${leader} does)`);
      // Said at once, so a coordinator whose view differs for a moment starts the next one instead of waiting out its timeout.
      if (message.type === 'start') this.options.sendControl(from, { type: 'failed', checkpoint: message.checkpoint, reason: `${this.core.selfId} follows ${leader}` });
      return;
    }
    this.options.port.onCheckpointControl(from, message);
  }

  /** Takes a rollback order once the store shows its claim; checks again later when the store cannot be read. */
  private checkOrder(from: string, order: CheckpointControl & { type: 'rollback' }): void {
    this.options.port.checkRollback(order).then(
      (refusal) => {
        if (refusal === null) this.core.rollbackOrdered(from, order);
        else this.refuse(from, `a rollback order of recovery ${order.epoch} to checkpoint ${order.restore.checkpoint}`, refusal);
      },
      (error: Error) => {
        if (!this.core.takesOrder(order.epoch)) return;
        this.options.log(`cluster: cannot check the rollback order of recovery ${order.epoch} from ${from} (${error.message}); checking again in 1 s`);
        setTimeout(() => this.core.takesOrder(order.epoch) && this.checkOrder(from, order), ORDER_CHECK_RETRY_MS).unref();
      },
    );
  }

  private refuse(from: string, what: string, why: string): void {
    this.refused++;
    this.options.log(`cluster: refused ${what} from ${from}: ${why}`);
  }

  /** A recovery to `epoch` begins: frames carry it from now on, and what waits for an older one is dropped. */
  begin(epoch: number): void {
    this.options.setEpoch(epoch);
    this.options.port.beginRecovery(epoch);
    this.stashed = this.stashed.filter((entry) => entry.epoch >= epoch);
  }

  /**
   * The leader: stops coordinating (a commit write in flight lands or fails first), begins a term, reads
   * the checkpoint to restore and claims the epoch in the store; orders it only if no other node claimed it.
   */
  prepare(plan: RecoveryPlan): void {
    this.options.port.prepareRollBack(plan.epoch, plan.members).then(
      ({ restore, contendedBy }) => {
        if (!this.core.isCurrentRecovery(plan.epoch)) return;
        if (contendedBy.length > 0) this.core.rollbackContended(plan, contendedBy, performance.now());
        else this.core.rollbackPrepared(plan, restore);
      },
      (error: Error) => {
        if (!this.core.isCurrentRecovery(plan.epoch)) return;
        this.options.log(`cluster: recovery ${plan.epoch} cannot read the last committed checkpoint (${error.message}); retrying in 1 s`);
        setTimeout(() => this.prepare(plan), PREPARE_RETRY_MS).unref();
      },
    );
  }

  /**
   * Restores checkpoint `restore` for the plan's placement, then delivers what waited for this epoch. A
   * restore that fails (the store unreachable, an object unreadable) is tried again, backing off, until
   * it works or a newer recovery takes over: the node never sits in the view unable to serve for good.
   */
  run(plan: RecoveryPlan, restore: CheckpointRef, attempt = 0): void {
    const { epoch, placement } = plan;
    const self = this.core.selfId;
    this.options.port.rollBack((keyGroup) => placement.members[placement.owners[keyGroup]!] === self, epoch, restore).then(
      (result) => {
        if (!this.core.isCurrentRecovery(epoch)) return; // a newer recovery took over
        this.options.log(
          `cluster: recovery ${epoch} done: ${result.checkpoint === 0 ? 'no checkpoint was committed yet, started empty' : `restored checkpoint ${result.checkpoint}`} (${result.instances} instances)`,
        );
        this.core.rollbackDone(epoch, this.options.members(), performance.now());
        const stashed = this.stashed;
        this.stashed = [];
        for (const entry of stashed) {
          if (entry.epoch !== epoch) {
            if (entry.epoch > epoch) this.stashed.push(entry);
            continue;
          }
          this.options.redeliver(entry.bytes, 0, entry.bytes.length, entry.from, entry.epoch);
        }
        this.options.port.flush();
        this.options.releaseHeld();
        this.options.port.recheckAdmission();
      },
      (error: Error) => {
        if (!this.core.isCurrentRecovery(epoch)) return;
        const first = this.options.restoreRetryMs ?? RESTORE_RETRY_MS;
        const delay = Math.min(Math.max(first, RESTORE_RETRY_MAX_MS), first * 2 ** Math.min(attempt, 10));
        this.options.log(`cluster: recovery ${epoch} failed: ${error.message}; this node does not serve until it restores: trying again in ${delay} ms`);
        setTimeout(() => {
          if (this.core.isCurrentRecovery(epoch)) this.run(plan, restore, attempt + 1);
        }, delay).unref();
      },
    );
  }
}
