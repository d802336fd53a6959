/**
 * Entry point of a shard worker thread: loads the function modules, builds the shard, runs it until the
 * main thread says stop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import { loadFunctionModules } from '../../lib/function-loader.js';
import { Shard, type CheckpointPart } from './shard.js';
import { openBlobStore, type BlobStore, type OpenBlobStoreOptions } from '../storage/blob-store.js';
import { channelObjectKey, encodeChannelObject, parseObjectRef, segmentObjectKey, sliceRef } from '../checkpoint/checkpoint-format.js';
import type { MailboxLayout } from '../rings/mailbox.js';
import type { InvocationLimits } from '../../lib/invocation.js';
import type { EndpointSpec } from '../remote/remote-endpoints.js';
import { closeRemoteConnections } from '../remote/remote-client.js';

export interface ShardWorkerData {
  thread: number;
  layout: MailboxLayout;
  routing: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  keyGroups: number;
  limits: InvocationLimits;
  moduleUrls: string[];
  /** Checkpoints on: where objects go, and what names this node's uploads. */
  checkpoints?: { url: string; store: OpenBlobStoreOptions; tag: string };
  /** Remote function endpoints. */
  endpoints: EndpointSpec[];
  remoteBacklogMax: number;
}

/** Objects uploaded at once per shard. */
const UPLOADS_IN_FLIGHT = 64;

export type ShardToMain =
  | { type: 'ready'; functions: string[] }
  | { type: 'failed'; message: string }
  | { type: 'log'; line: string }
  | { type: 'heap'; usedBytes: number; collected: boolean }
  | { type: 'released'; request: number; exports: { keyGroup: number; bytes: Uint8Array }[]; error?: string }
  | { type: 'adopted'; request: number; instances: number; error?: string }
  /** This shard's part of a checkpoint is uploaded: per owned key group its object key ('' empty, null unchanged). */
  | { type: 'checkpoint-part'; checkpoint: number; generation: number; objects: [number, string | null][]; channel: string | null; error: string | null }
  | { type: 'restored'; request: number; instances: number; error?: string }
  | { type: 'stopped' };

