/**
 * This node's place in the cluster, sans-I/O: its status, the last agreed view and whether this node
 * reaches a majority of it, the key-group placement computed from the view (and the key groups on the
 * move, in handover-core.ts), and the recovery epoch with the rules that start a recovery.
 *
 * Split brain: the node keeps the last agreed view. A member declared dead leaves that view only while
 * this node still reaches a majority of it; a node that cannot reach a majority keeps the view, stops
 * admitting client events and says so on /health and /cluster until the majority is back.
 *
 * The shell (cluster-node.ts) feeds it events: a member changed, the membership changed, a tick, a peer's
 * HELLO, a rollback order or report, a recovery that finished; time comes in as `nowMs`. The core emits
 * actions (plain data) through `perform`, and the shell performs each at once, in order: performing one
 * may come back in (delivering a held message routes it through `forward`, which asks this core where
 * it goes), and keeping the order is what keeps messages in order. No socket, timer or clock in here.
 */
import { invariant } from '../lib/errors.js';
import type { CheckpointRef } from '../node/index.js';
import { HandoverTable, type PlacementFacts } from './handover-core.js';
import type { Member, MemberState } from './membership.js';
import { computePlacement, ownedCounts, type Placement } from './placement.js';
import type { RecoveryPlan, RollbackOrder, ViewAction } from './view-actions.js';
import { STATUS_EDGES, type ClusterStatus } from './view-status.js';

export { STATUS_EDGES, type ClusterStatus } from './view-status.js';
export type { RecoveryPlan, RollbackOrder, ViewAction } from './view-actions.js';

/** How long messages of a newer epoch may wait for their rollback order before this node asks for it. */
export const BEHIND_ASK_MS = 1_000;
/** How often a node waiting for a recovery order asks the leader for it. */
export const ROLLBACK_ASK_MS = 1_000;
/**
 * A node that lost the claim on its recovery epoch waits this long, plus a share of
 * CONTENDED_SPREAD_MS that depends on its id (so contenders do not retry in step), for the winner's
 * order; then it claims the next epoch.
 */
export const CONTENDED_WAIT_MS = 1_000;
export const CONTENDED_SPREAD_MS = 1_000;

export interface ViewCoreOptions {
  selfId: string;
  keyGroups: number;
  /** The seeds this node joins through (named while no seed has answered). */
  seeds: readonly string[];
  /** True: this node joins through seeds; false: a cluster of one that others may join. */
  joining: boolean;
  /** Checkpoints on: a member dying with its state means a recovery. */
  checkpointing: boolean;
  perform(action: ViewAction): void;
}

export class ClusterView implements PlacementFacts {
  readonly selfId: string;
  readonly keyGroups: number;
  readonly moves: HandoverTable;
  private readonly checkpointing: boolean;
  private readonly perform: (action: ViewAction) => void;
  // A #field has a getter of the same name: one name for each fact, read-only outside.
  #status: ClusterStatus;
  /** The status this node left from (status `left`): it keeps that status's answers. */
  private leftFrom: ClusterStatus = 'joining';
  /** The last agreed view: member ids (self included). */
  private readonly view = new Set<string>();
  #placement: Placement;
  /** Counts the views this node acted on (one per new placement). */
  #viewVersion = 1;
  /** Joined, and a majority of the view was reachable at the last view update (false while joining). */
  private majority: boolean;
  /** Why this node is not in a majority, else null. */
  #reason: string | null = null;
  /** Whether this node has had a view with other members (so it is no longer bootstrapping). */
  private joinedView = false;
  /** A node that joins through seeds owns nothing until its first view with them. */
  private ownsNothingYet: boolean;
  // ---- recovery (checkpoints on) ----
  /** Raised by every recovery; stamped on peer frames, so messages of an older epoch are dropped. */
  #epoch = 0;
  /** Why this node waits for a rollback order (status awaiting-rollback), else null. */
  #awaitingReason: string | null = null;
  #recoveries = 0;
  /** The last recovery order this node took part in (re-sent to a member that missed it). */
  private lastRollback: RollbackOrder | null = null;
  /** When this node last asked the leader for a recovery it waits for. */
  private lastRollbackAskMs = 0;
  /** When this node first saw a message of a newer epoch without its rollback (0: none). */
  private behindSinceMs = 0;
  /**
   * The recovery epoch this node claimed and another node claimed too (0: none): it orders nothing,
   * takes that epoch's order from whoever won it, and claims the next epoch at `contendedRetryMs` if
   * none came.
   */
  private contendedEpoch = 0;
  private contendedRetryMs = 0;
  /** Each peer's process instance, from its HELLO (a new one means it restarted). */
  private readonly peerInstances = new Map<string, string>();

