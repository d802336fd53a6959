/**
 * Makes a node a member of a cluster: wires the peer transport, the membership protocol (driven by a
 * timer) and the node's cluster port to the view core, and performs what the core decides. Envelopes
 * for key groups other nodes own are routed by the hand-over shell; egress records go to every peer
 * (so a subscriber on any node sees them); recovery runs in the recovery shell; GET /cluster, /health
 * and the metrics are in cluster-http.ts.
 *
 *   peer link ──► onEnvelope ──► epoch fence (recovery-shell) ──► hand-over / control / the node
 *   gossip, membership timer ──► Membership ──► changes ──► ClusterView (view-core) ──► actions ──► perform
 *
 * The rules (status, view, majority, placement, hand-over, recovery) are in view-core.ts and
 * handover-core.ts, without I/O; this file and the shells beside it do the I/O.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { BARRIER_BYTES, EnvelopeKind, writeBarrier } from '../lib/envelope.js';
import type { CheckpointControl, ClusterHooks, ClusterPort, StatecraftNode } from '../node/index.js';
import { decodeControlEnvelope, encodeControlEnvelope } from './checkpoint-control.js';
import { ClusterHttp, type ClusterReport } from './cluster-http.js';
import { HandoverShell } from './handover-shell.js';
import { Membership, type Action, type Member, type MembershipConfig } from './membership.js';
import { LINK_CHECK_MS, LinkShell } from './link-shell.js';
import { PeerNetwork, type PeerTls } from './peer-network.js';
import { RecoveryShell } from './recovery-shell.js';
import { ClusterView, type ViewAction } from './view-core.js';

export type { ClusterReport } from './cluster-http.js';

/** Bytes queued for peers above which client events wait. */
const PEER_BACKLOG_BYTES_MAX = 64 * 1024 * 1024;
const LEAVE_GOSSIP_MS = 300;
/** How long a node that stops listens for the other members saying they stop too, before it hands over. */
const LEAVE_LISTEN_MS = 300;
/** How long it listens at most, once some other members said they stop too. */
const LEAVE_LISTEN_MAX_MS = 3_000;
/** A member's word that it is stopping counts this long. */
const STOPPING_FRESH_MS = 30_000;

/** A member says it is stopping (gossip, before it leaves: see ClusterNode.leave). */
interface StoppingMessage {
  type: 'stopping';
  id: string;
}

function isStoppingMessage(message: unknown): message is StoppingMessage {
  return typeof message === 'object' && message !== null && (message as StoppingMessage).type === 'stopping' && typeof (message as StoppingMessage).id === 'string';
}
/** A member that left keeps its link this long, so its hand-overs and last messages get through. */
const LEFT_RETIRE_MS = 10_000;
/** How often key groups awaited from a member that is gone are checked (and a missing rollback order asked for). */
const HANDOVER_CHECK_MS = 250;
/** How long a hung invocation may hold up a graceful leave before the node goes anyway. */
const LEAVE_RELEASE_WAIT_MS = 30_000;
/** Malformed envelopes are counted, and logged at most this often. */
const BAD_ENVELOPE_LOG_MS = 5_000;

export type MembershipTuning = Partial<Omit<MembershipConfig, 'selfId' | 'selfAddress' | 'keyGroups' | 'random'>>;

export interface ClusterOptions {
  node: Pick<StatecraftNode, 'keyGroups' | 'limits' | 'attachCluster' | 'checkpointStatus'>;
  nodeId: string;
  /** host:port other nodes reach this node at. */
  address: string;
  /** host:port of seed nodes; none: a cluster of one that others may join. */
  seeds: readonly string[];
  /** The cluster secret (cluster-secret.ts): every node of the cluster has the same. */
  secret: Uint8Array;
  /** The nodes' ports speak TLS: peers are dialled with wss://, checked against `ca` (PEM) or the system's CAs. */
  tls?: PeerTls | null;
  tuning?: MembershipTuning;
  log(line: string): void;
  /** This node cannot be part of the cluster (refused at join): the reason says what to do. */
  onRefused(reason: string): void;
  /** The agreed view changed: its members and their addresses (start.ts remembers them in the data dir). */
  onView?(members: { id: string; address: string }[]): void;
}

