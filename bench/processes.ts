/** Starting node processes (cluster/start.js) for the cluster benchmarks, and reading their metrics. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const startScript = fileURLToPath(new URL('../cluster/start.js', import.meta.url));
const functionsModule = fileURLToPath(new URL('./functions.js', import.meta.url));

/** Node processes still running: killed if the benchmark exits early. */
const live = new Set<ChildProcess>();
const BENCH_CLUSTER_SECRET = randomBytes(32).toString('base64url');
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface BenchNode {
  readonly id: string;
  readonly url: string;
  readonly port: number;
  readonly child: ChildProcess;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startBenchNode(id: string, args: string[]): Promise<BenchNode> {
  const dataDir = mkdtempSync(join(tmpdir(), 'statecraft-bench-'));
  // BENCH_NODE_FLAGS: extra flags for node itself, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeFlags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  // Checkpoints off unless the benchmark names a store: these measure the runtime's paths without them
  // (bench/checkpoints.ts measures what checkpoints cost).
  const store = args.includes('--checkpoint-store') ? [] : ['--checkpoint-store', 'off'];
  const child = spawn(process.execPath, [...nodeFlags, startScript, '--functions', functionsModule, '--port', '0', '--host', '127.0.0.1', '--node-id', id, '--data-dir', dataDir, ...store, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Every node of a benchmark is one cluster's: they share a secret (peers authenticate as in production).
    env: { ...process.env, STATECRAFT_CLUSTER_SECRET: BENCH_CLUSTER_SECRET },
  });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      rmSync(dataDir, { recursive: true, force: true });
      resolve();
    }),
  );
  live.add(child);
  child.once('exit', () => live.delete(child));
  const ready = await new Promise<{ url: string; port: number }>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready (wss?:\/\/[^\s]+:(\d+))/.exec(output);
      if (match) resolve({ url: match[1]!, port: Number(match[2]) });
    });
    void exited.then(() => reject(new Error(`node ${id} exited before ready:\n${output}`)));
  });
  return {
    id,
    ...ready,
    child,
    output: () => output,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** n nodes: the first alone, the rest joining it; resolves when every one is ready (joined). */
export async function startBenchCluster(count: number, args: string[]): Promise<BenchNode[]> {
  const first = await startBenchNode('b1', args);
  const rest = await Promise.all(Array.from({ length: count - 1 }, (_, index) => startBenchNode(`b${index + 2}`, [...args, '--join', `127.0.0.1:${first.port}`])));
  const nodes = [first, ...rest];
  // Every node sees every other before the measurement starts.
  for (;;) {
    const views = await Promise.all(nodes.map(async (node) => ((await (await fetch(`http://127.0.0.1:${node.port}/cluster`)).json()) as { view: string[]; serving: boolean })));
    if (views.every((view) => view.serving && view.view.length === count)) return nodes;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** One counter from a node's /metrics. */
export async function metric(node: BenchNode, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const match = new RegExp(`^statecraft_${name} (\\d+(?:\\.\\d+)?)$`, 'm').exec(text);
  if (!match) throw new Error(`node ${node.id} reports no statecraft_${name}`);
  return Number(match[1]);
}

export async function totalMetric(nodes: readonly BenchNode[], name: string): Promise<number> {
  return (await Promise.all(nodes.map((node) => metric(node, name)))).reduce((sum, value) => sum + value, 0);
}