  constructor(private readonly options: ViewCoreOptions) {
    this.selfId = options.selfId;
    this.keyGroups = options.keyGroups;
    this.checkpointing = options.checkpointing;
    this.perform = options.perform;
    this.moves = new HandoverTable(this, options.perform);
    this.view.add(this.selfId);
    this.#placement = computePlacement(this.view, this.keyGroups);
    this.#status = options.joining ? 'joining' : 'serving';
    this.majority = !options.joining;
    this.ownsNothingYet = options.joining;
    if (options.joining) this.#reason = this.joiningReason();
  }

  /** Takes the initial ownership: a cluster of one owns every key group, a joining node none. */
  start(): void {
    const joining = this.#status === 'joining';
    this.perform({ type: 'own', owned: () => !joining });
    if (joining) this.perform({ type: 'log', line: `cluster: not serving: ${this.#reason}` });
  }

  // ---- what the shells ask ----

  get status(): ClusterStatus {
    return this.#status;
  }

  /** The status whose answers apply: the current one, or the one this node left from. */
  private get acting(): ClusterStatus {
    return this.#status === 'left' ? this.leftFrom : this.#status;
  }

  get placement(): Placement {
    return this.#placement;
  }

  get epoch(): number {
    return this.#epoch;
  }

  get viewVersion(): number {
    return this.#viewVersion;
  }

  get recoveries(): number {
    return this.#recoveries;
  }

  /** Why this node waits for a rollback order, else null. */
  get awaitingReason(): string | null {
    return this.#awaitingReason;
  }

  /** Why this node is not in a majority (joining, or too few members reachable), else null. */
  get reason(): string | null {
    return this.#reason;
  }

  /** The agreed view's member ids, sorted. */
  viewMembers(): string[] {
    return [...this.view].sort();
  }

  inView(id: string): boolean {
    return this.view.has(id);
  }

  ownerOf(keyGroup: number): string {
    return this.#placement.members[this.#placement.owners[keyGroup]!]!;
  }

