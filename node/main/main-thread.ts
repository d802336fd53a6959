/**
 * A node's main thread: its loop reads what the shards write to it (egress records, messages for key
 * groups owned elsewhere, checkpoint barriers) and routes what comes in (client events from the
 * gateway, envelopes from peers) into the shards' rings by the routing table in shared memory.
 *
 * Its other jobs live beside it: the shard threads (shard-pool.ts), admin HTTP (admin-http.ts), the
 * cluster seam (node-port.ts), checkpoint roles and recovery (../checkpoint/checkpointing.ts,
 * ../checkpoint/recovery.ts).
 */
import { randomUUID } from 'node:crypto';
import type { Address } from '../../lib/address.js';
import { validateAddress } from '../../lib/address.js';
import { CloseCode, type Limits } from '../../lib/client-protocol.js';
import { ValidationError } from '../../lib/errors.js';
import { BARRIER_BYTES, EnvelopeDecoder, EnvelopeKind, invokeLengthMax, readBarrier, readKeyGroup, readTargetKeyGroup, writeBarrier, writeInvoke } from '../../lib/envelope.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { checkValueSize, toTypedValue } from '../../lib/typed-value.js';
import type { Type } from '../../lib/types.js';
import type { Checkpointing } from '../checkpoint/checkpointing.js';
import type { Recovery } from '../checkpoint/recovery.js';
import { Inbox, MAIN_THREAD, Outbox, Stat, ThreadStats, heldAt, shardOfRoute, type MailboxLayout } from '../rings/mailbox.js';
import { Metric, ThreadMetrics } from '../rings/metrics.js';
import type { NodeMetrics } from './node-metrics.js';
import type { RecordVisitor } from '../rings/spsc-ring.js';
import type { AdminHttp } from './admin-http.js';
import type { ClusterHooks, KeyGroupRoute } from './cluster-port.js';
import type { EgressHub } from './egress-hub.js';
import type { FunctionTypes } from './function-types.js';
import type { Gateway, GatewayHost } from './gateway.js';
import { MiB } from './options.js';
import type { ShardPool } from './shard-pool.js';
import type { ClientTokens } from './client-tokens.js';
import type { ShardWatchdog } from './shard-watchdog.js';

const SHUTDOWN_GRACE_MS = 10_000;
/** How long a graceful stop waits for its final checkpoint (a node that checkpoints alone). */
const FINAL_CHECKPOINT_MS = 10_000;
const OVERFLOW_BYTES_MAX = 16 * MiB;
/** Records read from the input rings per loop iteration. */
const RECORDS_PER_POLL = 4096;


export interface MainThreadConfig {
  layout: MailboxLayout;
  routing: Int32Array;
  metricsBuffer: SharedArrayBuffer;
  keyGroups: number;
  limits: Limits;
  functions: FunctionTypes;
  egress: EgressHub;
  backlogMax: number;
  nodeId: string;
  tokens: ClientTokens | null;
  connectionsMax: number;
  log: (line: string) => void;
}

export class MainThread implements RecordVisitor, GatewayHost {
  readonly nodeId: string;
  readonly egressLogId = randomUUID();
  readonly keyGroups: number;
  readonly limits: Limits;
  readonly functions: FunctionTypes;
  readonly egress: EgressHub;
  readonly tokens: ClientTokens | null;
  readonly connectionsMax: number;
  readonly routing: Int32Array;
  cluster: ClusterHooks | null = null;
  gateway: Gateway | null = null;
  admin: AdminHttp | null = null;
  /** The admin listener of its own, when there is one (--admin-host). */
  adminOnly: AdminHttp | null = null;
  checkpointing: Checkpointing | null = null;
  recovery: Recovery | null = null;
  watchdog: ShardWatchdog | null = null;
  private readonly outbox: Outbox;
  private readonly inbox: Inbox;
  private readonly stats: ThreadStats;
  private readonly metrics: ThreadMetrics;
  private readonly decoder = new EnvelopeDecoder();
  closing = false;
  private loopStopped = false;
  private loopDone: Promise<void> | null = null;
  private closed: Promise<void> | null = null;
  private egressLagging = false;
  private eventsAccepted = 0;
  private eventsRejected = 0;
  private clientsRefused = 0;
  private requestsOutOfScope = 0;
  private clientLimitsReached = 0;
  /** Records written to shard rings (int32, wraps like the shards' IngressReceived). */
  private ingressWritten = 0;
  /** True while a recovery discards what arrives from the shards. */
  discarding = false;

