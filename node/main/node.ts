/**
 * One Statecraft node: the main thread (client gateway, admin HTTP, egress) plus its shard workers.
 *
 *   startNode({ functions: ['./functions.js'], port: 0 })  →  a running node with `url` and `close()`
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ID_BYTES_MAX_DEFAULT, ID_BYTES_WIRE_MAX } from '../../lib/address.js';
import { CloseCode, type Limits } from '../../lib/client-protocol.js';
import { ValidationError, StatecraftError } from '../../lib/errors.js';
import { BARRIER_BYTES, EnvelopeDecoder, EnvelopeKind, invokeLengthMax, readBarrier, readKeyGroup, writeBarrier, writeInvoke } from '../../lib/envelope.js';
import { KEY_GROUPS_DEFAULT, KEY_GROUPS_MAX, KEY_GROUP_HASH, keyGroupOf } from '../../lib/key-group.js';
import { checkValueSize, toTypedValue } from '../../lib/typed-value.js';
import { validateAddress, type Address } from '../../lib/address.js';
import type { Type } from '../../lib/types.js';
import { EgressHub } from './egress-hub.js';
import { loadFunctionModules, resolveModuleUrl } from '../../lib/function-loader.js';
import { Gateway } from './gateway.js';
import { Inbox, MAIN_THREAD, Outbox, Stat, ThreadStats, createMailboxLayout, type MailboxLayout } from '../rings/mailbox.js';
import { Metric, ThreadMetrics, createMetricsBuffer, type MetricName } from '../rings/metrics.js';
import { recordBytesMax } from '../rings/spsc-ring.js';
import type { RecordVisitor } from '../rings/spsc-ring.js';
import type { MainToShard, ShardToMain, ShardWorkerData } from '../shard/shard-worker.js';
import { EndpointTable, type EndpointSpec } from '../remote/remote-endpoints.js';
import type { CheckpointControl, ClusterHooks, ClusterPort, RollBackResult } from './cluster-port.js';
import { BlobCorruptError, openBlobStore, type BlobStore } from '../storage/blob-store.js';
import { CheckpointLeader, type CheckpointStats } from '../checkpoint/checkpoint-leader.js';
import { CheckpointParticipant } from '../checkpoint/checkpoint-participant.js';
import { decodeChannelObject, manifestKey, readCommittedManifests, readLatest, readManifest } from '../checkpoint/checkpoint-format.js';
import type { CheckpointManifest } from '../checkpoint/checkpoint-coordinator.js';

export interface CheckpointOptions {
  /** `file://./dir`, `file:///abs/dir` or `s3://bucket/prefix`. */
  store: string;
  /** S3-compatible endpoint (MinIO, s3rver), path-style. */
  s3Endpoint?: string;
  s3Region?: string;
  /** Default 1000. */
  intervalMs?: number;
  /** Committed checkpoints kept. Default 3. */
  retain?: number;
  /** A checkpoint not acknowledged by every node within this long fails. Default 10,000. */
  ackTimeoutMs?: number;
  /**
   * Load every key group from the last committed checkpoint at start (default true). A node that
   * joins a running cluster says false: its key groups come by hand-over.
   */
  restore?: boolean;
  /** `file://` stores: fsync on every write (default true). */
  fsync?: boolean;
}

export interface NodeOptions {
  /** ES modules exporting function definitions (paths, file URLs or package names). */
  functions: readonly string[];
  /** TCP port for clients and admin HTTP; 0 lets the OS choose. Default 0. */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** Shard worker threads. Default: one per core. */
  shards?: number;
  /** Number of key groups K (part of the storage format). Default 1024. */
  keyGroups?: number;
  /** Largest value a message, state value or egress record may have, in bytes. Default 1 MiB. */
  valueBytesMax?: number;
  /** Longest address id, in UTF-8 bytes. Default 1024. */
  idBytesMax?: number;
  /** Bytes per ring between two threads (a power of two, at least 4 × valueBytesMax). Default 4 MiB. */
  ringBytes?: number;
  /** Records kept per egress for subscribers that connect later or fall behind. Default 10,000. */
  egressRetainRecords?: number;
  /** Bytes kept per egress. Default 64 MiB. */
  egressRetainBytes?: number;
  /** Shard queue length (messages accepted but not yet processed) above which client events wait. Default 100,000. */
  backlogMax?: number;
  /** This node's id (stable across restarts when the cluster layer keeps it). Default: a random UUID. */
  nodeId?: string;
  /** Where notices go. Default: stderr. */
  log?: (line: string) => void;
  /**
   * Function types served over HTTP by remote deployments (StateFun's request-reply protocol): from
   * `--endpoint` flags or a module.yaml (see remote-endpoints.ts).
   */
  endpoints?: readonly EndpointSpec[];
  /** Messages one remote address may have waiting for its endpoint before more are dead-lettered. Default 100,000. */
  remoteBacklogMax?: number;
  /** Called when a shard dies (a runtime bug): the node cannot go on. Default: log and exit with code 70. */
  onFatal?: (error: Error) => void;
  /**
   * Exactly-once: consistent checkpoints to a blob store, egress released on commit, client events
   * confirmed on commit, recovery from the last committed checkpoint. Off when absent.
   */
  checkpoints?: CheckpointOptions;
}

/** The function types a node runs: embedded definitions, and the patterns its endpoints serve. */
export class FunctionTypes implements Iterable<string> {
  constructor(
    private readonly embedded: ReadonlySet<string>,
    private readonly endpoints: EndpointTable | null,
  ) {}

  has(typename: string): boolean {
    return this.embedded.has(typename) || (this.endpoints !== null && this.endpoints.serves(typename));
  }

  *[Symbol.iterator](): Iterator<string> {
    yield* this.embedded;
    if (this.endpoints !== null) for (const pattern of this.endpoints.patterns) if (!this.embedded.has(pattern)) yield pattern;
  }
}

export interface NodeMetrics extends Record<MetricName, number> {
  connections: number;
  overflowBytes: number;
}

