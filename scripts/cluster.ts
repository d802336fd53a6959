/**
 * A laptop cluster: starts N nodes on 127.0.0.1 with OS-chosen ports, each with its own data
 * directory, the first as the seed of the others; prints their URLs; stops them all on Ctrl-C.
 *
 *   npm run cluster -- --nodes 3 [--functions examples/billing/functions.js,...] [--shards 1] [--data-dir data/cluster]
 *
 * Any other flags after `--` go to every node (see node cluster/start.js --help).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

const { values, tokens } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    functions: { type: 'string', default: 'examples/billing/functions.js,examples/greeter/functions.js,examples/shop/functions.js' },
    shards: { type: 'string', default: '1' },
    'data-dir': { type: 'string', default: 'data/cluster' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: false,
  tokens: true,
});
if (values.help) {
  console.log('usage: npm run cluster -- --nodes 3 [--functions a.js,b.js] [--shards 1] [--data-dir data/cluster] [node flags...]');
  process.exit(0);
}
const count = Number(values.nodes);
if (!Number.isInteger(count) || count < 1 || count > 32) {
  console.error(`--nodes must be a whole number from 1 to 32, got ${values.nodes}`);
  process.exit(2);
}
// Flags this script does not know are passed to every node.
const known = new Set(['nodes', 'functions', 'shards', 'data-dir', 'help']);
const passThrough: string[] = [];
for (const token of tokens ?? []) {
  if (token.kind === 'option' && !known.has(token.name)) passThrough.push(token.rawName, ...(token.value !== undefined ? [token.value] : []));
}

const start = fileURLToPath(new URL('../cluster/start.js', import.meta.url));
// One secret for all the nodes (they prove it to each other), kept beside their data directories so a
// restart of the cluster finds the same one.
const secretFile = join(String(values['data-dir']), 'cluster-secret');
if (!existsSync(secretFile)) {
  mkdirSync(String(values['data-dir']), { recursive: true });
  writeFileSync(secretFile, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
}
const children: ChildProcess[] = [];
let stopping = false;

function launch(index: number, seed: string | null): Promise<{ url: string; port: number }> {
  const args = [
    start,
    '--functions',
    String(values.functions),
    '--port',
    '0',
    '--host',
    '127.0.0.1',
    '--shards',
    String(values.shards),
    '--node-id',
    `node-${index + 1}`,
    '--data-dir',
    join(String(values['data-dir']), `node-${index + 1}`),
    '--cluster-secret-file',
    secretFile,
    ...(seed ? ['--join', seed] : []),
    ...passThrough,
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const prefix = `[node-${index + 1}] `;
  child.stderr!.on('data', (chunk: Buffer) => process.stderr.write(chunk.toString().replace(/^(?=.)/gm, prefix)));
  child.once('exit', (code, signal) => {
    if (!stopping) console.error(`${prefix}exited (${code ?? signal})`);
  });
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready (wss?:\/\/[^\s]+:(\d+))/.exec(output);
      if (match) resolve({ url: match[1]!, port: Number(match[2]) });
    });
    child.once('exit', (code) => reject(new Error(`node-${index + 1} exited with ${code} before it was ready`)));
  });
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.error('stopping the cluster...');
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
        }),
    ),
  );
  process.exit(0);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());

try {
  const first = await launch(0, null);
  const seed = `127.0.0.1:${first.port}`;
  const rest = await Promise.all(Array.from({ length: count - 1 }, (_, index) => launch(index + 1, seed)));
  const urls = [first, ...rest].map((node) => node.url);
  console.log(`statecraft cluster ready: ${count} node${count === 1 ? '' : 's'}`);
  urls.forEach((url, index) => console.log(`  node-${index + 1}  ${url}   (GET ${url.replace('ws://', 'http://')}/cluster)`));
  console.log(`connect a client to any of them, e.g. connect(${JSON.stringify(urls)}); Ctrl-C stops them all`);
  console.log(`the nodes share the cluster secret in ${secretFile}: start another node with --cluster-secret-file ${secretFile} --join ${seed}`);
} catch (error) {
  console.error((error as Error).message);
  await stop();
}
