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
import { EnvelopeKind } from '../lib/envelope.js';
import type { ClusterHooks, ClusterPort, StatecraftNode } from '../node/index.js';
import { Membership, type Action, type Member, type MembershipConfig } from './membership.js';
import { PeerNetwork } from './peer-network.js';
import { computePlacement, ownedCounts, type Placement } from './placement.js';

/** Bytes queued for peers above which client events wait. */
const PEER_BACKLOG_BYTES_MAX = 64 * 1024 * 1024;
/** How long a message waits before going back to a peer that sent it to us as its owner (views differ). */
const BOUNCE_HOLD_MS = 20;
const LEAVE_GOSSIP_MS = 300;

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
  private readonly started = performance.now();
  private servingWaiters: (() => void)[] = [];

  constructor(private readonly options: ClusterOptions) {
    const { node, nodeId, address } = options;
    this.keyGroups = node.keyGroups;
    this.view.add(nodeId);
    this.placement = computePlacement(this.view, this.keyGroups);
    const seeds = options.seeds.filter((seed) => seed !== address);
    this.joined = seeds.length === 0;
    this.network = new PeerNetwork({
      selfId: nodeId,
      selfAddress: address,
      keyGroups: this.keyGroups,
      onEnvelope: (bytes, offset, length) => this.port.deliver(bytes, offset, length),
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
    this.updateServing();
    this.apply(this.membership.start(this.now(), seeds));
  }

  private now(): number {
    return performance.now() - this.started;
  }

  // ---- ClusterHooks ----

  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    const owner = this.placement.members[this.placement.owners[keyGroup]!]!;
    if (owner === this.options.nodeId || !this.joined) {
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
    for (const peer of this.view) {
      if (peer !== this.options.nodeId) this.network.send(peer, this.addressOf(peer), bytes, offset, length);
    }
  }

  admits(): boolean {
    return this.serving && this.network.queuedBytes < PEER_BACKLOG_BYTES_MAX;
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
      `statecraft_messages_held ${this.held.length}`,
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
    if (member.id === this.options.nodeId) return;
    this.options.log(`cluster: ${member.id} (${member.address}) is ${member.state}${previous ? ` (was ${previous})` : ''}, incarnation ${member.incarnation}`);
    this.network.learnAddress(member.id, member.address);
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
    for (const [id, state] of states) {
      if ((state === 'alive' || state === 'suspect') && !this.view.has(id)) this.view.add(id);
      if (state === 'left') this.view.delete(id);
    }
    // Members declared dead leave the view only while this node reaches a majority of it.
    const dead = [...this.view].filter((id) => id !== this.options.nodeId && (states.get(id) ?? 'dead') === 'dead');
    const reachableCount = [...this.view].filter(reachable).length;
    if (dead.length > 0 && reachableCount * 2 > this.view.size) for (const id of dead) this.view.delete(id);
    for (const [id, state] of states) {
      if (state === 'dead' || state === 'left') for (const envelope of this.network.retire(id)) this.reroute(envelope);
    }
    this.updateServing();
    // Suspects keep their key groups until they are declared dead: suspicion is often wrong.
    const placement = computePlacement([...this.view].filter((id) => reachable(id) || states.get(id) === 'suspect'), this.keyGroups);
    if (placement.viewId !== this.placement.viewId) {
      this.placement = placement;
      this.epoch++;
      const self = placement.members.indexOf(this.options.nodeId);
      this.port.setOwnership((keyGroup) => this.joined && placement.owners[keyGroup] === self);
      const counts = ownedCounts(placement);
      this.options.log(
        `cluster: epoch ${this.epoch}, view ${placement.viewId}: ${placement.members.map((id) => `${id} (${counts[id]} key groups)`).join(', ')}`,
      );
      this.releaseHeld();
    }
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

  private addressOf(id: string): string {
    return this.membership.members().find((member) => member.id === id)?.address ?? '';
  }

  /** An envelope that was queued for a peer now gone: invokes go to their key group's new owner. */
  private reroute(envelope: Uint8Array): void {
    // Egress records were copies for that peer's subscribers; this node has its own.
    if (envelope[0] !== EnvelopeKind.Invoke) return;
    this.port.deliver(envelope, 0, envelope.length);
    this.port.flush();
  }

  private hold(bytes: Uint8Array, keyGroup: number): void {
    this.held.push({ bytes, keyGroup });
    if (this.heldTimer === null) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
  }

  private releaseHeld(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    if (!this.joined) {
      if (this.held.length > 0) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
      return;
    }
    const held = this.held;
    this.held = [];
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
    await new Promise((resolve) => setTimeout(resolve, this.view.size > 1 ? LEAVE_GOSSIP_MS : 0));
  }

  /** Acknowledges what the peers sent, waits briefly for its own frames' acknowledgements, and closes the links. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.tickTimer) clearTimeout(this.tickTimer);
    if (this.heldTimer) clearTimeout(this.heldTimer);
    if (this.held.length > 0) this.options.log(`cluster: ${this.held.length} held messages dropped at shutdown`);
    await this.network.drain(1000);
    this.network.close();
  }
}
