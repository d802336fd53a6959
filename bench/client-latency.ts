/**
 * Benchmark (c): latency from a client's send to the client receiving the egress record it caused, at
 * 10% and 50% of the maximum client ingress rate. The maximum is measured first, in the same run (as in
 * benchmark b); the client runs in its own process. Baseline from the same run: a bare `ws` echo
 * round trip at the same rates. The first second of each run is warm-up and left out.
 *
 *   node bench/client-latency.js [--shards 2] [--max-rate N] [--seconds 5]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startNode } from 'statecraft/node';
import { WebSocketServer } from 'ws';
import { driveClient, format, quiet } from './harness.js';

const { values } = parseArgs({ options: { shards: { type: 'string', default: '2' }, 'max-rate': { type: 'string' }, seconds: { type: 'string', default: '5' } } });
const shards = Number(values.shards);
const seconds = Number(values.seconds);


const node = await startNode({ functions: [fileURLToPath(new URL('./functions.js', import.meta.url))], shards, port: 0, log: quiet() });
let maxRate = Number(values['max-rate'] ?? 0);
if (!maxRate) {
  const throughput = await driveClient('throughput', node.url, ['1500000']);
  maxRate = throughput.accepted_per_s!;
}
console.log(`maximum client ingress rate (measured): ${format(maxRate)} events/s`);

// Baseline in the same run: a bare ws echo server in this process, driven at the same rates.
const echoServer = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
await new Promise((resolve) => echoServer.once('listening', resolve));
echoServer.on('connection', (socket) => socket.on('message', (data: Buffer) => socket.send(data)));
const echoUrl = `ws://127.0.0.1:${(echoServer.address() as { port: number }).port}`;

const describe = (result: Record<string, number>) =>
  `p50 ${result.p50_ms!.toFixed(3)} ms, p90 ${result.p90_ms!.toFixed(3)} ms, p99 ${result.p99_ms!.toFixed(3)} ms, max ${result.max_ms!.toFixed(1)} ms`;
const results: Record<string, Record<string, number>> = {};
const baselines: Record<string, Record<string, number>> = {};
for (const load of [0.1, 0.5]) {
  const rate = Math.round(maxRate * load);
  const key = `${load * 100}%`;
  baselines[key] = await driveClient('ws-echo', node.url, [String(rate), String(seconds), echoUrl]);
  results[key] = await driveClient('latency', node.url, [String(rate), String(seconds)]);
  console.log(`${key} load (${format(rate)} events/s), send -> egress: ${describe(results[key]!)} (${results[key]!.received}/${results[key]!.sent} received)`);
  console.log(`${key} load, bare ws echo round trip (baseline):  ${describe(baselines[key]!)}`);
}
await node.close();
echoServer.close();
console.log(
  JSON.stringify({
    benchmark: 'client-latency',
    shards,
    max_rate_per_s: maxRate,
    p50_ms_at_10pct: Number(results['10%']!.p50_ms!.toFixed(3)),
    p99_ms_at_10pct: Number(results['10%']!.p99_ms!.toFixed(3)),
    p50_ms_at_50pct: Number(results['50%']!.p50_ms!.toFixed(3)),
    p99_ms_at_50pct: Number(results['50%']!.p99_ms!.toFixed(3)),
    ws_echo_p50_ms_at_10pct: Number(baselines['10%']!.p50_ms!.toFixed(3)),
    ws_echo_p99_ms_at_10pct: Number(baselines['10%']!.p99_ms!.toFixed(3)),
    ws_echo_p99_ms_at_50pct: Number(baselines['50%']!.p99_ms!.toFixed(3)),
  }),
);
