/**
 * Benchmark: remote functions (StateFun's request-reply protocol over HTTP) against the same functions
 * embedded, in the same run, on one node.
 *
 *   1. throughput: stateful invocations per second on a ring of addresses kept busy by many message
 *      chains, embedded (baseline) and through a function host process (node cluster/serve.js) over
 *      keep-alive HTTP; the node batches what waits per address (maxNumBatchRequests); and remote with
 *      one chain per address, where nothing waits and every request carries one invocation;
 *   2. latency: one invocation at a time, client event to egress record, embedded and remote (p50/p99);
 *   3. a hot address: every chain on one address, with batching (maxNumBatchRequests 1000) and without (1).
 *
 *   node bench/remote.js [--seconds 5] [--shards 2] [--host-threads 2] [--addresses 256] [--chains 25600]
 *
 * The last line is one JSON object with remote_invocations_per_s and embedded_invocations_per_s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect, Types } from 'statecraft';
import { startNode, type StatecraftNode } from 'statecraft/node';
import { ENDPOINT_DEFAULTS } from '../node/remote/remote-endpoints.js';
import { format, median, percentile, quiet, sampleRates, sleep } from './harness.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    shards: { type: 'string', default: '2' },
    'host-threads': { type: 'string', default: '2' },
    addresses: { type: 'string', default: '256' },
    chains: { type: 'string', default: '25600' },
    samples: { type: 'string', default: '2000' },
  },
});
const seconds = Number(values.seconds);
const shards = Number(values.shards);
const hostThreads = Number(values['host-threads']);
const addresses = Number(values.addresses);
const chains = Number(values.chains);
const samples = Number(values.samples);
const functionsModule = fileURLToPath(new URL('./remote-functions.js', import.meta.url));
const serveScript = fileURLToPath(new URL('../cluster/serve.js', import.meta.url));

async function startHost(ringAddresses: number): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [serveScript, '--functions', functionsModule, '--port', '0', '--threads', String(hostThreads)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RBENCH_ADDRESSES: String(ringAddresses) },
  });
  const url = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready (\S+)/.exec(output);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`the function host exited (${code}): ${output}`)));
  });
  return { child, url };
}

async function stopHost(host: { child: ChildProcess }): Promise<void> {
  const exited = new Promise((resolve) => host.child.once('exit', resolve));
  host.child.kill('SIGTERM');
  await exited;
}

/** A node running the module embedded, or pointing at a host. */
async function startBenchNode(remote: { url: string; batchMax: number } | null, ringAddresses: number): Promise<StatecraftNode> {
  process.env.RBENCH_ADDRESSES = String(ringAddresses);
  return startNode({
    functions: remote === null ? [functionsModule] : [],
    ...(remote === null ? {} : { endpoints: [{ ...ENDPOINT_DEFAULTS, functions: 'rbench/*', urlPathTemplate: remote.url, maxNumBatchRequests: remote.batchMax }] }),
    shards,
    port: 0,
    log: quiet(),
  });
}

/** Invocations per second (median of half-second windows) with `chainCount` chains on a ring of `ringAddresses`. */
async function ringRate(node: StatecraftNode, ringAddresses: number, chainCount: number): Promise<{ rate: number; batch: number }> {
  for (let index = 0; index < chainCount; index++) node.send({ typename: 'rbench/ring', id: `a${index % ringAddresses}` }, 1e9, Types.int);
  const before = node.metrics();
  const rates = await sampleRates(() => node.metrics().Invocations, { warmupMs: 2000, windowMs: 500, windows: seconds * 2 });
  const after = node.metrics();
  const requests = after.RemoteRequests - before.RemoteRequests;
  return { rate: median(rates), batch: requests > 0 ? (after.Invocations - before.Invocations) / requests : 0 };
}

/** Client event → egress record, one at a time. */
async function latency(node: StatecraftNode): Promise<{ p50: number; p99: number }> {
  const client = await connect(node.url, { confirm: 'accept' });
  const echoes = client.subscribe<number>('rbench-echo', { type: Types.double });
  const iterator = echoes[Symbol.asyncIterator]();
  const times: number[] = [];
  for (let index = 0; index < samples + 200; index++) {
    const started = performance.now();
    void client.send({ typename: 'rbench/echo', id: `e${index % 64}` }, started, Types.double);
    await iterator.next();
    if (index >= 200) times.push(performance.now() - started);
  }
  await client.close();
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
}