export class ClusterNode implements ClusterHooks {
  private readonly membership: Membership;
  private readonly network: PeerNetwork;
  private readonly port: ClusterPort;
  private readonly core: ClusterView;
  private readonly handovers: HandoverShell;
  private readonly recovery: RecoveryShell;
  private readonly report: ClusterHttp;
  private tickTimer: NodeJS.Timeout | null = null;
  private readonly handoverCheck: NodeJS.Timeout;
  /** Members left out for cut links (checkpoints on; link-shell.ts), and the timer that watches the links. */
  private readonly links: LinkShell | null;
  private readonly linkCheck: NodeJS.Timeout | null;
  private readonly retireTimers = new Map<string, NodeJS.Timeout>();
  /** The peer whose envelopes are being delivered right now (to spot messages bouncing between views). */
  private deliveringFrom: string | null = null;
  /** Addresses by member id, refreshed on every membership change (looked up for every forward). */
  private readonly addresses = new Map<string, string>();
  private readonly started = performance.now();
  private servingWaiters: (() => void)[] = [];
  /** Members (this node too) that said they are stopping, and when (a whole cluster stopped at once shows as all of them). */
  private readonly stopping = new Map<string, number>();
  /** This node stopped together with every other member of its view (see leave()). */
  private stoppedTogether = false;
  private closed: Promise<void> | null = null;
  private lastBadEnvelopeLog = 0;
  private badEnvelopes = 0;

  constructor(private readonly options: ClusterOptions) {
    const { node, nodeId, address } = options;
    const seeds = options.seeds.filter((seed) => seed !== address);
    this.network = new PeerNetwork({
      selfId: nodeId,
      selfAddress: address,
      keyGroups: node.keyGroups,
      valueBytesMax: node.limits.valueBytesMax,
      secret: options.secret,
      tls: options.tls ?? null,
      onPeerHello: (peer, instance, epoch) => this.core.peerHello(peer, instance, epoch),
      onEnvelope: (bytes, offset, length, fromPeer, epoch) => this.onEnvelope(bytes, offset, length, fromPeer, epoch),
      onEnvelopesDone: () => this.port.flush(),
      onGossip: (from, message) => {
        if (this.links?.receive(message)) return;
        // Only members' words are kept: a peer naming ids at random cannot grow the map.
        if (isStoppingMessage(message)) return void (this.membership.member(message.id) !== undefined && this.stopping.set(message.id, performance.now()));
        this.apply(this.membership.receive(this.membershipNow(), from, message as never));
      },
      onBacklogChanged: () => this.port.recheckAdmission(),
      // Fatal only for a node still joining; a member that meets a misconfigured newcomer just logs it.
      onRefused: (reason) => (this.core.hasJoined() ? options.log(`cluster: ${reason}`) : options.onRefused(reason)),
      log: options.log,
    });
    this.membership = new Membership({ ...options.tuning, selfId: nodeId, selfAddress: address, keyGroups: node.keyGroups, random: Math.random });
    this.port = node.attachCluster(this);
    this.core = new ClusterView({
      selfId: nodeId,
      keyGroups: node.keyGroups,
      seeds: options.seeds,
      joining: seeds.length > 0,
      checkpointing: this.port.checkpointing,
      perform: (action) => this.perform(action),
    });
    const send = (peer: string, bytes: Uint8Array, offset: number, length: number) => this.network.send(peer, this.addressOf(peer), bytes, offset, length);
    this.handovers = new HandoverShell({
      core: this.core,
      port: this.port,
      send,
      deliveringFrom: () => this.deliveringFrom,
      isDead: (id) => (this.viewMember(id)?.state ?? 'dead') === 'dead',
      log: options.log,
    });
    this.recovery = new RecoveryShell({
      core: this.core,
      port: this.port,
      setEpoch: (epoch) => this.network.setEpoch(epoch),
      redeliver: (bytes, offset, length, from, epoch) => this.onEnvelope(bytes, offset, length, from, epoch),
      members: () => this.viewMembers(),
      releaseHeld: () => this.handovers.releaseHeld(),
      sendControl: (peer, message) => this.sendCheckpointControl(peer, message),
      log: options.log,
    });
    this.report = new ClusterHttp({
      nodeId,
      address,
      core: this.core,
      membership: this.membership,
      network: this.network,
      handovers: this.handovers,
      controlRefused: () => this.recovery.refused,
      checkpointStatus: () => node.checkpointStatus(),
      reason: () => this.links?.reason ?? null,
      links: () => (this.links === null ? null : { down: this.links.down, leftOut: [...this.links.out].sort() }),
    });
    this.handoverCheck = setInterval(() => this.core.tick(this.viewMembers(), performance.now()), HANDOVER_CHECK_MS);
    this.handoverCheck.unref();
    // Without checkpoints a member left out would lose its key groups' state: cut links only hold messages up then.
    this.links = this.port.checkpointing
      ? new LinkShell({
          selfId: nodeId,
          startMs: Date.now(),
          members: () => this.membership.members(),
          connectedPeers: () => this.network.connectedPeers(),
          gossip: (id, message) => this.network.gossip(this.addressOf(id), message),
          changed: (ids) => this.linkVerdictChanged(ids),
          log: options.log,
        })
      : null;
    this.linkCheck = this.links === null ? null : setInterval(() => this.links!.tick(performance.now()), LINK_CHECK_MS);
    this.linkCheck?.unref();
    this.core.start();
    this.apply(this.membership.start(this.membershipNow(), seeds));
  }