  constructor(
    private readonly config: MainThreadConfig,
    readonly pool: ShardPool,
  ) {
    this.nodeId = config.nodeId;
    this.keyGroups = config.keyGroups;
    this.limits = config.limits;
    this.functions = config.functions;
    this.egress = config.egress;
    this.tokens = config.tokens;
    this.connectionsMax = config.connectionsMax;
    this.routing = config.routing;
    this.outbox = new Outbox(config.layout, MAIN_THREAD);
    this.inbox = new Inbox(config.layout, MAIN_THREAD, this);
    this.stats = new ThreadStats(config.layout);
    this.metrics = new ThreadMetrics(config.metricsBuffer, config.layout.threads);
  }

  /** Starts the loop (the shards are running). */
  start(): void {
    this.loopDone = this.run();
  }

  get durable(): boolean {
    return this.checkpointing !== null;
  }

  // ---- routing ----

  /**
   * Points each key group at its shard (true), at its shard held (its messages wait there, in order), or
   * at the main thread (another node's); null leaves it. Shards whose key groups run again are woken.
   */
  setRouting(owned: (keyGroup: number) => KeyGroupRoute | null): void {
    const routing = this.routing;
    const woken = new Set<number>();
    for (let keyGroup = 0; keyGroup < routing.length; keyGroup++) {
      const own = owned(keyGroup);
      if (own === null) continue;
      const shard = this.pool.shardOf(keyGroup);
      const entry = own === 'held' ? heldAt(shard) : own ? shard : MAIN_THREAD;
      if (routing[keyGroup] === heldAt(shard) && entry !== heldAt(shard)) woken.add(shard);
      Atomics.store(routing, keyGroup, entry);
    }
    for (const shard of woken) this.outbox.wake(shard);
  }

  /** Routes an invoke envelope to its key group's shard, or to the cluster layer when another node owns it. */
  private routeInvoke(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    const to = this.routing[keyGroup]!;
    if (shardOfRoute(to) === MAIN_THREAD) {
      this.cluster!.forward(bytes, offset, length, keyGroup);
      return;
    }
    // A held key group's messages wait at its shard, in order with everything else sent to it.
    this.writeToShard(shardOfRoute(to), bytes, offset, length);
  }

  /** Everything the main thread writes to a shard counts: shards count what they receive from it. */
  writeToShard(shard: number, bytes: Uint8Array, offset: number, length: number): void {
    this.outbox.writeBytes(shard, bytes, offset, length);
    this.ingressWritten = (this.ingressWritten + 1) | 0;
  }

  writeBarrierToShards(checkpoint: number): void {
    for (let thread = 1; thread <= this.pool.size; thread++) {
      const offset = this.outbox.reserve(thread, BARRIER_BYTES);
      this.outbox.commit(writeBarrier(this.outbox.target, offset, checkpoint) - offset);
      this.ingressWritten = (this.ingressWritten + 1) | 0;
    }
    this.flush();
  }

  /** An envelope from a peer (see ClusterPort.deliver). */
  deliverFromPeer(bytes: Uint8Array, offset: number, length: number, fromPeer: string | null): void {
    if (length > this.outbox.recordBytesMax) {
      // Only a peer with other limits sends this (HELLO compares them); it cannot enter a ring here.
      this.config.log(`main: dropped an envelope of ${length} bytes from a peer: larger than this node's rings take (${this.outbox.recordBytesMax})`);
      return;
    }
    const participant = this.checkpointing?.participant;
    const kind = bytes[offset];
    if (kind === EnvelopeKind.Invoke) {
      const keyGroup = readKeyGroup(bytes, offset);
      if (keyGroup >= this.keyGroups) throw new ValidationError('SC_ERR_MALFORMED_FRAME', `envelope for key group ${keyGroup}, but the cluster has ${this.keyGroups}`);
      // The header is the sender's word: an envelope whose target hashes elsewhere would reach an
      // instance in the wrong key group (outside its snapshots and hand-overs).
      const target = readTargetKeyGroup(bytes, offset, length, this.keyGroups);
      if (target !== keyGroup) throw new ValidationError('SC_ERR_MALFORMED_FRAME', `envelope for key group ${keyGroup}, but its target id is in key group ${target}`);
      if (fromPeer !== null && participant?.recording(`peer:${fromPeer}`)) participant.record(`peer:${fromPeer}`, bytes, offset, length);
      this.routeInvoke(bytes, offset, length, keyGroup);
    } else if (kind === EnvelopeKind.Barrier) {
      if (fromPeer !== null) participant?.onBarrier(`peer:${fromPeer}`, readBarrier(bytes, offset));
    } else if (kind === EnvelopeKind.Egress) {
      this.egress.append(this.decoder.readEgressName(bytes, offset, length), bytes, offset, length);
      this.pumpEgress();
    } else {
      throw new ValidationError('SC_ERR_MALFORMED_FRAME', `envelope of unknown kind ${kind}`);
    }
  }

