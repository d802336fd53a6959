/**
 * Benchmark: one shard's turn loop alone — local invocations per second of a shard driven in this
 * thread (no worker, no ring traffic): each invocation of bench/hop sends one message to another
 * address of the same shard, which the next turn delivers. It isolates the per-invocation cost of the
 * shard's own code (delivery, the invocation, applying effects, the local queue), so two commits can
 * be compared on it (run each a few times, interleaved). Baseline from the same run: the codec bound.
 * The same chains once more as delayed messages due at once (`sendAfter(0, …)`): the timer path
 * (scheduling, the per-instance pending count and its limit, firing), next to the direct sends.
 *
 *   node bench/shard-loop.js [--invocations 2000000] [--rounds 5]
 */
import { parseArgs } from 'node:util';
import { keyGroupOf } from '../lib/key-group.js';
import { Message } from '../lib/message.js';
import { createMailboxLayout } from '../node/rings/mailbox.js';
import { createMetricsBuffer } from '../node/rings/metrics.js';
import { Shard } from '../node/shard/shard.js';
import { codecBound } from './codec-bound.js';
import { format, median } from './harness.js';

const { values } = parseArgs({ options: { invocations: { type: 'string', default: '2000000' }, rounds: { type: 'string', default: '5' }, chains: { type: 'string', default: '2000' } } });
const perRound = Number(values.invocations);
const rounds = Number(values.rounds);
const chains = Number(values.chains);
const KEY_GROUPS = 1024;

process.env.BENCH_SHARDS = '1'; // every hop stays on this shard
const { hop, delayedHop } = await import('./functions.js');
const shardFor = (definition: typeof hop) => new Shard({
  thread: 1,
  layout: createMailboxLayout(2, 4 * 1024 * 1024),
  routing: (() => {
    const routing = new SharedArrayBuffer(4 * KEY_GROUPS);
    new Int32Array(routing).fill(1);
    return routing;
  })(),
  metrics: createMetricsBuffer(2),
  keyGroups: KEY_GROUPS,
  limits: { valueBytesMax: 1024 * 1024, idBytesMax: 1024 },
  definitions: [definition],
  log: () => undefined,
});

/** Rounds of `perRound` invocations of `definition`'s chains on a shard of their own: the rates. */
function measure(definition: typeof hop): number[] {
  const shard = shardFor(definition);
  for (let index = 0; index < chains; index++) {
    const id = `h${index}`;
    shard.deliver(new Message(keyGroupOf(id, KEY_GROUPS), definition.typename, id, null, null, 'io.statefun.types/int', 0, null));
  }
  const invocations = () => shard.counters.invocations;
  while (invocations() < perRound) shard.turn(); // warm-up
  const rates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const before = invocations();
    const started = process.hrtime.bigint();
    while (invocations() - before < perRound) shard.turn();
    rates.push(((invocations() - before) * 1e9) / Number(process.hrtime.bigint() - started));
  }
  return rates;
}

const rates = measure(hop);
const delayedRates = measure(delayedHop);
const rate = median(rates);
const delayed = median(delayedRates);
const codec = codecBound();
console.log(`codec bound (msgpackr pack+unpack of the envelope, 1 thread): ${format(codec)} /s`);
console.log(`shard turn loop, local invocations (1 shard, this thread): ${format(rate)} /s (rounds: ${rates.map(format).join(', ')})`);
console.log(`ratio to codec bound: ${(rate / codec).toFixed(2)}x`);
console.log(`the same as delayed messages due at once: ${format(delayed)} /s (rounds: ${delayedRates.map(format).join(', ')}), ${(delayed / rate).toFixed(2)}x the direct sends`);
console.log(
  JSON.stringify({
    benchmark: 'shard-loop',
    invocations_per_s: Math.round(rate),
    codec_bound_per_s: Math.round(codec),
    ratio_to_codec_bound: Number((rate / codec).toFixed(3)),
    delayed_invocations_per_s: Math.round(delayed),
    delayed_ratio_to_direct: Number((delayed / rate).toFixed(3)),
  }),
);
process.exit(0);