export interface StatecraftNode {
  /** `ws://host:port`: give it to `connect()`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly nodeId: string;
  readonly shards: number;
  readonly keyGroups: number;
  /** Largest value and id this node accepts (every node of a cluster must agree). */
  readonly limits: { readonly valueBytesMax: number; readonly idBytesMax: number };
  /** Function types this node runs. */
  readonly functions: readonly string[];
  /** Sends an event from inside this process, as a client would (no acknowledgement). */
  send<T>(target: Address, value: T, type?: Type<T>): void;
  /** Counters summed over threads. */
  metrics(): NodeMetrics;
  /** Which shard thread (1..shards) owns a key group. */
  shardOf(keyGroup: number): number;
  /**
   * Heap in use by each shard thread, in bytes (diagnostics). After a full garbage collection when the
   * process runs with --expose-gc.
   */
  shardHeapBytes(): Promise<number[]>;
  /**
   * Plugs a cluster layer in (see cluster-port.ts); at most once. Until its hooks own key groups with
   * `setOwnership`, the node owns all of them.
   */
  attachCluster(hooks: ClusterHooks): ClusterPort;
  /** Checkpoint figures (null when checkpoints are off). */
  checkpointStatus(): { restored: number; leader: CheckpointStats | null; generation: number } | null;
  /** Stops admitting events, lets the shards finish what they have, closes clients and threads. */
  close(): Promise<void>;
}

const MiB = 1024 * 1024;

function option(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  const chosen = value ?? fallback;
  if (!Number.isSafeInteger(chosen) || chosen < min || chosen > max) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `${name} must be a whole number from ${min} to ${max}, got ${String(value)}.`);
  }
  return chosen;
}

export async function startNode(options: NodeOptions): Promise<StatecraftNode> {
  const endpointSpecs = [...(options?.endpoints ?? [])];
  if (!options || !Array.isArray(options.functions) || (options.functions.length === 0 && endpointSpecs.length === 0)) {
    throw new ValidationError(
      'SC_ERR_INVALID_OPTION',
      'functions: give at least one module that exports function definitions (--functions path/to/module.js), or remote endpoints (--endpoint, --module).',
    );
  }
  const endpoints = endpointSpecs.length > 0 ? new EndpointTable(endpointSpecs) : null;
  const remoteBacklogMax = option('remoteBacklogMax', options.remoteBacklogMax, 100_000, 1, 100_000_000);
  const shards = option('shards', options.shards, Math.max(1, availableParallelism()), 1, 256);
  const keyGroups = option('keyGroups', options.keyGroups, KEY_GROUPS_DEFAULT, 1, KEY_GROUPS_MAX);
  const valueBytesMax = option('valueBytesMax', options.valueBytesMax, MiB, 16, 256 * MiB);
  const idBytesMax = option('idBytesMax', options.idBytesMax, ID_BYTES_MAX_DEFAULT, 1, ID_BYTES_WIRE_MAX);
  const port = option('port', options.port, 0, 0, 65535);
  const ringBytes = option('ringBytes', options.ringBytes, Math.max(4 * MiB, nextPowerOfTwo(4 * valueBytesMax)), 64 * 1024, 1024 * MiB);
  if (!Number.isInteger(Math.log2(ringBytes))) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `ringBytes must be a power of two, got ${ringBytes}.`);
  }
  // An envelope carries names and ids besides the value; keep room for the largest of them.
  const envelopeBytesMax = valueBytesMax + 3 * 255 * 3 + 2 * idBytesMax * 3 + 64;
  if (recordBytesMax(ringBytes) < envelopeBytesMax) {
    throw new ValidationError(
      'SC_ERR_INVALID_OPTION',
      `ringBytes ${ringBytes} is too small for values of ${valueBytesMax} bytes; use at least ${nextPowerOfTwo(2 * envelopeBytesMax + 16)}.`,
    );
  }
  const egressRetainRecords = option('egressRetainRecords', options.egressRetainRecords, 10_000, 1, 10_000_000);
  const egressRetainBytes = option('egressRetainBytes', options.egressRetainBytes, 64 * MiB, 1024, 16 * 1024 * MiB);
  const backlogMax = option('backlogMax', options.backlogMax, 100_000, 1, 100_000_000);
  const host = options.host ?? '127.0.0.1';
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));

  let checkpoints: MainThreadConfig['checkpoints'] = null;
  if (options.checkpoints !== undefined) {
    const given = options.checkpoints;
    const storeOptions = {
      ...(given.s3Endpoint === undefined ? {} : { endpoint: given.s3Endpoint }),
      ...(given.s3Region === undefined ? {} : { region: given.s3Region }),
      ...(given.fsync === undefined ? {} : { fsync: given.fsync }),
    };
    const store = await openBlobStore(given.store, storeOptions);
    await store.check();
    checkpoints = {
      store,
      url: given.store,
      storeOptions,
      intervalMs: option('checkpoints.intervalMs', given.intervalMs, 1000, 10, 3_600_000),
      retain: option('checkpoints.retain', given.retain, 3, 1, 1000),
      ackTimeoutMs: option('checkpoints.ackTimeoutMs', given.ackTimeoutMs, 10_000, 100, 3_600_000),
      restore: given.restore ?? true,
    };
  }
  const moduleUrls = options.functions.map((specifier) => resolveModuleUrl(specifier));
  // The main thread loads the modules too: to fail fast with a clear error and to know the types.
  const definitions = moduleUrls.length > 0 ? await loadFunctionModules(moduleUrls) : [];
  const functionNames = definitions.map((definition) => definition.typename);
  for (const typename of functionNames) {
    if (endpoints?.serves(typename)) log(`statecraft: ${typename} is defined by --functions and served by an endpoint too; the embedded definition is used`);
  }

  const threads = shards + 1;
  const layout = createMailboxLayout(threads, ringBytes);
  const routingBuffer = new SharedArrayBuffer(4 * keyGroups);
  const routing = new Int32Array(routingBuffer);
  for (let keyGroup = 0; keyGroup < keyGroups; keyGroup++) routing[keyGroup] = 1 + (keyGroup % shards);
  const metricsBuffer = createMetricsBuffer(threads);
  const limits: Limits = { valueBytesMax, idBytesMax, frameBytesMax: Math.max(16 * MiB, 2 * envelopeBytesMax) };

  const nodeId = options.nodeId ?? randomUUID();
  // Names this process's uploads: a restarted node never overwrites objects of its previous life.
  const uploadTag = `${nodeId.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 12) || 'node'}-${randomUUID().slice(0, 8)}`;
  const runtime = new MainThread({
    checkpoints,
    uploadTag,
    layout,
    routing,
    metricsBuffer,
    keyGroups,
    limits,
    functions: new FunctionTypes(new Set(functionNames), endpoints),
    egress: new EgressHub({ recordsMax: egressRetainRecords, bytesMax: egressRetainBytes }),
    backlogMax,
    nodeId,
    log,
    onFatal: options.onFatal ?? ((error) => {
      log(`statecraft: fatal: ${error.message}`);
      process.exit(70);
    }),
  });
  try {
    await runtime.startShards(shards, {
      layout,
      routing: routingBuffer,
      metrics: metricsBuffer,
      keyGroups,
      limits: { valueBytesMax, idBytesMax },
      moduleUrls,
      endpoints: endpointSpecs,
      remoteBacklogMax,
      ...(checkpoints === null ? {} : { checkpoints: { url: checkpoints.url, store: checkpoints.storeOptions, tag: uploadTag } }),
    });
    await runtime.startCheckpoints();
    await runtime.listen(port, host);
  } catch (error) {
    await runtime.close();
    await checkpoints?.store.close();
    throw error;
  }
  return runtime.handle([...runtime.functions], shards);
}