  /** Sends an event from inside this process, as a client would (no acknowledgement). */
  sendLocal(target: Address, value: unknown, type?: Type<any>): void {
    validateAddress(target, this.limits.idBytesMax);
    if (!this.functions.has(target.typename)) {
      throw new ValidationError('SC_ERR_UNKNOWN_FUNCTION_TYPE', `no function of type ${target.typename} is loaded on this node.`);
    }
    const typed = toTypedValue(value, type);
    checkValueSize(typed, this.limits.valueBytesMax);
    const keyGroup = keyGroupOf(target.id, this.keyGroups);
    this.eventsAccepted++;
    if (shardOfRoute(this.routing[keyGroup]!) === MAIN_THREAD) {
      const bytes = new Uint8Array(invokeLengthMax(target.typename, target.id, null, null, typed));
      const end = writeInvoke(bytes, 0, keyGroup, target.typename, target.id, null, null, typed);
      this.cluster!.forward(bytes, 0, end, keyGroup);
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(shardOfRoute(this.routing[keyGroup]!), invokeLengthMax(target.typename, target.id, null, null, typed));
    const end = writeInvoke(outbox.target, offset, keyGroup, target.typename, target.id, null, null, typed);
    outbox.commit(end - offset);
    this.flush();
    this.ingressWritten = (this.ingressWritten + 1) | 0;
  }

  // ---- GatewayHost ----

  admits(): boolean {
    if (this.closing) return false;
    if (this.outbox.hasOverflow) return false;
    if (this.cluster !== null && !this.cluster.admits()) return false;
    // Events still in the rings count as backlog too: the shards have not seen them yet.
    const inRings = (this.ingressWritten - this.stats.total(Stat.IngressReceived)) | 0;
    return this.stats.total(Stat.OverflowBytes) < OVERFLOW_BYTES_MAX && inRings + this.stats.total(Stat.Backlog) < this.config.backlogMax;
  }

  admit(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    this.routeInvoke(bytes, offset, length, keyGroup);
  }

  /**
   * Publishes what the main thread wrote. Records that found a ring full wait in overflow queues, which
   * only the main loop retries: wake it, so it stops parking indefinitely and retries every 2 ms.
   */
  flush(): void {
    this.outbox.flush();
    if (this.outbox.hasOverflow) this.inbox.wake();
  }

  countRefusal(kind: 'token' | 'scope' | 'limit'): void {
    if (kind === 'token') this.clientsRefused++;
    else if (kind === 'scope') this.requestsOutOfScope++;
    else this.clientLimitsReached++;
  }

  countEvents(accepted: number, rejected: number): void {
    this.eventsAccepted += accepted;
    this.eventsRejected += rejected;
  }

  log(line: string): void {
    this.config.log(line);
  }

  /** Wakes the loop so it re-checks admission and retries overflow. */
  wake(): void {
    this.inbox.wake();
  }

  // ---- recovery ----

  async dropClients(reason: string): Promise<void> {
    await this.gateway?.rollBack(reason);
  }

  closeClients(reason: string): void {
    this.gateway?.closeClients(reason);
  }

  dropUnpublished(): void {
    this.outbox.discardOverflow();
  }

  drainInputs(): void {
    this.inbox.poll(1 << 30);
  }

  replay(messages: readonly Uint8Array[]): void {
    for (const message of messages) this.outbox.writeBytes(this.pool.shardOf(readKeyGroup(message, 0)), message, 0, message.length);
    this.ingressWritten = (this.ingressWritten + messages.length) | 0;
    this.flush();
  }

  // ---- the loop: what the shards write to the main thread ----

  visit(data: Uint8Array, offset: number, length: number, source: number): void {
    if (this.discarding) return;
    const participant = this.checkpointing?.participant;
    const kind = data[offset];
    if (kind === EnvelopeKind.Invoke) {
      // A shard routed a message here: its key group belongs to another node (or just moved back to us).
      if (participant?.recording(source)) participant.record(source, data, offset, length);
      this.routeInvoke(data, offset, length, readKeyGroup(data, offset));
      return;
    }
    if (kind === EnvelopeKind.Barrier) {
      participant?.onBarrier(source, readBarrier(data, offset));
      return;
    }
    if (kind !== EnvelopeKind.Egress) {
      this.config.log(`main: ignored an envelope of kind ${kind} from a shard`);
      return;
    }
    const egress = this.decoder.readEgressName(data, offset, length);
    this.egress.append(egress, data, offset, length);
    this.cluster?.onEgress(egress, data, offset, length);
  }

  private async run(): Promise<void> {
    while (!this.loopStopped) {
      const received = this.inbox.poll(RECORDS_PER_POLL);
      if (received > 0 || this.egressLagging) this.egressLagging = this.egress.pump();
      this.outbox.flush();
      if (received > 0) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      await this.inbox.park(this.outbox.hasOverflow || this.egressLagging ? 2 : Infinity);
    }
  }

  pumpEgress(): void {
    this.egressLagging = this.egress.pump();
    if (this.egressLagging) this.inbox.wake();
  }

  metricsNow(): NodeMetrics {
    this.metrics.set(MAIN_THREAD, Metric.EventsAccepted, this.eventsAccepted);
    this.metrics.set(MAIN_THREAD, Metric.EventsRejected, this.eventsRejected);
    return {
      ...this.metrics.totals(),
      connections: this.gateway?.connectionCount ?? 0,
      clientsRefused: this.clientsRefused,
      requestsOutOfScope: this.requestsOutOfScope,
      clientLimitsReached: this.clientLimitsReached,
      overflowBytes: this.stats.total(Stat.OverflowBytes),
      shardsStalled: this.watchdog?.stalledCount ?? 0,
    };
  }

  /** Why this node is not healthy, for /health (empty: it is). */
  problems(): string[] {
    return [...(this.watchdog?.problems() ?? []), ...(this.checkpointing?.problems() ?? [])];
  }

  /** True when no ring holds a record, no overflow queue holds one, and no shard has queued work. */
  private quiet(): boolean {
    if (this.outbox.hasOverflow || this.inbox.hasWork()) return false;
    if (this.stats.total(Stat.OverflowBytes) !== 0 || this.stats.total(Stat.Backlog) !== 0 || this.stats.total(Stat.RemoteWork) !== 0) return false;
    return ringsEmpty(this.config.layout);
  }

  close(): Promise<void> {
    if (this.closed === null) this.closed = this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    this.watchdog?.stop();
    // From here no event is admitted: a checkpoint begun from now on covers all this node accepted.
    this.checkpointing?.stopping();
    this.pool.beginStop();
    const serverClosed = this.admin?.close() ?? Promise.resolve();
    const adminClosed = this.adminOnly?.close() ?? Promise.resolve();
    // Let accepted work finish: quiet twice in a row, a few milliseconds apart, or the grace period ends.
    const deadline = Date.now() + SHUTDOWN_GRACE_MS;
    let quietChecks = 0;
    while (this.pool.started && Date.now() < deadline && quietChecks < 2) {
      this.inbox.wake();
      await new Promise((resolve) => setTimeout(resolve, 5));
      quietChecks = this.quiet() ? quietChecks + 1 : 0;
    }
    // A node that checkpoints alone makes what it accepted durable (and confirms it to its clients) first.
    if (this.pool.started) await this.checkpointing?.finalCheckpoint(FINAL_CHECKPOINT_MS);
    this.checkpointing?.stopLeading();
    // Deliver the last egress records to subscribers before closing their connections.
    this.inbox.poll(1 << 30);
    this.egress.pump();
    await this.gateway?.close(CloseCode.GoingAway, 'node shutting down');
    this.loopStopped = true;
    this.inbox.wake();
    await this.loopDone;
    await this.pool.stop();
    this.admin?.closeConnections();
    // Peer links came in through the admin server too: it closes once the cluster layer has closed them.
    await this.cluster?.close();
    this.adminOnly?.closeConnections();
    await serverClosed;
    await adminClosed;
    await this.checkpointing?.store.close();
  }
}

function ringsEmpty(layout: MailboxLayout): boolean {
  for (const ring of layout.rings) {
    if (ring === null) continue;
    const control = new Int32Array(ring, 0, 32);
    if (Atomics.load(control, 0) !== Atomics.load(control, 16)) return false;
  }
  return true;
}
