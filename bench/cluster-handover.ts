/**
 * Cluster benchmark: the hand-over pause when a fourth node joins a 3-node cluster under load, with
 * 100,000 addresses holding state. The pause of a key group runs from its old owner stopping it to its
 * new owner adopting it (both clocks are this machine's). Baseline in the same run: the same join
 * with no load and no state (the protocol's own cost).
 *
 *   node bench/cluster-handover.js [--addresses 100000] [--rate 20000]
 */
import { parseArgs } from 'node:util';
import { connect, Types, type Client } from 'statecraft';
import { format, sleep } from './harness.js';
import { metric, startBenchCluster, startBenchNode, totalMetric, type BenchNode } from './processes.js';

const { values } = parseArgs({ options: { addresses: { type: 'string', default: '100000' }, rate: { type: 'string', default: '20000' } } });
const addresses = Number(values.addresses);
const rate = Number(values.rate);

interface Handovers {
  adopted: number;
  instances: number;
  maxPauseMs: number;
  totalPauseMs: number;
  keyGroupsMoving: number;
}

async function handovers(node: BenchNode): Promise<Handovers> {
  return ((await (await fetch(`http://127.0.0.1:${node.port}/cluster`)).json()) as { handovers: Handovers }).handovers;
}

/** Joins a fourth node and waits until every node has finished moving key groups. */
async function joinFourth(nodes: BenchNode[]): Promise<{ joinMs: number; adopted: number; instances: number; maxPauseMs: number; meanPauseMs: number; fourth: BenchNode }> {
  const started = performance.now();
  const fourth = await startBenchNode('b4', ['--shards', '1', '--join', `127.0.0.1:${nodes[0]!.port}`]);
  const all = [...nodes, fourth];
  for (;;) {
    const states = await Promise.all(all.map(handovers));
    const views = await Promise.all(all.map(async (node) => ((await (await fetch(`http://127.0.0.1:${node.port}/cluster`)).json()) as { view: string[] }).view.length));
    if (views.every((size) => size === 4) && states.every((state) => state.keyGroupsMoving === 0) && states[3]!.adopted > 0) {
      // Every key group that moves in a join moves to the newcomer: its figures are the join's.
      const joiner = states[3]!;
      return {
        joinMs: performance.now() - started,
        adopted: joiner.adopted,
        instances: joiner.instances,
        maxPauseMs: joiner.maxPauseMs,
        meanPauseMs: joiner.totalPauseMs / joiner.adopted,
        fourth,
      };
    }
    await sleep(20);
  }
}

// Baseline: no state, no load.
{
  const nodes = await startBenchCluster(3, ['--shards', '1']);
  const result = await joinFourth(nodes);
  console.log(`baseline (idle, no state): ${result.adopted} key groups moved, longest pause ${result.maxPauseMs} ms, mean ${result.meanPauseMs.toFixed(1)} ms`);
  await Promise.all([...nodes, result.fourth].map((node) => node.stop()));
  var baseline = result;
}

const nodes = await startBenchCluster(3, ['--shards', '1']);
const client: Client = await connect(nodes.map((node) => node.url), { window: 20_000 });
const createStarted = performance.now();
for (let start = 0; start < addresses; start += 10_000) {
  await Promise.all(Array.from({ length: Math.min(10_000, addresses - start) }, (_, index) => client.send({ typename: 'bench/count', id: `a${start + index}` }, 1, Types.int)));
}
while ((await totalMetric(nodes, 'instances')) < addresses) await sleep(50);
console.log(`created ${format(addresses)} addresses with state in ${((performance.now() - createStarted) / 1000).toFixed(1)} s`);

// Steady load: `rate` events per second to random addresses, while the fourth node joins.
let sent = 0;
let stopLoad = false;
const load = (async () => {
  const started = performance.now();
  while (!stopLoad) {
    const due = Math.floor(((performance.now() - started) * rate) / 1000);
    for (; sent < due; sent++) void client.send({ typename: 'bench/count', id: `a${Math.floor(Math.random() * addresses)}` }, 1, Types.int);
    await sleep(1);
  }
})();
await sleep(1000);
const result = await joinFourth(nodes);
await sleep(500);
stopLoad = true;
await load;
await client.drained();
const all = [...nodes, result.fourth];
// Every event counted once: the invocations equal what was sent, and the instances are all there.
let invocations = 0;
for (let attempt = 0; attempt < 100; attempt++) {
  invocations = await totalMetric(all, 'invocations');
  if (invocations >= addresses + sent) break;
  await sleep(100);
}
const instances = (await Promise.all(all.map((node) => metric(node, 'instances')))).reduce((sum, value) => sum + value, 0);
await client.close();
await Promise.all(all.map((node) => node.stop()));
console.log(
  `under load (${format(rate)} events/s, ${format(addresses)} addresses): ${result.adopted} key groups and ${format(result.instances)} instances moved; ` +
    `longest pause ${result.maxPauseMs} ms, mean ${result.meanPauseMs.toFixed(1)} ms; join to settled ${Math.round(result.joinMs)} ms`,
);
console.log(`after: ${format(instances)} instances (expected ${format(addresses)}), ${format(invocations)} invocations (expected ${format(addresses + sent)})`);
console.log(
  JSON.stringify({
    benchmark: 'cluster-handover',
    addresses,
    load_per_s: rate,
    key_groups_moved: result.adopted,
    instances_moved: result.instances,
    pause_max_ms: result.maxPauseMs,
    pause_mean_ms: Number(result.meanPauseMs.toFixed(1)),
    join_to_settled_ms: Math.round(result.joinMs),
    baseline_pause_max_ms: baseline.maxPauseMs,
    instances_after: instances,
    invocations_lost_or_doubled: invocations - (addresses + sent),
  }),
);
process.exit(0);