const ms = (value: number) => `${value.toFixed(2)} ms`;

console.log(`remote functions: ${shards} shards, function host with ${hostThreads} threads (separate process), ${seconds} s per measurement`);

// 1 + 2: embedded baseline, then remote, same workload.
let node = await startBenchNode(null, addresses);
const embedded = await ringRate(node, addresses, chains);
await node.close();
node = await startBenchNode(null, addresses);
const embeddedLatency = await latency(node);
await node.close();

let host = await startHost(addresses);
node = await startBenchNode({ url: host.url, batchMax: ENDPOINT_DEFAULTS.maxNumBatchRequests }, addresses);
const remote = await ringRate(node, addresses, chains);
await node.close();
node = await startBenchNode({ url: host.url, batchMax: ENDPOINT_DEFAULTS.maxNumBatchRequests }, addresses);
const remoteLatency = await latency(node);
await node.close();
// Nothing ever waits: one chain per address, so every request carries one invocation (request-bound).
node = await startBenchNode({ url: host.url, batchMax: ENDPOINT_DEFAULTS.maxNumBatchRequests }, addresses);
const sparse = await ringRate(node, addresses, addresses);
await node.close();
await stopHost(host);

console.log(`throughput, ring of ${addresses} addresses with ${chains} chains (stateful: read, write, send one message):`);
console.log(`  embedded                ${format(embedded.rate).padStart(10)} invocations/s`);
console.log(`  remote (HTTP host)      ${format(remote.rate).padStart(10)} invocations/s   ratio ${(remote.rate / embedded.rate).toFixed(2)}   ${remote.batch.toFixed(1)} invocations per request`);
console.log(`  remote, 1 chain/address ${format(sparse.rate).padStart(10)} invocations/s   ${sparse.batch.toFixed(1)} invocations per request (nothing waits: one HTTP request per invocation)`);
console.log(`latency, one invocation at a time (client event -> egress record), ${samples} samples:`);
console.log(`  embedded                p50 ${ms(embeddedLatency.p50)}   p99 ${ms(embeddedLatency.p99)}`);
console.log(`  remote (HTTP host)      p50 ${ms(remoteLatency.p50)}   p99 ${ms(remoteLatency.p99)}   (+${ms(remoteLatency.p50 - embeddedLatency.p50)} at p50)`);

// 3: one hot address, batched and not.
const hotChains = Math.min(chains, 1000);
host = await startHost(1);
node = await startBenchNode({ url: host.url, batchMax: ENDPOINT_DEFAULTS.maxNumBatchRequests }, 1);
const hotBatched = await ringRate(node, 1, hotChains);
await node.close();
node = await startBenchNode({ url: host.url, batchMax: 1 }, 1);
const hotSingle = await ringRate(node, 1, hotChains);
await node.close();
await stopHost(host);
console.log(`one hot address, ${hotChains} chains on it (one request in flight per address):`);
console.log(`  maxNumBatchRequests 1000 ${format(hotBatched.rate).padStart(10)} invocations/s   ${hotBatched.batch.toFixed(1)} invocations per request`);
console.log(`  maxNumBatchRequests 1    ${format(hotSingle.rate).padStart(10)} invocations/s   batching gain ${(hotBatched.rate / hotSingle.rate).toFixed(1)}x`);

await sleep(10);
console.log(
  JSON.stringify({
    remote_invocations_per_s: Math.round(remote.rate),
    embedded_invocations_per_s: Math.round(embedded.rate),
    remote_to_embedded: Number((remote.rate / embedded.rate).toFixed(3)),
    remote_invocations_per_request: Number(remote.batch.toFixed(1)),
    remote_unbatched_invocations_per_s: Math.round(sparse.rate),
    remote_latency_p50_ms: Number(remoteLatency.p50.toFixed(3)),
    remote_latency_p99_ms: Number(remoteLatency.p99.toFixed(3)),
    embedded_latency_p50_ms: Number(embeddedLatency.p50.toFixed(3)),
    embedded_latency_p99_ms: Number(embeddedLatency.p99.toFixed(3)),
    hot_address_batched_per_s: Math.round(hotBatched.rate),
    hot_address_unbatched_per_s: Math.round(hotSingle.rate),
    hot_address_batching_gain: Number((hotBatched.rate / hotSingle.rate).toFixed(2)),
  }),
);
