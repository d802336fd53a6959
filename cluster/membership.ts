/**
 * Cluster membership: SWIM gossip with Lifeguard's refinements, as a sans-I/O state machine.
 *
 * The class owns no socket, timer, clock or randomness. The shell calls `start`, `receive`, `tick` and
 * `leave` with the current time in ms and performs the actions they return (send a message, report a
 * view change); it calls `tick` again at `nextDeadline()`. Randomness comes from `config.random`, so a
 * seeded simulation replays any run exactly.
 *
 * Protocol, one probe period at a time (length `probeIntervalMs` × local-health multiplier):
 *
 *   ping ──► target            ack within probeTimeout?  yes: done (local health improves)
 *   no ack: ping-req ──► k members, each pings the target for us and relays its ack, or sends a nack
 *   no ack by the end of the period: the target becomes `suspect` (local health worsens by the nacks
 *   that did not come: if the relays could not reach us either, the fault is probably ours)
 *
 * A suspect refutes by raising its incarnation and gossiping `alive`; otherwise, when its suspicion
 * timer runs out, it is declared `dead`. The timer starts at the Lifeguard maximum and shrinks towards
 * the minimum as other members independently suspect it too. Every message piggybacks the least-sent
 * updates; each update goes out a bounded number of times.
 *
 * Precedence of updates about one member: higher incarnation wins; at equal incarnation
 * alive < suspect < dead < left. A node that hears itself suspect, dead or left (while it has not left)
 * refutes with a higher incarnation. Dead and left members stay as tombstones for `tombstoneMs`, so
 * stale gossip cannot bring them back; a restarted node (same id, any address) comes back by outranking
 * its tombstone: the join answer tells it its old incarnation, and it refutes above it.
 *
 * Healing after a partition (or after any false `dead`): each side has declared the other dead, and
 * nobody probes the dead, so gossip alone would never cross again. Two mechanisms reunite the views:
 * - every `reconnectIntervalMs`, a node holding dead members sends a `join` (a full push-pull view
 *   exchange) to one of them at random; the receiver and the sender each see themselves declared dead
 *   in the other's view and refute, and their new incarnations outrank the tombstones everywhere. In a
 *   merged view, as in any gossip, `dead` about a member we hold alive is taken as `suspect`, so a
 *   stale verdict cannot kill a live member at once: the member gets a chance to refute, and only a
 *   node's own suspicion timer declares a member dead (memberlist does this for merged views only; at a
 *   heal the other side's piggybacked verdicts then killed live members within milliseconds).
 * - a node that finds itself alone (no alive or suspect peer) re-sends `join` to its seeds every
 *   `joinRetryMs`, which covers tombstones that have expired.
 * Besides, every message carries its sender's incarnation (a member is the authority on itself), and a
 * reply to a member we hold dead carries that verdict, so the member learns it and refutes.
 */
import { invariant } from '../lib/errors.js';

/** Wire-protocol version of these messages; a joiner with another version is refused. */
export const MEMBERSHIP_PROTOCOL_VERSION = 1;

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

/** One member as this node sees it. */
export interface Member {
  readonly id: string;
  /** Opaque to the core ("host:port"); the address of the newest incarnation wins. */
  readonly address: string;
  readonly incarnation: number;
  readonly state: MemberState;
}

/** A piggybacked claim about one member. */
export interface MemberUpdate {
  id: string;
  address: string;
  incarnation: number;
  state: MemberState;
  /** For `suspect`: the member that suspects it, so independent confirmations can be counted. */
  from?: string;
}

export interface MembershipConfig {
  /** Stable across restarts; the address may change. */
  selfId: string;
  /** How peers reach this node, opaque to the core ("host:port"). */
  selfAddress: string;
  /** Must equal the cluster's; checked when joining. */
  keyGroups: number;
  /** Default MEMBERSHIP_PROTOCOL_VERSION; overridable so tests can build a mismatched node. */
  protocolVersion?: number;
  /** One probe per period; default 200. Scaled by the local-health multiplier. */
  probeIntervalMs?: number;
  /** Wait for a direct ack before asking others to probe; default 100, below probeIntervalMs. */
  probeTimeoutMs?: number;
  /** k members asked to probe indirectly; default 3. */
  indirectProbes?: number;
  /** alpha, default 4: minimum suspicion = alpha × max(1, log10(n)) × probeIntervalMs. */
  suspicionMultiplier?: number;
  /** beta, default 6: maximum suspicion = beta × minimum. */
  suspicionMaxMultiplier?: number;
  /** lambda, default 4: each update is sent lambda × ceil(log10(n + 1)) times. */
  retransmitMultiplier?: number;
  /** Updates per message, default 8. */
  piggybackMax?: number;
  /** Lifeguard local-health saturation, default 8: the multiplier ranges over 1..localHealthMax. */
  localHealthMax?: number;
  /** Join retry period while no seed has answered, or while this node is alone; default 1000. */
  joinRetryMs?: number;
  /** Period of push-pull attempts towards one dead member (partition healing); default 2000. */
  reconnectIntervalMs?: number;
  /** How long dead and left members are remembered; default 24 h. */
  tombstoneMs?: number;
  /** Members told directly of a graceful leave; default 5. */
  leaveFanout?: number;
  /** Members remembered at most, tombstones included; default 4096. New ids beyond it are ignored. */
  membersMax?: number;
  /** Starting incarnation, default 0. A restarted node may pass a persisted or larger value. */
  incarnation?: number;
  /** Uniform in [0, 1): the only source of randomness (seeded in simulations). */
  random: () => number;
}

