/**
 * A discrete-event simulator for the membership core: a fake clock, a fake network that delays,
 * loses, duplicates, reorders and partitions messages (both ways, or one way only), and nodes that crash
 * or pause (SIGSTOP: no ticks, and what arrives waits until they resume). One seed drives everything (network
 * and every node's `random`), so a failing seed replays exactly.
 *
 * Events (message deliveries and node ticks) sit in a binary heap ordered by (time, insertion order);
 * each node is ticked at its own `nextDeadline()`, recomputed after every event it handles.
 */
import { EventQueue } from '../sim/event-queue.js';
import { Membership, type Action, type Member, type MemberState, type MembershipConfig, type WireMessage } from '../../cluster/membership.js';

/** sfc32: small, fast, good enough for simulation; seeded through splitmix32. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  const splitmix = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  return () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
}

export interface NetworkConditions {
  delayMinMs: number;
  delayMaxMs: number;
  /** Probability that one message is lost. */
  lossRate: number;
  /** Probability that a message is delivered twice (the copy later). Default 0. */
  duplicateRate?: number;
}

/** One observed view change: `observer` saw `member` become `member.state`. */
export interface ChangeEvent {
  timeMs: number;
  observer: string;
  member: Member;
  previous: MemberState | null;
}

export interface SimNode {
  id: string;
  address: string;
  membership: Membership;
  running: boolean;
  /** Partition group: messages cross only between nodes of the same group. */
  group: number;
  refused: string[];
  refusedPeers: string[];
  /** Bumped on every reschedule, so stale tick events are skipped. */
  tickGeneration: number;
  scheduledTickMs: number;
  /** Ticks run at the current time: a core whose deadline never moves on would spin forever. */
  ticksAtSameTime: number;
  lastTickMs: number;
  /** Paused (SIGSTOP) until this time: no ticks; messages to it wait, in order. */
  pausedUntilMs: number;
}

type Event =
  | { kind: 'deliver'; timeMs: number; order: number; to: string; from: string; message: WireMessage }
  | { kind: 'tick'; timeMs: number; order: number; node: SimNode; generation: number };


/** Deep copy through plain objects, as an encode/decode round trip would (no shared references). */
function copyMessage(message: WireMessage): WireMessage {
  return JSON.parse(JSON.stringify(message)) as WireMessage;
}

export class SimCluster {
  readonly random: () => number;
  readonly nodes = new Map<string, SimNode>();
  private readonly byAddress = new Map<string, SimNode>();
  readonly changes: ChangeEvent[] = [];
  conditions: NetworkConditions;
  nowMs = 0;
  messagesSent = 0;
  /** What the wire does to a message; replace it to run real encoding. */
  transcode: (message: WireMessage) => WireMessage = copyMessage;
  private readonly queue = new EventQueue<Event>();
  private order = 0;
  /** One-way cuts: `from>to` pairs of node ids whose messages are lost in that direction only. */
  private readonly cuts = new Set<string>();

  constructor(
    readonly seed: number,
    conditions: NetworkConditions,
    private readonly tuning: Partial<MembershipConfig> = {},
  ) {
    this.random = createRandom(seed);
    this.conditions = { ...conditions };
  }

  /** Creates and starts a node now. `seeds` are node ids (translated to their addresses). */
  addNode(id: string, seeds: string[], overrides: Partial<MembershipConfig> = {}, address = `${id}:7000`): SimNode {
    const previous = this.nodes.get(id);
    if (previous !== undefined) this.byAddress.delete(previous.address);
    const membership = new Membership({
      ...this.tuning,
      ...overrides,
      selfId: id,
      selfAddress: address,
      keyGroups: overrides.keyGroups ?? this.tuning.keyGroups ?? 1024,
      random: createRandom(Math.floor(this.random() * 2 ** 32)),
    });
    const node: SimNode = { id, address, membership, running: true, group: 0, refused: [], refusedPeers: [], tickGeneration: 0, scheduledTickMs: Infinity, ticksAtSameTime: 0, lastTickMs: -1, pausedUntilMs: 0 };
    this.nodes.set(id, node);
    this.byAddress.set(address, node);
    const seedAddresses = seeds.map((seed) => this.nodes.get(seed)?.address ?? `${seed}:7000`);
    this.perform(node, membership.start(this.nowMs, seedAddresses));
    return node;
  }

  /** The node stops: no more ticks, incoming messages are lost. */
  crash(id: string): void {
    this.node(id).running = false;
  }

  /** Graceful leave, then the process stops at once (only what leave() sent gets out). */
  leaveAndStop(id: string): void {
    const node = this.node(id);
    this.perform(node, node.membership.leave(this.nowMs));
    node.running = false;
  }

