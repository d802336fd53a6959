/**
 * Entry point of a shard worker thread: loads the function modules, builds the shard, runs it until the
 * main thread says stop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import type { ErrorCode, StatecraftError } from '../../lib/errors.js';
import { loadFunctionModules } from '../../lib/function-loader.js';
import { Shard } from './shard.js';
import { openBlobStore, type BlobStore, type OpenBlobStoreOptions } from '../storage/blob-store.js';
import type { CheckpointPart } from '../checkpoint/shard-cut.js';
import { fetchImages, uploadPart } from '../checkpoint/part-upload.js';
import type { MailboxLayout } from '../rings/mailbox.js';
import type { InvocationLimits } from '../../lib/invocation.js';
import type { EndpointSpec } from '../remote/remote-endpoints.js';
import { closeRemoteConnections } from '../remote/remote-client.js';
import { beatFromShard } from '../rings/beats.js';

export interface ShardWorkerData {
  thread: number;
  layout: MailboxLayout;
  routing: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  /** Liveness stamps, one per shard (rings/beats.ts). */
  beats: SharedArrayBuffer;
  keyGroups: number;
  limits: InvocationLimits;
  moduleUrls: string[];
  /** Checkpoints on: where objects go, and what names this node's uploads. */
  checkpoints?: { url: string; store: OpenBlobStoreOptions; tag: string };
  /** Remote function endpoints. */
  endpoints: EndpointSpec[];
  remoteBacklogMax: number;
  remoteAttemptsMax: number;
  delayedPendingMax: number;
  handlerTimeoutMs: number;
}

export type ShardToMain =
  | { type: 'ready'; functions: string[] }
  | { type: 'failed'; message: string }
  | { type: 'log'; line: string }
  | { type: 'heap'; usedBytes: number; collected: boolean }
  | { type: 'released'; request: number; exports: { keyGroup: number; bytes: Uint8Array }[]; error?: string }
  | { type: 'adopted'; request: number; instances: number; error?: string }
  /** This shard's part of a checkpoint is uploaded: per owned key group its object key ('' empty, null unchanged). */
  | { type: 'checkpoint-part'; checkpoint: number; epoch: number; objects: [number, string | null][]; instances: [number, number][]; channel: string | null; error: string | null }
  | { type: 'restored'; request: number; instances: number; dropped?: number; error?: string; code?: ErrorCode }
  | { type: 'stopped' };

export type MainToShard =
  | { type: 'stop' }
  | { type: 'heap' }
  /** Export these key groups (their routing points elsewhere already). */
  | { type: 'release'; request: number; keyGroups: number[] }
  /** Import handed-over key groups (images as node/keygroups/key-group-image.ts encodes them). */
  | { type: 'adopt'; request: number; bodies: Uint8Array[] }
  /** The routing table points at the adopted key groups now: it alone decides from here. */
  | { type: 'adopt-settled'; keyGroups: number[] }
  /** The coordinator's decision on a checkpoint. */
  | { type: 'checkpoint-outcome'; checkpoint: number; committed: boolean }
  /** A recovery: forget everything; `epoch` names this node's uploads from now on. */
  | { type: 'reset'; request: number; phase: 1 | 2; epoch: number }
  /**
   * Load these key-group objects of committed checkpoint `checkpoint` (`clean`: key groups it had nothing
   * for); the shard runs nothing until 'resume'. `fallback`: an older checkpoint than the last committed.
   */
  | { type: 'restore'; request: number; checkpoint: number; keys: string[]; clean: number[]; fallback: boolean }
  /** Every shard has loaded: run what the restored key groups had queued, then go on. */
  | { type: 'resume' };

const port = parentPort!;
const data = workerData as ShardWorkerData;

// A handler's stray promise (not awaited) must not take the shard down with it.
process.on('unhandledRejection', (reason) => {
  port.postMessage({ type: 'log', line: `shard ${data.thread}: unhandled rejection outside an invocation: ${String((reason as Error)?.stack ?? reason)}` } satisfies ShardToMain);
});