function nextPowerOfTwo(value: number): number {
  return 2 ** Math.ceil(Math.log2(value));
}

interface MainThreadConfig {
  checkpoints: {
    store: BlobStore;
    url: string;
    storeOptions: { endpoint?: string; region?: string; fsync?: boolean };
    intervalMs: number;
    retain: number;
    ackTimeoutMs: number;
    restore: boolean;
  } | null;
  uploadTag: string;
  layout: MailboxLayout;
  routing: Int32Array;
  metricsBuffer: SharedArrayBuffer;
  keyGroups: number;
  limits: Limits;
  functions: FunctionTypes;
  egress: EgressHub;
  backlogMax: number;
  nodeId: string;
  log: (line: string) => void;
  onFatal: (error: Error) => void;
}

const SHARD_START_TIMEOUT_MS = 60_000;
const SHUTDOWN_GRACE_MS = 10_000;
const OVERFLOW_BYTES_MAX = 16 * MiB;

class MainThread implements RecordVisitor {
  readonly nodeId: string;
  readonly egressLogId = randomUUID();
  private cluster: ClusterHooks | null = null;
  private readonly outbox: Outbox;
  private readonly inbox: Inbox;
  private readonly stats: ThreadStats;
  private readonly metrics: ThreadMetrics;
  private readonly decoder = new EnvelopeDecoder();
  private readonly workers: Worker[] = [];
  private gateway: Gateway | null = null;
  private server: Server | null = null;
  private address: { host: string; port: number } | null = null;
  private closing = false;
  private loopStopped = false;
  private closed: Promise<void> | null = null;
  private loopDone: Promise<void> | null = null;
  private egressLagging = false;
  private eventsAccepted = 0;
  private eventsRejected = 0;
  /** Records written to shard rings (int32, wraps like the shards' IngressReceived). */
  private ingressWritten = 0;
  // ---- checkpoints ----
  private participant: CheckpointParticipant | null = null;
  private leader: CheckpointLeader | null = null;
  /** Which peer started each checkpoint (acks go back to it); absent: this node's own leader. */
  private readonly startedBy = new Map<number, string>();
  private generation = 0;
  private restoredCheckpoint = 0;
  /**
   * Set when this node restored a checkpoint older than LATEST (LATEST's objects were corrupt): until a
   * new one commits, key groups reported unchanged refer to it, not to LATEST.
   */
  private fallbackBase: number | null = null;
  /** Counts leadCheckpoints calls: a call that finds a later one made meanwhile gives way to it. */
  private leadCalls = 0;
  /** True while a recovery discards what arrives from the shards. */
  private discarding = false;

  constructor(private readonly config: MainThreadConfig) {
    this.nodeId = config.nodeId;
    this.outbox = new Outbox(config.layout, MAIN_THREAD);
    this.inbox = new Inbox(config.layout, MAIN_THREAD, this);
    this.stats = new ThreadStats(config.layout);
    this.metrics = new ThreadMetrics(config.metricsBuffer, config.layout.threads);
  }

