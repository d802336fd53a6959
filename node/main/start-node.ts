/**
 * One Statecraft node: the main thread (client gateway, admin HTTP, egress) plus its shard workers.
 *
 *   startNode({ functions: ['./functions.js'], port: 0 })  →  a running node with `url` and `close()`
 */
import { randomUUID } from 'node:crypto';
import type { Address } from '../../lib/address.js';
import type { Limits } from '../../lib/client-protocol.js';
import { StatecraftError } from '../../lib/errors.js';
import { loadFunctionModules, resolveModuleUrl } from '../../lib/function-loader.js';
import type { Type } from '../../lib/types.js';
import type { CheckpointStats } from '../checkpoint/checkpoint-leader.js';
import { Checkpointing, type CheckpointingHost } from '../checkpoint/checkpointing.js';
import { Recovery } from '../checkpoint/recovery.js';
import { EndpointTable } from '../remote/remote-endpoints.js';
import { createMailboxLayout, shardOfRoute } from '../rings/mailbox.js';
import { createMetricsBuffer } from '../rings/metrics.js';
import { createBeatsBuffer } from '../rings/beats.js';
import { ShardWatchdog } from './shard-watchdog.js';
import { openBlobStore } from '../storage/blob-store.js';
import { AdminHttp } from './admin-http.js';
import type { ClusterHooks, ClusterPort } from './cluster-port.js';
import { EgressHub } from './egress-hub.js';
import { FunctionTypes } from './function-types.js';
import { Gateway } from './gateway.js';
import { MainThread } from './main-thread.js';
import type { NodeMetrics } from './node-metrics.js';
import { NodePort } from './node-port.js';
import { MiB, resolveOptions, type NodeOptions } from './options.js';
import { ShardPool } from './shard-pool.js';

export interface StatecraftNode {
  /** `ws://host:port` (`wss://` with TLS): give it to `connect()`. */
  readonly url: string;
  /** The port speaks TLS. */
  readonly secure: boolean;
  /** Where /metrics and /cluster are served (http:// or https://): the client port, or the admin listener of its own. */
  readonly adminUrl: string;
  /** Reads the TLS certificate and key files again (after a renewal); throws, keeping the old ones, if they are bad. */
  reloadTls(): void;
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
  /** Checkpoint figures (null when checkpoints are off): the checkpoint restored, the coordinator's figures here, the recovery epoch. */
  checkpointStatus(): { restored: number; leader: CheckpointStats | null; epoch: number } | null;
  /** Stops admitting events, lets the shards finish what they have, closes clients and threads. */
  close(): Promise<void>;
}

export async function startNode(options: NodeOptions): Promise<StatecraftNode> {
  const resolved = resolveOptions(options);
  const { shards, keyGroups, valueBytesMax, idBytesMax } = resolved;
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const endpoints = resolved.endpoints.length > 0 ? new EndpointTable(resolved.endpoints) : null;
  const checkpoints = resolved.checkpoints;
  const store = checkpoints === null ? null : await openBlobStore(checkpoints.url, checkpoints.storeOptions);
  await store?.check();
  const moduleUrls = options.functions.map((specifier) => resolveModuleUrl(specifier));
  // The main thread loads the modules too: to fail fast with a clear error and to know the types.
  const definitions = moduleUrls.length > 0 ? await loadFunctionModules(moduleUrls) : [];
  const functionNames = definitions.map((definition) => definition.typename);
  for (const typename of functionNames) {
    if (endpoints?.serves(typename)) log(`statecraft: ${typename} is defined by --functions and served by an endpoint too; the embedded definition is used`);
  }

  const threads = shards + 1;
  const layout = createMailboxLayout(threads, resolved.ringBytes);
  const routingBuffer = new SharedArrayBuffer(4 * keyGroups);
  const routing = new Int32Array(routingBuffer);
  const metricsBuffer = createMetricsBuffer(threads);
  const beatsBuffer = createBeatsBuffer(shards);
  const limits: Limits = { valueBytesMax, idBytesMax, frameBytesMax: Math.max(16 * MiB, 2 * resolved.envelopeBytesMax) };
  const nodeId = options.nodeId ?? randomUUID();
  // Names this process's uploads: a restarted node never overwrites objects of its previous life.
  const uploadTag = `${nodeId.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 12) || 'node'}-${randomUUID().slice(0, 8)}`;
  const onFatal =
    options.onFatal ??
    ((error: Error) => {
      log(`statecraft: fatal: ${error.message}`);
      process.exit(70);
    });

  let main: MainThread | null = null;
  const pool = new ShardPool(shards, {
    log,
    onPart: (thread, part) => main?.checkpointing?.participant.onShardPart(thread, part.checkpoint, part.epoch, part.objects, part.channel, part.error, part.instances),
    onFatal,
  });
  main = new MainThread(
    {
      layout,
      routing,
      metricsBuffer,
      keyGroups,
      limits,
      functions: new FunctionTypes(new Set(functionNames), endpoints),
      egress: new EgressHub({ recordsMax: resolved.egressRetainRecords, bytesMax: resolved.egressRetainBytes }),
      backlogMax: resolved.backlogMax,
      nodeId,
      tokens: options.clientTokens ?? null,
      connectionsMax: resolved.clientConnectionsMax,
      log,
    },
    pool,
  );
  const node = main;
  node.setRouting(() => true);
  try {
    await pool.start({
      layout,
      routing: routingBuffer,
      metrics: metricsBuffer,
      beats: beatsBuffer,
      keyGroups,
      limits: { valueBytesMax, idBytesMax },
      moduleUrls,
      endpoints: resolved.endpoints,
      remoteBacklogMax: resolved.remoteBacklogMax,
      remoteAttemptsMax: resolved.remoteAttemptsMax,
      delayedPendingMax: resolved.delayedPendingMax,
      handlerTimeoutMs: resolved.handlerTimeoutMs,
      ...(checkpoints === null ? {} : { checkpoints: { url: checkpoints.url, store: checkpoints.storeOptions, tag: uploadTag } }),
    });
    node.start();
    node.watchdog = new ShardWatchdog(beatsBuffer, log, resolved.shardStallMs);
    if (checkpoints !== null) {
      node.checkpointing = new Checkpointing(checkpointingHost(node), { store: store!, intervalMs: checkpoints.intervalMs, retain: checkpoints.retain, ackTimeoutMs: checkpoints.ackTimeoutMs }, uploadTag);
      node.recovery = new Recovery(node, node.checkpointing);
      await startCheckpoints(node, checkpoints.restore);
    }
    node.gateway = new Gateway(node, () => node.pumpEgress());
    if (options.adminHost !== undefined) {
      node.adminOnly = new AdminHttp(node, options.adminToken ?? null, options.tls ?? null, { admin: true, upgrades: false, adminAt: null });
      await node.adminOnly.listen(options.adminPort ?? 0, options.adminHost);
    }
    const adminAt = node.adminOnly?.origin ?? null;
    node.admin = new AdminHttp(node, options.adminToken ?? null, options.tls ?? null, { admin: adminAt === null, upgrades: true, adminAt });
    await node.admin.listen(resolved.port, resolved.host);
  } catch (error) {
    await node.close();
    await store?.close();
    throw error;
  }
  return handle(node, [...node.functions], shards);
}