let store: BlobStore | null = null;

/** Uploads a shard's part and tells the main thread which objects hold it. */
async function upload(part: CheckpointPart): Promise<void> {
  const tag = `${data.checkpoints!.tag}-t${data.thread}-g${part.epoch}`;
  const { objects, instances, channel, error } = await uploadPart(store!, tag, part);
  port.postMessage({ type: 'checkpoint-part', checkpoint: part.checkpoint, epoch: part.epoch, objects, instances, channel, error } satisfies ShardToMain);
}

function reply(message: ShardToMain): void {
  port.postMessage(message);
}

try {
  const definitions = await loadFunctionModules(data.moduleUrls);
  if (data.checkpoints !== undefined) store = await openBlobStore(data.checkpoints.url, data.checkpoints.store);
  const shard = new Shard({
    thread: data.thread,
    layout: data.layout,
    routing: data.routing,
    metrics: data.metrics,
    keyGroups: data.keyGroups,
    limits: data.limits,
    definitions,
    endpoints: data.endpoints,
    remoteBacklogMax: data.remoteBacklogMax,
    remoteAttemptsMax: data.remoteAttemptsMax,
    delayedPendingMax: data.delayedPendingMax,
    handlerTimeoutMs: data.handlerTimeoutMs,
    log: (line) => reply({ type: 'log', line }),
    ...(store === null ? {} : { onCheckpointPart: (part: CheckpointPart) => void upload(part) }),
  });
  beatFromShard(data.beats, data.thread);
  const moves = shard.moves;
  // This listener also keeps the thread alive while the loop is parked on Atomics.waitAsync.
  port.on('message', (message: MainToShard) => {
    switch (message.type) {
      case 'stop':
        shard.stop();
        break;
      case 'release':
        moves.release(message.keyGroups).then(
          (exports) => reply({ type: 'released', request: message.request, exports }),
          (error: Error) => reply({ type: 'released', request: message.request, exports: [], error: error.message }),
        );
        break;
      case 'adopt-settled':
        moves.settleAdopted(message.keyGroups);
        break;
      case 'adopt':
        try {
          reply({ type: 'adopted', request: message.request, instances: moves.adopt(message.bodies) });
        } catch (error) {
          reply({ type: 'adopted', request: message.request, instances: 0, error: (error as Error).message });
        }
        break;
      case 'checkpoint-outcome':
        shard.cut?.outcome(message.checkpoint, message.committed);
        break;
      case 'reset':
        shard.epoch = message.epoch;
        moves.reset(message.phase);
        reply({ type: 'restored', request: message.request, instances: 0 });
        break;
      case 'restore':
        void (async () => {
          try {
            const images = await fetchImages(store!, message.keys);
            const { instances, dropped } = moves.restore(message.checkpoint, images, message.clean, message.fallback);
            reply({ type: 'restored', request: message.request, instances, dropped });
          } catch (error) {
            reply({ type: 'restored', request: message.request, instances: 0, error: (error as Error).message, code: (error as StatecraftError).code ?? 'SC_ERR_INTERNAL' });
          }
        })();
        break;
      case 'resume':
        moves.resume();
        break;
      case 'heap': {
        // A full collection first when the process runs with --expose-gc, so the figure is live data only.
        const gc = (globalThis as { gc?: () => void }).gc;
        gc?.();
        reply({ type: 'heap', usedBytes: getHeapStatistics().used_heap_size, collected: gc !== undefined });
        break;
      }
    }
  });
  reply({ type: 'ready', functions: definitions.map((definition) => definition.typename) });
  await shard.run();
  closeRemoteConnections();
  await store?.close();
  reply({ type: 'stopped' });
  port.close();
} catch (error) {
  reply({ type: 'failed', message: (error as Error).message });
  port.close();
}