  async startShards(shards: number, data: Omit<ShardWorkerData, 'thread'>): Promise<void> {
    const ready: Promise<void>[] = [];
    for (let thread = 1; thread <= shards; thread++) {
      const worker = new Worker(new URL('../shard/shard-worker.js', import.meta.url), {
        workerData: { ...data, thread } satisfies ShardWorkerData,
        name: `statecraft-shard-${thread}`,
      });
      this.workers.push(worker);
      ready.push(
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new StatecraftError('SC_ERR_MODULE_LOAD', `shard ${thread} did not start within ${SHARD_START_TIMEOUT_MS / 1000} s`)), SHARD_START_TIMEOUT_MS);
          worker.on('message', (message: ShardToMain) => {
            if (message.type === 'ready') {
              clearTimeout(timer);
              resolve();
            } else if (message.type === 'failed') {
              clearTimeout(timer);
              reject(new StatecraftError('SC_ERR_MODULE_LOAD', `shard ${thread} failed to start: ${message.message}`));
            } else if (message.type === 'log') {
              this.config.log(message.line);
            } else if (message.type === 'released' || message.type === 'adopted' || message.type === 'restored') {
              const reply = this.replies.get(message.request);
              this.replies.delete(message.request);
              reply?.(message);
            } else if (message.type === 'checkpoint-part') {
              this.participant?.onShardPart(thread, message.checkpoint, message.epoch, message.objects, message.channel, message.error);
            }
          });
          worker.on('error', (error) => {
            clearTimeout(timer);
            reject(error);
            if (!this.closing) this.config.onFatal(new Error(`shard ${thread} crashed: ${error.stack ?? error.message}`));
          });
          worker.on('exit', (code) => {
            clearTimeout(timer);
            reject(new Error(`shard ${thread} exited with code ${code}`));
            if (!this.closing) this.config.onFatal(new Error(`shard ${thread} exited unexpectedly with code ${code}`));
          });
        }),
      );
    }
    await Promise.all(ready);
    this.loopDone = this.run();
  }

  /** Checkpoints on: restore (unless told not to) and, until a cluster takes over, lead them alone. */
  async startCheckpoints(): Promise<void> {
    const checkpoints = this.config.checkpoints;
    if (checkpoints === null) return;
    this.participant = new CheckpointParticipant(this.participantHost(), checkpoints.store, this.config.uploadTag, 0);
    if (checkpoints.restore) {
      const restored = await this.restoreFromStore(() => true);
      if (restored.checkpoint > 0) this.config.log(`checkpoints: restored checkpoint ${restored.checkpoint} (${restored.instances} instances) from ${checkpoints.store.describe()}`);
    }
    this.setRouting(() => true);
    // A node that joins a cluster waits for the cluster layer to say who coordinates.
    if (checkpoints.restore) await this.leadCheckpoints({ participants: [this.nodeId], view: 'single' });
  }

  private participantHost(): import('../checkpoint/checkpoint-participant.js').ParticipantHost {
    return {
      shards: this.workers.length,
      writeBarrierToShards: (checkpoint) => {
        for (let thread = 1; thread <= this.workers.length; thread++) {
          const offset = this.outbox.reserve(thread, BARRIER_BYTES);
          this.outbox.commit(writeBarrier(this.outbox.target, offset, checkpoint) - offset);
          this.ingressWritten = (this.ingressWritten + 1) | 0;
        }
        this.flushOutbox();
      },
      writeBarrierToPeers: (checkpoint) => {
        if (!this.discarding) this.cluster?.writeBarrier(checkpoint);
      },
      blocked: () => this.cluster?.checkpointBlocked() ?? null,
      markEvents: (checkpoint) => this.gateway?.markCheckpoint(checkpoint),
      acknowledge: (checkpoint, objects, channels) => {
        const to = this.startedBy.get(checkpoint);
        this.startedBy.delete(checkpoint);
        if (to === undefined) this.leader?.acknowledged(this.nodeId, checkpoint, objects, channels);
        else this.cluster?.sendCheckpointControl(to, { type: 'ack', checkpoint, objects: [...objects], channels });
      },
      failed: (checkpoint, reason) => {
        const to = this.startedBy.get(checkpoint);
        this.startedBy.delete(checkpoint);
        if (to === undefined) this.leader?.uploadFailed(this.nodeId, checkpoint, reason);
        else this.cluster?.sendCheckpointControl(to, { type: 'failed', checkpoint, reason });
      },
      log: (line) => this.config.log(line),
    };
  }

  /** Runs the coordinator on this node for `lead.participants`, or stops it. */
  private async leadCheckpoints(lead: { participants: readonly string[]; view: string } | null): Promise<void> {
    const checkpoints = this.config.checkpoints;
    if (checkpoints === null) return;
    const call = ++this.leadCalls;
    const previous = this.leader;
    this.leader = null;
    await previous?.stop();
    if (lead === null || this.closing) return;
    let committed: CheckpointManifest[];
    let latest: number;
    try {
      ({ latest, manifests: committed } = await readCommittedManifests(checkpoints.store, this.config.log));
    } catch (error) {
      this.config.log(`checkpoints: cannot read the last committed checkpoint (${(error as Error).message}); this node does not coordinate checkpoints until the next view`);
      return;
    }
    if (call !== this.leadCalls || this.closing) return; // superseded while reading
    this.leader = new CheckpointLeader({
      store: checkpoints.store,
      keyGroups: this.config.keyGroups,
      intervalMs: checkpoints.intervalMs,
      retain: checkpoints.retain,
      ackTimeoutMs: checkpoints.ackTimeoutMs,
      participants: lead.participants,
      view: lead.view,
      // Numbers go above anything used before, also by an earlier epoch or leader.
      lastCheckpoint: Math.max(this.participant?.highestCheckpoint ?? 0, this.restoredCheckpoint, latest),
      // The base for key groups reported unchanged is what the live state derives from: after falling
      // back past a corrupt checkpoint, that is the restored one, not LATEST.
      committed: this.fallbackBase === null ? committed : committed.filter((manifest) => manifest.checkpoint <= this.fallbackBase!),
      start: (participant, checkpoint) => {
        if (participant === this.nodeId) {
          this.startedBy.delete(checkpoint);
          this.participant?.start(checkpoint);
        } else this.cluster?.sendCheckpointControl(participant, { type: 'start', checkpoint });
      },
      outcome: (participants, checkpoint, committedNow) => {
        for (const participant of participants) {
          if (participant === this.nodeId) this.checkpointOutcome(checkpoint, committedNow);
          else this.cluster?.sendCheckpointControl(participant, { type: 'outcome', checkpoint, committed: committedNow });
        }
      },
      log: (line) => this.config.log(line),
    });
  }

  private checkpointOutcome(checkpoint: number, committed: boolean): void {
    if (committed) this.fallbackBase = null;
    this.participant?.outcome(checkpoint, committed);
    for (const worker of this.workers) worker.postMessage({ type: 'checkpoint-outcome', checkpoint, committed } satisfies MainToShard);
    if (committed) this.gateway?.checkpointCommitted(checkpoint);
  }

  private onCheckpointControl(from: string, message: CheckpointControl): void {
    switch (message.type) {
      case 'start':
        if (this.restoring) {
          this.cluster?.sendCheckpointControl(from, { type: 'failed', checkpoint: message.checkpoint, reason: `${this.nodeId} is restoring a checkpoint` });
          break;
        }
        // Not for an old number (a previous leader's); the checkpoint may have begun already on a
        // peer's barrier, and its ack still goes to this leader.
        if (this.participant !== null && message.checkpoint >= this.participant.newestCheckpoint) {
          this.startedBy.set(message.checkpoint, from);
          this.participant.start(message.checkpoint);
        }
        break;
      case 'ack':
        this.leader?.acknowledged(from, message.checkpoint, new Map(message.objects), message.channels);
        break;
      case 'failed':
        this.leader?.uploadFailed(from, message.checkpoint, message.reason);
        break;
      case 'outcome':
        this.checkpointOutcome(message.checkpoint, message.committed);
        break;
    }
  }

  /** Points each key group at its shard (owned) or at the main thread (another node's, or held). */
  private setRouting(owned: (keyGroup: number) => boolean): void {
    const routing = this.config.routing;
    const shards = this.workers.length;
    for (let keyGroup = 0; keyGroup < routing.length; keyGroup++) Atomics.store(routing, keyGroup, owned(keyGroup) ? 1 + (keyGroup % shards) : MAIN_THREAD);
  }

  private async askAllShards(message: MainToShard & { request: number }): Promise<Extract<ShardToMain, { type: 'restored' }>[]> {
    return (await Promise.all(this.workers.map((_, index) => this.askShard(index + 1, message)))) as Extract<ShardToMain, { type: 'restored' }>[];
  }

  /** Every thread of the node forgets everything (two phases: see Shard.reset). */
  private async resetAll(): Promise<void> {
    this.discarding = true;
    this.outbox.discardOverflow();
    await this.askAllShards({ type: 'reset', request: 0, phase: 1, epoch: this.generation });
    this.inbox.poll(1 << 30);
    await this.askAllShards({ type: 'reset', request: 0, phase: 2, epoch: this.generation });
    this.inbox.poll(1 << 30);
    this.discarding = this.fencedEpoch > this.resetEpoch;
  }

  /**
   * Loads the key groups `owned` selects from the newest committed checkpoint that can be read (a
   * corrupt object makes it fall back to the one before), then replays the messages recorded in flight
   * for them. Expects the shards empty; routing is left to the caller.
   */
  /**
   * A node starting on its own (alone, or founding a cluster) loads every key group `owned` selects from
   * the newest committed checkpoint it can read: a corrupt object makes it fall back to the one before.
   */
  private async restoreFromStore(owned: (keyGroup: number) => boolean): Promise<RollBackResult> {
    const store = this.config.checkpoints!.store;
    const { latest, manifests } = await readCommittedManifests(store, this.config.log);
    const errors: string[] = [];
    for (let index = manifests.length - 1; index >= 0; index--) {
      const manifest = manifests[index]!;
      try {
        return await this.restoreManifest(manifest, owned, manifest.checkpoint < latest);
      } catch (error) {
        errors.push(`checkpoint ${manifest.checkpoint}: ${(error as Error).message}`);
        this.config.log(`checkpoints: cannot restore checkpoint ${manifest.checkpoint} (${(error as Error).message})${index > 0 ? '; trying the one before' : ''}`);
        await this.resetAll();
      }
    }
    if (manifests.length > 0 || errors.length > 0 || latest > 0) {
      throw new BlobCorruptError(
        `no committed checkpoint in ${store.describe()} can be restored (${errors.join('; ') || `LATEST names ${latest}, whose manifest cannot be read`}); restore the store from a backup or point --checkpoint-store elsewhere`,
        'LATEST',
        store.describe(),
      );
    }
    this.restoredCheckpoint = 0;
    this.resumeShards();
    return { checkpoint: 0, instances: 0 };
  }

  /** Loads `manifest`'s key groups that `owned` selects into the (frozen) shards, then lets them resume. */
  private async restoreManifest(manifest: CheckpointManifest, owned: (keyGroup: number) => boolean, fallback: boolean): Promise<RollBackResult> {
    if (manifest.keyGroups !== this.config.keyGroups) {
      throw new StatecraftError('SC_ERR_INVALID_OPTION', `it was taken with ${manifest.keyGroups} key groups, this node has ${this.config.keyGroups}`);
    }
    const store = this.config.checkpoints!.store;
    // Channel objects first: a corrupt one fails this checkpoint before any shard loads anything.
    const recorded: Uint8Array[] = [];
    for (const key of manifest.channels) {
      const bytes = await store.get(key);
      if (bytes === null) throw new Error(`its object ${key} is missing`);
      for (const message of decodeChannelObject(bytes)) if (owned(readKeyGroup(message, 0))) recorded.push(message);
    }
    const shards = this.workers.length;
    const keysByShard = new Map<number, string[]>();
    const cleanByShard = new Map<number, number[]>();
    for (let keyGroup = 0; keyGroup < manifest.keyGroups; keyGroup++) {
      if (!owned(keyGroup)) continue;
      const shard = 1 + (keyGroup % shards);
      const key = manifest.objects[keyGroup]!;
      if (key === '') cleanByShard.set(shard, [...(cleanByShard.get(shard) ?? []), keyGroup]);
      else keysByShard.set(shard, [...(keysByShard.get(shard) ?? []), key]);
    }
    const replies = (await Promise.all(
      this.workers.map((_, index) =>
        this.askShard(
          index + 1,
          { type: 'restore', request: 0, checkpoint: manifest.checkpoint, keys: keysByShard.get(index + 1) ?? [], clean: cleanByShard.get(index + 1) ?? [], fallback },
        ),
      ),
    )) as Extract<ShardToMain, { type: 'restored' }>[];
    let instances = 0;
    for (const reply of replies) {
      if (reply.error !== undefined) throw new Error(reply.error);
      instances += reply.instances;
    }
    this.restoredCheckpoint = manifest.checkpoint;
    this.fallbackBase = fallback ? manifest.checkpoint : null;
    // Every shard has loaded: each runs its restored queued messages first, then the messages that were
    // in flight at the cut (written now, read after the resume), then whatever comes.
    this.resumeShards();
    for (const message of recorded) this.outbox.writeBytes(1 + (readKeyGroup(message, 0) % shards), message, 0, message.length);
    this.ingressWritten = (this.ingressWritten + recorded.length) | 0;
    this.flushOutbox();
    if (fallback) this.config.log(`checkpoints: restored checkpoint ${manifest.checkpoint}, older than the last committed one (see above)`);
    return { checkpoint: manifest.checkpoint, instances };
  }

  private resumeShards(): void {
    for (const worker of this.workers) worker.postMessage({ type: 'resume' } satisfies MainToShard);
  }

  private restoring = false;
  private rollBacks: Promise<unknown> = Promise.resolve();
  /** The newest recovery epoch begun, and the newest whose reset is done: between them, shard output is stale. */
  private fencedEpoch = 0;
  private resetEpoch = 0;

  /**
   * A recovery to epoch `generation` begins: from now until its reset, whatever the shards emit comes
   * from state the recovery drops. The main thread discards it — it must not reach peers, whose frames
   * carry the new epoch already.
   */
  private beginRecovery(generation: number): void {
    if (generation <= this.fencedEpoch) return;
    this.fencedEpoch = generation;
    this.discarding = true;
  }

  /**
   * The checkpoint a recovery restores: coordination here stops (a manifest or pointer write in flight
   * finishes first, so LATEST no longer moves), then LATEST is read.
   */
  private async prepareRollBack(): Promise<number> {
    await this.leadCheckpoints(null);
    return readLatest(this.config.checkpoints!.store);
  }

  /** Recovery in a cluster (see ClusterPort.rollBack); one at a time. */
  private rollBack(owned: (keyGroup: number) => boolean, generation: number, checkpoint: number): Promise<RollBackResult> {
    this.beginRecovery(generation);
    const next = this.rollBacks.then(() => this.rollBackNow(owned, generation, checkpoint));
    this.rollBacks = next.catch(() => undefined);
    return next;
  }

  private async rollBackNow(owned: (keyGroup: number) => boolean, generation: number, checkpoint: number): Promise<RollBackResult> {
    this.restoring = true;
    try {
      return await this.rollBackSteps(owned, generation, checkpoint);
    } finally {
      this.restoring = false;
    }
  }

  /**
   * Every node of the cluster restores the same checkpoint, the one the leader chose: falling back to an
   * older one here alone would mix checkpoints, so a checkpoint that cannot be read fails the recovery.
   */
  private async rollBackSteps(owned: (keyGroup: number) => boolean, generation: number, checkpoint: number): Promise<RollBackResult> {
    this.generation = generation;
    await this.leadCheckpoints(null);
    this.startedBy.clear();
    this.setRouting(() => false);
    await this.gateway?.rollBack('the cluster is recovering from a failed node: reconnect and re-send what was not committed');
    await this.resetAll();
    this.resetEpoch = Math.max(this.resetEpoch, generation);
    // Still discarding if a newer recovery began meanwhile.
    this.discarding = this.fencedEpoch > this.resetEpoch;
    this.participant!.reset(0, generation);
    let result: RollBackResult = { checkpoint: 0, instances: 0 };
    if (checkpoint === 0) {
      this.restoredCheckpoint = 0;
      this.resumeShards();
    } else {
      const manifest = await readManifest(this.config.checkpoints!.store, checkpoint);
      if (manifest === null) throw new BlobCorruptError(`the manifest of checkpoint ${checkpoint} is missing`, manifestKey(checkpoint), this.config.checkpoints!.store.describe());
      result = await this.restoreManifest(manifest, owned, false);
    }
    this.participant!.reset(result.checkpoint, generation);
    this.setRouting(owned);
    return result;
  }

  async listen(port: number, host: string): Promise<void> {
    const gateway = new Gateway(this, () => this.pumpEgress());
    this.gateway = gateway;
    const server = createServer((request, response) => this.serveHttp(request, response));
    server.on('upgrade', (request, socket, head) => {
      if (this.closing) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
        return;
      }
      const path = (request.url ?? '/').split('?')[0];
      if (path === '/' || path === '') gateway.handleUpgrade(request, socket, head);
      else if (!this.cluster?.upgrade(request, socket, head)) socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = server.address();
    if (bound === null || typeof bound === 'string') throw new Error('server has no TCP address');
    this.address = { host, port: bound.port };
  }

  handle(functionNames: string[], shards: number): StatecraftNode {
    const address = this.address!;
    const urlHost = address.host.includes(':') ? `[${address.host}]` : address.host;
    return {
      url: `ws://${urlHost}:${address.port}`,
      host: address.host,
      port: address.port,
      nodeId: this.nodeId,
      shards,
      keyGroups: this.config.keyGroups,
      limits: { valueBytesMax: this.config.limits.valueBytesMax, idBytesMax: this.config.limits.idBytesMax },
      functions: functionNames,
      send: (target, value, type) => this.sendLocal(target, value, type),
      metrics: () => this.currentMetrics(),
      shardOf: (keyGroup) => this.config.routing[keyGroup]!,
      shardHeapBytes: () => this.shardHeapBytes(),
      attachCluster: (hooks) => this.attachCluster(hooks),
      checkpointStatus: () =>
        this.config.checkpoints === null ? null : { restored: this.restoredCheckpoint, leader: this.leader === null ? null : { ...this.leader.stats }, generation: this.generation },
      close: () => this.close(),
    };
  }

  private attachCluster(hooks: ClusterHooks): ClusterPort {
    if (this.cluster !== null) throw new StatecraftError('SC_ERR_INVALID_OPTION', 'a cluster layer is attached to this node already');
    this.cluster = hooks;
    const routing = this.config.routing;
    const shards = this.workers.length;
    return {
      setOwnership: (owned) => {
        // Shards read this table for every message they route; a plain store per key group suffices
        // (a message routed by the old entry reaches the main thread, which forwards it again).
        for (let keyGroup = 0; keyGroup < routing.length; keyGroup++) {
          const own = owned(keyGroup);
          if (own !== null) Atomics.store(routing, keyGroup, own ? 1 + (keyGroup % shards) : MAIN_THREAD);
        }
      },
      releaseKeyGroups: async (keyGroups) => {
        const byShard = new Map<number, number[]>();
        for (const keyGroup of keyGroups) {
          const shard = 1 + (keyGroup % shards);
          Atomics.store(routing, keyGroup, MAIN_THREAD);
          byShard.set(shard, [...(byShard.get(shard) ?? []), keyGroup]);
        }
        const replies = await Promise.all(
          [...byShard].map(([shard, groups]) => this.askShard(shard, { type: 'release', request: 0, keyGroups: groups })),
        );
        for (const reply of replies as Extract<ShardToMain, { type: 'released' }>[]) {
          if (reply.error) throw new StatecraftError('SC_ERR_INTERNAL', `a shard could not export key groups: ${reply.error}`);
        }
        return replies.flatMap((reply) => (reply as Extract<ShardToMain, { type: 'released' }>).exports);
      },
      adoptKeyGroups: async (bodies) => {
        const byShard = new Map<number, Uint8Array[]>();
        for (const { keyGroup, bytes } of bodies) {
          const shard = 1 + (keyGroup % shards);
          byShard.set(shard, [...(byShard.get(shard) ?? []), bytes]);
        }
        const replies = await Promise.all([...byShard].map(([shard, list]) => this.askShard(shard, { type: 'adopt', request: 0, bodies: list })));
        let instances = 0;
        for (const reply of replies as Extract<ShardToMain, { type: 'adopted' }>[]) {
          if (reply.error) throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `a hand-over could not be imported: ${reply.error}`);
          instances += reply.instances;
        }
        // Routing points at the shards only now: the caller delivers what waited right after this.
        for (const { keyGroup } of bodies) Atomics.store(routing, keyGroup, 1 + (keyGroup % shards));
        // From here the routing table alone says who owns them (a later change must not be ignored).
        for (const [shard] of byShard) {
          const keyGroups = bodies.filter(({ keyGroup }) => 1 + (keyGroup % shards) === shard).map(({ keyGroup }) => keyGroup);
          this.workers[shard - 1]!.postMessage({ type: 'adopt-settled', keyGroups } satisfies MainToShard);
        }
        return instances;
      },
      deliver: (bytes, offset, length, fromPeer) => this.deliverFromPeer(bytes, offset, length, fromPeer ?? null),
      flush: () => this.flushOutbox(),
      checkpointing: this.config.checkpoints !== null,
      setCheckpointPeers: (peers) => this.participant?.setPeers(peers),
      leadCheckpoints: (lead) => void this.leadCheckpoints(lead),
      onCheckpointControl: (from, message) => this.onCheckpointControl(from, message),
      beginRecovery: (generation) => this.beginRecovery(generation),
      prepareRollBack: () => this.prepareRollBack(),
      rollBack: (owned, generation, checkpoint) => this.rollBack(owned, generation, checkpoint),
      recheckAdmission: () => this.inbox.wake(),
      log: (line) => this.config.log(line),
    };
  }

  private requests = 0;

  /** Answers shards owe, by request number. */
  private readonly replies = new Map<number, (reply: ShardToMain) => void>();

  /** Posts a request to a shard and resolves with its answer (matched by request number). */
  private askShard(shard: number, message: MainToShard & { request: number }): Promise<ShardToMain> {
    const worker = this.workers[shard - 1]!;
    const request = ++this.requests;
    return new Promise((resolve) => {
      this.replies.set(request, resolve);
      worker.postMessage({ ...message, request });
    });
  }

  /** Routes an invoke envelope to its key group's shard, or to the cluster layer when another node owns it. */
  private routeInvoke(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    const to = this.config.routing[keyGroup]!;
    if (to === MAIN_THREAD) {
      this.cluster!.forward(bytes, offset, length, keyGroup);
      return;
    }
    this.outbox.writeBytes(to, bytes, offset, length);
    // Everything the main thread writes to a shard counts: shards count what they receive from it.
    this.ingressWritten = (this.ingressWritten + 1) | 0;
  }

  private deliverFromPeer(bytes: Uint8Array, offset: number, length: number, fromPeer: string | null): void {
    if (length > this.outbox.recordBytesMax) {
      // Only a peer with other limits sends this (HELLO compares them); it cannot enter a ring here.
      this.config.log(`main: dropped an envelope of ${length} bytes from a peer: larger than this node's rings take (${this.outbox.recordBytesMax})`);
      return;
    }
    const kind = bytes[offset];
    if (kind === EnvelopeKind.Invoke) {
      const keyGroup = readKeyGroup(bytes, offset);
      if (keyGroup >= this.config.keyGroups) throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `envelope for key group ${keyGroup}, but the cluster has ${this.config.keyGroups}`);
      if (fromPeer !== null && this.participant?.recording(`peer:${fromPeer}`)) this.participant.record(`peer:${fromPeer}`, bytes, offset, length);
      this.routeInvoke(bytes, offset, length, keyGroup);
    } else if (kind === EnvelopeKind.Barrier) {
      if (fromPeer !== null) this.participant?.onBarrier(`peer:${fromPeer}`, readBarrier(bytes, offset));
    } else if (kind === EnvelopeKind.Egress) {
      this.config.egress.append(this.decoder.readEgressName(bytes, offset, length), bytes, offset, length);
      this.pumpEgress();
    } else {
      throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `envelope of unknown kind ${kind}`);
    }
  }

  private shardHeapBytes(): Promise<number[]> {
    return Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<number>((resolve) => {
            const onMessage = (message: ShardToMain) => {
              if (message.type !== 'heap') return;
              worker.off('message', onMessage);
              resolve(message.usedBytes);
            };
            worker.on('message', onMessage);
            worker.postMessage({ type: 'heap' } satisfies MainToShard);
          }),
      ),
    );
  }

  // ---- GatewayHost ----

  get keyGroups(): number {
    return this.config.keyGroups;
  }
  get limits(): Limits {
    return this.config.limits;
  }
  get functions(): FunctionTypes {
    return this.config.functions;
  }
  get egress(): EgressHub {
    return this.config.egress;
  }
  get durable(): boolean {
    return this.config.checkpoints !== null;
  }

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

  flush(): void {
    this.flushOutbox();
  }

  /**
   * Publishes what the main thread wrote. Records that found a ring full wait in overflow queues, which
   * only the main loop retries: wake it, so it stops parking indefinitely and retries every 2 ms.
   */
  private flushOutbox(): void {
    this.outbox.flush();
    if (this.outbox.hasOverflow) this.inbox.wake();
  }

  countEvents(accepted: number, rejected: number): void {
    this.eventsAccepted += accepted;
    this.eventsRejected += rejected;
  }

  log(line: string): void {
    this.config.log(line);
  }

  // ---- main loop: egress records from shards ----

  visit(data: Uint8Array, offset: number, length: number, source: number): void {
    if (this.discarding) return;
    const kind = data[offset];
    if (kind === EnvelopeKind.Invoke) {
      // A shard routed a message here: its key group belongs to another node (or just moved back to us).
      if (this.participant?.recording(source)) this.participant.record(source, data, offset, length);
      this.routeInvoke(data, offset, length, readKeyGroup(data, offset));
      return;
    }
    if (kind === EnvelopeKind.Barrier) {
      this.participant?.onBarrier(source, readBarrier(data, offset));
      return;
    }
    if (kind !== EnvelopeKind.Egress) {
      this.config.log(`main: ignored an envelope of kind ${kind} from a shard`);
      return;
    }
    const egress = this.decoder.readEgressName(data, offset, length);
    this.config.egress.append(egress, data, offset, length);
    this.cluster?.onEgress(egress, data, offset, length);
  }

  private async run(): Promise<void> {
    while (!this.loopStopped) {
      const received = this.inbox.poll(4096);
      if (received > 0 || this.egressLagging) this.egressLagging = this.config.egress.pump();
      this.outbox.flush();
      if (received > 0) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      await this.inbox.park(this.outbox.hasOverflow || this.egressLagging ? 2 : Infinity);
    }
  }

  private pumpEgress(): void {
    this.egressLagging = this.config.egress.pump();
    if (this.egressLagging) this.inbox.wake();
  }

  private sendLocal(target: Address, value: unknown, type?: Type<any>): void {
    validateAddress(target, this.config.limits.idBytesMax);
    if (!this.config.functions.has(target.typename)) {
      throw new ValidationError('SC_ERR_UNKNOWN_FUNCTION_TYPE', `no function of type ${target.typename} is loaded on this node.`);
    }
    const typed = toTypedValue(value, type);
    checkValueSize(typed, this.config.limits.valueBytesMax);
    const keyGroup = keyGroupOf(target.id, this.config.keyGroups);
    this.eventsAccepted++;
    if (this.config.routing[keyGroup] === MAIN_THREAD) {
      const bytes = new Uint8Array(invokeLengthMax(target.typename, target.id, null, null, typed));
      const end = writeInvoke(bytes, 0, keyGroup, target.typename, target.id, null, null, typed);
      this.cluster!.forward(bytes, 0, end, keyGroup);
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(this.config.routing[keyGroup]!, invokeLengthMax(target.typename, target.id, null, null, typed));
    const end = writeInvoke(outbox.target, offset, keyGroup, target.typename, target.id, null, null, typed);
    outbox.commit(end - offset);
    this.flushOutbox();
    this.ingressWritten = (this.ingressWritten + 1) | 0;
  }

  private currentMetrics(): NodeMetrics {
    this.metrics.set(MAIN_THREAD, Metric.EventsAccepted, this.eventsAccepted);
    this.metrics.set(MAIN_THREAD, Metric.EventsRejected, this.eventsRejected);
    return {
      ...this.metrics.totals(),
      connections: this.gateway?.connectionCount ?? 0,
      overflowBytes: this.stats.total(Stat.OverflowBytes),
    };
  }

  private serveHttp(request: IncomingMessage, response: ServerResponse): void {
    const path = (request.url ?? '/').split('?')[0];
    // The cluster layer answers first: /cluster, and /health while the node is not serving.
    if (this.cluster?.http(request, response)) return;
    if (request.method === 'GET' && path === '/health') {
      const body = JSON.stringify({ status: this.closing ? 'stopping' : 'ok', nodeId: this.nodeId });
      response.writeHead(this.closing ? 503 : 200, { 'content-type': 'application/json' }).end(body);
      return;
    }
    if (request.method === 'GET' && path === '/metrics') {
      const metrics = this.currentMetrics();
      const lines = Object.entries(metrics).map(([name, value]) => `statecraft_${snakeCase(name)} ${value}`);
      lines.push(`statecraft_key_groups ${this.config.keyGroups}`);
      lines.push(`# key group hash: ${KEY_GROUP_HASH}`);
      if (this.cluster) lines.push(...this.cluster.metrics());
      response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(lines.join('\n') + '\n');
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not found', paths: ['/health', '/metrics', '/cluster', 'ws:// (clients)'] }));
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
    this.leader?.stop();
    const server = this.server;
    const serverClosed = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    // Let accepted work finish: quiet twice in a row, a few milliseconds apart, or the grace period ends.
    const deadline = Date.now() + SHUTDOWN_GRACE_MS;
    let quietChecks = 0;
    while (this.workers.length > 0 && Date.now() < deadline && quietChecks < 2) {
      this.inbox.wake();
      await new Promise((resolve) => setTimeout(resolve, 5));
      quietChecks = this.quiet() ? quietChecks + 1 : 0;
    }
    // Deliver the last egress records to subscribers before closing their connections.
    this.inbox.poll(1 << 30);
    this.config.egress.pump();
    await this.gateway?.close(CloseCode.GoingAway, 'node shutting down');
    this.loopStopped = true;
    this.inbox.wake();
    await this.loopDone;
    await Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void worker.terminate().then(() => resolve()), 2000);
            worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            worker.postMessage({ type: 'stop' } satisfies MainToShard);
          }),
      ),
    );
    server?.closeAllConnections();
    await serverClosed;
    await this.config.checkpoints?.store.close();
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

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter, index: number) => (index === 0 ? '' : '_') + letter.toLowerCase());
}