  /** Splits the nodes into groups; messages between groups are lost (in flight ones too). */
  partition(groups: string[][]): void {
    groups.forEach((ids, group) => {
      for (const id of ids) this.node(id).group = group;
    });
  }

  heal(): void {
    for (const node of this.nodes.values()) node.group = 0;
    this.cuts.clear();
  }

  /** Messages from `from` to `to` are lost (in flight ones too); the other direction still works. */
  cutOneWay(from: string, to: string): void {
    this.cuts.add(`${from}>${to}`);
  }

  /** The node stops running until `untilMs` (SIGSTOP … SIGCONT): then it ticks and reads what waited. */
  pause(id: string, untilMs: number): void {
    this.node(id).pausedUntilMs = untilMs;
  }

  private cut(from: SimNode, to: SimNode): boolean {
    return from.group !== to.group || (this.cuts.size > 0 && this.cuts.has(`${from.id}>${to.id}`));
  }

  node(id: string): SimNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no simulated node ${id}`);
    return node;
  }

  running(): SimNode[] {
    return [...this.nodes.values()].filter((node) => node.running);
  }

  /** Processes every event up to and including `timeMs`, then sets the clock to it. */
  runUntil(timeMs: number): void {
    for (let event = this.queue.peek(); event !== undefined && event.timeMs <= timeMs; event = this.queue.peek()) {
      this.queue.pop();
      this.nowMs = event.timeMs;
      if (event.kind === 'tick') {
        const node = event.node;
        if (!node.running || event.generation !== node.tickGeneration) continue;
        if (node.pausedUntilMs > this.nowMs) {
          this.queue.push({ ...event, timeMs: node.pausedUntilMs, order: this.order++ });
          continue;
        }
        node.scheduledTickMs = Infinity;
        node.ticksAtSameTime = node.lastTickMs === this.nowMs ? node.ticksAtSameTime + 1 : 0;
        node.lastTickMs = this.nowMs;
        if (node.ticksAtSameTime > 100) throw new Error(`seed ${this.seed}: ${node.id} asks to be ticked again and again at ${this.nowMs} ms`);
        this.perform(node, node.membership.tick(this.nowMs));
      } else {
        const node = this.byAddress.get(event.to);
        const sender = this.byAddress.get(event.from);
        if (node === undefined || !node.running) continue;
        // A partition also cuts messages already in flight.
        if (sender !== undefined && this.cut(sender, node)) continue;
        if (node.pausedUntilMs > this.nowMs) {
          // Waits in the socket until the process runs again (re-queued in arrival order).
          this.queue.push({ ...event, timeMs: node.pausedUntilMs, order: this.order++ });
          continue;
        }
        this.perform(node, node.membership.receive(this.nowMs, event.from, event.message));
      }
    }
    this.nowMs = Math.max(this.nowMs, timeMs);
  }

  private perform(node: SimNode, actions: Action[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'send':
          this.transmit(node, action.to, action.message);
          break;
        case 'changed':
          this.changes.push({ timeMs: this.nowMs, observer: node.id, member: action.member, previous: action.previous });
          break;
        case 'refused':
          node.refused.push(action.reason);
          break;
        case 'refused-peer':
          node.refusedPeers.push(action.reason);
          break;
        case 'malformed':
          throw new Error(`seed ${this.seed}: ${node.id} got a malformed message: ${action.reason}`);
      }
    }
    this.scheduleTick(node);
  }

  private transmit(sender: SimNode, to: string, message: WireMessage): void {
    this.messagesSent++;
    const target = this.byAddress.get(to);
    if (target === undefined || this.cut(sender, target)) return;
    if (this.random() < this.conditions.lossRate) return;
    const { delayMinMs, delayMaxMs } = this.conditions;
    const delay = () => delayMinMs + Math.floor(this.random() * (delayMaxMs - delayMinMs + 1));
    this.queue.push({ kind: 'deliver', timeMs: this.nowMs + delay(), order: this.order++, to, from: sender.address, message: this.transcode(message) });
    const duplicateRate = this.conditions.duplicateRate ?? 0;
    if (duplicateRate > 0 && this.random() < duplicateRate) {
      this.queue.push({ kind: 'deliver', timeMs: this.nowMs + delay() + delayMaxMs, order: this.order++, to, from: sender.address, message: this.transcode(message) });
    }
  }

  private scheduleTick(node: SimNode): void {
    if (!node.running) return;
    const deadline = Math.max(this.nowMs, node.membership.nextDeadline());
    if (deadline === node.scheduledTickMs || deadline === Infinity) return;
    node.tickGeneration++;
    node.scheduledTickMs = deadline;
    this.queue.push({ kind: 'tick', timeMs: deadline, order: this.order++, node, generation: node.tickGeneration });
  }
}
