/**
 * A discrete-event world for the view core: several simulated nodes, each running the real membership
 * core (SWIM) and the real view core (ClusterView with its hand-over rules), on a fake clock and a fake
 * network. A small model of the shells performs the cores' actions: an ownership table per node (what
 * ClusterPort.setOwnership and the node's release/adopt/rollBack would set), releases and adoptions
 * that finish a few ms later, hand-over images and recovery messages on FIFO links stamped with the
 * sender's recovery epoch, and links retired with their unacknowledged envelopes handed back.
 *
 * One seed drives everything. Checks hook in through `onAction` (every action a core emits, before it is
 * performed) and `afterEvent` (after each event of the world).
 */
import { EventQueue } from '../sim/event-queue.js';
import { createRandom, type NetworkConditions } from './sim-network.js';
import { Membership, type Action, type WireMessage } from '../../cluster/membership.js';
import { ClusterView, type RecoveryPlan, type ViewAction } from '../../cluster/view-core.js';
import type { CheckpointControl } from '../../node/index.js';

const CORE_TICK_MS = 250;
const LEFT_RETIRE_MS = 10_000;
const LEAVE_GOSSIP_MS = 300;

type Body = { kind: 'image'; keyGroup: number } | { kind: 'control'; message: CheckpointControl };

/** An envelope on a link: delivered in order; unacknowledged (kept on the link) while its target is down. */
interface Envelope {
  from: string;
  to: string;
  epoch: number;
  body: Body;
  /** Taken back by a retire before it arrived. */
  taken: boolean;
}

export interface WorldNode {
  id: string;
  address: string;
  membership: Membership;
  core: ClusterView;
  /** The process runs (false once crashed or stopped after leaving). */
  running: boolean;
  /** Left gracefully: membership and core ticks stop; it finishes its hand-overs, then stops. */
  leaving: boolean;
  owned: boolean[];
  /** The recovery epoch its frames carry. */
  frameEpoch: number;
  pending: Envelope[];
  stashed: Envelope[];
  releasesInFlight: number;
  retireTimers: Map<string, number>;
  deliveringFrom: string | null;
  /** Partition group: envelopes and gossip cross only within a group. */
  group: number;
  logs: string[];
  tickGeneration: number;
  scheduledTickMs: number;
}

type Event =
  | { kind: 'gossip'; timeMs: number; order: number; to: string; from: string; message: WireMessage }
  | { kind: 'membership-tick'; timeMs: number; order: number; node: WorldNode; generation: number }
  | { kind: 'core-tick'; timeMs: number; order: number; node: WorldNode }
  | { kind: 'envelope'; timeMs: number; order: number; envelope: Envelope }
  | { kind: 'call'; timeMs: number; order: number; node: WorldNode; run: () => void };

export class ViewWorld {
  readonly random: () => number;
  readonly nodes = new Map<string, WorldNode>();
  nowMs = 0;
  /** Called with every action a core emits, before it is performed. */
  onAction: (node: WorldNode, action: ViewAction) => void = () => undefined;
  /** Called after each event. */
  afterEvent: () => void = () => undefined;
  /** Claims that found another node's claim for their epoch, over all worlds of the run. */
  static contended = 0;
  /** Nodes that ordered each recovery epoch (sent its rollback orders). */
  readonly recoveryLeaders = new Map<number, Set<string>>();
  /** The store's recovery claims: the nodes that claimed each epoch, in the order their claims landed. */
  private readonly claims = new Map<number, string[]>();
  private readonly queue = new EventQueue<Event>();
  private order = 0;
  private readonly byAddress = new Map<string, WorldNode>();
  /** Unacknowledged envelopes per link ("from>to"), in order, and the time the last one arrives. */
  private readonly links = new Map<string, { unacked: Envelope[]; lastArrivalMs: number }>();

  constructor(
    readonly seed: number,
    readonly keyGroups: number,
    readonly checkpointing: boolean,
    readonly conditions: NetworkConditions,
  ) {
    this.random = createRandom(seed);
  }

  running(): WorldNode[] {
    return [...this.nodes.values()].filter((node) => node.running);
  }