interface MessageHeader {
  /** Sender id and incarnation: the sender is alive at that incarnation, by its own word. */
  from: string;
  address: string;
  incarnation: number;
}

/** Plain objects the shell encodes (msgpackr). `receive` checks their shape before use. */
export type WireMessage =
  | (MessageHeader & { type: 'ping'; seq: number; target: string; updates: MemberUpdate[] })
  | (MessageHeader & { type: 'ack'; seq: number; updates: MemberUpdate[] })
  | (MessageHeader & { type: 'ping-req'; seq: number; target: string; targetAddress: string; timeoutMs: number; updates: MemberUpdate[] })
  | (MessageHeader & { type: 'nack'; seq: number; updates: MemberUpdate[] })
  | (MessageHeader & { type: 'join'; protocolVersion: number; keyGroups: number; view: MemberUpdate[] })
  | (MessageHeader & { type: 'join-ack'; view: MemberUpdate[] })
  | (MessageHeader & { type: 'join-refused'; code: JoinRefusalCode; reason: string })
  | (MessageHeader & { type: 'leave'; updates: MemberUpdate[] });

/** Stable codes for a refused join, so a shell branches on the code and shows the reason. */
export type JoinRefusalCode = 'PROTOCOL_VERSION_MISMATCH' | 'KEY_GROUPS_MISMATCH';

export type Action =
  /** Send this message to this address (best effort: the protocol tolerates loss). */
  | { type: 'send'; to: string; message: WireMessage }
  /** A member's state or address changed in the local view (self included); previous null: new. */
  | { type: 'changed'; member: Member; previous: MemberState | null }
  /** Our join was refused: this node cannot be part of that cluster. The shell stops with the reason. */
  | { type: 'refused'; code: JoinRefusalCode; reason: string }
  /** We refused a joiner; the shell logs the reason (the joiner gets the same text). */
  | { type: 'refused-peer'; code: JoinRefusalCode; id: string; address: string; reason: string }
  /** A message failed the shape check and was dropped. */
  | { type: 'malformed'; from: string; reason: string };

/** Relays (indirect probes on behalf of others) in flight at most; more are nacked at once. */
const RELAYS_MAX = 256;

const STATE_RANK: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2, left: 3 };

/**
 * Whether a claim replaces what we hold about a member: the higher incarnation wins, and at equal
 * incarnation alive < suspect < dead < left (a graceful leave outranks a concurrent death verdict).
 */
export function supersedes(incoming: { incarnation: number; state: MemberState }, current: { incarnation: number; state: MemberState }): boolean {
  if (incoming.incarnation !== current.incarnation) return incoming.incarnation > current.incarnation;
  return STATE_RANK[incoming.state] > STATE_RANK[current.state];
}

/** Lifeguard minimum suspicion: alpha × max(1, log10(n)) × probe interval, for n live members. */
export function suspicionMinMs(suspicionMultiplier: number, memberCount: number, probeIntervalMs: number): number {
  return Math.floor(suspicionMultiplier * Math.max(1, Math.log10(Math.max(1, memberCount))) * probeIntervalMs);
}

/**
 * Lifeguard suspicion timeout after `confirmations` of `expected` independent suspicions:
 * max − (max − min) × log(C + 1) / log(K + 1), never below min. With nobody to confirm (K < 1), min.
 */
export function suspicionTimeoutMs(minMs: number, maxMs: number, confirmations: number, expected: number): number {
  if (expected < 1) return minMs;
  const fraction = Math.log(Math.min(confirmations, expected) + 1) / Math.log(expected + 1);
  return Math.max(minMs, Math.floor(maxMs - fraction * (maxMs - minMs)));
}

/** The tunable options, with defaults applied. */
export type MembershipSettings = Required<Omit<MembershipConfig, 'selfId' | 'selfAddress' | 'keyGroups' | 'incarnation' | 'random'>>;
type Settings = MembershipSettings;

const DEFAULTS: Settings = {
  protocolVersion: MEMBERSHIP_PROTOCOL_VERSION,
  probeIntervalMs: 200,
  probeTimeoutMs: 100,
  indirectProbes: 3,
  suspicionMultiplier: 4,
  suspicionMaxMultiplier: 6,
  retransmitMultiplier: 4,
  piggybackMax: 8,
  localHealthMax: 8,
  joinRetryMs: 1000,
  reconnectIntervalMs: 2000,
  tombstoneMs: 24 * 60 * 60 * 1000,
  leaveFanout: 5,
  membersMax: 4096,
};

/** The defaults, for shells that print them and tests that derive bounds from them. */
export const MEMBERSHIP_DEFAULTS: Readonly<MembershipSettings> = Object.freeze({ ...DEFAULTS });

