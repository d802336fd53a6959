/**
 * Makes a node a member of a cluster: drives the membership protocol from the peer transport and a
 * timer, keeps the agreed view and the key-group placement computed from it, routes envelopes for key
 * groups other nodes own, forwards egress records to every peer (so a subscriber on any node sees
 * them), and answers GET /cluster.
 *
 * Split brain: the node keeps the last agreed view. A member declared dead leaves that view only while
 * this node still reaches a majority of it; a node that cannot reach a majority keeps the view, stops
 * admitting client events and says so on /health and /cluster until the majority is back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Packr } from 'msgpackr';
import { BARRIER_BYTES, ENVELOPE_HEADER_BYTES, EnvelopeKind, readKeyGroup, writeBarrier } from '../lib/envelope.js';
import { decodeExport, handoverBody, handoverEnvelope } from '../node/keygroups/handover.js';
import type { CheckpointControl, ClusterHooks, ClusterPort, StatecraftNode } from '../node/index.js';
import { Membership, type Action, type Member, type MembershipConfig } from './membership.js';
import { PeerNetwork } from './peer-network.js';
import { computePlacement, ownedCounts, type Placement } from './placement.js';

const controlPackr = new Packr({ useRecords: false });
/** Envelopes waiting for this node to reach their recovery epoch, at most. */
const STASHED_MAX = 1_000_000;
/** How long messages of a newer epoch may wait for their rollback order before this node asks for it. */
const BEHIND_ASK_MS = 1_000;
/** How often a node waiting for a recovery order asks the leader for it. */
const ROLLBACK_ASK_MS = 1_000;

/** Bytes queued for peers above which client events wait. */
const PEER_BACKLOG_BYTES_MAX = 64 * 1024 * 1024;
/** How long a message waits before going back to a peer that sent it to us as its owner (views differ). */
const BOUNCE_HOLD_MS = 20;
const LEAVE_GOSSIP_MS = 300;
/** A member that left keeps its link this long, so its hand-overs and last messages get through. */
const LEFT_RETIRE_MS = 10_000;
/** How long key groups wait for a hand-over from a member that left before starting afresh. */
const HANDOVER_FROM_LEFT_WAIT_MS = 15_000;
const HANDOVER_CHECK_MS = 250;
const PENDING_HANDOVERS_MAX = 4096;
/** How long a key group started afresh (its owner died) still adopts a hand-over that turns up. */
const CLAIMED_AFRESH_ADOPT_MS = 10_000;
/** How long a hung invocation may hold up a graceful leave before the node goes anyway. */
const LEAVE_RELEASE_WAIT_MS = 30_000;

/** A key group on the move, as this node sees it. */
type Moving =
  | { state: 'releasing'; since: number }
  | { state: 'awaiting'; from: string; since: number }
  | { state: 'adopting'; since: number };

export type MembershipTuning = Partial<Omit<MembershipConfig, 'selfId' | 'selfAddress' | 'keyGroups' | 'random'>>;

export interface ClusterOptions {
  node: StatecraftNode;
  nodeId: string;
  /** host:port other nodes reach this node at. */
  address: string;
  /** host:port of seed nodes; none: a cluster of one that others may join. */
  seeds: readonly string[];
  tuning?: MembershipTuning;
  log(line: string): void;
  /** This node cannot be part of the cluster (refused at join): the reason says what to do. */
  onRefused(reason: string): void;
  /** The agreed view changed: its members and their addresses (start.ts remembers them in the data dir). */
  onView?(members: { id: string; address: string }[]): void;
}

export interface ClusterStatus {
  nodeId: string;
  address: string;
  serving: boolean;
  reason: string | null;
  epoch: number;
  viewId: string;
  keyGroups: number;
  view: string[];
  members: (Member & { keyGroups: number; inView: boolean; connected: boolean })[];
  peers: ReturnType<PeerNetwork['linkStats']>;
  refusals: string[];
  /** Key groups this node adopted and released, and the longest pause one of them saw. */
  handovers: { adopted: number; released: number; instances: number; lastPauseMs: number; maxPauseMs: number; totalPauseMs: number; keyGroupsMoving: number };
  /** Recoveries from checkpoints (checkpoints on): the current epoch and whether one is under way. */
  recovery: { epoch: number; recovering: boolean; awaiting: string | null; recoveries: number };
  checkpoints: ReturnType<StatecraftNode['checkpointStatus']>;
}

export class ClusterNode implements ClusterHooks {
  private readonly membership: Membership;
  private readonly network: PeerNetwork;
  private readonly port: ClusterPort;
  private readonly keyGroups: number;
  /** The last agreed view: member ids (self included). */
  private readonly view = new Set<string>();
  private placement: Placement;
  private epoch = 1;
  private joined: boolean;
  private serving = true;
  private reason: string | null = null;
  private tickTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** The peer whose envelopes are being delivered right now (to spot messages bouncing between views). */
  private deliveringFrom: string | null = null;
  private held: { bytes: Uint8Array; keyGroup: number }[] = [];
  private heldTimer: NodeJS.Timeout | null = null;
  /** Key groups in a hand-over, and the messages that wait for each to land. */
  private readonly moving = new Map<number, Moving>();
  private readonly heldByKeyGroup = new Map<number, Uint8Array[]>();
  private heldByKeyGroupCount = 0;
  /** Bytes of held messages (they count towards admission control, like bytes queued for peers). */
  private heldBytes = 0;
  /** Hand-overs that arrived while views disagreed about their owner; retried on the next view. */
  private pendingHandovers: Uint8Array[] = [];
  /** Key groups started afresh because their owner died: a hand-over that turns up later is still adopted. */
  private readonly claimedAfresh = new Map<number, number>();
  private readonly handoverCheck: NodeJS.Timeout;
  private readonly retireTimers = new Map<string, NodeJS.Timeout>();
  /** Hand-overs this node adopted: how long their key groups were stopped (old owner's freeze to adoption here). */
  private readonly handovers = { adopted: 0, released: 0, instances: 0, lastPauseMs: 0, maxPauseMs: 0, totalPauseMs: 0 };
  private releasesInFlight = 0;
  // ---- recovery (checkpoints on) ----
  /** Raised by every recovery; stamped on peer frames, so messages of an older epoch are dropped. */
  private recoveryEpoch = 0;
  /** A recovery is restoring this node's key groups: envelopes wait in `stashed`. */
  private recovering = false;
  /** A member died and the leader's rollback has not arrived yet: the reason, else null. */
  private awaitingRollback: string | null = null;
  /** Envelopes of a newer epoch (or any, while recovering), in arrival order. */
  private stashed: { from: string; epoch: number; bytes: Uint8Array }[] = [];
  private readonly peerInstances = new Map<string, string>();
  private recoveries = 0;
  /** The last recovery order this node took part in (re-sent to a member that missed it). */
  private lastRollback: { epoch: number; members: string[]; restore: number } | null = null;
  /** When this node last asked the leader for a recovery it waits for. */
  private lastRollbackAsk = 0;
  /** When this node first held a message of a newer epoch without its rollback (0: none). */
  private behindSince = 0;
  private releasesDone: (() => void)[] = [];
  private readonly started = performance.now();
  private servingWaiters: (() => void)[] = [];