  node(id: string): WorldNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  /** Starts a node now, joining through the given nodes (none: a cluster of one). */
  addNode(id: string, seeds: string[]): WorldNode {
    const address = `${id}:7000`;
    const membership = new Membership({ selfId: id, selfAddress: address, keyGroups: this.keyGroups, random: createRandom(Math.floor(this.random() * 2 ** 32)) });
    const node = {
      id,
      address,
      membership,
      running: true,
      leaving: false,
      owned: new Array<boolean>(this.keyGroups).fill(true),
      frameEpoch: 0,
      pending: [],
      stashed: [],
      releasesInFlight: 0,
      retireTimers: new Map(),
      deliveringFrom: null,
      group: 0,
      logs: [],
      tickGeneration: 0,
      scheduledTickMs: Infinity,
    } as unknown as WorldNode;
    const seedAddresses = seeds.map((seed) => `${seed}:7000`);
    node.core = new ClusterView({
      selfId: id,
      keyGroups: this.keyGroups,
      seeds: seedAddresses,
      joining: seedAddresses.length > 0,
      checkpointing: this.checkpointing,
      perform: (action) => this.perform(node, action),
    });
    this.nodes.set(id, node);
    this.byAddress.set(address, node);
    node.core.start();
    this.applyMembership(node, membership.start(this.nowMs, seedAddresses));
    this.push({ kind: 'core-tick', timeMs: this.nowMs + Math.floor(this.random() * CORE_TICK_MS), node });
    return node;
  }

  crash(id: string): void {
    this.node(id).running = false;
  }

  /** Graceful leave, as ClusterNode.leave() does it; the process stops once its releases are done. */
  leave(id: string): void {
    const node = this.node(id);
    if (!node.core.leave()) return;
    node.leaving = true;
    this.applyMembership(node, node.membership.leave(this.nowMs));
    const others = node.core.leavingTo(node.membership.members());
    const handOver = () => {
      if (!node.running) return;
      if (node.core.moves.anyAdopting()) return this.later(node, 10, handOver);
      if (others.length > 0) node.core.handOverTo(others, node.membership.members(), this.nowMs);
      const stop = () => {
        if (node.releasesInFlight > 0) return this.later(node, 10, stop);
        this.later(node, LEAVE_GOSSIP_MS, () => (node.running = false));
      };
      stop();
    };
    handOver();
  }

  partition(groups: string[][]): void {
    groups.forEach((ids, group) => ids.forEach((id) => (this.node(id).group = group)));
  }

  heal(): void {
    for (const node of this.nodes.values()) node.group = 0;
  }

  runUntil(timeMs: number): void {
    for (let event = this.queue.peek(); event !== undefined && event.timeMs <= timeMs; event = this.queue.peek()) {
      this.queue.pop();
      this.nowMs = event.timeMs;
      this.handle(event);
      this.afterEvent();
    }
    this.nowMs = Math.max(this.nowMs, timeMs);
  }

  // ---- events ----

  private handle(event: Event): void {
    switch (event.kind) {
      case 'gossip': {
        const node = this.byAddress.get(event.to);
        const sender = this.byAddress.get(event.from);
        if (node === undefined || !node.running || (sender !== undefined && sender.group !== node.group)) return;
        this.applyMembership(node, node.membership.receive(this.nowMs, event.from, event.message));
        return;
      }
      case 'membership-tick': {
        const node = event.node;
        if (!node.running || node.leaving || event.generation !== node.tickGeneration) return;
        node.scheduledTickMs = Infinity;
        this.applyMembership(node, node.membership.tick(this.nowMs));
        return;
      }
      case 'core-tick':
        if (!event.node.running) return;
        event.node.core.tick(event.node.membership.members(), this.nowMs);
        this.push({ kind: 'core-tick', timeMs: this.nowMs + CORE_TICK_MS, node: event.node });
        return;
      case 'envelope':
        this.arrive(event.envelope);
        return;
      case 'call':
        if (event.node.running) event.run();
        return;
    }
  }

  private applyMembership(node: WorldNode, actions: Action[]): void {
    let viewMayChange = false;
    for (const action of actions) {
      if (action.type === 'send') this.transmit(node, action.to, action.message);
      else if (action.type === 'changed') {
        viewMayChange = true;
        if (action.member.id !== node.id) node.core.memberChanged(action.member);
      } else if (action.type === 'malformed') throw new Error(`seed ${this.seed}: ${node.id} got a malformed membership message: ${action.reason}`);
    }
    if (viewMayChange && !node.core.hasLeft()) node.core.viewChanged(node.membership.members(), this.nowMs);
    if (!node.leaving) this.scheduleMembershipTick(node);
  }

  private scheduleMembershipTick(node: WorldNode): void {
    const deadline = Math.max(this.nowMs, node.membership.nextDeadline());
    if (deadline === node.scheduledTickMs || deadline === Infinity) return;
    node.tickGeneration++;
    node.scheduledTickMs = deadline;
    this.push({ kind: 'membership-tick', timeMs: deadline, node, generation: node.tickGeneration });
  }