function settingsOf(config: MembershipConfig): Settings {
  const settings = { ...DEFAULTS };
  for (const key of Object.keys(DEFAULTS) as (keyof Settings)[]) {
    const value = config[key];
    if (value !== undefined) settings[key] = value;
  }
  const integer = (name: keyof Settings | 'keyGroups' | 'incarnation', value: number, minimum: number) => {
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new RangeError(`membership: ${name} must be an integer >= ${minimum} (got ${value})`);
    }
  };
  integer('keyGroups', config.keyGroups, 1);
  integer('incarnation', config.incarnation ?? 0, 0);
  integer('protocolVersion', settings.protocolVersion, 1);
  integer('probeIntervalMs', settings.probeIntervalMs, 2);
  integer('probeTimeoutMs', settings.probeTimeoutMs, 1);
  if (settings.probeTimeoutMs >= settings.probeIntervalMs) {
    throw new RangeError(
      `membership: probeTimeoutMs must be below probeIntervalMs, to leave time for indirect probes (got probeTimeoutMs ${settings.probeTimeoutMs}, probeIntervalMs ${settings.probeIntervalMs})`,
    );
  }
  integer('indirectProbes', settings.indirectProbes, 0);
  integer('suspicionMultiplier', settings.suspicionMultiplier, 1);
  integer('suspicionMaxMultiplier', settings.suspicionMaxMultiplier, 1);
  integer('retransmitMultiplier', settings.retransmitMultiplier, 1);
  integer('piggybackMax', settings.piggybackMax, 1);
  integer('localHealthMax', settings.localHealthMax, 1);
  integer('joinRetryMs', settings.joinRetryMs, 1);
  integer('reconnectIntervalMs', settings.reconnectIntervalMs, 1);
  integer('tombstoneMs', settings.tombstoneMs, 1);
  integer('leaveFanout', settings.leaveFanout, 1);
  integer('membersMax', settings.membersMax, 2);
  if (typeof config.selfId !== 'string' || config.selfId === '') throw new TypeError('membership: selfId must be a non-empty string');
  if (typeof config.selfAddress !== 'string' || config.selfAddress === '') throw new TypeError('membership: selfAddress must be a non-empty string ("host:port")');
  if (typeof config.random !== 'function') throw new TypeError('membership: random must be a function returning a number in [0, 1)');
  return settings;
}

interface Suspicion {
  startedMs: number;
  minMs: number;
  maxMs: number;
  /** K: confirmations that would bring the timeout down to the minimum. */
  expected: number;
  /** Members known to suspect it; the first (the one we heard it from) does not count as a confirmation. */
  sources: Set<string>;
  confirmations: number;
  deadlineMs: number;
}

interface MemberRecord {
  id: string;
  address: string;
  incarnation: number;
  state: MemberState;
  /** When the state last changed (tombstone expiry counts from there). */
  changedMs: number;
  suspicion: Suspicion | null;
}

/** The probe of the current period. */
interface Probe {
  targetId: string;
  seq: number;
  indirectAtMs: number;
  endMs: number;
  indirectSent: boolean;
  expectedNacks: number;
  nacks: number;
}

/** A probe we run on behalf of another member (ping-req). */
interface Relay {
  originAddress: string;
  originSeq: number;
  deadlineMs: number;
}

interface Broadcast {
  update: MemberUpdate;
  transmits: number;
  /** Enqueue order: among equally-sent updates the newest goes first. */
  order: number;
}


function memberOf(record: MemberRecord): Member {
  return { id: record.id, address: record.address, incarnation: record.incarnation, state: record.state };
}

function updateOf(record: MemberRecord, from?: string): MemberUpdate {
  const update: MemberUpdate = { id: record.id, address: record.address, incarnation: record.incarnation, state: record.state };
  if (from !== undefined) update.from = from;
  return update;
}

function copyUpdate(update: MemberUpdate): MemberUpdate {
  const copy: MemberUpdate = { id: update.id, address: update.address, incarnation: update.incarnation, state: update.state };
  if (update.from !== undefined) copy.from = update.from;
  return copy;
}

const isLiveState = (state: MemberState) => state === 'alive' || state === 'suspect';
const isLive = (record: MemberRecord) => isLiveState(record.state);

export class Membership {
  private readonly settings: Settings;
  private readonly selfId: string;
  private readonly keyGroups: number;
  private readonly random: () => number;
  private readonly self: MemberRecord;
  /** Every known member, self included, tombstones included. */
  private readonly records = new Map<string, MemberRecord>();
  private readonly broadcasts = new Map<string, Broadcast>();
  private broadcastOrder = 0;
  private readonly relays = new Map<number, Relay>();
  private probe: Probe | null = null;
  /** Randomised round-robin: a shuffled list of ids, walked in order, reshuffled when used up. */
  private probeOrder: string[] = [];
  private probeIndex = 0;
  private seq = 0;
  private health = 0;
  private seeds: string[] = [];
  private started = false;
  private joinedCluster = false;
  private leftCluster = false;
  private refusal: string | null = null;
  private nextProbeMs = Infinity;
  private nextJoinMs = Infinity;
  private nextReconnectMs = Infinity;

  constructor(config: MembershipConfig) {
    this.settings = settingsOf(config);
    this.selfId = config.selfId;
    this.keyGroups = config.keyGroups;
    this.random = config.random;
    this.self = { id: config.selfId, address: config.selfAddress, incarnation: config.incarnation ?? 0, state: 'alive', changedMs: 0, suspicion: null };
    this.records.set(this.selfId, this.self);
  }

  // ---- public surface ----

