/**
 * Runs every benchmark one after another (never two at once: they would share the cores), each in its
 * own process, echoes their output, and ends with a summary of each one's final JSON line.
 *
 *   npm run bench            (node bench/run-all.js [--only name,name])
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const benchmarks: { name: string; script: string; nodeFlags: string[] }[] = [
  { name: 'function-to-function', script: 'function-to-function.js', nodeFlags: [] },
  { name: 'shard-loop', script: 'shard-loop.js', nodeFlags: [] },
  { name: 'client-ingress', script: 'client-ingress.js', nodeFlags: [] },
  { name: 'client-latency', script: 'client-latency.js', nodeFlags: [] },
  { name: 'memory', script: 'memory.js', nodeFlags: ['--expose-gc'] },
  { name: 'cluster-throughput', script: 'cluster-throughput.js', nodeFlags: [] },
  { name: 'cluster-latency', script: 'cluster-latency.js', nodeFlags: [] },
  { name: 'cluster-failover', script: 'cluster-failover.js', nodeFlags: [] },
  { name: 'cluster-handover', script: 'cluster-handover.js', nodeFlags: [] },
  { name: 'checkpoints', script: 'checkpoints.js', nodeFlags: [] },
  { name: 'commit-point', script: 'commit-point.js', nodeFlags: [] },
  { name: 'remote', script: 'remote.js', nodeFlags: [] },
];

const { values } = parseArgs({ options: { only: { type: 'string' } } });
const only = values.only?.split(',');
const summary: object[] = [];
let failed = 0;

for (const benchmark of benchmarks) {
  if (only && !only.includes(benchmark.name)) continue;
  console.log(`\n== ${benchmark.name} ==`);
  const script = fileURLToPath(new URL(`./${benchmark.script}`, import.meta.url));
  const child = spawn(process.execPath, [...benchmark.nodeFlags, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    process.stdout.write(chunk);
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const last = output.trim().split('\n').at(-1) ?? '';
  if (code === 0 && last.startsWith('{')) summary.push(JSON.parse(last));
  else {
    failed++;
    summary.push({ benchmark: benchmark.name, failed: true, exitCode: code });
  }
}

console.log('\n== summary ==');
for (const line of summary) console.log(JSON.stringify(line));
process.exit(failed > 0 ? 1 : 0);