function checkpointingHost(node: MainThread): CheckpointingHost {
  return {
    nodeId: node.nodeId,
    keyGroups: node.keyGroups,
    shards: node.pool.size,
    get closing() {
      return node.closing;
    },
    get discarding() {
      return node.discarding;
    },
    get restoring() {
      return node.recovery?.restoring ?? false;
    },
    get cluster() {
      return node.cluster;
    },
    writeBarrierToShards: (checkpoint) => node.writeBarrierToShards(checkpoint),
    markEvents: (checkpoint) => node.gateway?.markCheckpoint(checkpoint),
    outcome: (checkpoint, committed) => {
      node.pool.postAll({ type: 'checkpoint-outcome', checkpoint, committed });
      if (committed) node.gateway?.checkpointCommitted(checkpoint);
    },
    log: (line) => node.log(line),
  };
}

/** Restores (unless told not to) and, until a cluster takes over, leads checkpoints alone. */
async function startCheckpoints(node: MainThread, restore: boolean): Promise<void> {
  const checkpointing = node.checkpointing!;
  if (restore) {
    const restored = await node.recovery!.restoreAtStart(() => true);
    if (restored.checkpoint > 0) node.log(`checkpoints: restored checkpoint ${restored.checkpoint} (${restored.instances} instances) from ${checkpointing.store.describe()}`);
  }
  node.setRouting(() => true);
  // A node that joins a cluster waits for the cluster layer to say who coordinates.
  if (restore) await checkpointing.lead({ participants: [node.nodeId], view: 'single' });
}

function handle(node: MainThread, functionNames: string[], shards: number): StatecraftNode {
  const address = node.admin!.address!;
  const port = new NodePort(node);
  return {
    // The client port's origin as a WebSocket URL: http -> ws, https -> wss.
    url: node.admin!.origin.replace(/^http/, 'ws'),
    secure: node.admin!.secure,
    adminUrl: (node.adminOnly ?? node.admin!).origin,
    reloadTls: () => node.admin!.reloadTls(),
    host: address.host,
    port: address.port,
    nodeId: node.nodeId,
    shards,
    keyGroups: node.keyGroups,
    limits: { valueBytesMax: node.limits.valueBytesMax, idBytesMax: node.limits.idBytesMax },
    functions: functionNames,
    send: (target, value, type) => node.sendLocal(target, value, type),
    metrics: () => node.metricsNow(),
    shardOf: (keyGroup) => shardOfRoute(node.routing[keyGroup]!),
    shardHeapBytes: () => node.pool.heapBytes(),
    attachCluster: (hooks) => {
      if (node.cluster !== null) throw new StatecraftError('SC_ERR_INVALID_OPTION', 'a cluster layer is attached to this node already');
      node.cluster = hooks;
      return port;
    },
    checkpointStatus: () =>
      node.checkpointing === null ? null : { restored: node.checkpointing.restoredCheckpoint, leader: node.checkpointing.leaderStats, epoch: node.recovery!.epoch },
    close: () => node.close(),
  };
}