  constructor(private readonly options: ClusterOptions) {
    const { node, nodeId, address } = options;
    this.keyGroups = node.keyGroups;
    this.view.add(nodeId);
    this.placement = computePlacement(this.view, this.keyGroups);
    const seeds = options.seeds.filter((seed) => seed !== address);
    this.joined = seeds.length === 0;
    this.ownsNothingYet = !this.joined;
    this.network = new PeerNetwork({
      selfId: nodeId,
      selfAddress: address,
      keyGroups: this.keyGroups,
      valueBytesMax: node.limits.valueBytesMax,
      onPeerHello: (peer, instance, epoch) => this.onPeerHello(peer, instance, epoch),
      onEnvelope: (bytes, offset, length, fromPeer, epoch) => {
        if (this.port.checkpointing && !this.acceptEpoch(bytes, offset, length, fromPeer, epoch)) return;
        this.deliveringFrom = fromPeer;
        try {
          const kind = bytes[offset];
          if (kind === EnvelopeKind.Handover) this.onHandover(bytes.slice(offset, offset + length));
          else if (kind === EnvelopeKind.CheckpointControl) this.onCheckpointControl(fromPeer, bytes, offset, length);
          else this.port.deliver(bytes, offset, length, fromPeer);
        } catch (error) {
          // One bad envelope is dropped, not the frame: a frame half applied would be re-sent for ever.
          this.logBadEnvelope(fromPeer, error);
        } finally {
          this.deliveringFrom = null;
        }
      },
      onEnvelopesDone: () => this.port.flush(),
      onGossip: (from, message) => this.apply(this.membership.receive(this.now(), from, message as never)),
      onBacklogChanged: () => this.port.recheckAdmission(),
      // Fatal only for a node still joining; a member that meets a misconfigured newcomer just logs it.
      onRefused: (reason) => (this.joined ? options.log(`cluster: ${reason}`) : options.onRefused(reason)),
      log: options.log,
    });
    this.membership = new Membership({
      ...options.tuning,
      selfId: nodeId,
      selfAddress: address,
      keyGroups: this.keyGroups,
      random: Math.random,
    });
    this.port = node.attachCluster(this);
    this.port.setOwnership(() => this.joined);
    this.handoverCheck = setInterval(() => this.checkAwaiting(), HANDOVER_CHECK_MS);
    this.handoverCheck.unref();
    this.updateServing();
    this.apply(this.membership.start(this.now(), seeds));
  }

  private now(): number {
    return performance.now() - this.started;
  }

