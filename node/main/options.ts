/**
 * What a node can be given (`startNode(options)`), and the one place those options are checked: every
 * bad value is an SC_ERR_INVALID_OPTION that names the option and what it accepts.
 */
import { availableParallelism } from 'node:os';
import { ID_BYTES_MAX_DEFAULT, ID_BYTES_WIRE_MAX } from '../../lib/address.js';
import { ValidationError } from '../../lib/errors.js';
import { DELAYED_PENDING_MAX_DEFAULT } from '../shard/delayed-limit.js';
import { HANDLER_TIMEOUT_MS_DEFAULT } from '../shard/shard-context.js';
import { SHARD_STALL_MS_DEFAULT } from './shard-watchdog.js';
import { KEY_GROUPS_DEFAULT, KEY_GROUPS_MAX } from '../../lib/key-group.js';
import { wholeNumberOption as option } from '../../lib/options.js';
import { recordBytesMax } from '../rings/spsc-ring.js';
import type { EndpointSpec } from '../remote/remote-endpoints.js';
import type { ClientTokens } from './client-tokens.js';


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
  /**
   * Calls of one message that may fail for an outage of its endpoint (down, or failing past its call
   * budget) before it becomes a dead letter; until then it waits, in order, and is sent again with
   * back-off. 0 (the default): no limit, nothing is lost to an outage.
   */
  remoteAttemptsMax?: number;
  /** Delayed messages one instance may have pending; an invocation that would leave more fails whole. Default 100,000. */
  delayedPendingMax?: number;
  /**
   * How long an async handler may run, in ms; past it the invocation is abandoned (its effects
   * discarded, a dead letter SC_ERR_HANDLER_TIMEOUT) and its address goes on. Default 10,000.
   */
  handlerTimeoutMs?: number;
  /** How long a shard thread may go without answering before it counts as stalled (/health 503). Default 10,000. */
  shardStallMs?: number;
  /** Called when a shard dies (a runtime bug): the node cannot go on. Default: log and exit with code 70. */
  onFatal?: (error: Error) => void;
  /**
   * Exactly-once: consistent checkpoints to a blob store, egress released on commit, client events
   * confirmed on commit, recovery from the last committed checkpoint. Off when absent.
   */
  checkpoints?: CheckpointOptions;
  /**
   * Client tokens (ClientTokens.parse of a --client-tokens-file): only clients with one connect, each
   * within its scopes. Absent: every client is taken (keep the port private then).
   */
  clientTokens?: ClientTokens;
  /** A token admin endpoints (/metrics, /cluster; not /health) want as `Authorization: Bearer <token>`. Absent: they are open. */
  adminToken?: string;
  /** Client connections taken at once; more are refused (503) before the upgrade. Default 10,000. */
  clientConnectionsMax?: number;
  /** TLS on the node's port (wss://, https://, and between peers): PEM file paths, read again by `reloadTls()`. */
  tls?: TlsFiles;
  /**
   * Admin endpoints (/metrics, /cluster) on a listener of their own, at this interface (127.0.0.1, say)
   * and `adminPort` (0: the OS chooses); the client port then serves only clients, peers and /health.
   */
  adminHost?: string;
  adminPort?: number;
}

/** A certificate chain and its key, as PEM file paths (the public options import nothing of ws: see package.test). */
export interface TlsFiles {
  cert: string;
  key: string;
  /** CA certificates the peers' client certificates are checked against (mutual TLS between nodes). */
  clientCa?: string;
}

/** The options checked, with every default filled in. */
export interface ResolvedOptions {
  endpoints: EndpointSpec[];
  remoteBacklogMax: number;
  remoteAttemptsMax: number;
  delayedPendingMax: number;
  handlerTimeoutMs: number;
  shardStallMs: number;
  shards: number;
  keyGroups: number;
  valueBytesMax: number;
  idBytesMax: number;
  port: number;
  host: string;
  ringBytes: number;
  /** The largest envelope a ring must take (the frame limit derives from it). */
  envelopeBytesMax: number;
  egressRetainRecords: number;
  egressRetainBytes: number;
  backlogMax: number;
  clientConnectionsMax: number;
  checkpoints: {
    url: string;
    storeOptions: { endpoint?: string; region?: string; fsync?: boolean };
    intervalMs: number;
    retain: number;
    ackTimeoutMs: number;
    restore: boolean;
  } | null;
}

export const MiB = 1024 * 1024;

export function nextPowerOfTwo(value: number): number {
  return 2 ** Math.ceil(Math.log2(value));
}

/** Checks `options` and fills in the defaults; throws SC_ERR_INVALID_OPTION for the first bad one. */
export function resolveOptions(options: NodeOptions): ResolvedOptions {
  const endpoints = [...(options?.endpoints ?? [])];
  if (!options || !Array.isArray(options.functions) || (options.functions.length === 0 && endpoints.length === 0)) {
    throw new ValidationError(
      'SC_ERR_INVALID_OPTION',
      'functions: give at least one module that exports function definitions (--functions path/to/module.js), or remote endpoints (--endpoint, --module).',
    );
  }
  const remoteBacklogMax = option('remoteBacklogMax', options.remoteBacklogMax, 100_000, 1, 100_000_000);
  const remoteAttemptsMax = option('remoteAttemptsMax', options.remoteAttemptsMax, 0, 0, 1_000_000);
  const delayedPendingMax = option('delayedPendingMax', options.delayedPendingMax, DELAYED_PENDING_MAX_DEFAULT, 1, 100_000_000);
  const handlerTimeoutMs = option('handlerTimeoutMs', options.handlerTimeoutMs, HANDLER_TIMEOUT_MS_DEFAULT, 1, 24 * 3_600_000);
  const shardStallMs = option('shardStallMs', options.shardStallMs, SHARD_STALL_MS_DEFAULT, 1000, 24 * 3_600_000);
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
  const clientConnectionsMax = option('clientConnectionsMax', options.clientConnectionsMax, 10_000, 1, 10_000_000);
  let checkpoints: ResolvedOptions['checkpoints'] = null;
  if (options.checkpoints !== undefined) {
    const given = options.checkpoints;
    checkpoints = {
      url: given.store,
      storeOptions: {
        ...(given.s3Endpoint === undefined ? {} : { endpoint: given.s3Endpoint }),
        ...(given.s3Region === undefined ? {} : { region: given.s3Region }),
        ...(given.fsync === undefined ? {} : { fsync: given.fsync }),
      },
      intervalMs: option('checkpoints.intervalMs', given.intervalMs, 1000, 10, 3_600_000),
      retain: option('checkpoints.retain', given.retain, 3, 1, 1000),
      ackTimeoutMs: option('checkpoints.ackTimeoutMs', given.ackTimeoutMs, 10_000, 100, 3_600_000),
      restore: given.restore ?? true,
    };
  }
  return {
    endpoints,
    remoteBacklogMax,
    remoteAttemptsMax,
    delayedPendingMax,
    handlerTimeoutMs,
    shardStallMs,
    shards,
    keyGroups,
    valueBytesMax,
    idBytesMax,
    port,
    host: options.host ?? '127.0.0.1',
    ringBytes,
    envelopeBytesMax,
    egressRetainRecords,
    egressRetainBytes,
    backlogMax,
    clientConnectionsMax,
    checkpoints,
  };
}
