/**
 * Benchmark (a): function→function invocations per second on one node, where each invocation sends one
 * message to an address on another shard. Baselines from the same run:
 *   - codec bound: msgpackr pack + unpack of the same envelope, in one thread;
 *   - postMessage: the same hop workload between worker threads, routed with postMessage.
 *
 *   node bench/function-to-function.js [--shards 2] [--seconds 5]
 */
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { startNode } from 'statecraft/node';
import { codecBound } from './codec-bound.js';
import { format, median, quiet, sampleRates, sleep } from './harness.js';

const { values } = parseArgs({ options: { shards: { type: 'string', default: '2' }, seconds: { type: 'string', default: '5' }, chains: { type: 'string', default: '2000' } } });
const shards = Number(values.shards);
const seconds = Number(values.seconds);
const chains = Number(values.chains);

// ---- postMessage baseline: two workers passing hop messages through a MessageChannel ----
async function postMessageBaseline(): Promise<number> {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const state = new Map();
    let port; let invocations = 0; const counter = new Float64Array(workerData.counter);
    parentPort.on('message', (message) => {
      if (message.port) {
        port = message.port;
        port.on('message', (hop) => {
          // invoke: look up the instance, count, send one message on
          state.set(hop.target.id, (state.get(hop.target.id) ?? 0) + 1);
          invocations++;
          if ((invocations & 1023) === 0) counter[0] = invocations;
          port.postMessage({ target: { typename: 'bench/hop', id: hop.caller.id }, caller: hop.target, value: hop.value + 1 });
        });
        return;
      }
      for (let index = 0; index < message.seed; index++) port.postMessage({ target: { typename: 'bench/hop', id: 'h' + index }, caller: { typename: 'bench/hop', id: 'h' + (index + 1) }, value: 0 });
    });`;
  const counters = [new SharedArrayBuffer(8), new SharedArrayBuffer(8)];
  const workers = counters.map((counter) => new Worker(source, { eval: true, workerData: { counter } }));
  const { port1, port2 } = new MessageChannel();
  workers[0]!.postMessage({ port: port1 }, [port1 as never]);
  workers[1]!.postMessage({ port: port2 }, [port2 as never]);
  await sleep(100);
  workers[0]!.postMessage({ seed: chains / 2 });
  workers[1]!.postMessage({ seed: chains / 2 });
  const views = counters.map((counter) => new Float64Array(counter));
  const rates = await sampleRates(() => views[0]![0]! + views[1]![0]!, { warmupMs: 1000, windowMs: 500, windows: seconds * 2 });
  await Promise.all(workers.map((worker) => worker.terminate()));
  return median(rates);
}

// ---- Statecraft: a node with `shards` shards running bench/hop ----
async function statecraft(): Promise<{ rate: number; rates: number[] }> {
  process.env.BENCH_SHARDS = String(shards);
  process.env.BENCH_HOPS_MAX = String(Math.ceil((3_000_000 * (seconds + 3)) / chains));
  const node = await startNode({ functions: [fileURLToPath(new URL('./functions.js', import.meta.url))], shards, port: 0, log: quiet() });
  for (let index = 0; index < chains; index++) node.send({ typename: 'bench/hop', id: `h${index}` }, 0);
  const rates = await sampleRates(() => node.metrics().Invocations, { warmupMs: 1000, windowMs: 500, windows: seconds * 2 });
  await node.close();
  return { rate: median(rates), rates };
}

const codec = codecBound();
console.log(`codec bound (msgpackr pack+unpack of the envelope, 1 thread): ${format(codec)} /s`);
const postMessage = await postMessageBaseline();
console.log(`postMessage hop baseline (2 workers):                         ${format(postMessage)} /s`);
const { rate, rates } = await statecraft();
console.log(`statecraft function->function (${shards} shards, cross-shard):  ${format(rate)} /s (windows: ${rates.map(format).join(', ')})`);
console.log(`ratio to codec bound: ${(rate / codec).toFixed(2)}x, to postMessage: ${(rate / postMessage).toFixed(2)}x`);
console.log(
  JSON.stringify({
    benchmark: 'function-to-function',
    shards,
    chains,
    invocations_per_s: Math.round(rate),
    codec_bound_per_s: Math.round(codec),
    postmessage_per_s: Math.round(postMessage),
    ratio_to_codec_bound: Number((rate / codec).toFixed(3)),
    ratio_to_postmessage: Number((rate / postMessage).toFixed(3)),
  }),
);
