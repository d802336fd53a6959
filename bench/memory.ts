/**
 * Benchmark (d): memory per idle address. Creates 1,000,000 addresses that each hold one int
 * (function bench/count), lets them go idle, and compares the shards' live heap before and after.
 * Run with --expose-gc (npm run bench does) so each figure follows a full collection.
 *
 *   node --expose-gc bench/memory.js [--addresses 1000000] [--shards 2]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startNode } from 'statecraft/node';
import { format, quiet, sleep } from './harness.js';

const { values } = parseArgs({ options: { addresses: { type: 'string', default: '1000000' }, shards: { type: 'string', default: '2' } } });
const addresses = Number(values.addresses);
const shards = Number(values.shards);
if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  console.error('run with node --expose-gc, so heap figures follow a full collection');
  process.exit(2);
}

const node = await startNode({ functions: [fileURLToPath(new URL('./functions.js', import.meta.url))], shards, port: 0, log: quiet() });
// Warm up the code paths first (so compiled code is not counted as state), then measure the baseline.
for (let index = 0; index < 10_000; index++) node.send({ typename: 'bench/count', id: `warm-${index}` }, 1);
while (node.metrics().Instances < 10_000) await sleep(10);
const before = (await node.shardHeapBytes()).reduce((sum, bytes) => sum + bytes, 0);
const instancesBefore = node.metrics().Instances;

const started = performance.now();
for (let index = 0; index < addresses; index++) {
  node.send({ typename: 'bench/count', id: `user-${index}` }, 1);
  // Keep the rings from filling faster than the shards drain them.
  if (index % 20_000 === 0) while (node.metrics().Backlog > 50_000 || node.metrics().Instances < instancesBefore + index - 100_000) await sleep(1);
}
while (node.metrics().Instances < instancesBefore + addresses) await sleep(10);
const createSeconds = (performance.now() - started) / 1000;
await sleep(200);
const after = (await node.shardHeapBytes()).reduce((sum, bytes) => sum + bytes, 0);
await node.close();

const perAddress = (after - before) / addresses;
// The state itself: one int per address; held as a small integer in the record slot, 0 extra bytes.
console.log(`created ${format(addresses)} addresses in ${createSeconds.toFixed(1)} s (${format(addresses / createSeconds)} /s)`);
console.log(`shard heaps: ${format(before)} bytes before, ${format(after)} after (${shards} shards)`);
console.log(`memory per idle address: ${perAddress.toFixed(1)} bytes (id string, map entry and record; the int itself is stored inline)`);
console.log(JSON.stringify({ benchmark: 'memory', addresses, shards, heap_before_bytes: before, heap_after_bytes: after, bytes_per_idle_address: Number(perAddress.toFixed(1)) }));
