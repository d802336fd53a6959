/**
 * Cluster benchmark: aggregate function→function invocations per second when every invocation sends
 * to a random address (bench/random-hop), on a cluster of N node processes (about (N-1)/N of the hops
 * cross nodes), beside the same workload on one node, and a raw `ws` batched-frame baseline (one
 * process streaming frames of 100 envelope-sized messages to another), all in the same run.
 *
 *   node bench/cluster-throughput.js [--nodes 3] [--shards 1] [--chains 4000] [--seconds 5]
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { connect, Types } from 'statecraft';
import { format, median, sleep } from './harness.js';
import { startBenchCluster, totalMetric, type BenchNode } from './processes.js';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    shards: { type: 'string', default: '1' },
    chains: { type: 'string', default: '4000' },
    seconds: { type: 'string', default: '5' },
  },
});
const nodeCount = Number(values.nodes);
const chains = Number(values.chains);
const seconds = Number(values.seconds);

/** Starts `chains` random-hop chains through the first node and samples the cluster's invocation rate. */
async function measure(nodes: BenchNode[]): Promise<{ median: number; windows: number[] }> {
  const client = await connect(nodes.map((node) => node.url));
  await Promise.all(Array.from({ length: chains }, (_, index) => client.send({ typename: 'bench/random-hop', id: `r${index * 7}` }, 0, Types.int)));
  await client.close();
  await sleep(1000); // warm-up
  const windows: number[] = [];
  let previous = await totalMetric(nodes, 'invocations');
  let previousAt = performance.now();
  for (let window = 0; window < seconds * 2; window++) {
    await sleep(500);
    const now = performance.now();
    const value = await totalMetric(nodes, 'invocations');
    windows.push(((value - previous) * 1000) / (now - previousAt));
    previous = value;
    previousAt = now;
  }
  return { median: median(windows), windows };
}

/** Raw ws baseline: a child process receives frames of 100 × 64-byte messages; we send for `seconds`. */
async function wsBaseline(): Promise<number> {
  const receiver = `
    const { WebSocketServer } = require('ws');
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    let messages = 0;
    server.on('listening', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\\n'));
    server.on('connection', (socket) => socket.on('message', (data) => {
      // Walk the frame like a receiver would: length-prefixed messages.
      for (let offset = 0; offset < data.length; offset += 4 + data.readUInt32LE(offset)) messages++;
    }));
    setInterval(() => process.stdout.write(JSON.stringify({ messages }) + '\\n'), 250);
  `;
  const child = spawn(process.execPath, ['-e', receiver], { stdio: ['ignore', 'pipe', 'inherit'], cwd: new URL('..', import.meta.url).pathname });
  let latest = 0;
  const port = await new Promise<number>((resolve) => {
    let buffered = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        if (line.port) resolve(line.port);
        if (line.messages !== undefined) latest = line.messages;
      }
    });
  });
  const { WebSocket } = await import('ws');
  const socket = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise((resolve) => socket.once('open', resolve));
  const frame = Buffer.alloc(100 * (4 + 60));
  for (let index = 0; index < 100; index++) frame.writeUInt32LE(60, index * 64);
  const started = performance.now();
  let startCount = -1;
  let startAt = 0;
  while (performance.now() - started < (seconds + 1) * 1000) {
    while (socket.bufferedAmount < 4 * 1024 * 1024) socket.send(frame);
    await new Promise((resolve) => setImmediate(resolve));
    if (startCount < 0 && performance.now() - started > 1000) {
      startCount = latest;
      startAt = performance.now();
    }
  }
  await sleep(300);
  const rate = ((latest - startCount) * 1000) / (performance.now() - 300 - startAt);
  socket.close();
  child.kill();
  return rate;
}

const baseline = await wsBaseline();
console.log(`raw ws baseline (1 process -> 1 process, frames of 100 x 64 bytes): ${format(baseline)} messages/s`);

const single = await startBenchCluster(1, ['--shards', '2']);
const singleResult = await measure(single);
await Promise.all(single.map((node) => node.stop()));
console.log(`1 node (2 shards): ${format(singleResult.median)} invocations/s (windows: ${singleResult.windows.map(format).join(', ')})`);

const cluster = await startBenchCluster(nodeCount, ['--shards', String(values.shards)]);
const clusterResult = await measure(cluster);
const crossBytes = await totalMetric(cluster, 'peer_queued_bytes');
await Promise.all(cluster.map((node) => node.stop()));
console.log(
  `${nodeCount} nodes (${values.shards} shard each), random addresses (~${Math.round((100 * (nodeCount - 1)) / nodeCount)}% of hops cross nodes): ` +
    `${format(clusterResult.median)} invocations/s (windows: ${clusterResult.windows.map(format).join(', ')})`,
);
console.log(`ratio to 1 node: ${(clusterResult.median / singleResult.median).toFixed(2)}x; to the raw ws baseline: ${(clusterResult.median / baseline).toFixed(2)}x (peer bytes queued at the end: ${crossBytes})`);
console.log(
  JSON.stringify({
    benchmark: 'cluster-throughput',
    nodes: nodeCount,
    shards_per_node: Number(values.shards),
    chains,
    invocations_per_s: Math.round(clusterResult.median),
    single_node_per_s: Math.round(singleResult.median),
    ws_batched_baseline_per_s: Math.round(baseline),
  }),
);
process.exit(0);
