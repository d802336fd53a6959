/**
 * What the view core (view-core.ts, handover-core.ts) asks its shell to do, as plain data. The shell
 * performs each action as it is emitted, in order (cluster-node.ts `perform`).
 */
import type { CheckpointControl, CheckpointRef, KeyGroupRoute } from '../node/index.js';
import type { Placement } from './placement.js';
import type { ClusterStatus } from './view-status.js';

/** A recovery order: every node of `members` restores checkpoint `restore`, in recovery epoch `epoch`, as `claimant` claimed it in the store. */
export interface RollbackOrder {
  epoch: number;
  members: string[];
  restore: CheckpointRef;
  claimant: string;
}

/** A recovery this node takes part in: its epoch, its members, and the placement it restores. */
export interface RecoveryPlan {
  epoch: number;
  members: readonly string[];
  placement: Placement;
}

/** What the core asks the shell to do. */
export type ViewAction =
  | { type: 'log'; line: string }
  /** The status changed (for observers: the log lines already say what changed and why). */
  | { type: 'status'; from: ClusterStatus; to: ClusterStatus }
  /** This node gained (true) or lost its majority: wake admission, resolve whoever waits for it. */
  | { type: 'majority'; reached: boolean }
  /** Which key groups this node owns from now on (see ClusterPort.setOwnership; evaluate it at once). */
  | { type: 'own'; owned: (keyGroup: number) => KeyGroupRoute | null }
  /** Export a key group and send its image to its owner. */
  | { type: 'release'; keyGroup: number }
  /** Deliver what waited for a key group's hand-over, in order, by the routing table as it is now. */
  | { type: 'flush-held'; keyGroup: number }
  /** Deliver the messages held while views disagreed (if this node serves; else keep holding). */
  | { type: 'release-held' }
  /** Retry the hand-overs that arrived while views disagreed about their owner. */
  | { type: 'retry-handovers' }
  | { type: 'control'; to: string; message: CheckpointControl }
  /** Stamp peer frames with this recovery epoch from now on (a joining node takes the cluster's). */
  | { type: 'fence'; epoch: number }
  /**
   * A recovery begins: stamp frames with its epoch, tell the node (what shards emit is stale from now
   * on), drop what was held or pending for the old placement and what waits for an older epoch.
   */
  | { type: 'recovery-begin'; epoch: number }
  /** The leader reads the checkpoint every member must restore, then calls `rollbackPrepared`. */
  | { type: 'rollback-prepare'; plan: RecoveryPlan }
  /** Restore checkpoint `restore` for the plan's placement, then call `rollbackDone`. */
  | { type: 'rollback-run'; plan: RecoveryPlan; restore: CheckpointRef }
  /** The peers of the agreed view are the checkpoint channels. */
  | { type: 'checkpoint-peers'; peers: readonly string[] }
  /** Coordinate checkpoints for these participants (this node leads), or stop (null). */
  | { type: 'lead-checkpoints'; lead: { participants: readonly string[]; view: string } | null }
  /** The agreed view changed: remember its members. */
  | { type: 'view'; members: readonly string[] }
  /** Close the link to a member that is dead, and re-route what it still held. */
  | { type: 'retire'; id: string }
  /** A member left: close its link a little later (it is still handing its key groups over). */
  | { type: 'retire-later'; id: string }
  /** A member is alive: a link retirement planned for it is off. */
  | { type: 'keep-link'; id: string };