  private membershipNow(): number {
    return performance.now() - this.started;
  }

  // ---- ClusterHooks ----

  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    this.handovers.forward(bytes, offset, length, keyGroup);
  }

  onEgress(_egress: string, bytes: Uint8Array, offset: number, length: number): void {
    for (const peer of this.core.placement.members) {
      if (peer !== this.options.nodeId) this.network.send(peer, this.addressOf(peer), bytes, offset, length);
    }
  }

  writeBarrier(checkpoint: number): void {
    const barrier = new Uint8Array(BARRIER_BYTES);
    writeBarrier(barrier, 0, checkpoint);
    for (const peer of this.core.viewMembers()) {
      if (peer !== this.options.nodeId) this.network.send(peer, this.addressOf(peer), barrier, 0, BARRIER_BYTES);
    }
  }

  checkpointBlocked(): string | null {
    return this.core.checkpointBlocked(this.handovers.heldCount);
  }

  sendCheckpointControl(peer: string, message: CheckpointControl): void {
    const envelope = encodeControlEnvelope(message);
    this.network.send(peer, this.addressOf(peer), envelope, 0, envelope.length);
  }

  admits(): boolean {
    return this.core.admits() && this.network.queuedBytes + this.handovers.heldBytes < PEER_BACKLOG_BYTES_MAX;
  }

  refusesClients(): string | null {
    return this.core.status === 'no-majority' ? `${this.options.nodeId} ${this.links?.reason ?? this.core.reason ?? 'reaches no majority of its cluster'}: connect to another node` : null;
  }

  http(request: IncomingMessage, response: ServerResponse): boolean {
    return this.report.serve(request, response);
  }

  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    return this.network.upgrade(request, socket, head);
  }

  metrics(): string[] {
    return this.report.metrics();
  }

  // ---- from the peers ----

  private onEnvelope(bytes: Uint8Array, offset: number, length: number, fromPeer: string, epoch: number): void {
    if (this.port.checkpointing && !this.recovery.accept(bytes, offset, length, fromPeer, epoch)) return;
    this.deliveringFrom = fromPeer;
    try {
      const kind = bytes[offset];
      if (kind === EnvelopeKind.Handover) this.handovers.onHandover(bytes.slice(offset, offset + length));
      else if (kind === EnvelopeKind.Fence) this.handovers.onFence(bytes.slice(offset, offset + length));
      else if (kind === EnvelopeKind.CheckpointControl) this.recovery.onControl(fromPeer, decodeControlEnvelope(bytes, offset, length));
      else this.port.deliver(bytes, offset, length, fromPeer);
    } catch (error) {
      // One bad envelope is dropped, not the frame: a frame half applied would be re-sent for ever.
      this.logBadEnvelope(fromPeer, error);
    } finally {
      this.deliveringFrom = null;
    }
  }

  private logBadEnvelope(fromPeer: string, error: unknown): void {
    this.badEnvelopes++;
    const now = performance.now();
    if (now - this.lastBadEnvelopeLog < BAD_ENVELOPE_LOG_MS) return;
    this.lastBadEnvelopeLog = now;
    this.options.log(`cluster: dropped ${this.badEnvelopes} malformed envelope(s) from ${fromPeer}: ${(error as Error)?.message ?? String(error)}`);
    this.badEnvelopes = 0;
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
        if (this.core.hasJoined()) this.options.log(`cluster: ${action.reason}`);
        else this.options.onRefused(action.reason);
      } else if (action.type === 'refused-peer') {
        this.options.log(`cluster: refused ${action.id} at ${action.address}: ${action.reason}`);
      } else if (action.type === 'malformed') {
        this.options.log(`cluster: dropped a malformed membership message from ${action.from}: ${action.reason}`);
      }
    }
    if (viewMayChange && !this.core.hasLeft()) this.core.viewChanged(this.viewMembers(), performance.now());
    this.scheduleTick();
  }

  private onMemberChanged(member: Member, previous: string | null): void {
    this.addresses.set(member.id, member.address);
    // Gone (or back with a new incarnation): what it said about stopping was about a process that is gone.
    if (member.state === 'dead' || member.state === 'left' || previous === 'dead' || previous === 'left') this.stopping.delete(member.id);
    if (member.id === this.options.nodeId) return;
    this.options.log(`cluster: ${member.id} (${member.address}) is ${member.state}${previous ? ` (was ${previous})` : ''}, incarnation ${member.incarnation}`);
    this.network.learnAddress(member.id, member.address);
    this.core.memberChanged(this.links?.adjusted(member) ?? member);
    if (member.state === 'alive' || member.state === 'suspect') this.network.revive(member.id);
  }

  private scheduleTick(): void {
    if (this.core.hasLeft()) return;
    const delay = Math.max(0, Math.min(1000, this.membership.nextDeadline() - this.membershipNow()));
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.tickTimer = setTimeout(() => {
      this.tickTimer = null;
      this.apply(this.membership.tick(this.membershipNow()));
    }, delay);
  }

  private addressOf(id: string): string {
    return this.addresses.get(id) ?? '';
  }

  // ---- what the core decided ----

  private perform(action: ViewAction): void {
    switch (action.type) {
      case 'log':
        return this.options.log(action.line);
      case 'status':
        return; // the log lines say what changed and why
      case 'majority':
        if (action.reached) {
          this.port.recheckAdmission();
          for (const resolve of this.servingWaiters.splice(0)) resolve();
        } else if (this.core.status === 'no-majority') {
          // Clients go to the majority meanwhile (those given several nodes), and re-send what was not confirmed.
          this.port.closeClients(this.refusesClients()!);
        }
        return;
      case 'own':
        return this.port.setOwnership(action.owned);
      case 'release':
        return this.handovers.release(action.keyGroup);
      case 'flush-held':
        return this.handovers.flushHeld(action.keyGroup);
      case 'release-held':
        return this.handovers.releaseHeld();
      case 'retry-handovers':
        return this.handovers.retryPending();
      case 'control':
        return this.sendCheckpointControl(action.to, action.message);
      case 'fence':
        return this.network.setEpoch(action.epoch);
      case 'recovery-begin':
        this.recovery.begin(action.epoch);
        return this.handovers.dropAll();
      case 'rollback-prepare':
        return this.recovery.prepare(action.plan);
      case 'rollback-run':
        return this.recovery.run(action.plan, action.restore);
      case 'checkpoint-peers':
        return this.port.setCheckpointPeers(action.peers);
      case 'lead-checkpoints':
        return this.port.leadCheckpoints(action.lead);
      case 'view':
        this.handovers.placementChanged();
        return this.reportView(action.members);
      case 'retire':
        return this.retire(action.id);
      case 'retire-later':
        // A member that left is still handing its key groups over: close its link a little later.
        if (!this.retireTimers.has(action.id)) this.retireTimers.set(action.id, setTimeout(() => this.retire(action.id), LEFT_RETIRE_MS).unref());
        return;
      case 'keep-link':
        if (this.retireTimers.has(action.id)) {
          clearTimeout(this.retireTimers.get(action.id));
          this.retireTimers.delete(action.id);
        }
        return;
    }
  }

  /** The membership as the view core sees it: members left out for cut links count as dead (link-shell.ts). */
  private viewMembers(): Member[] {
    return this.links?.members() ?? this.membership.members();
  }

  private viewMember(id: string): Member | undefined {
    const member = this.membership.member(id);
    return member === undefined ? undefined : (this.links?.adjusted(member) ?? member);
  }

  /** Members left out for cut links, or back: the view core learns it as it learns a death or a return. */
  private linkVerdictChanged(ids: readonly string[]): void {
    if (this.core.hasLeft()) return;
    const self = ids.includes(this.options.nodeId);
    for (const member of this.membership.members()) {
      if (member.id !== this.options.nodeId && (self || ids.includes(member.id))) this.core.memberChanged(this.links!.adjusted(member));
    }
    this.core.viewChanged(this.viewMembers(), performance.now());
  }

  private retire(id: string): void {
    // Left out for a cut link but alive: its link keeps dialling, so the verdict can see it heal.
    if (this.links?.keepsLink(id)) return;
    clearTimeout(this.retireTimers.get(id));
    this.retireTimers.delete(id);
    const undelivered = this.network.retire(id);
    if (this.core.dropsUndelivered(this.membership.member(id)?.state)) return;
    for (const envelope of undelivered) this.handovers.reroute(envelope);
  }

  private reportView(ids: readonly string[]): void {
    if (this.options.onView === undefined) return;
    const members = ids.map((id) => ({ id, address: id === this.options.nodeId ? this.options.address : this.addressOf(id) }));
    try {
      this.options.onView(members.filter((member) => member.address !== ''));
    } catch (error) {
      this.options.log(`cluster: could not remember the view's members: ${(error as Error).message}`);
    }
  }

  // ---- status and shutdown ----

  status(): ClusterReport {
    return this.report.report();
  }

  /** Resolves once the node is part of a cluster and serves (at once for a cluster of one). */
  whenServing(): Promise<void> {
    if (this.core.inMajority()) return Promise.resolve();
    return new Promise((resolve) => this.servingWaiters.push(resolve));
  }

  /**
   * Leaves gracefully: tells the peers, and gives the news a moment to spread. The links stay open, so
   * the node can still finish and forward what it has (close the node next, then `close()` this).
   */
  async leave(): Promise<void> {
    if (this.core.hasLeft()) return;
    const view = this.core.viewMembers();
    if (view.length > 1 && this.port.checkpointing) {
      // First say that this node is stopping, and listen a moment: members stopped at the same time (a
      // whole cluster stopped) say so too. Unlike a leave, it changes nobody's view.
      this.stopping.set(this.options.nodeId, performance.now());
      for (const id of view) if (id !== this.options.nodeId) this.network.gossip(this.addressOf(id), { type: 'stopping', id: this.options.nodeId } satisfies StoppingMessage);
      // Once some others say so, the rest are likely stopping too: wait a little longer for them.
      const deadline = performance.now() + LEAVE_LISTEN_MAX_MS;
      await new Promise((resolve) => setTimeout(resolve, LEAVE_LISTEN_MS));
      const stoppingCount = () => this.core.viewMembers().filter((id) => this.isStopping(id)).length;
      while (stoppingCount() > 1 && stoppingCount() < this.core.viewMembers().length && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      if (this.core.hasLeft()) return;
      if (this.core.viewMembers().every((id) => this.isStopping(id))) {
        // Nobody to hand over to. This node follows no view any more (members that exit before the
        // others start no recovery), and one final checkpoint across the cluster, led as usual, makes
        // what was accepted durable instead.
        this.core.leave();
        if (this.tickTimer) clearTimeout(this.tickTimer);
        this.stoppedTogether = true;
        this.options.log('cluster: every member of the view is stopping: no hand-over; the stop takes a final checkpoint across the cluster instead');
        this.port.stoppingTogether();
        return;
      }
    }
    if (!this.core.leave()) return;
    this.apply(this.membership.leave(this.membershipNow()));
    if (this.tickTimer) clearTimeout(this.tickTimer);
    const others = this.core.leavingTo(this.viewMembers());
    if (others.length > 0) {
      // Adoptions under way finish first (their key groups are then released like the rest).
      const deadline = performance.now() + LEAVE_RELEASE_WAIT_MS;
      while (this.core.moves.anyAdopting() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      // Hand every key group over to its owner in the view without this node, then wait for the
      // releases to finish; the links carry the hand-overs (close() waits for their acknowledgement).
      this.core.handOverTo(others, this.viewMembers(), performance.now());
      if (!(await this.handovers.releasesFinished(deadline))) {
        this.options.log(`cluster: ${this.handovers.releasesPending} key groups could not be handed over in time (an invocation did not finish): their state is lost`);
      }
      this.options.log(`cluster: handed ${this.handovers.stats.released} key groups over to ${others.join(', ')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, this.core.viewMembers().length > 1 ? LEAVE_GOSSIP_MS : 0));
  }

  /** Whether `id` said it is stopping, lately (a member that said so long ago and did not stop is not counted). */
  private isStopping(id: string): boolean {
    const said = this.stopping.get(id);
    return said !== undefined && performance.now() - said < STOPPING_FRESH_MS;
  }

  /** Acknowledges what the peers sent, waits briefly for its own frames' acknowledgements, and closes the links (once). */
  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    // Stopped together with every other member: the leave is said only now, after the final checkpoint.
    if (this.stoppedTogether) this.apply(this.membership.leave(this.membershipNow()));
    this.core.leave();
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.handovers.close();
    clearInterval(this.handoverCheck);
    if (this.linkCheck) clearInterval(this.linkCheck);
    for (const timer of this.retireTimers.values()) clearTimeout(timer);
    await this.network.drain(5000);
    this.network.close();
  }
}
