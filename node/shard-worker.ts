/**
 * Entry point of a shard worker thread: loads the function modules, builds the shard, runs it until the
 * main thread says stop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';
import { loadFunctionModules } from './function-loader.js';
import { Shard } from './shard.js';
import type { MailboxLayout } from './mailbox.js';
import type { InvocationLimits } from './invocation.js';

export interface ShardWorkerData {
  thread: number;
  layout: MailboxLayout;
  routing: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  keyGroups: number;
  limits: InvocationLimits;
  moduleUrls: string[];
}

export type ShardToMain =
  | { type: 'ready'; functions: string[] }
  | { type: 'failed'; message: string }
  | { type: 'log'; line: string }
  | { type: 'heap'; usedBytes: number; collected: boolean }
  | { type: 'released'; request: number; exports: { keyGroup: number; bytes: Uint8Array }[]; error?: string }
  | { type: 'adopted'; request: number; instances: number; error?: string }
  | { type: 'stopped' };

export type MainToShard =
  | { type: 'stop' }
  | { type: 'heap' }
  /** Export these key groups (their routing points elsewhere already). */
  | { type: 'release'; request: number; keyGroups: number[] }
  /** Import handed-over key groups (bodies as node/handover.ts encodes them). */
  | { type: 'adopt'; request: number; bodies: Uint8Array[] }
  /** The routing table points at the adopted key groups now: it alone decides from here. */
  | { type: 'adopt-settled'; keyGroups: number[] };

const port = parentPort!;
const data = workerData as ShardWorkerData;

// A handler's stray promise (not awaited) must not take the shard down with it.
process.on('unhandledRejection', (reason) => {
  port.postMessage({ type: 'log', line: `shard ${data.thread}: unhandled rejection outside an invocation: ${String((reason as Error)?.stack ?? reason)}` } satisfies ShardToMain);
});

try {
  const definitions = await loadFunctionModules(data.moduleUrls);
  const shard = new Shard({
    thread: data.thread,
    layout: data.layout,
    routing: data.routing,
    metrics: data.metrics,
    keyGroups: data.keyGroups,
    limits: data.limits,
    definitions,
    log: (line) => port.postMessage({ type: 'log', line } satisfies ShardToMain),
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
    else if (message.type === 'heap') {
      // A full collection first when the process runs with --expose-gc, so the figure is live data only.
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      port.postMessage({ type: 'heap', usedBytes: getHeapStatistics().used_heap_size, collected: gc !== undefined } satisfies ShardToMain);
    }
  });
  port.postMessage({ type: 'ready', functions: definitions.map((definition) => definition.typename) } satisfies ShardToMain);
  await shard.run();
  port.postMessage({ type: 'stopped' } satisfies ShardToMain);
  port.close();
} catch (error) {
  port.postMessage({ type: 'failed', message: (error as Error).message } satisfies ShardToMain);
  port.close();
}