  private transmit(sender: WorldNode, to: string, message: WireMessage): void {
    if (this.random() < this.conditions.lossRate) return;
    this.push({ kind: 'gossip', timeMs: this.nowMs + this.delay(), to, from: sender.address, message: JSON.parse(JSON.stringify(message)) as WireMessage });
  }

  private delay(): number {
    const { delayMinMs, delayMaxMs } = this.conditions;
    return delayMinMs + Math.floor(this.random() * (delayMaxMs - delayMinMs + 1));
  }

  private push(event: Event extends infer E ? (E extends Event ? Omit<E, 'order'> : never) : never): void {
    this.queue.push({ ...event, order: this.order++ } as Event);
  }

  /** Runs `run` on `node` after `ms` (skipped if the node is down by then): an async completion. */
  private later(node: WorldNode, ms: number, run: () => void): void {
    this.push({ kind: 'call', timeMs: this.nowMs + ms, node, run });
  }

  // ---- the shells, modelled ----

  private perform(node: WorldNode, action: ViewAction): void {
    this.onAction(node, action);
    const core = node.core;
    switch (action.type) {
      case 'log':
        node.logs.push(`${this.nowMs} ${action.line}`);
        return;
      case 'own':
        for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) {
          const own = action.owned(keyGroup);
          if (own !== null) node.owned[keyGroup] = own === true; // held: it does not run
        }
        return;
      case 'release': {
        node.owned[action.keyGroup] = false; // the node routes it to the cluster at once
        node.releasesInFlight++;
        const epoch = core.epoch;
        this.later(node, 1 + Math.floor(this.random() * 30), () => {
          node.releasesInFlight--;
          if (epoch === core.epoch) this.sendImage(node, action.keyGroup);
        });
        return;
      }
      case 'retry-handovers': {
        const pending = node.pending;
        node.pending = [];
        for (const envelope of pending) this.onHandover(node, envelope);
        return;
      }
      case 'control':
        this.send(node, action.to, { kind: 'control', message: action.message });
        return;
      case 'fence':
        node.frameEpoch = action.epoch;
        return;
      case 'recovery-begin':
        node.frameEpoch = action.epoch;
        node.pending = [];
        node.stashed = node.stashed.filter((envelope) => envelope.epoch >= action.epoch);
        return;
      case 'rollback-prepare': {
        // The store's part (recovery-claims.ts): the claim lands a while after the prepare began, the
        // listing of the epoch's claims a while after that, and sees every claim landed by then.
        const { epoch } = action.plan;
        this.later(node, 5 + Math.floor(this.random() * 50), () => {
          if (!core.isCurrentRecovery(epoch)) return;
          const claims = this.claims.get(epoch) ?? [];
          claims.push(node.id);
          this.claims.set(epoch, claims);
          this.later(node, 1 + Math.floor(this.random() * 20), () => {
            if (!core.isCurrentRecovery(epoch)) return;
            const others = [...new Set(this.claims.get(epoch)!.filter((id) => id !== node.id))];
            if (others.length > 0) {
              ViewWorld.contended++;
              core.rollbackContended(action.plan, others, this.nowMs);
              return;
            }
            const leaders = this.recoveryLeaders.get(epoch) ?? new Set<string>();
            leaders.add(node.id);
            this.recoveryLeaders.set(epoch, leaders);
            core.rollbackPrepared(action.plan, { checkpoint: 0, term: '' });
          });
        });
        return;
      }
      case 'rollback-run':
        this.later(node, 10 + Math.floor(this.random() * 100), () => this.rollbackDone(node, action.plan));
        return;
      case 'retire':
        this.retire(node, action.id);
        return;
      case 'retire-later':
        if (!node.retireTimers.has(action.id)) {
          const timer = this.order;
          node.retireTimers.set(action.id, timer);
          this.later(node, LEFT_RETIRE_MS, () => node.retireTimers.get(action.id) === timer && this.retire(node, action.id));
        }
        return;
      case 'keep-link':
        node.retireTimers.delete(action.id);
        return;
      default:
        return; // held messages are not simulated; the rest only informs the node
    }
  }

  private rollbackDone(node: WorldNode, plan: RecoveryPlan): void {
    const core = node.core;
    if (!core.isCurrentRecovery(plan.epoch)) return;
    // The node loads the recovery's key groups: its placement must still be the recovery's (gap C, fixed).
    if (core.placement.viewId !== plan.placement.viewId) throw new Error(`seed ${this.seed}: ${node.id}'s placement moved to ${core.placement.viewId} while it restored ${plan.placement.viewId}`);
    for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) node.owned[keyGroup] = plan.placement.members[plan.placement.owners[keyGroup]!] === node.id;
    core.rollbackDone(plan.epoch, node.membership.members(), this.nowMs);
    const stashed = node.stashed;
    node.stashed = [];
    for (const envelope of stashed) {
      if (envelope.epoch > plan.epoch) node.stashed.push(envelope);
      else if (envelope.epoch === plan.epoch) this.deliver(node, envelope);
    }
  }

  private sendImage(node: WorldNode, keyGroup: number): void {
    const owner = node.core.moves.imageReady(keyGroup);
    if (owner === null) this.adopt(node, keyGroup);
    else this.send(node, owner, { kind: 'image', keyGroup });
  }

  private adopt(node: WorldNode, keyGroup: number): void {
    node.core.moves.adoptStarted(keyGroup, this.nowMs);
    const epoch = node.core.epoch;
    this.later(node, 1 + Math.floor(this.random() * 30), () => {
      if (epoch !== node.core.epoch) return;
      node.owned[keyGroup] = true; // the node routes it to its shard once adopted
      node.core.moves.adopted(keyGroup, this.nowMs);
    });
  }

  private onHandover(node: WorldNode, envelope: Envelope): void {
    if (envelope.body.kind !== 'image') return;
    const keyGroup = envelope.body.keyGroup;
    const decision = node.core.moves.handoverArrived(keyGroup, node.deliveringFrom, this.nowMs);
    if (decision.action === 'pend') node.pending.push(envelope);
    else if (decision.action === 'pass') this.send(node, decision.to, envelope.body);
    else if (decision.action === 'adopt') this.adopt(node, keyGroup);
  }

  private send(node: WorldNode, to: string, body: Body): void {
    const key = `${node.id}>${to}`;
    let link = this.links.get(key);
    if (link === undefined) this.links.set(key, (link = { unacked: [], lastArrivalMs: 0 }));
    const envelope: Envelope = { from: node.id, to, epoch: node.frameEpoch, body, taken: false };
    link.unacked.push(envelope);
    // FIFO per link.
    link.lastArrivalMs = Math.max(link.lastArrivalMs, this.nowMs + this.delay());
    this.push({ kind: 'envelope', timeMs: link.lastArrivalMs, envelope });
  }

  private arrive(envelope: Envelope): void {
    const target = this.nodes.get(envelope.to);
    const sender = this.nodes.get(envelope.from)!;
    // A node that is down does not acknowledge: the envelope stays on the link for a retire to take back.
    if (envelope.taken || target === undefined || !target.running || target.group !== sender.group) return;
    const link = this.links.get(`${envelope.from}>${envelope.to}`)!;
    link.unacked.splice(link.unacked.indexOf(envelope), 1);
    if (this.checkpointing && !this.accept(target, envelope)) return;
    this.deliver(target, envelope);
  }

  /** The recovery shell's epoch fence. */
  private accept(node: WorldNode, envelope: Envelope): boolean {
    if (envelope.body.kind === 'control' && envelope.body.message.type === 'rollback' && node.core.takesOrder(envelope.epoch)) return true;
    const type = envelope.body.kind === 'control' ? envelope.body.message.type : null;
    if ((type === 'restarted' || type === 'behind') && envelope.epoch < node.core.epoch) return true;
    const verdict = node.core.fence(envelope.epoch, envelope.from, this.nowMs);
    if (verdict === 'stash') node.stashed.push(envelope);
    return verdict === 'deliver';
  }

  private deliver(node: WorldNode, envelope: Envelope): void {
    node.deliveringFrom = envelope.from;
    try {
      const body = envelope.body;
      if (body.kind === 'image') this.onHandover(node, envelope);
      else if (body.message.type === 'rollback') node.core.rollbackOrdered(envelope.from, body.message);
      else if (body.message.type === 'behind') node.core.behindReported(envelope.from, body.message.epoch);
      else if (body.message.type === 'restarted') node.core.restartReported(envelope.from, body.message.node, body.message.epoch);
    } finally {
      node.deliveringFrom = null;
    }
  }

  /** Closes the link to a member that is gone; its hand-overs go where the placement says now. */
  private retire(node: WorldNode, id: string): void {
    node.retireTimers.delete(id);
    const link = this.links.get(`${node.id}>${id}`);
    const undelivered = link?.unacked.splice(0) ?? [];
    for (const envelope of undelivered) envelope.taken = true;
    if (node.core.dropsUndelivered(node.membership.member(id)?.state)) return;
    for (const envelope of undelivered) if (envelope.body.kind === 'image') this.sendImage(node, envelope.body.keyGroup);
  }
}