  /**
   * Starts probing and joins through `seeds` (addresses; our own is ignored). No seed: a cluster of
   * one that others may join. Join is re-sent every joinRetryMs until a seed answers.
   */
  start(now: number, seeds: readonly string[]): Action[] {
    invariant(!this.started, 'start() is called once');
    this.started = true;
    this.self.changedMs = now;
    this.seeds = [...new Set(seeds)].filter((seed) => seed !== this.self.address);
    // A random phase, so nodes started together do not probe in lockstep.
    this.nextProbeMs = now + Math.floor(this.random() * this.settings.probeIntervalMs);
    const actions: Action[] = [];
    if (this.seeds.length === 0) {
      this.joinedCluster = true;
    } else {
      this.sendJoins(now, actions);
    }
    this.afterEvent(now);
    return actions;
  }

  /** A message from `from` (the sender's address as the transport knows it; replies go there). */
  receive(now: number, from: string, message: WireMessage): Action[] {
    invariant(this.started, 'start() before receive()');
    if (this.refusal !== null) return [];
    const actions: Action[] = [];
    const problem = messageProblem(message);
    if (problem !== null) {
      actions.push({ type: 'malformed', from, reason: problem });
      return actions;
    }
    if (message.from === this.selfId) return actions; // our own message looped back
    switch (message.type) {
      case 'join':
        this.onJoin(now, from, message, actions);
        break;
      case 'join-ack':
        this.applyHeader(now, message, actions);
        for (const update of message.view) this.apply(now, update, actions, message.from);
        this.joinedCluster = true;
        break;
      case 'join-refused':
        // Only a first join can be refused: once in a cluster, a refusal comes from some other cluster.
        if (!this.joinedCluster) {
          this.refusal = message.reason;
          actions.push({ type: 'refused', code: message.code, reason: message.reason });
        }
        break;
      case 'ping':
        this.applyGossip(now, message, actions);
        // A ping for another id means the address now belongs to someone else: stay silent.
        if (message.target === this.selfId) this.send(from, { type: 'ack', seq: message.seq, ...this.header(), updates: this.piggyback(message.from) }, actions);
        break;
      case 'ack':
        this.applyGossip(now, message, actions);
        this.onAck(message.seq, actions);
        break;
      case 'nack':
        this.applyGossip(now, message, actions);
        if (this.probe !== null && this.probe.seq === message.seq) this.probe.nacks++;
        break;
      case 'ping-req':
        this.applyGossip(now, message, actions);
        this.onPingRequest(now, from, message, actions);
        break;
      case 'leave':
        this.applyGossip(now, message, actions);
        break;
    }
    this.afterEvent(now);
    return actions;
  }

  /** Runs whatever is due at `now`. Idempotent: extra calls do nothing harmful. */
  tick(now: number): Action[] {
    invariant(this.started, 'start() before tick()');
    const actions: Action[] = [];
    if (this.refusal !== null) return actions;
    for (const [seq, relay] of this.relays) {
      if (relay.deadlineMs > now) continue;
      this.relays.delete(seq);
      this.send(relay.originAddress, { type: 'nack', seq: relay.originSeq, ...this.header(), updates: this.piggyback(null) }, actions);
    }
    const probe = this.probe;
    if (probe !== null && !probe.indirectSent && now >= probe.indirectAtMs && now < probe.endMs) this.sendIndirectProbes(now, probe, actions);
    if (probe !== null && now >= probe.endMs) this.finishFailedProbe(now, probe, actions);
    if (now >= this.nextProbeMs) {
      this.probe = null; // a late tick: the period is over either way
      const multiplier = this.health + 1;
      this.nextProbeMs = now + this.settings.probeIntervalMs * multiplier;
      if (!this.leftCluster) this.startProbe(now, multiplier, actions);
    }
    for (const record of this.records.values()) {
      if (record.suspicion !== null && now >= record.suspicion.deadlineMs) {
        this.apply(now, { id: record.id, address: record.address, incarnation: record.incarnation, state: 'dead', from: this.selfId }, actions, null);
      }
    }
    if (now >= this.nextJoinMs) this.sendJoins(now, actions);
    if (now >= this.nextReconnectMs) this.reconnect(now, actions);
    for (const record of this.records.values()) {
      if (record !== this.self && !isLive(record) && now >= record.changedMs + this.settings.tombstoneMs) this.records.delete(record.id);
    }
    this.afterEvent(now);
    return actions;
  }

  /** When `tick` must run next (Infinity: only a message can wake it). */
  nextDeadline(): number {
    if (!this.started || this.refusal !== null) return Infinity;
    let deadline = Math.min(this.nextProbeMs, this.nextJoinMs, this.nextReconnectMs);
    if (this.probe !== null) deadline = Math.min(deadline, this.probe.indirectSent ? this.probe.endMs : this.probe.indirectAtMs);
    for (const relay of this.relays.values()) deadline = Math.min(deadline, relay.deadlineMs);
    for (const record of this.records.values()) {
      if (record.suspicion !== null) deadline = Math.min(deadline, record.suspicion.deadlineMs);
      else if (!isLive(record) && record !== this.self) deadline = Math.min(deadline, record.changedMs + this.settings.tombstoneMs);
    }
    return deadline;
  }