export type MainToShard =
  | { type: 'stop' }
  | { type: 'heap' }
  /** Export these key groups (their routing points elsewhere already). */
  | { type: 'release'; request: number; keyGroups: number[] }
  /** Import handed-over key groups (bodies as node/keygroups/handover.ts encodes them). */
  | { type: 'adopt'; request: number; bodies: Uint8Array[] }
  /** The routing table points at the adopted key groups now: it alone decides from here. */
  | { type: 'adopt-settled'; keyGroups: number[] }
  /** The coordinator's decision on a checkpoint. */
  | { type: 'checkpoint-outcome'; checkpoint: number; committed: boolean }
  /** A recovery: forget everything; `generation` names this node's uploads from now on. */
  | { type: 'reset'; request: number; phase: 1 | 2; generation: number }
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
  const reply = (objects: [number, string | null][], channel: string | null, error: string | null) =>
    port.postMessage({ type: 'checkpoint-part', checkpoint: part.checkpoint, generation: part.generation, objects, channel, error } satisfies ShardToMain);
  if (part.error !== null) return reply([], null, part.error);
  const tag = `${data.checkpoints!.tag}-t${data.thread}-g${part.generation}`;
  const objects: [number, string | null][] = [];
  const puts: [string, Uint8Array][] = [];
  // One object per shard and checkpoint, the key groups back to back: a store's cost is per object.
  const segmentKey = segmentObjectKey(part.checkpoint, tag);
  let segmentBytes = 0;
  for (const [, body] of part.keyGroups) if (body instanceof Uint8Array) segmentBytes += body.length;
  const segment = new Uint8Array(segmentBytes);
  let offset = 0;
  for (const [keyGroup, body] of part.keyGroups) {
    if (body === null || body === '') objects.push([keyGroup, body]);
    else {
      segment.set(body, offset);
      objects.push([keyGroup, sliceRef(segmentKey, offset, body.length)]);
      offset += body.length;
    }
  }
  if (segmentBytes > 0) puts.push([segmentKey, segment]);
  let channel: string | null = null;
  if (part.channel !== null) {
    channel = channelObjectKey(part.checkpoint, tag);
    puts.push([channel, encodeChannelObject(part.checkpoint, part.channel)]);
  }
  try {
    let next = 0;
    const worker = async () => {
      while (next < puts.length) {
        const [key, bytes] = puts[next++]!;
        await store!.put(key, bytes);
      }
    };
    await Promise.all(Array.from({ length: Math.min(UPLOADS_IN_FLIGHT, puts.length) }, worker));
  } catch (error) {
    return reply([], null, `upload failed: ${(error as Error).message}`);
  }
  reply(objects, channel, null);
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
    log: (line) => port.postMessage({ type: 'log', line } satisfies ShardToMain),
    ...(store === null ? {} : { onCheckpointPart: (part: CheckpointPart) => void upload(part) }),
  });
  // This listener also keeps the thread alive while the loop is parked on Atomics.waitAsync.
  port.on('message', (message: MainToShard) => {
    if (message.type === 'stop') shard.stop();
    else if (message.type === 'release') {
      shard.release(message.keyGroups).then(
        (exports) => port.postMessage({ type: 'released', request: message.request, exports } satisfies ShardToMain),
        (error: Error) => port.postMessage({ type: 'released', request: message.request, exports: [], error: error.message } satisfies ShardToMain),
      );
    } else if (message.type === 'adopt-settled') {
      shard.settleAdopted(message.keyGroups);
    } else if (message.type === 'adopt') {
      let reply: ShardToMain;
      try {
        reply = { type: 'adopted', request: message.request, instances: shard.adopt(message.bodies) };
      } catch (error) {
        reply = { type: 'adopted', request: message.request, instances: 0, error: (error as Error).message };
      }
      port.postMessage(reply);
    }
    else if (message.type === 'checkpoint-outcome') shard.checkpointOutcome(message.checkpoint, message.committed);
    else if (message.type === 'reset') {
      shard.generation = message.generation;
      shard.reset(message.phase);
      port.postMessage({ type: 'restored', request: message.request, instances: 0 } satisfies ShardToMain);
    } else if (message.type === 'restore') {
      void (async () => {
        try {
          const bodies: Uint8Array[] = [];
          // Each object once (key groups share segment objects), a few at a time; each is verified
          // against its checksum.
          const refs = message.keys.map(parseObjectRef);
          const objectKeys = [...new Set(refs.map((ref) => ref.key))];
          const fetched = new Map<string, Uint8Array>();
          for (let index = 0; index < objectKeys.length; index += UPLOADS_IN_FLIGHT) {
            await Promise.all(
              objectKeys.slice(index, index + UPLOADS_IN_FLIGHT).map(async (key) => {
                const bytes = await store!.get(key);
                if (bytes === null) throw new Error(`checkpoint object ${key} is missing`);
                fetched.set(key, bytes);
              }),
            );
          }
          for (const ref of refs) {
            const bytes = fetched.get(ref.key)!;
            if (ref.length === null) bodies.push(bytes);
            else if (ref.offset + ref.length > bytes.length) throw new Error(`checkpoint object ${ref.key} is shorter than its slice ${ref.offset}+${ref.length}`);
            else bodies.push(bytes.subarray(ref.offset, ref.offset + ref.length));
          }
          const instances = shard.restore(message.checkpoint, bodies, message.fallback);
          shard.markRestored(message.clean);
          port.postMessage({ type: 'restored', request: message.request, instances } satisfies ShardToMain);
        } catch (error) {
          port.postMessage({ type: 'restored', request: message.request, instances: 0, error: (error as Error).message } satisfies ShardToMain);
        }
      })();
    } else if (message.type === 'resume') {
      shard.resume();
    } else if (message.type === 'heap') {
      // A full collection first when the process runs with --expose-gc, so the figure is live data only.
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      port.postMessage({ type: 'heap', usedBytes: getHeapStatistics().used_heap_size, collected: gc !== undefined } satisfies ShardToMain);
    }
  });
  port.postMessage({ type: 'ready', functions: definitions.map((definition) => definition.typename) } satisfies ShardToMain);
  await shard.run();
  closeRemoteConnections();
  await store?.close();
  port.postMessage({ type: 'stopped' } satisfies ShardToMain);
  port.close();
} catch (error) {
  port.postMessage({ type: 'failed', message: (error as Error).message } satisfies ShardToMain);
  port.close();
}
