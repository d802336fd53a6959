/**
 * Benchmark (b): client→function events per second, from a separate client process, into one node
 * (function bench/count: one int of state per id). Baseline from the same run: the codec bound
 * (msgpackr pack + unpack of the same envelope, one thread).
 *
 *   node bench/client-ingress.js [--shards 2] [--events 3000000] [--token]
 *
 * --token: the node takes client tokens and the client sends with one scoped to bench/* (every event's
 * type is checked against the token's scopes).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ClientTokens, startNode } from 'statecraft/node';
import { codecBound } from './codec-bound.js';
import { format, median, quiet, sampleRates } from './harness.js';

const { values } = parseArgs({ options: { shards: { type: 'string', default: '2' }, events: { type: 'string', default: '3000000' }, token: { type: 'boolean', default: false } } });
const TOKEN = 'bench-client-token-0123456789abcdef';
const shards = Number(values.shards);
const events = Number(values.events);

const codec = codecBound();
console.log(`codec bound (msgpackr pack+unpack of the envelope, 1 thread): ${format(codec)} /s`);

const node = await startNode({
  functions: [fileURLToPath(new URL('./functions.js', import.meta.url))],
  shards,
  port: 0,
  log: quiet(),
  ...(values.token ? { clientTokens: ClientTokens.parse(`${TOKEN} send=bench/*`, 'bench tokens') } : {}),
});
const driver = spawn(process.execPath, [fileURLToPath(new URL('./client-driver.js', import.meta.url)), 'throughput', node.url, String(events)], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, ...(values.token ? { BENCH_CLIENT_TOKEN: TOKEN } : {}) },
});
let final: { accepted_per_s: number; accepted: number; failed: number; seconds: number } | undefined;
let buffered = '';
driver.stdout.on('data', (chunk: Buffer) => {
  buffered += chunk.toString();
  let newline: number;
  while ((newline = buffered.indexOf('\n')) >= 0) {
    const line = JSON.parse(buffered.slice(0, newline));
    buffered = buffered.slice(newline + 1);
    if (line.done) final = line;
  }
});
const exited = new Promise<void>((resolve) => driver.once('exit', () => resolve()));
// Processed events per second at the functions, sampled while the client sends.
const rates = await sampleRates(() => node.metrics().Invocations, { warmupMs: 1000, windowMs: 500, windows: 8 });
await exited;
await node.close();
const processed = median(rates);
console.log(`statecraft client->function, processed (${shards} shards): ${format(processed)} /s (windows: ${rates.map(format).join(', ')})`);
console.log(`client accepted: ${format(final?.accepted_per_s ?? NaN)} /s over the whole run (${final?.accepted} events, ${final?.failed} failed, ${final?.seconds.toFixed(1)} s)`);
console.log(`ratio to codec bound: ${(processed / codec).toFixed(2)}x`);
console.log(
  JSON.stringify({
    benchmark: 'client-ingress',
    shards,
    token: values.token,
    events_per_s: Math.round(processed),
    accepted_per_s_whole_run: final?.accepted_per_s,
    codec_bound_per_s: Math.round(codec),
    ratio_to_codec_bound: Number((processed / codec).toFixed(3)),
  }),
);
