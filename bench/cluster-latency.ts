/**
 * Cluster benchmark: p50/p99 latency from a client's send to its receipt of the egress record, when
 * the target address lives on another node (the client's node forwards the event, the owner runs the
 * function, its egress record comes back to the client's node). At 10% of the measured maximum
 * cross-node client rate. Baseline in the same run: the same measurement on one node.
 *
 *   node bench/cluster-latency.js [--nodes 3] [--seconds 5]
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { keyGroupOf } from 'statecraft';
import { computePlacement } from '../cluster/placement.js';
import { driveClient, format } from './harness.js';
import { startBenchCluster, type BenchNode } from './processes.js';

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } } });
const nodeCount = Number(values.nodes);
const seconds = Number(values.seconds);


/** Ids of bench/echo addresses that `node` does not own in a cluster of `ids`. */
function remoteIds(nodeIds: string[], self: string, count: number): string {
  const placement = computePlacement(nodeIds, 1024);
  const ids: string[] = [];
  for (let index = 0; ids.length < count; index++) {
    const id = `x${index}`;
    if (placement.members[placement.owners[keyGroupOf(id, 1024)]!] !== self) ids.push(id);
  }
  const file = join(mkdtempSync(join(tmpdir(), 'statecraft-bench-')), 'ids.txt');
  writeFileSync(file, ids.join('\n'));
  return file;
}

async function latencyAt10Percent(nodes: BenchNode[], env: Record<string, string>) {
  const entry = nodes[0]!;
  const throughput = await driveClient('throughput', entry.url, ['600000']);
  const rate = Math.round(throughput.accepted_per_s! * 0.1);
  return { max: throughput.accepted_per_s!, rate, result: await driveClient('latency', entry.url, [String(rate), String(seconds)], env) };
}

const describe = (result: Record<string, number>) =>
  `p50 ${result.p50_ms!.toFixed(3)} ms, p90 ${result.p90_ms!.toFixed(3)} ms, p99 ${result.p99_ms!.toFixed(3)} ms, max ${result.max_ms!.toFixed(1)} ms`;

const single = await startBenchCluster(1, ['--shards', '1']);
const singleRun = await latencyAt10Percent(single, {});
await Promise.all(single.map((node) => node.stop()));
console.log(`1 node: max ${format(singleRun.max)} events/s; at 10% (${format(singleRun.rate)}/s) send -> egress ${describe(singleRun.result)}`);

const cluster = await startBenchCluster(nodeCount, ['--shards', '1']);
const idsFile = remoteIds(cluster.map((node) => node.id), cluster[0]!.id, 1000);
const clusterRun = await latencyAt10Percent(cluster, { BENCH_ECHO_IDS_FILE: idsFile });
await Promise.all(cluster.map((node) => node.stop()));
console.log(`${nodeCount} nodes, every event to an address on another node: max ${format(clusterRun.max)} events/s; at 10% (${format(clusterRun.rate)}/s) send -> egress ${describe(clusterRun.result)}`);
console.log(
  JSON.stringify({
    benchmark: 'cluster-latency',
    nodes: nodeCount,
    rate_per_s: clusterRun.rate,
    p50_ms: Number(clusterRun.result.p50_ms!.toFixed(3)),
    p99_ms: Number(clusterRun.result.p99_ms!.toFixed(3)),
    single_node_p50_ms: Number(singleRun.result.p50_ms!.toFixed(3)),
    single_node_p99_ms: Number(singleRun.result.p99_ms!.toFixed(3)),
  }),
);
process.exit(0);