  /**
   * Graceful leave: self becomes `left`, told directly to up to leaveFanout members (so it spreads even
   * if the process stops right away) and piggybacked on every later message. Probing stops; pings are
   * still answered until the shell stops.
   */
  leave(now: number): Action[] {
    invariant(this.started, 'start() before leave()');
    const actions: Action[] = [];
    if (this.leftCluster || this.refusal !== null) return actions;
    this.leftCluster = true;
    this.self.state = 'left';
    this.self.changedMs = now;
    this.probe = null;
    this.nextProbeMs = Infinity;
    this.nextJoinMs = Infinity;
    this.nextReconnectMs = Infinity;
    for (const record of this.records.values()) record.suspicion = null;
    this.enqueue(updateOf(this.self));
    actions.push({ type: 'changed', member: memberOf(this.self), previous: 'alive' });
    const peers = this.pick(
      [...this.records.values()].filter((record) => record !== this.self && isLive(record)),
      this.settings.leaveFanout,
    );
    for (const peer of peers) this.send(peer.address, { type: 'leave', ...this.header(), updates: this.piggyback(null) }, actions);
    return actions;
  }

  /** The local view, self included, tombstones included, sorted by id. */
  members(): Member[] {
    return [...this.records.values()].map(memberOf).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** One member of the local view. */
  member(id: string): Member | undefined {
    const record = this.records.get(id);
    return record === undefined ? undefined : memberOf(record);
  }

  /** Members alive (self included while it has not left). */
  aliveCount(): number {
    let count = 0;
    for (const record of this.records.values()) if (record.state === 'alive') count++;
    return count;
  }

  /** Lifeguard local health, 0 (healthy) .. localHealthMax − 1; probe periods are scaled by it + 1. */
  get localHealth(): number {
    return this.health;
  }

  /** Our own incarnation (raised by each refutation). */
  get incarnation(): number {
    return this.self.incarnation;
  }

  /** Whether a seed has answered (or there were none). */
  get joined(): boolean {
    return this.joinedCluster;
  }

  /** The reason our join was refused, or null. A refused core does nothing more. */
  get refusedReason(): string | null {
    return this.refusal;
  }

  /** The suspicion timeout now in force for a suspect member, for tests and /cluster; null if none. */
  suspicionDeadline(id: string): number | null {
    return this.records.get(id)?.suspicion?.deadlineMs ?? null;
  }

  // ---- join ----

  private sendJoins(now: number, actions: Action[]): void {
    for (const seed of this.seeds) this.send(seed, this.joinMessage(), actions);
    this.nextJoinMs = now + this.settings.joinRetryMs;
  }

  private joinMessage(): WireMessage {
    return {
      type: 'join',
      ...this.header(),
      protocolVersion: this.settings.protocolVersion,
      keyGroups: this.keyGroups,
      view: [...this.records.values()].map((record) => updateOf(record)),
    };
  }

  private onJoin(now: number, from: string, message: WireMessage & { type: 'join' }, actions: Action[]): void {
    if (this.leftCluster) return; // the joiner retries with another seed
    const refusal = this.refusalFor(message);
    if (refusal !== null) {
      // Checked before anything else is read: a joiner of another version may shape its view differently.
      this.send(from, { type: 'join-refused', ...this.header(), code: refusal.code, reason: refusal.reason }, actions);
      actions.push({ type: 'refused-peer', code: refusal.code, id: message.from, address: message.address, reason: refusal.reason });
      return;
    }
    const viewProblem = updatesProblem(message.view, 'view');
    if (viewProblem !== null) {
      actions.push({ type: 'malformed', from, reason: viewProblem });
      return;
    }
    // The header makes the joiner alive here and queues that for gossip.
    this.applyHeader(now, message, actions);
    for (const update of message.view) this.apply(now, update, actions, message.from);
    this.send(from, { type: 'join-ack', ...this.header(), view: [...this.records.values()].map((record) => updateOf(record)) }, actions);
  }

  private refusalFor(message: WireMessage & { type: 'join' }): { code: JoinRefusalCode; reason: string } | null {
    const who = `node "${message.from}" (${message.address})`;
    const here = `node "${this.selfId}" (${this.self.address})`;
    if (message.protocolVersion !== this.settings.protocolVersion) {
      return {
        code: 'PROTOCOL_VERSION_MISMATCH',
        reason:
          `${who} speaks membership protocol version ${message.protocolVersion}, but ${here} and its cluster speak version ${this.settings.protocolVersion}: ` +
          `every node of a cluster must run the same protocol version; run the same Statecraft release on the joining node, or point --join at a cluster of its version`,
      };
    }
    if (message.keyGroups !== this.keyGroups) {
      return {
        code: 'KEY_GROUPS_MISMATCH',
        reason:
          `${who} was started with ${message.keyGroups} key groups, but ${here} and its cluster use ${this.keyGroups}: ` +
          `the key-group count is fixed when a cluster's state is first created; restart the node with --key-groups ${this.keyGroups}, or start a separate cluster for ${message.keyGroups}`,
      };
    }
    return null;
  }

  /** Push-pull with one dead member at random: if it is in fact alive, both sides learn and refute. */
  private reconnect(now: number, actions: Action[]): void {
    this.nextReconnectMs = now + this.settings.reconnectIntervalMs;
    const dead = [...this.records.values()].filter((record) => record.state === 'dead');
    const [target] = this.pick(dead, 1);
    if (target !== undefined) this.send(target.address, this.joinMessage(), actions);
  }

  // ---- probing ----

  private startProbe(now: number, multiplier: number, actions: Action[]): void {
    const target = this.nextProbeTarget();
    if (target === null) return;
    const seq = ++this.seq;
    this.probe = {
      targetId: target.id,
      seq,
      indirectAtMs: now + this.settings.probeTimeoutMs * multiplier,
      endMs: now + this.settings.probeIntervalMs * multiplier,
      indirectSent: false,
      expectedNacks: 0,
      nacks: 0,
    };
    this.sendPing(target, seq, actions);
  }

  /** A ping to a suspect carries the suspicion (Lifeguard's buddy system), so it refutes at once. */
  private sendPing(target: MemberRecord, seq: number, actions: Action[]): void {
    this.send(target.address, { type: 'ping', seq, target: target.id, ...this.header(), updates: this.piggyback(target.id) }, actions);
  }

  private sendIndirectProbes(now: number, probe: Probe, actions: Action[]): void {
    probe.indirectSent = true;
    const target = this.records.get(probe.targetId);
    if (target === undefined || !isLive(target)) return;
    const helpers = this.pick(
      [...this.records.values()].filter((record) => record.state === 'alive' && record !== this.self && record !== target),
      this.settings.indirectProbes,
    );
    // Half of what is left of the period: the relay's answer (ack or nack) still has time to reach us.
    const timeoutMs = Math.max(1, Math.floor((probe.endMs - now) / 2));
    for (const helper of helpers) {
      this.send(helper.address, { type: 'ping-req', seq: probe.seq, target: target.id, targetAddress: target.address, timeoutMs, ...this.header(), updates: this.piggyback(helper.id) }, actions);
    }
    probe.expectedNacks = helpers.length;
  }

  private finishFailedProbe(now: number, probe: Probe, actions: Action[]): void {
    this.probe = null;
    // Lifeguard: with relays, only the nacks that did not come count against us (if they could not
    // reach us either, the fault is probably here); without relays, every failed probe does.
    this.adjustHealth(probe.expectedNacks > 0 ? Math.max(0, probe.expectedNacks - probe.nacks) : 1);
    const target = this.records.get(probe.targetId);
    if (target === undefined || !isLive(target)) return;
    // Suspect, or confirm our own suspicion if it is already suspect at this incarnation.
    this.apply(now, { id: target.id, address: target.address, incarnation: target.incarnation, state: 'suspect', from: this.selfId }, actions, null);
  }

  private onAck(seq: number, actions: Action[]): void {
    if (this.probe !== null && this.probe.seq === seq) {
      this.probe = null;
      this.adjustHealth(-1);
      return;
    }
    const relay = this.relays.get(seq);
    if (relay !== undefined) {
      this.relays.delete(seq);
      this.send(relay.originAddress, { type: 'ack', seq: relay.originSeq, ...this.header(), updates: this.piggyback(null) }, actions);
    }
  }

  private onPingRequest(now: number, from: string, message: WireMessage & { type: 'ping-req' }, actions: Action[]): void {
    // Only members are probed on another's behalf: a ping-req cannot make this node dial whatever id it names.
    if (this.relays.size >= RELAYS_MAX || message.target === this.selfId || !this.records.has(message.target)) {
      this.send(from, { type: 'nack', seq: message.seq, ...this.header(), updates: this.piggyback(message.from) }, actions);
      return;
    }
    const seq = ++this.seq;
    const timeoutMs = Math.min(message.timeoutMs, this.settings.probeIntervalMs * this.settings.localHealthMax);
    this.relays.set(seq, { originAddress: from, originSeq: message.seq, deadlineMs: now + timeoutMs });
    // The origin's address for the target: it may know a newer one than we do.
    this.send(message.targetAddress, { type: 'ping', seq, target: message.target, ...this.header(), updates: this.piggyback(message.target) }, actions);
  }

  /** Next member in randomised round-robin order; null when there is nobody to probe. */
  private nextProbeTarget(): MemberRecord | null {
    for (let pass = 0; pass < 2; pass++) {
      while (this.probeIndex < this.probeOrder.length) {
        const record = this.records.get(this.probeOrder[this.probeIndex++]!);
        if (record !== undefined && record !== this.self && isLive(record)) return record;
      }
      this.probeOrder = this.pick(
        [...this.records.values()].filter((record) => record !== this.self && isLive(record)),
        Infinity,
      ).map((record) => record.id);
      this.probeIndex = 0;
      if (this.probeOrder.length === 0) return null;
    }
    return null;
  }

  /** A member that became live joins the current round at a random place still ahead of us. */
  private addToProbeOrder(id: string): void {
    if (this.probeOrder.indexOf(id, this.probeIndex) !== -1) return;
    const span = this.probeOrder.length - this.probeIndex + 1;
    this.probeOrder.splice(this.probeIndex + Math.floor(this.random() * span), 0, id);
  }

  private adjustHealth(delta: number): void {
    this.health = Math.max(0, Math.min(this.settings.localHealthMax - 1, this.health + delta));
  }

  // ---- updates ----

  private applyHeader(now: number, message: MessageHeader, actions: Action[]): void {
    this.apply(now, { id: message.from, address: message.address, incarnation: message.incarnation, state: 'alive' }, actions, null);
  }

  private applyGossip(now: number, message: MessageHeader & { updates: MemberUpdate[] }, actions: Action[]): void {
    this.applyHeader(now, message, actions);
    for (const update of message.updates) this.apply(now, update, actions, message.from);
  }

  /**
   * Applies one claim. `heardFrom` names the peer that passed it on (null for this node's own verdicts).
   * A `dead` heard from a peer about a member we hold live is only taken as `suspect`: only our own
   * suspicion timer declares a member dead, so a stale verdict (a healed partition's, a merged view's)
   * cannot kill a live member before it can refute; it shortens our timer like any other suspicion.
   */
  private apply(now: number, incoming: MemberUpdate, actions: Action[], heardFrom: string | null): void {
    if (incoming.id === this.selfId) {
      this.applyAboutSelf(incoming);
      return;
    }
    let update = incoming;
    let record = this.records.get(update.id);
    if (heardFrom !== null && update.state === 'dead' && record !== undefined && isLive(record)) {
      update = { id: update.id, address: update.address, incarnation: update.incarnation, state: 'suspect', from: update.from ?? heardFrom };
    }
    if (record === undefined) {
      if (this.records.size >= this.settings.membersMax) return;
      record = { id: update.id, address: update.address, incarnation: update.incarnation, state: update.state, changedMs: now, suspicion: null };
      this.records.set(record.id, record);
      if (record.state === 'suspect') this.startSuspicion(now, record, update.from);
      if (isLive(record)) this.addToProbeOrder(record.id);
      this.enqueue(update);
      actions.push({ type: 'changed', member: memberOf(record), previous: null });
      return;
    }
    if (supersedes(update, record)) {
      const previous = record.state;
      const previousAddress = record.address;
      if (update.incarnation > record.incarnation) record.address = update.address;
      record.incarnation = update.incarnation;
      record.state = update.state;
      if (previous !== record.state) record.changedMs = now;
      if (record.state === 'suspect') this.startSuspicion(now, record, update.from);
      else record.suspicion = null;
      if (!isLiveState(previous) && isLive(record)) this.addToProbeOrder(record.id);
      this.enqueue(update);
      if (previous !== record.state || previousAddress !== record.address) actions.push({ type: 'changed', member: memberOf(record), previous });
      // Heard, not seen: ask the member itself at once. The ping tells it it is suspect, so a live one
      // refutes in its ack, well before our timer runs out (a heal brings many such verdicts at once).
      if (heardFrom !== null && previous === 'alive' && record.state === 'suspect') this.sendPing(record, ++this.seq, actions);
      return;
    }
    if (update.state === 'suspect' && record.state === 'suspect' && update.incarnation === record.incarnation && update.from !== undefined) {
      // Another member suspects it independently: shorten the timer, and pass the confirmation on.
      if (this.confirm(record, update.from)) this.enqueue(update);
    }
  }

  /** Claims about ourselves: refute anything worse than alive (unless we did leave). */
  private applyAboutSelf(update: MemberUpdate): void {
    if (this.leftCluster) return;
    if (update.state === 'alive') {
      // An older life of ours (before a restart) is remembered at a higher incarnation, or at ours with
      // another address: outrank it, so that peers take our current address.
      if (update.incarnation > this.self.incarnation || (update.incarnation === this.self.incarnation && update.address !== this.self.address)) {
        this.refute(update.incarnation);
      }
      return;
    }
    if (update.incarnation < this.self.incarnation) return; // already refuted
    this.refute(update.incarnation);
    // Lifeguard: having to refute hints that we are the slow one.
    this.adjustHealth(1);
  }

  private refute(incarnation: number): void {
    this.self.incarnation = incarnation + 1;
    this.enqueue(updateOf(this.self));
  }

  private startSuspicion(now: number, record: MemberRecord, from: string | undefined): void {
    if (this.leftCluster) {
      record.suspicion = null; // we no longer judge anyone
      return;
    }
    let live = 0;
    for (const other of this.records.values()) if (isLive(other)) live++;
    const minMs = suspicionMinMs(this.settings.suspicionMultiplier, live, this.settings.probeIntervalMs);
    const maxMs = minMs * this.settings.suspicionMaxMultiplier;
    const expected = Math.max(0, Math.min(this.settings.indirectProbes, live - 2));
    record.suspicion = {
      startedMs: now,
      minMs,
      maxMs,
      expected,
      sources: new Set(from === undefined ? [] : [from]),
      confirmations: 0,
      deadlineMs: now + suspicionTimeoutMs(minMs, maxMs, 0, expected),
    };
  }

  private confirm(record: MemberRecord, from: string): boolean {
    const suspicion = record.suspicion;
    if (suspicion === null || suspicion.sources.has(from) || suspicion.confirmations >= suspicion.expected) return false;
    suspicion.sources.add(from);
    suspicion.confirmations++;
    suspicion.deadlineMs = suspicion.startedMs + suspicionTimeoutMs(suspicion.minMs, suspicion.maxMs, suspicion.confirmations, suspicion.expected);
    return true;
  }

  // ---- gossip ----

  private enqueue(update: MemberUpdate): void {
    this.broadcasts.set(update.id, { update: copyUpdate(update), transmits: 0, order: this.broadcastOrder++ });
  }

  private retransmitLimit(): number {
    let live = 0;
    for (const record of this.records.values()) if (isLive(record)) live++;
    return this.settings.retransmitMultiplier * Math.max(1, Math.ceil(Math.log10(live + 1)));
  }

  /**
   * Updates for one message: first what the recipient most needs to hear about itself (it is suspect,
   * dead or left here; after our leave, that we left), then the least-sent queued updates.
   */
  private piggyback(recipientId: string | null): MemberUpdate[] {
    const updates: MemberUpdate[] = [];
    const recipient = recipientId === null ? undefined : this.records.get(recipientId);
    if (recipient !== undefined && recipient.state !== 'alive') updates.push(updateOf(recipient, recipient.state === 'suspect' ? this.selfId : undefined));
    if (this.leftCluster) updates.push(updateOf(this.self));
    if (this.broadcasts.size === 0) return updates;
    const limit = this.retransmitLimit();
    const queued = [...this.broadcasts.values()].sort((a, b) => a.transmits - b.transmits || b.order - a.order);
    for (const broadcast of queued) {
      if (updates.length >= this.settings.piggybackMax) break;
      if (updates.some((update) => update.id === broadcast.update.id)) continue;
      updates.push(copyUpdate(broadcast.update));
      broadcast.transmits++;
      if (broadcast.transmits >= limit) this.broadcasts.delete(broadcast.update.id);
    }
    return updates;
  }

  // ---- helpers ----

  private header(): MessageHeader {
    return { from: this.selfId, address: this.self.address, incarnation: this.self.incarnation };
  }

  private send(to: string, message: WireMessage, actions: Action[]): void {
    actions.push({ type: 'send', to, message });
  }

  /** Up to `count` items in random order (partial Fisher–Yates on a copy). */
  private pick<T>(items: T[], count: number): T[] {
    const chosen = Math.min(count, items.length);
    for (let index = 0; index < chosen; index++) {
      const other = index + Math.floor(this.random() * (items.length - index));
      const swap = items[index]!;
      items[index] = items[other]!;
      items[other] = swap;
    }
    return items.slice(0, chosen);
  }

  /** Keeps the join and reconnect schedules in step with the view after any event. */
  private afterEvent(now: number): void {
    if (this.leftCluster) return;
    let alone = true;
    let anyDead = false;
    for (const record of this.records.values()) {
      if (record === this.self) continue;
      if (isLive(record)) alone = false;
      else if (record.state === 'dead') anyDead = true;
    }
    const wantJoins = !this.joinedCluster || (alone && this.seeds.length > 0);
    if (!wantJoins) this.nextJoinMs = Infinity;
    else if (this.nextJoinMs === Infinity) this.nextJoinMs = now + this.settings.joinRetryMs;
    if (!anyDead) this.nextReconnectMs = Infinity;
    else if (this.nextReconnectMs === Infinity) this.nextReconnectMs = now + this.settings.reconnectIntervalMs;
  }
}

// ---- shape checks for decoded messages ----

const STATES = new Set<string>(['alive', 'suspect', 'dead', 'left']);
const isCount = (value: unknown) => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
const isText = (value: unknown) => typeof value === 'string' && value !== '';

function updatesProblem(value: unknown, field: string): string | null {
  if (!Array.isArray(value)) return `${field} is not an array`;
  for (const update of value as unknown[]) {
    if (typeof update !== 'object' || update === null) return `${field} holds a non-object`;
    const { id, address, incarnation, state, from } = update as Record<string, unknown>;
    if (!isText(id) || !isText(address) || !isCount(incarnation) || typeof state !== 'string' || !STATES.has(state)) {
      return `${field} holds an update without a valid id, address, incarnation and state`;
    }
    if (from !== undefined && !isText(from)) return `${field} holds an update with a bad "from"`;
  }
  return null;
}

/** Why a decoded message cannot be used, or null. A join's view is checked after its versions. */
export function messageProblem(message: unknown): string | null {
  if (typeof message !== 'object' || message === null) return 'membership message is not an object';
  const fields = message as Record<string, unknown>;
  if (!isText(fields.from) || !isText(fields.address) || !isCount(fields.incarnation)) return `membership message "${String(fields.type)}" lacks a valid from, address or incarnation`;
  switch (fields.type) {
    case 'ping':
      if (!isCount(fields.seq) || !isText(fields.target)) return 'ping lacks a valid seq or target';
      return updatesProblem(fields.updates, 'ping updates');
    case 'ack':
    case 'nack':
      if (!isCount(fields.seq)) return `${fields.type} lacks a valid seq`;
      return updatesProblem(fields.updates, `${fields.type} updates`);
    case 'ping-req':
      if (!isCount(fields.seq) || !isText(fields.target) || !isText(fields.targetAddress) || !isCount(fields.timeoutMs)) return 'ping-req lacks a valid seq, target, targetAddress or timeoutMs';
      return updatesProblem(fields.updates, 'ping-req updates');
    case 'join':
      if (!isCount(fields.protocolVersion) || !isCount(fields.keyGroups)) return 'join lacks a valid protocolVersion or keyGroups';
      return null;
    case 'join-ack':
      return updatesProblem(fields.view, 'join-ack view');
    case 'join-refused':
      if ((fields.code !== 'PROTOCOL_VERSION_MISMATCH' && fields.code !== 'KEY_GROUPS_MISMATCH') || typeof fields.reason !== 'string') return 'join-refused lacks a valid code or reason';
      return null;
    case 'leave':
      return updatesProblem(fields.updates, 'leave updates');
    default:
      return `unknown membership message type "${String(fields.type)}"`;
  }
}