  /** The leader of the current placement: its smallest member id. */
  leaderId(): string {
    return [...this.#placement.members].sort()[0]!;
  }

  inMajority(): boolean {
    return this.majority;
  }

  hasJoined(): boolean {
    return this.acting !== 'joining';
  }

  hasLeft(): boolean {
    return this.#status === 'left';
  }

  isRecovering(): boolean {
    return this.acting === 'recovering';
  }

  /** Client events may come in, and messages held while views disagreed may go: the node serves. */
  admits(): boolean {
    return this.acting === 'serving';
  }

  /** Key groups awaited from a member that is gone may start afresh here (the majority side may own them otherwise). */
  mayClaim(): boolean {
    return this.acting === 'serving';
  }

  /** Why this node cannot take a consistent snapshot now, or null. `heldCount`: messages the shell holds. */
  checkpointBlocked(heldCount: number): string | null {
    if (!this.majority) return `not serving: ${this.#reason}`;
    if (this.acting === 'recovering') return 'this node is recovering';
    if (this.acting === 'awaiting-rollback') return this.#awaitingReason;
    if (this.moves.count > 0) return `${this.moves.count} key groups are on the move`;
    if (heldCount > 0) return 'messages wait for their key group to settle';
    return null;
  }

  /**
   * Where a message for a key group this node does not own goes now (the shell holds it for a key
   * group on the move first): its owner, or null to hold it briefly. `fromPeer`: the peer whose
   * envelopes are being delivered, if any.
   */
  forwardTo(keyGroup: number, fromPeer: string | null): string | null {
    const owner = this.ownerOf(keyGroup);
    // Not part of a cluster yet, or the routing table lags the placement: keep it until it is settled.
    if (owner === this.selfId || !this.majority) return null;
    // The sender thinks we own it and we think it does: our views differ for a moment. Hold it briefly
    // instead of bouncing it back and forth; it goes on when the views agree.
    if (owner === fromPeer) return null;
    return owner;
  }

  /** Whether what was queued for a retired member is of a dropped epoch (checkpoints on) rather than re-routed. */
  dropsUndelivered(state: MemberState | undefined): boolean {
    // With checkpoints a dead member means a recovery: what was on its way to it belongs to the old epoch.
    return this.checkpointing && (this.acting === 'recovering' || this.acting === 'awaiting-rollback' || state === 'dead');
  }

  /** Members of the view (but this node) that are alive or suspect: who takes the key groups when this node leaves. */
  leavingTo(members: readonly Member[]): string[] {
    const states = stateMap(members);
    return [...this.view].filter((id) => id !== this.selfId && (states.get(id) === 'alive' || states.get(id) === 'suspect'));
  }

  // ---- events ----

  /** A member's state or address changed (not this node). */
  memberChanged(member: Member): void {
    invariant(member.id !== this.selfId, 'memberChanged is for other members');
    const last = this.lastRollback;
    if (member.state === 'alive' && this.checkpointing && last !== null && !last.members.includes(member.id) && this.leaderId() === this.selfId) {
      // Back after being left out of a recovery: it must drop what it has and join afresh.
      this.perform({ type: 'control', to: member.id, message: { type: 'rollback', ...last } });
    }
    if (member.state !== 'alive') return;
    // A seed answered: this node is part of the cluster (its majority is counted at the view update).
    if (this.#status === 'joining') this.moveTo('no-majority');
    else if (this.#status === 'left' && this.leftFrom === 'joining') this.leftFrom = 'no-majority';
  }

  /** Recomputes the agreed view, whether this node is in a majority, and the placement. */
  viewChanged(members: readonly Member[], nowMs: number): void {
    invariant(this.#status !== 'left', 'a node that left follows no view');
    const states = stateMap(members);
    // Suspects count as unreachable here: a majority must be positively alive to shrink the view.
    const reachable = (id: string) => id === this.selfId || states.get(id) === 'alive';
    states.delete(this.selfId); // this node is in its own view while it runs
    // A node without a majority does not grow its view with newcomers (it could vote itself one).
    const mayGrow = this.majority || this.view.size === 1 || !this.joinedView;
    for (const [id, state] of states) {
      if ((state === 'alive' || state === 'suspect') && !this.view.has(id) && mayGrow) this.view.add(id);
      if (state === 'left') this.view.delete(id);
    }
    // Members declared dead leave the view only while this node reaches a majority of it.
    const dead = [...this.view].filter((id) => id !== this.selfId && (states.get(id) ?? 'dead') === 'dead');
    const reachableCount = [...this.view].filter(reachable).length;
    if (dead.length > 0 && reachableCount * 2 > this.view.size) for (const id of dead) this.view.delete(id);
    const hadMajority = this.majority;
    this.countMajority(states);
    if (this.majority && !mayGrow) {
      // The majority is back: newcomers seen meanwhile join the view now.
      for (const [id, state] of states) if ((state === 'alive' || state === 'suspect') && !this.view.has(id)) this.view.add(id);
    }
    if (!this.majority && this.#status !== 'joining') {
      // No majority: process nothing until it is back (messages wait at their shards, in order), and
      // keep the placement as it was, dead members included, so this node claims no key group it did not own.
      if (hadMajority) this.perform({ type: 'own', owned: (keyGroup) => this.moves.routeWithoutMajority(keyGroup) });
      return;
    }
    // Suspects keep their key groups until they are declared dead: suspicion is often wrong.
    const placement = computePlacement([...this.view].filter((id) => reachable(id) || states.get(id) === 'suspect'), this.keyGroups);
    // While restoring, the node keeps the recovery's placement (it loads those key groups): the move to
    // the view as it is by then, deaths included, is made when the restore is done (rollbackDone).
    const restoring = this.#status === 'recovering';
    if (!restoring && (placement.viewId !== this.#placement.viewId || (!hadMajority && this.majority))) this.placementChanged(placement, states, nowMs);
    // Links to members that are gone close only now, so what they still held goes by the new placement.
    for (const [id, state] of states) {
      if (state === 'dead') this.perform({ type: 'retire', id });
      else if (state === 'left') this.perform({ type: 'retire-later', id });
      else if (state === 'alive') this.perform({ type: 'keep-link', id });
    }
    this.checkAwaiting(states, nowMs);
  }

  /** Periodic: asks the leader for a recovery this node waits for, and claims key groups whose owner is gone. */
  tick(members: readonly Member[], nowMs: number): void {
    if (this.contendedEpoch !== 0 && this.contendedEpoch === this.#epoch && this.#status === 'recovering' && nowMs >= this.contendedRetryMs) {
      // Nobody's order came for the epoch this node lost: it claims the next one, with the view as it is now.
      const states = stateMap(members);
      const live = [...this.view].filter((id) => id === this.selfId || states.get(id) === 'alive' || states.get(id) === 'suspect');
      this.startRollback(this.#epoch + 1, live.sort(), `no order came for the contended recovery ${this.#epoch}`);
    }
    this.checkAwaiting(stateMap(members), nowMs);
  }

  /** This node leaves (or closes): false if it had already. */
  leave(): boolean {
    if (this.#status === 'left') return false;
    this.leftFrom = this.#status;
    this.moveTo('left');
    return true;
  }

  /** Leaving: every key group goes to its owner in the view of `others` (this node excluded). */
  handOverTo(others: readonly string[], members: readonly Member[], nowMs: number): void {
    invariant(this.#status === 'left', 'key groups are handed over all at once only when leaving');
    const previous = this.#placement;
    this.#placement = computePlacement(others, this.keyGroups);
    this.moves.applyPlacement(previous, this.#placement, stateMap(members), nowMs);
  }

  // ---- recovery events (checkpoints on) ----

  /** A peer's HELLO: its process instance (new after a restart) and recovery epoch. */
  peerHello(peer: string, instance: string, epoch: number): void {
    const previous = this.peerInstances.get(peer);
    this.peerInstances.set(peer, instance);
    if (!this.checkpointing) return;
    if (this.ownsNothingYet && epoch > this.#epoch) {
      // A node joining takes the cluster's epoch, so its frames count.
      this.#epoch = epoch;
      this.perform({ type: 'fence', epoch });
    }
    if (previous !== undefined && previous !== instance && this.#placement.members.includes(peer) && !this.ownsNothingYet) {
      // The peer restarted within the failure detector's time: its key groups' state is gone.
      const reason = `${peer} restarted`;
      if (this.leaderId() === this.selfId) this.startRollback(this.#epoch + 1, this.#placement.members, reason);
      else this.perform({ type: 'control', to: this.leaderId(), message: { type: 'restarted', epoch: this.#epoch, node: peer } });
    }
  }

  /**
   * Fences a peer envelope by recovery epoch: older ones are dropped, newer ones (and all while this
   * node restores) wait ('stash'). A rollback order is taken whatever its epoch (the shell checks).
   */
  fence(epoch: number, from: string, nowMs: number): 'deliver' | 'drop' | 'stash' {
    if (epoch < this.#epoch) return 'drop';
    const recovering = this.acting === 'recovering';
    if (epoch > this.#epoch && !recovering) {
      // Others are in a newer epoch. Its rollback order normally follows at once; if it does not, this
      // node was left out of that recovery (declared dead meanwhile): ask the sender for it.
      if (this.behindSinceMs === 0) this.behindSinceMs = nowMs;
      else if (nowMs - this.behindSinceMs > BEHIND_ASK_MS) {
        this.behindSinceMs = nowMs;
        this.perform({ type: 'control', to: from, message: { type: 'behind', epoch: this.#epoch } });
      }
    }
    return epoch > this.#epoch || recovering ? 'stash' : 'deliver';
  }

  /** The leader's recovery order. */
  rollbackOrdered(from: string, order: RollbackOrder): void {
    this.startRollback(order.epoch, order.members, `${order.claimant} leads a recovery${from === order.claimant ? '' : ` (order passed on by ${from})`}`, order);
  }

  /** A member missed a recovery (it was declared dead, or the order was lost): send it again. */
  behindReported(from: string, epoch: number): void {
    const last = this.lastRollback;
    if (last !== null && epoch < last.epoch) this.perform({ type: 'control', to: from, message: { type: 'rollback', ...last } });
  }

  /** A member reports that `node` restarted or died (to the leader). */
  restartReported(from: string, node: string, epoch: number): void {
    // Asked from before the last recovery: the asker missed its order (it was left out, or came back
    // between the start of the recovery and its order): that order answers it.
    const last = this.lastRollback;
    if (last !== null && epoch < last.epoch) return this.behindReported(from, epoch);
    // Only for a request of this epoch: one made before the last recovery was answered by it.
    if (this.leaderId() === this.selfId && this.acting !== 'recovering' && epoch >= this.#epoch) {
      this.startRollback(this.#epoch + 1, this.#placement.members, `${node} restarted or died (reported by ${from})`);
    }
  }

  /** Whether `epoch` is still this node's recovery (no newer one took over, and it has not left). */
  isCurrentRecovery(epoch: number): boolean {
    return epoch === this.#epoch && this.#status !== 'left';
  }

  /** The leader read the checkpoint to restore: every member is ordered to restore it, this node too. */
  rollbackPrepared(plan: RecoveryPlan, restore: CheckpointRef): void {
    invariant(this.isCurrentRecovery(plan.epoch), 'the shell prepares only the current recovery');
    const order: RollbackOrder = { epoch: plan.epoch, members: [...plan.members], restore, claimant: this.selfId };
    this.lastRollback = order;
    for (const member of plan.members) {
      if (member !== this.selfId) this.perform({ type: 'control', to: member, message: { type: 'rollback', ...order, members: [...order.members] } });
    }
    this.perform({ type: 'rollback-run', plan, restore });
  }

  /**
   * Other nodes claimed this node's recovery epoch too (recovery-claims.ts): it orders nothing; it takes
   * the winner's order for the epoch when it comes, or claims the next epoch if none comes in time.
   */
  rollbackContended(plan: RecoveryPlan, others: readonly string[], nowMs: number): void {
    invariant(this.isCurrentRecovery(plan.epoch), 'the shell reports contention only for the current recovery');
    this.contendedEpoch = plan.epoch;
    this.contendedRetryMs = nowMs + CONTENDED_WAIT_MS + (spread(this.selfId, plan.epoch) % CONTENDED_SPREAD_MS);
    this.perform({
      type: 'log',
      line: `cluster: recovery ${plan.epoch} was claimed by ${others.join(', ')} as well: this node waits for that order, or starts recovery ${plan.epoch + 1} in ${Math.round(this.contendedRetryMs - nowMs)} ms`,
    });
  }

  /** Whether a rollback order of `epoch` is one this node still takes (newer than its epoch, or the winner's of an epoch it lost). */
  takesOrder(epoch: number): boolean {
    return epoch > this.#epoch || (epoch === this.#epoch && this.contendedEpoch === epoch);
  }

  /** This node restored the checkpoint of recovery `epoch`. */
  rollbackDone(epoch: number, members: readonly Member[], nowMs: number): void {
    invariant(this.isCurrentRecovery(epoch), 'the shell finishes only the current recovery');
    invariant(this.#status === 'recovering', 'a recovery finishes while recovering');
    this.moveTo(this.majority ? 'serving' : 'no-majority');
    // The restore routed this node's key groups to its shards: without a majority they are held there.
    if (!this.majority) this.perform({ type: 'own', owned: (keyGroup) => this.moves.routeWithoutMajority(keyGroup) });
    this.settleCheckpointing();
    // The membership may have moved on while this node restored (before the stashed envelopes,
    // so hand-overs among them find this node waiting for them).
    this.viewChanged(members, nowMs);
  }

  // ---- rules ----

  private moveTo(next: ClusterStatus): void {
    invariant(STATUS_EDGES[this.#status].includes(next), `status ${this.#status} may not become ${next}`);
    const from = this.#status;
    this.#status = next;
    if (next === 'serving') invariant(this.majority, 'serving needs a majority');
    if (next === 'no-majority') invariant(!this.majority, 'no-majority only without a majority');
    this.perform({ type: 'status', from, to: next });
  }

  private joiningReason(): string {
    return `joining: no seed has answered yet (${this.options.seeds.join(', ')})`;
  }

  /** Whether this node reaches a majority of the view (not while joining), and the status that follows. */
  private countMajority(states: ReadonlyMap<string, MemberState>): void {
    const reachableCount = [...this.view].filter((id) => id === this.selfId || states.get(id) === 'alive').length;
    const hadMajority = this.majority;
    if (this.#status === 'joining') {
      this.majority = false;
      this.#reason = this.joiningReason();
    } else if (reachableCount * 2 <= this.view.size) {
      this.majority = false;
      this.#reason = `reaches ${reachableCount} of the ${this.view.size} members of the last agreed view, not a majority: waiting for them`;
    } else {
      this.majority = true;
      this.#reason = null;
    }
    if (this.#status === 'serving' && !this.majority) this.moveTo('no-majority');
    else if (this.#status === 'no-majority' && this.majority) this.moveTo('serving');
    if (hadMajority !== this.majority) {
      this.perform({ type: 'log', line: this.majority ? 'cluster: serving' : `cluster: not serving: ${this.#reason}` });
      this.perform({ type: 'majority', reached: this.majority });
    }
  }

  private placementChanged(placement: Placement, states: ReadonlyMap<string, MemberState>, nowMs: number): void {
    this.joinedView ||= placement.members.length > 1;
    // A node that just joined takes its key groups over from the owners they had without it.
    const others = placement.members.filter((id) => id !== this.selfId);
    const previous = this.ownsNothingYet && others.length > 0 ? computePlacement(others, this.keyGroups) : this.#placement;
    const died = this.#placement.members.filter((id) => !placement.members.includes(id) && (states.get(id) ?? 'dead') === 'dead');
    if (others.length > 0) this.ownsNothingYet = false;
    this.#placement = placement;
    this.#viewVersion++;
    if (this.checkpointing && died.length > 0 && this.joinedView) {
      // A member died with its key groups' state: the whole cluster goes back to the last checkpoint.
      const reason = `${died.join(', ')} died`;
      if (this.leaderId() === this.selfId) this.startRollback(this.#epoch + 1, placement.members, reason);
      else if (this.#status !== 'recovering') {
        this.#awaitingReason = `${reason}: waiting for the leader ${this.leaderId()} to start the recovery`;
        this.moveTo('awaiting-rollback');
        this.perform({ type: 'lead-checkpoints', lead: null });
        this.perform({ type: 'own', owned: () => false });
      }
    } else if (this.#status === 'serving' || this.#status === 'joining') {
      // Joining, it owns nothing yet (ownership stays false until it has joined).
      this.moves.applyPlacement(previous, placement, states, nowMs);
    }
    this.perform({ type: 'view', members: placement.members });
    const counts = ownedCounts(placement);
    this.perform({
      type: 'log',
      line: `cluster: view version ${this.#viewVersion}, view ${placement.viewId}: ${placement.members.map((id) => `${id} (${counts[id]} key groups)`).join(', ')}`,
    });
    this.perform({ type: 'release-held' });
    this.perform({ type: 'retry-handovers' });
    this.settleCheckpointing();
  }

  /**
   * Recovery: the whole cluster goes back to the last committed checkpoint. Every node of `members`
   * drops its state and in-flight work, takes the key groups the placement of `members` gives it and
   * loads them from the store; what was sent before the recovery is dropped (epoch fencing), and
   * clients re-send what was not committed. The leader orders it (its epoch is above every earlier one).
   */
  private startRollback(epoch: number, members: readonly string[], reason: string, order?: RollbackOrder): void {
    if (!this.takesOrder(epoch) || this.#status === 'left') return;
    this.contendedEpoch = 0;
    // Fence at once: frames sealed from now on carry the new epoch, older ones are dropped on arrival.
    this.#epoch = epoch;
    this.perform({ type: 'recovery-begin', epoch });
    this.#recoveries++;
    this.behindSinceMs = 0;
    this.#awaitingReason = null;
    this.moveTo('recovering');
    const placement = computePlacement(members, this.keyGroups);
    this.perform({ type: 'log', line: `cluster: recovery ${epoch} (${reason}): every node restores the last committed checkpoint; view ${placement.viewId}` });
    this.moves.clear();
    this.#placement = placement;
    this.ownsNothingYet = false;
    this.perform({ type: 'own', owned: () => false });
    const plan: RecoveryPlan = { epoch, members: [...members], placement };
    if (order !== undefined) {
      this.lastRollback = { ...order, members: [...members] };
      this.perform({ type: 'rollback-run', plan, restore: order.restore });
      return;
    }
    // The leader: stop coordinating (a commit write in flight lands or fails first), begin a term and
    // read the head (node/checkpoint/terms.ts), and order every member to restore exactly that checkpoint.
    this.perform({ type: 'rollback-prepare', plan });
  }

  /** Who coordinates checkpoints and which peers are checkpoint channels, from the current placement. */
  private settleCheckpointing(): void {
    if (!this.checkpointing || this.#status === 'recovering') return;
    const members = this.#placement.members;
    this.perform({ type: 'checkpoint-peers', peers: members.filter((id) => id !== this.selfId) });
    const leads = this.#status === 'serving' && this.leaderId() === this.selfId;
    this.perform({ type: 'lead-checkpoints', lead: leads ? { participants: members, view: `${this.#placement.viewId}/${this.#epoch}` } : null });
  }

  /** Asks the leader for a recovery this node waits for, and claims key groups awaited from a member that is gone. */
  private checkAwaiting(states: ReadonlyMap<string, MemberState>, nowMs: number): void {
    if (this.acting === 'awaiting-rollback' && nowMs - this.lastRollbackAskMs > ROLLBACK_ASK_MS && this.leaderId() !== this.selfId) {
      // The leader may not have seen the death that we did (views differ for a while): ask it.
      this.lastRollbackAskMs = nowMs;
      this.perform({ type: 'control', to: this.leaderId(), message: { type: 'restarted', epoch: this.#epoch, node: 'a member' } });
    } else if (this.acting === 'awaiting-rollback' && this.leaderId() === this.selfId) {
      // The leader changed to this node meanwhile.
      this.startRollback(this.#epoch + 1, this.#placement.members, this.#awaitingReason!);
    }
    // Without a majority, nothing is claimed (the majority side may own it).
    if (!this.mayClaim()) return;
    this.perform({ type: 'retry-handovers' });
    this.moves.claimAbandoned(states, nowMs);
  }
}

function stateMap(members: readonly Member[]): Map<string, MemberState> {
  return new Map(members.map((member) => [member.id, member.state]));
}

/** A number from a node id and an epoch (FNV-1a), to spread contenders' retries apart without randomness. */
function spread(id: string, epoch: number): number {
  let hash = 0x811c9dc5 ^ epoch;
  for (let index = 0; index < id.length; index++) hash = Math.imul(hash ^ id.charCodeAt(index), 0x01000193);
  return hash >>> 0;
}
