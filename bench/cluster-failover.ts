/**
 * Cluster benchmark: time from SIGKILL of one node to the survivors' agreement on the new view, with
 * the default failure-detector settings (or the flags given). Runs a fresh 3-node cluster per trial.
 * Baseline in the same run: the configured probe interval, and the Lifeguard minimum suspicion
 * timeout for the cluster size (the protocol's floor when a confirmation arrives at once).
 *
 *   node bench/cluster-failover.js [--nodes 3] [--trials 5] [-- node flags, e.g. --probe-interval 100]
 */
import { parseArgs } from 'node:util';
import { MEMBERSHIP_DEFAULTS, suspicionMinMs } from '../cluster/membership.js';
import { median, sleep } from './harness.js';
import { startBenchCluster } from './processes.js';

const { values, positionals } = parseArgs({
  options: { nodes: { type: 'string', default: '3' }, trials: { type: 'string', default: '5' } },
  allowPositionals: true,
  strict: false,
});
const nodeCount = Number(values.nodes);
const trials = Number(values.trials);
const nodeFlags = positionals;

const probeInterval = Number(nodeFlags[nodeFlags.indexOf('--probe-interval') + 1] ?? NaN) || MEMBERSHIP_DEFAULTS.probeIntervalMs;
const floor = suspicionMinMs(MEMBERSHIP_DEFAULTS.suspicionMultiplier, nodeCount, probeInterval);
console.log(`probe interval ${probeInterval} ms; minimum suspicion timeout for ${nodeCount} nodes ${floor} ms`);

const times: number[] = [];
for (let trial = 0; trial < trials; trial++) {
  const nodes = await startBenchCluster(nodeCount, ['--shards', '1', ...nodeFlags]);
  await sleep(500);
  const victim = nodes.at(-1)!;
  const survivors = nodes.slice(0, -1);
  const killedAt = performance.now();
  victim.child.kill('SIGKILL');
  for (;;) {
    const views = await Promise.all(
      survivors.map(async (node) => ((await (await fetch(`http://127.0.0.1:${node.port}/cluster`)).json()) as { view: string[]; viewId: string })),
    );
    if (views.every((view) => view.view.length === nodeCount - 1 && view.viewId === views[0]!.viewId)) break;
    await sleep(5);
  }
  const elapsed = performance.now() - killedAt;
  times.push(elapsed);
  console.log(`trial ${trial + 1}: survivors agreed on the new view ${Math.round(elapsed)} ms after SIGKILL`);
  await Promise.all(survivors.map((node) => node.stop()));
  await victim.stop();
}
const sorted = [...times].sort((a, b) => a - b);
console.log(`median ${Math.round(median(times))} ms, max ${Math.round(sorted.at(-1)!)} ms over ${trials} trials`);
console.log(
  JSON.stringify({
    benchmark: 'cluster-failover',
    nodes: nodeCount,
    probe_interval_ms: probeInterval,
    suspicion_min_ms: floor,
    new_view_ms_median: Math.round(median(times)),
    new_view_ms_max: Math.round(sorted.at(-1)!),
  }),
);
process.exit(0);