  // ---- ClusterHooks ----

  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    if (this.moving.has(keyGroup)) {
      // Its hand-over is under way: the message goes after it, in order.
      let held = this.heldByKeyGroup.get(keyGroup);
      if (held === undefined) this.heldByKeyGroup.set(keyGroup, (held = []));
      held.push(bytes.slice(offset, offset + length));
      this.heldByKeyGroupCount++;
      this.heldBytes += length;
      return;
    }
    const owner = this.placement.members[this.placement.owners[keyGroup]!]!;
    if (owner === this.options.nodeId || !this.joined || !this.serving) {
      // Not part of a cluster yet, or the routing table lags the placement: keep it until it is settled.
      this.hold(bytes.slice(offset, offset + length), keyGroup);
      return;
    }
    if (owner === this.deliveringFrom) {
      // The sender thinks we own it and we think it does: our views differ for a moment. Hold it briefly
      // instead of bouncing it back and forth; it goes on when the views agree.
      this.hold(bytes.slice(offset, offset + length), keyGroup);
      return;
    }
    this.network.send(owner, this.addressOf(owner), bytes, offset, length);
  }

  onEgress(_egress: string, bytes: Uint8Array, offset: number, length: number): void {
    for (const peer of this.placement.members) {
      if (peer !== this.options.nodeId) this.network.send(peer, this.addressOf(peer), bytes, offset, length);
    }
  }

  writeBarrier(checkpoint: number): void {
    const barrier = new Uint8Array(BARRIER_BYTES);
    writeBarrier(barrier, 0, checkpoint);
    for (const peer of this.view) {
      if (peer !== this.options.nodeId) this.network.send(peer, this.addressOf(peer), barrier, 0, BARRIER_BYTES);
    }
  }

  checkpointBlocked(): string | null {
    if (!this.serving) return `not serving: ${this.reason}`;
    if (this.recovering) return 'this node is recovering';
    if (this.awaitingRollback !== null) return this.awaitingRollback;
    if (this.moving.size > 0) return `${this.moving.size} key groups are on the move`;
    if (this.held.length + this.heldByKeyGroupCount > 0) return 'messages wait for their key group to settle';
    return null;
  }

  sendCheckpointControl(peer: string, message: CheckpointControl): void {
    const body = controlPackr.pack(message);
    const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + body.length);
    envelope[0] = EnvelopeKind.CheckpointControl;
    envelope.set(body, ENVELOPE_HEADER_BYTES);
    this.network.send(peer, this.addressOf(peer), envelope, 0, envelope.length);
  }

  private onCheckpointControl(from: string, bytes: Uint8Array, offset: number, length: number): void {
    const message = controlPackr.unpack(bytes.subarray(offset + ENVELOPE_HEADER_BYTES, offset + length)) as CheckpointControl;
    const recovery = message?.type === 'rollback' || message?.type === 'restarted' || message?.type === 'behind';
    const counter = recovery ? (message as { epoch?: unknown }).epoch : (message as { checkpoint?: unknown } | null)?.checkpoint;
    if (typeof counter !== 'number') throw new Error('malformed checkpoint control message');
    if (message.type === 'rollback') {
      if (!Array.isArray(message.members) || !message.members.every((member) => typeof member === 'string')) throw new Error('malformed rollback message');
      if (!Number.isSafeInteger(message.restore) || message.restore < 0) throw new Error('malformed rollback message');
      this.startRollback(message.epoch, message.members, `${from} leads a recovery`, message.restore);
      return;
    }
    if (message.type === 'behind') {
      // A member missed a recovery (it was declared dead, or the order was lost): send it again.
      const last = this.lastRollback;
      if (last !== null && message.epoch < last.epoch) this.sendCheckpointControl(from, { type: 'rollback', epoch: last.epoch, members: last.members, restore: last.restore });
      return;
    }
    if (message.type === 'restarted') {
      // Only for a request of this epoch: one made before the last recovery was answered by it.
      if (this.leaderId() === this.options.nodeId && !this.recovering && message.epoch >= this.recoveryEpoch) {
        this.startRollback(this.recoveryEpoch + 1, this.placement.members, `${message.node} restarted or died (reported by ${from})`);
      }
      return;
    }
    if (!this.placement.members.includes(from)) return; // not a member of our view: nothing of it counts
    this.port.onCheckpointControl(from, message);
  }

  // ---- recovery ----

  /** The leader of the current placement: its smallest member id. */
  private leaderId(): string {
    return [...this.placement.members].sort()[0]!;
  }

  /**
   * Fences peer envelopes by recovery epoch: older ones are dropped, newer ones (and all while this node
   * restores) wait. A rollback order is taken whatever its epoch. True: deliver it now.
   */
  private acceptEpoch(bytes: Uint8Array, offset: number, length: number, from: string, epoch: number): boolean {
    if (bytes[offset] === EnvelopeKind.CheckpointControl && epoch > this.recoveryEpoch) {
      // Possibly the rollback that takes us to that epoch.
      try {
        const message = controlPackr.unpack(bytes.subarray(offset + ENVELOPE_HEADER_BYTES, offset + length)) as CheckpointControl;
        if (message?.type === 'rollback') return true;
      } catch {
        return true; // malformed: let the usual path log it
      }
    }
    if (epoch < this.recoveryEpoch) return false;
    if (epoch > this.recoveryEpoch && !this.recovering) {
      // Others are in a newer epoch. Its rollback order normally follows at once; if it does not, this
      // node was left out of that recovery (declared dead meanwhile): ask the sender for it.
      const now = performance.now();
      if (this.behindSince === 0) this.behindSince = now;
      else if (now - this.behindSince > BEHIND_ASK_MS) {
        this.behindSince = now;
        this.sendCheckpointControl(from, { type: 'behind', epoch: this.recoveryEpoch });
      }
    }
    if (epoch > this.recoveryEpoch || this.recovering) {
      if (this.stashed.length >= STASHED_MAX) {
        this.options.log(`cluster: dropped a message from ${from} of recovery epoch ${epoch}: ${STASHED_MAX} wait already`);
        return false;
      }
      this.stashed.push({ from, epoch, bytes: bytes.slice(offset, offset + length) });
      return false;
    }
    return true;
  }

  private onPeerHello(peer: string, instance: string, epoch: number): void {
    const previous = this.peerInstances.get(peer);
    this.peerInstances.set(peer, instance);
    if (!this.port.checkpointing) return;
    if (this.ownsNothingYet && epoch > this.recoveryEpoch) {
      // A node joining takes the cluster's epoch, so its frames count.
      this.recoveryEpoch = epoch;
      this.network.setEpoch(epoch);
    }
    if (previous !== undefined && previous !== instance && this.placement.members.includes(peer) && !this.ownsNothingYet) {
      // The peer restarted within the failure detector's time: its key groups' state is gone.
      const reason = `${peer} restarted`;
      if (this.leaderId() === this.options.nodeId) this.startRollback(this.recoveryEpoch + 1, this.placement.members, reason);
      else this.sendCheckpointControl(this.leaderId(), { type: 'restarted', epoch: 0, node: peer });
    }
  }

  /**
   * Recovery: the whole cluster goes back to the last committed checkpoint. Every node of `members`
   * drops its state and in-flight work, takes the key groups the placement of `members` gives it and
   * loads them from the store; what was sent before the recovery is dropped (epoch fencing), and
   * clients re-send what was not committed. The leader orders it (its epoch is above every earlier one).
   */
  private startRollback(epoch: number, members: readonly string[], reason: string, restore?: number): void {
    if (epoch <= this.recoveryEpoch || this.closed) return;
    // Fence at once: frames sealed from now on carry the new epoch, older ones are dropped on arrival.
    this.recoveryEpoch = epoch;
    this.network.setEpoch(epoch);
    this.port.beginRecovery(epoch);
    this.recoveries++;
    this.behindSince = 0;
    this.awaitingRollback = null;
    this.recovering = true;
    const placement = computePlacement(members, this.keyGroups);
    this.options.log(`cluster: recovery ${epoch} (${reason}): every node restores the last committed checkpoint; view ${placement.viewId}`);
    this.moving.clear();
    this.heldByKeyGroup.clear();
    this.heldByKeyGroupCount = 0;
    this.held = [];
    this.heldBytes = 0;
    this.pendingHandovers = [];
    this.claimedAfresh.clear();
    this.stashed = this.stashed.filter((entry) => entry.epoch >= epoch);
    this.placement = placement;
    this.ownsNothingYet = false;
    this.joined = true;
    this.port.setOwnership(() => false);
    if (restore !== undefined) {
      this.lastRollback = { epoch, members: [...members], restore };
      this.runRollback(epoch, placement, restore);
      return;
    }
    // The leader: stop coordinating (a pointer write in flight lands or fails first), read LATEST, and
    // order every member to restore exactly that checkpoint.
    const prepare = () => {
      this.port.prepareRollBack().then(
        (checkpoint) => {
          if (this.recoveryEpoch !== epoch || this.closed) return;
          this.lastRollback = { epoch, members: [...members], restore: checkpoint };
          for (const member of members) {
            if (member !== this.options.nodeId) this.sendCheckpointControl(member, { type: 'rollback', epoch, members: [...members], restore: checkpoint });
          }
          this.runRollback(epoch, placement, checkpoint);
        },
        (error: Error) => {
          if (this.recoveryEpoch !== epoch || this.closed) return;
          this.options.log(`cluster: recovery ${epoch} cannot read the last committed checkpoint (${error.message}); retrying in 1 s`);
          setTimeout(prepare, 1000).unref();
        },
      );
    };
    prepare();
  }

  private runRollback(epoch: number, placement: Placement, checkpoint: number): void {
    const self = this.options.nodeId;
    this.port.rollBack((keyGroup) => placement.members[placement.owners[keyGroup]!] === self, epoch, checkpoint).then(
      (result) => {
        if (this.recoveryEpoch !== epoch || this.closed) return; // a newer recovery took over
        this.recovering = false;
        this.options.log(
          `cluster: recovery ${epoch} done: ${result.checkpoint === 0 ? 'no checkpoint was committed yet, started empty' : `restored checkpoint ${result.checkpoint}`} (${result.instances} instances)`,
        );
        this.settleCheckpointing();
        // The membership may have moved on while this node restored (before the stashed envelopes,
        // so hand-overs among them find this node waiting for them).
        this.updateView();
        const stashed = this.stashed;
        this.stashed = [];
        for (const entry of stashed) {
          if (entry.epoch !== epoch) {
            if (entry.epoch > epoch) this.stashed.push(entry);
            continue;
          }
          this.network.options.onEnvelope(entry.bytes, 0, entry.bytes.length, entry.from, entry.epoch);
        }
        this.port.flush();
        this.releaseHeld();
        this.port.recheckAdmission();
      },
      (error: Error) => {
        this.options.log(`cluster: recovery ${epoch} failed: ${error.message}; this node cannot serve (restart it once the store is fixed)`);
      },
    );
  }

  private reportView(): void {
    if (this.options.onView === undefined) return;
    const members = this.placement.members.map((id) => ({ id, address: id === this.options.nodeId ? this.options.address : this.addressOf(id) }));
    try {
      this.options.onView(members.filter((member) => member.address !== ''));
    } catch (error) {
      this.options.log(`cluster: could not remember the view's members: ${(error as Error).message}`);
    }
  }

  /** Who coordinates checkpoints and which peers are checkpoint channels, from the current placement. */
  private settleCheckpointing(): void {
    if (!this.port.checkpointing || this.recovering) return;
    const members = this.placement.members;
    this.port.setCheckpointPeers(members.filter((id) => id !== this.options.nodeId));
    const leads = this.serving && this.joined && this.awaitingRollback === null && this.leaderId() === this.options.nodeId;
    this.port.leadCheckpoints(leads ? { participants: members, view: `${this.placement.viewId}/${this.recoveryEpoch}` } : null);
  }

  admits(): boolean {
    return this.serving && !this.recovering && this.awaitingRollback === null && this.network.queuedBytes + this.heldBytes < PEER_BACKLOG_BYTES_MAX;
  }

  http(request: IncomingMessage, response: ServerResponse): boolean {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method === 'GET' && path === '/cluster') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.status(), null, 2));
      return true;
    }
    if (request.method === 'GET' && path === '/health' && !this.serving) {
      response.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'not-serving', nodeId: this.options.nodeId, reason: this.reason }));
      return true;
    }
    return false;
  }

  upgrade(request: IncomingMessage, socket: import('node:stream').Duplex, head: Buffer): boolean {
    return this.network.upgrade(request, socket, head);
  }

  metrics(): string[] {
    const members = this.membership.members();
    const count = (state: string) => members.filter((member) => member.state === state).length;
    return [
      `statecraft_cluster_serving ${this.serving ? 1 : 0}`,
      `statecraft_cluster_epoch ${this.epoch}`,
      `statecraft_cluster_view_members ${this.view.size}`,
      `statecraft_cluster_members_alive ${count('alive')}`,
      `statecraft_cluster_members_suspect ${count('suspect')}`,
      `statecraft_cluster_members_dead ${count('dead')}`,
      `statecraft_cluster_key_groups_owned ${ownedCounts(this.placement)[this.options.nodeId] ?? 0}`,
      `statecraft_peer_queued_bytes ${this.network.queuedBytes}`,
      `statecraft_messages_held ${this.held.length + this.heldByKeyGroupCount}`,
      `statecraft_key_groups_moving ${this.moving.size}`,
      `statecraft_handovers_adopted ${this.handovers.adopted}`,
      `statecraft_handovers_released ${this.handovers.released}`,
      `statecraft_handover_pause_max_ms ${this.handovers.maxPauseMs}`,
      `statecraft_handover_pause_last_ms ${this.handovers.lastPauseMs}`,
    ];
  }

  // ---- membership ----

  private apply(actions: Action[]): void {
    let viewMayChange = false;
    for (const action of actions) {
      if (action.type === 'send') this.network.gossip(action.to, action.message);
      else if (action.type === 'changed') {
        viewMayChange = true;
        this.onMemberChanged(action.member, action.previous);
      } else if (action.type === 'refused') {
        if (this.joined) this.options.log(`cluster: ${action.reason}`);
        else this.options.onRefused(action.reason);
      } else if (action.type === 'refused-peer') {
        this.options.log(`cluster: refused ${action.id} at ${action.address}: ${action.reason}`);
      } else if (action.type === 'malformed') {
        this.options.log(`cluster: dropped a malformed membership message from ${action.from}: ${action.reason}`);
      }
    }
    if (viewMayChange && !this.closed) this.updateView();
    this.scheduleTick();
  }

  private onMemberChanged(member: Member, previous: string | null): void {
    this.addresses.set(member.id, member.address);
    if (member.id === this.options.nodeId) return;
    this.options.log(`cluster: ${member.id} (${member.address}) is ${member.state}${previous ? ` (was ${previous})` : ''}, incarnation ${member.incarnation}`);
    this.network.learnAddress(member.id, member.address);
    const last = this.lastRollback;
    if (member.state === 'alive' && this.port.checkpointing && last !== null && !last.members.includes(member.id) && this.leaderId() === this.options.nodeId) {
      // Back after being left out of a recovery: it must drop what it has and join afresh.
      this.sendCheckpointControl(member.id, { type: 'rollback', epoch: last.epoch, members: last.members, restore: last.restore });
    }
    if (member.state === 'alive' || member.state === 'suspect') {
      this.network.revive(member.id);
      if (member.state === 'alive' && !this.joined) this.joined = true;
    }
  }

  /** Recomputes the agreed view, whether this node serves, and the placement. */
  private updateView(): void {
    const states = new Map(this.membership.members().map((member) => [member.id, member.state]));
    // Suspects count as unreachable here: a majority must be positively alive to shrink the view.
    const reachable = (id: string) => id === this.options.nodeId || states.get(id) === 'alive';
    states.delete(this.options.nodeId); // this node is in its own view while it runs
    // A node without a majority does not grow its view with newcomers (it could vote itself one).
    const mayGrow = this.serving || this.view.size === 1 || !this.joinedView;
    for (const [id, state] of states) {
      if ((state === 'alive' || state === 'suspect') && !this.view.has(id) && mayGrow) this.view.add(id);
      if (state === 'left') this.view.delete(id);
    }
    // Members declared dead leave the view only while this node reaches a majority of it.
    const dead = [...this.view].filter((id) => id !== this.options.nodeId && (states.get(id) ?? 'dead') === 'dead');
    const reachableCount = [...this.view].filter(reachable).length;
    if (dead.length > 0 && reachableCount * 2 > this.view.size) for (const id of dead) this.view.delete(id);
    const wasServing = this.serving;
    this.updateServing();
    if (this.serving && !mayGrow) {
      // The majority is back: newcomers seen meanwhile join the view now.
      for (const [id, state] of states) if ((state === 'alive' || state === 'suspect') && !this.view.has(id)) this.view.add(id);
    }
    if (!this.serving && this.joined) {
      // No majority: process nothing until it is back (messages wait), and keep the placement as it
      // was, dead members included, so this node claims no key group it did not own.
      if (wasServing) this.port.setOwnership((keyGroup) => (this.moving.get(keyGroup)?.state === 'adopting' ? null : false));
      return;
    }
    // Suspects keep their key groups until they are declared dead: suspicion is often wrong.
    const placement = computePlacement([...this.view].filter((id) => reachable(id) || states.get(id) === 'suspect'), this.keyGroups);
    if (placement.viewId !== this.placement.viewId || (!wasServing && this.serving)) {
      this.joinedView ||= placement.members.length > 1;
      // A node that just joined takes its key groups over from the owners they had without it.
      const others = placement.members.filter((id) => id !== this.options.nodeId);
      const previous = this.ownsNothingYet && others.length > 0 ? computePlacement(others, this.keyGroups) : this.placement;
      const died = this.placement.members.filter((id) => !placement.members.includes(id) && (states.get(id) ?? 'dead') === 'dead');
      if (others.length > 0) this.ownsNothingYet = false;
      this.placement = placement;
      this.epoch++;
      if (this.port.checkpointing && died.length > 0 && this.joinedView) {
        // A member died with its key groups' state: the whole cluster goes back to the last checkpoint.
        const reason = `${died.join(', ')} died`;
        if (this.leaderId() === this.options.nodeId) this.startRollback(this.recoveryEpoch + 1, placement.members, reason);
        else if (!this.recovering) {
          this.awaitingRollback = `${reason}: waiting for the leader ${this.leaderId()} to start the recovery`;
          this.port.leadCheckpoints(null);
          this.port.setOwnership(() => false);
        }
      } else if (!this.recovering && this.awaitingRollback === null) {
        this.applyPlacement(previous, placement);
      }
      this.reportView();
      const counts = ownedCounts(placement);
      this.options.log(
        `cluster: epoch ${this.epoch}, view ${placement.viewId}: ${placement.members.map((id) => `${id} (${counts[id]} key groups)`).join(', ')}`,
      );
      this.releaseHeld();
      this.retryPendingHandovers();
      this.settleCheckpointing();
    }
    // Links to members that are gone close only now, so what they still held goes by the new placement.
    for (const [id, state] of states) {
      if (state === 'dead') this.retire(id);
      else if (state === 'left' && !this.retireTimers.has(id)) {
        // A member that left is still handing its key groups over: close its link a little later.
        this.retireTimers.set(id, setTimeout(() => this.retire(id), LEFT_RETIRE_MS).unref());
      } else if (state === 'alive' && this.retireTimers.has(id)) {
        clearTimeout(this.retireTimers.get(id));
        this.retireTimers.delete(id);
      }
    }
    this.checkAwaiting();
  }

  /** Whether this node has had a view with other members (so it is no longer bootstrapping). */
  private joinedView = false;

  /** A node that joins through seeds owns nothing until its first view with them. */
  private ownsNothingYet = false;

  private retire(id: string): void {
    clearTimeout(this.retireTimers.get(id));
    this.retireTimers.delete(id);
    const undelivered = this.network.retire(id);
    // With checkpoints a dead member means a recovery: what was on its way to it belongs to the old epoch.
    if (this.port.checkpointing && (this.recovering || this.awaitingRollback !== null || this.membership.members().find((member) => member.id === id)?.state === 'dead')) return;
    for (const envelope of undelivered) this.reroute(envelope);
  }

  // ---- hand-over ----

  /**
   * Moves key groups whose owner changed between two placements: releases the ones this node gives
   * up (they go to their new owner with their state, timers and queued messages), and holds messages
   * for the ones it gains until their hand-over lands. A key group whose old owner is gone (dead)
   * starts afresh: its state went with that node.
   */
  private applyPlacement(previous: Placement, next: Placement): void {
    const self = this.options.nodeId;
    const states = new Map(this.membership.members().map((member) => [member.id, member.state]));
    const outgoing: number[] = [];
    const now = performance.now();
    for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) {
      const was = previous.members[previous.owners[keyGroup]!]!;
      const owner = next.members[next.owners[keyGroup]!]!;
      const moving = this.moving.get(keyGroup);
      if (was === self && owner !== self) {
        if (moving === undefined) outgoing.push(keyGroup);
        else if (moving.state === 'awaiting') {
          // It never reached us: whatever waits for it goes to the new owner, and so will its hand-over.
          this.moving.delete(keyGroup);
          this.flushHeld(keyGroup);
        }
      } else if (was !== self && owner === self) {
        const from = states.get(was);
        if (moving === undefined && this.joined && (from === 'alive' || from === 'suspect' || from === 'left')) {
          this.moving.set(keyGroup, { state: 'awaiting', from: was, since: now });
        } else if (moving === undefined) {
          // Its owner is gone: it starts afresh, but a hand-over still on its way (re-routed by a
          // third node) is adopted for a while.
          this.claimedAfresh.set(keyGroup, now + CLAIMED_AFRESH_ADOPT_MS);
        }
      } else if (owner !== self && moving?.state === 'awaiting') {
        this.moving.delete(keyGroup);
        this.flushHeld(keyGroup);
      }
    }
    for (const keyGroup of outgoing) {
      this.moving.set(keyGroup, { state: 'releasing', since: now });
      this.claimedAfresh.delete(keyGroup);
    }
    this.port.setOwnership((keyGroup) => {
      const moving = this.moving.get(keyGroup);
      if (moving !== undefined) return moving.state === 'adopting' ? null : false;
      return this.joined && next.members[next.owners[keyGroup]!] === self;
    });
    if (outgoing.length > 0) this.release(outgoing);
  }

  private release(keyGroups: number[]): void {
    // One request per key group: an invocation that never ends holds up its own key group only.
    if (keyGroups.length > 1) {
      for (const keyGroup of keyGroups) this.release([keyGroup]);
      return;
    }
    this.releasesInFlight++;
    const epoch = this.recoveryEpoch;
    this.port.releaseKeyGroups(keyGroups).then(
      (exports) => {
        // A recovery since: the export is of state the recovery dropped.
        if (epoch === this.recoveryEpoch) for (const { keyGroup, bytes } of exports) this.sendHandover(keyGroup, bytes);
        this.handovers.released += exports.length;
        if (--this.releasesInFlight === 0) for (const done of this.releasesDone.splice(0)) done();
      },
      (error: Error) => {
        this.options.log(`cluster: releasing key group ${keyGroups[0]} failed (${error.message}): it stays here`);
        for (const keyGroup of keyGroups) {
          this.moving.delete(keyGroup);
          this.flushHeld(keyGroup);
        }
        if (--this.releasesInFlight === 0) for (const done of this.releasesDone.splice(0)) done();
      },
    );
  }

  /** Sends an exported key group to its owner now (or adopts it back, if the placement returned it here). */
  private sendHandover(keyGroup: number, body: Uint8Array): void {
    const owner = this.placement.members[this.placement.owners[keyGroup]!]!;
    if (owner === this.options.nodeId) {
      this.adopt(keyGroup, body);
      return;
    }
    this.moving.delete(keyGroup);
    this.network.send(owner, this.addressOf(owner), handoverEnvelope(keyGroup, body), 0, body.length + 8);
    // What waited for the release follows the hand-over on the same link, so it arrives after it.
    this.flushHeld(keyGroup);
  }

  /** A hand-over from a peer: adopt it if this node owns the key group now, else pass it on. */
  private onHandover(envelope: Uint8Array): void {
    const keyGroup = readKeyGroup(envelope, 0);
    if (keyGroup >= this.keyGroups) {
      this.options.log(`cluster: dropped a hand-over for key group ${keyGroup}: the cluster has ${this.keyGroups}`);
      return;
    }
    const owner = this.placement.members[this.placement.owners[keyGroup]!]!;
    const moving = this.moving.get(keyGroup);
    if (owner !== this.options.nodeId || moving?.state === 'releasing' || moving?.state === 'adopting' || !this.joined || !this.serving) {
      if (owner === this.deliveringFrom || owner === this.options.nodeId || !this.joined || !this.serving) {
        // Views disagree for a moment (or we are busy with it): keep it until the next view or retry.
        if (this.pendingHandovers.length < PENDING_HANDOVERS_MAX) this.pendingHandovers.push(envelope);
        else this.options.log(`cluster: dropped a hand-over for key group ${keyGroup}: ${PENDING_HANDOVERS_MAX} are waiting already`);
        return;
      }
      this.network.send(owner, this.addressOf(owner), envelope, 0, envelope.length);
      return;
    }
    const claimedUntil = this.claimedAfresh.get(keyGroup);
    if (moving?.state !== 'awaiting' && !(claimedUntil !== undefined && claimedUntil > performance.now())) {
      // We own it and expected nothing: adopting would overwrite live state with an older copy.
      this.options.log(`cluster: ignored a late hand-over of key group ${keyGroup} (this node owns it and was not waiting for it)`);
      return;
    }
    this.claimedAfresh.delete(keyGroup);
    this.adopt(keyGroup, handoverBody(envelope, 0, envelope.length));
  }

  private adopt(keyGroup: number, body: Uint8Array): void {
    this.moving.set(keyGroup, { state: 'adopting', since: performance.now() });
    let frozenAt = Date.now();
    try {
      const decoded = decodeExport(body);
      if (decoded.keyGroup !== keyGroup) throw new Error(`its body is for key group ${decoded.keyGroup}`);
      frozenAt = decoded.frozenAt;
    } catch (error) {
      this.options.log(`cluster: a hand-over for key group ${keyGroup} is malformed (${(error as Error).message}): dropped`);
      this.moving.delete(keyGroup);
      this.port.setOwnership((group) => (group === keyGroup ? true : null));
      this.flushHeld(keyGroup);
      return;
    }
    const epoch = this.recoveryEpoch;
    this.port.adoptKeyGroups([{ keyGroup, bytes: body }]).then(
      (instances) => {
        if (epoch !== this.recoveryEpoch) return; // a recovery reset everything meanwhile
        const pause = Math.max(0, Date.now() - frozenAt);
        this.handovers.adopted++;
        this.handovers.instances += instances;
        this.handovers.lastPauseMs = pause;
        this.handovers.maxPauseMs = Math.max(this.handovers.maxPauseMs, pause);
        this.handovers.totalPauseMs += pause;
        this.moving.delete(keyGroup);
        // Without a majority it is held like every other key group until the majority is back.
        if (!this.serving) this.port.setOwnership((group) => (group === keyGroup ? false : null));
        if (this.placement.members[this.placement.owners[keyGroup]!] !== this.options.nodeId) {
          // The placement moved on while it was being adopted: pass it on.
          this.moving.set(keyGroup, { state: 'releasing', since: performance.now() });
          this.release([keyGroup]);
        }
        this.flushHeld(keyGroup);
      },
      (error: Error) => {
        this.options.log(`cluster: adopting key group ${keyGroup} failed (${error.message}): it starts afresh here`);
        this.moving.delete(keyGroup);
        this.port.setOwnership((group) => (group === keyGroup ? this.serving && this.placement.members[this.placement.owners[group]!] === this.options.nodeId : null));
        this.flushHeld(keyGroup);
      },
    );
  }

  /** Delivers what waited for a key group's hand-over, in order, by the routing table as it is now. */
  private flushHeld(keyGroup: number): void {
    const held = this.heldByKeyGroup.get(keyGroup);
    if (held === undefined) return;
    this.heldByKeyGroup.delete(keyGroup);
    this.heldByKeyGroupCount -= held.length;
    for (const bytes of held) this.heldBytes -= bytes.length;
    for (const bytes of held) this.port.deliver(bytes, 0, bytes.length);
    this.port.flush();
  }

  private retryPendingHandovers(): void {
    const pending = this.pendingHandovers;
    this.pendingHandovers = [];
    for (const envelope of pending) this.onHandover(envelope);
  }

  /** Key groups awaited from a member that died (or left long ago without handing them over) start afresh. */
  private checkAwaiting(): void {
    if (this.awaitingRollback !== null && !this.recovering && performance.now() - this.lastRollbackAsk > ROLLBACK_ASK_MS && this.leaderId() !== this.options.nodeId) {
      // The leader may not have seen the death that we did (views differ for a while): ask it.
      this.lastRollbackAsk = performance.now();
      this.sendCheckpointControl(this.leaderId(), { type: 'restarted', epoch: this.recoveryEpoch, node: 'a member' });
    } else if (this.awaitingRollback !== null && !this.recovering && this.leaderId() === this.options.nodeId) {
      // The leader changed to this node meanwhile.
      this.startRollback(this.recoveryEpoch + 1, this.placement.members, this.awaitingRollback);
    }
    // Without a majority, nothing is claimed (the majority side may own it).
    if (!this.serving || this.recovering || this.awaitingRollback !== null) return;
    if (this.pendingHandovers.length > 0) this.retryPendingHandovers();
    const states = new Map(this.membership.members().map((member) => [member.id, member.state]));
    const now = performance.now();
    const claimed: number[] = [];
    for (const [keyGroup, moving] of this.moving) {
      if (moving.state !== 'awaiting') continue;
      const from = states.get(moving.from);
      if (from === 'dead' || from === undefined || (from === 'left' && now - moving.since > HANDOVER_FROM_LEFT_WAIT_MS)) claimed.push(keyGroup);
    }
    if (claimed.length === 0) return;
    this.options.log(`cluster: ${claimed.length} key groups were not handed over (their owner is gone): they start afresh here`);
    const set = new Set(claimed);
    for (const keyGroup of claimed) {
      this.moving.delete(keyGroup);
      this.claimedAfresh.set(keyGroup, performance.now() + CLAIMED_AFRESH_ADOPT_MS);
    }
    this.port.setOwnership((keyGroup) => (set.has(keyGroup) ? true : null));
    for (const keyGroup of claimed) this.flushHeld(keyGroup);
  }

  private updateServing(): void {
    const states = new Map(this.membership.members().map((member) => [member.id, member.state]));
    const reachableCount = [...this.view].filter((id) => id === this.options.nodeId || states.get(id) === 'alive').length;
    const wasServing = this.serving;
    if (!this.joined) {
      this.serving = false;
      this.reason = `joining: no seed has answered yet (${this.options.seeds.join(', ')})`;
    } else if (reachableCount * 2 <= this.view.size) {
      this.serving = false;
      this.reason = `reaches ${reachableCount} of the ${this.view.size} members of the last agreed view, not a majority: waiting for them`;
    } else {
      this.serving = true;
      this.reason = null;
    }
    if (wasServing !== this.serving) {
      this.options.log(this.serving ? 'cluster: serving' : `cluster: not serving: ${this.reason}`);
      if (this.serving) this.port.recheckAdmission();
    }
    if (this.serving) for (const resolve of this.servingWaiters.splice(0)) resolve();
  }

  private scheduleTick(): void {
    if (this.closed) return;
    const delay = Math.max(0, Math.min(1000, this.membership.nextDeadline() - this.now()));
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.tickTimer = setTimeout(() => {
      this.tickTimer = null;
      this.apply(this.membership.tick(this.now()));
    }, delay);
  }

  // ---- routing helpers ----

  private lastBadEnvelopeLog = 0;
  private badEnvelopes = 0;

  private logBadEnvelope(fromPeer: string, error: unknown): void {
    this.badEnvelopes++;
    const now = performance.now();
    if (now - this.lastBadEnvelopeLog < 5000) return;
    this.lastBadEnvelopeLog = now;
    this.options.log(`cluster: dropped ${this.badEnvelopes} malformed envelope(s) from ${fromPeer}: ${(error as Error)?.message ?? String(error)}`);
    this.badEnvelopes = 0;
  }

  /** Addresses by member id, refreshed on every membership change (looked up for every forward). */
  private addresses = new Map<string, string>();

  private addressOf(id: string): string {
    return this.addresses.get(id) ?? '';
  }

  /** An envelope that was queued for a peer now gone: invokes and hand-overs go to their key group's new owner. */
  private reroute(envelope: Uint8Array): void {
    if (envelope[0] === EnvelopeKind.Handover) {
      // Our own hand-over never reached its owner: send it where the placement says now.
      this.sendHandover(readKeyGroup(envelope, 0), handoverBody(envelope, 0, envelope.length));
      return;
    }
    // Egress records were copies for that peer's subscribers; this node has its own.
    if (envelope[0] !== EnvelopeKind.Invoke) return;
    this.port.deliver(envelope, 0, envelope.length);
    this.port.flush();
  }

  private hold(bytes: Uint8Array, keyGroup: number): void {
    this.held.push({ bytes, keyGroup });
    this.heldBytes += bytes.length;
    if (this.heldTimer === null) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
  }

  private releaseHeld(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    if (!this.joined || !this.serving || this.recovering || this.awaitingRollback !== null) {
      if (this.held.length > 0) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
      return;
    }
    const held = this.held;
    this.held = [];
    for (const { bytes } of held) this.heldBytes -= bytes.length;
    for (const { bytes } of held) this.port.deliver(bytes, 0, bytes.length);
    this.port.flush();
  }

  // ---- status and shutdown ----

  status(): ClusterStatus {
    const counts = ownedCounts(this.placement);
    const connected = new Set(this.network.connectedPeers());
    return {
      nodeId: this.options.nodeId,
      address: this.options.address,
      serving: this.serving,
      reason: this.reason,
      epoch: this.epoch,
      viewId: this.placement.viewId,
      keyGroups: this.keyGroups,
      view: [...this.view].sort(),
      members: this.membership
        .members()
        .map((member) => ({ ...member, keyGroups: counts[member.id] ?? 0, inView: this.view.has(member.id), connected: member.id === this.options.nodeId || connected.has(member.id) }))
        .sort((a, b) => a.id.localeCompare(b.id)),
      peers: this.network.linkStats(),
      refusals: this.network.refusals,
      handovers: { ...this.handovers, keyGroupsMoving: this.moving.size },
      recovery: { epoch: this.recoveryEpoch, recovering: this.recovering, awaiting: this.awaitingRollback, recoveries: this.recoveries },
      checkpoints: this.options.node.checkpointStatus(),
    };
  }

  /** Resolves once the node is part of a cluster and serves (at once for a cluster of one). */
  whenServing(): Promise<void> {
    if (this.serving) return Promise.resolve();
    return new Promise((resolve) => this.servingWaiters.push(resolve));
  }

  /**
   * Leaves gracefully: tells the peers, and gives the news a moment to spread. The links stay open, so
   * the node can still finish and forward what it has (close the node next, then `close()` this).
   */
  async leave(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.apply(this.membership.leave(this.now()));
    if (this.tickTimer) clearTimeout(this.tickTimer);
    const states = new Map(this.membership.members().map((member) => [member.id, member.state]));
    const others = [...this.view].filter((id) => id !== this.options.nodeId && (states.get(id) === 'alive' || states.get(id) === 'suspect'));
    if (others.length > 0) {
      // Adoptions under way finish first (their key groups are then released like the rest).
      const deadline = performance.now() + LEAVE_RELEASE_WAIT_MS;
      while ([...this.moving.values()].some((moving) => moving.state === 'adopting') && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      // Hand every key group over to its owner in the view without this node, then wait for the
      // releases to finish; the links carry the hand-overs (close() waits for their acknowledgement).
      const previous = this.placement;
      this.placement = computePlacement(others, this.keyGroups);
      this.applyPlacement(previous, this.placement);
      if (this.releasesInFlight > 0) {
        const finished = await Promise.race([
          new Promise<boolean>((resolve) => this.releasesDone.push(() => resolve(true))),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), Math.max(0, deadline - performance.now())).unref()),
        ]);
        if (!finished) this.options.log(`cluster: ${this.releasesInFlight} key groups could not be handed over in time (an invocation did not finish): their state is lost`);
      }
      this.options.log(`cluster: handed ${this.handovers.released} key groups over to ${others.join(', ')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, this.view.size > 1 ? LEAVE_GOSSIP_MS : 0));
  }

  /** Acknowledges what the peers sent, waits briefly for its own frames' acknowledgements, and closes the links. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.tickTimer) clearTimeout(this.tickTimer);
    if (this.heldTimer) clearTimeout(this.heldTimer);
    const waiting = this.held.length + this.heldByKeyGroupCount;
    if (waiting > 0) this.options.log(`cluster: ${waiting} messages still waiting for a key group were dropped at shutdown`);
    if (this.pendingHandovers.length > 0) {
      this.options.log(`cluster: ${this.pendingHandovers.length} hand-overs found no owner before shutdown (are all nodes stopping?): dropped`);
    }
    clearInterval(this.handoverCheck);
    for (const timer of this.retireTimers.values()) clearTimeout(timer);
    await this.network.drain(5000);
    this.network.close();
  }
}
