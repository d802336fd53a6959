// test-exclusive
// Node ids and data directories with real `node cluster/start.js` processes: a second node on a data
// directory in use is refused with a clear error, a LOCK left by a SIGKILLed node is taken over by the
// next start, a node keeps its generated id across restarts, and a second process started with a node
// id that a member of the cluster already has is refused when it joins.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { adminJson, eventually, fixture, killNodeProcesses, sleep, startClusterProcesses, startNodeProcess, withTimeout, type NodeProcess } from '../helpers.js';

interface Status {
  nodeId: string;
  serving: boolean;
  view: string[];
  members: { id: string; address: string; state: string; incarnation: number }[];
}

const functions = fixture('functions');
const args = ['--functions', functions, '--port', '0', '--shards', '1', '--key-groups', '64', '--probe-interval', '100', '--probe-timeout', '40'];
const directories: string[] = [];

test.after.each(() => {
  killNodeProcesses();
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

function temporaryDirectory(name: string): string {
  const directory = mkdtempSync(join(tmpdir(), `statecraft-${name}-`));
  directories.push(directory);
  return directory;
}

/** The node id a ready line names. */
function idOf(node: NodeProcess): string {
  return /statecraft node ready \S+ \(node ([^,]+),/.exec(node.output())![1]!;
}

/** Starts a node that must not become ready; resolves with what it printed and its exit. */
async function refusedStart(startArgs: string[], timeoutMs = 20_000): Promise<string> {
  const error = await startNodeProcess(startArgs, timeoutMs).then(
    (node) => {
      node.kill('SIGKILL');
      return null;
    },
    (failure: Error) => failure,
  );
  assert.ok(error, 'the second node became ready');
  return error.message;
}

test('two nodes on one --data-dir: the second exits 2 saying the directory is in use and by which pid; the first keeps serving', async () => {
  const dataDir = temporaryDirectory('shared');
  const first = await startNodeProcess([...args, '--data-dir', dataDir]);
  assert.is(readFileSync(join(dataDir, 'LOCK'), 'utf8'), String(first.child.pid));
  const message = await refusedStart([...args, '--data-dir', dataDir]);
  assert.match(message, 'node exited (2) before ready');
  assert.match(message, `statecraft: the data directory ${dataDir} is in use by another node (pid ${first.child.pid}): give each node its own --data-dir.`);
  assert.is((await fetch(`http://127.0.0.1:${first.port}/health`)).status, 200);
  assert.is(readFileSync(join(dataDir, 'LOCK'), 'utf8'), String(first.child.pid), 'the refused node left the lock alone');
});

test('a node killed with SIGKILL leaves its LOCK behind; the next start on that directory takes it over as the same node', async () => {
  const dataDir = temporaryDirectory('killed');
  const first = await startNodeProcess([...args, '--data-dir', dataDir]);
  const id = idOf(first);
  first.kill('SIGKILL');
  await withTimeout(first.exited, 10_000, 'the SIGKILLed node to exit');
  assert.is(readFileSync(join(dataDir, 'LOCK'), 'utf8'), String(first.child.pid), 'the dead process still names itself in LOCK');
  const second = await startNodeProcess([...args, '--data-dir', dataDir]);
  assert.is(idOf(second), id);
  assert.is(readFileSync(join(dataDir, 'LOCK'), 'utf8'), String(second.child.pid));
});

test('a node stopped with SIGTERM removes its LOCK and keeps its generated id for the next start', async () => {
  const dataDir = temporaryDirectory('restart');
  const first = await startNodeProcess([...args, '--data-dir', dataDir]);
  const id = idOf(first);
  assert.match(id, /^node-[0-9a-f]{8}$/);
  // One round trip first: a SIGTERM right after the ready line can come before the node handles it
  // (pinned below).
  assert.is((await adminJson<Status>(first.port)).body.nodeId, id);
  first.kill('SIGTERM');
  assert.is(await withTimeout(first.exited, 15_000, 'exit after SIGTERM'), 0);
  assert.is(existsSync(join(dataDir, 'LOCK')), false);
  assert.is(readFileSync(join(dataDir, 'node-id'), 'utf8'), `${id}\n`);
  const second = await startNodeProcess([...args, '--data-dir', dataDir]);
  assert.is(idOf(second), id);
  assert.is((await adminJson<Status>(second.port)).body.nodeId, id);
});

/** A cluster n1, n2 on a shared store; returns it and the args a further member would use. */
async function twoNodes(): Promise<{ nodes: NodeProcess[]; memberArgs: string[] }> {
  const memberArgs = [...args, '--checkpoint-store', `file://${temporaryDirectory('store')}`];
  const nodes = await startClusterProcesses(2, memberArgs);
  await eventually(async () => (await Promise.all(nodes.map(async (node) => (await adminJson<Status>(node.port)).body))).every((status) => status.serving && status.view.length === 2), 'n1 and n2 serve together', 15_000);
  return { nodes, memberArgs };
}

/** Both members still serve as before: the same view, n1 at its own address, no recovery started. */
async function unharmed(nodes: NodeProcess[]): Promise<void> {
  const [n1, n2] = nodes as [NodeProcess, NodeProcess];
  for (const node of nodes) {
    const { body } = await adminJson<Status>(node.port);
    assert.is(body.serving, true, `${body.nodeId} serves: ${JSON.stringify(body)}`);
    assert.equal(body.view, ['n1', 'n2']);
    const n1Entry = body.members.find((member) => member.id === 'n1')!;
    assert.is(n1Entry.address, `127.0.0.1:${n1.port}`, `${body.nodeId} sees n1 at its own address: ${JSON.stringify(body.members)}`);
    assert.is(n1Entry.state, 'alive');
  }
  for (const node of [n1, n2]) assert.not.match(node.output(), /recovery \d+/, 'no recovery was started');
}

test('a second process with the id of a member, joining through that member, is refused and exits 2; the cluster is unharmed', async () => {
  const { nodes, memberArgs } = await twoNodes();
  const message = await refusedStart([...memberArgs, '--node-id', 'n1', '--join', `127.0.0.1:${nodes[0]!.port}`]);
  assert.match(message, 'node exited (2) before ready');
  assert.match(message, "statecraft: this node cannot join the cluster: refused by the node at");
  assert.match(message, 'its node id n1 is this node\'s: give each node its own --node-id or --data-dir');
  await sleep(1000);
  await unharmed(nodes);
});

// Source bug, pinned: the duplicate id is only caught when the newcomer's HELLO reaches the member that
// has its id (peer-network.ts onHello). Joined through another member, n2 takes the newcomer for n1
// restarted (a new process instance, view-core.ts peerHello) and starts a recovery that rolls the whole
// cluster back; membership takes the newcomer's address for n1 at equal incarnation, the two n1s refute
// each other without end (incarnations climb, n2 flips between serving and not), and the real n1 ends up
// declaring n2 dead and stops serving, while the duplicate prints its ready line. A join should be
// refused, with the same message, when a live member already has the joiner's id at another address.
test.skip('a second process with the id of a member, joining through another member, is refused; the cluster is unharmed', async () => {
  const { nodes, memberArgs } = await twoNodes();
  const message = await refusedStart([...memberArgs, '--node-id', 'n1', '--join', `127.0.0.1:${nodes[1]!.port}`]);
  assert.match(message, 'node exited (2) before ready');
  assert.match(message, 'give each node its own --node-id or --data-dir');
  await sleep(3000);
  await unharmed(nodes);
});

/**
 * Starts a node on CPU 0 at the lowest priority, from a parent on the same CPU that sends SIGTERM the
 * moment the ready line arrives (the woken parent then usually runs before the node's next line);
 * resolves with how the node ended.
 */
function sigtermAtReady(dataDir: string): Promise<string> {
  const start = fileURLToPath(new URL('../../cluster/start.js', import.meta.url));
  const nodeArgs = [start, ...args, '--host', '127.0.0.1', '--data-dir', dataDir, '--checkpoint-store', `file://${dataDir}/checkpoints`];
  const parent = `
    const { spawn } = require('node:child_process');
    const child = spawn('nice', ['-n', '19', process.execPath, ...${JSON.stringify(nodeArgs)}], { stdio: ['ignore', 'pipe', 'ignore'] });
    let output = '';
    child.stdout.on('data', (chunk) => { output += chunk; if (/ready ws:/.test(output)) child.kill('SIGTERM'); });
    child.on('exit', (code, signal) => { process.stdout.write(signal ? 'signal ' + signal : 'exit ' + code); });
    setTimeout(() => child.kill('SIGKILL'), 30000).unref();
  `;
  return withTimeout(
    new Promise((resolve) => {
      const probe = spawn('taskset', ['-c', '0', process.execPath, '-e', parent], { stdio: ['ignore', 'pipe', 'inherit'] });
      let result = '';
      probe.stdout.on('data', (chunk) => (result += chunk));
      probe.on('exit', () => resolve(result));
    }),
    40_000,
    'a node SIGTERMed at its ready line',
  );
}

// cluster/start.ts once printed its ready line before it installed its SIGTERM and SIGINT handlers, so a
// supervisor that stopped the node as soon as it was ready could kill it with the default action: no
// graceful leave, no drain, exit by signal, the LOCK left behind (about 1 start in 12 with plain
// processes, most of the time with the node niced on its parent's CPU, as below).
test('a SIGTERM right after the ready line stops the node cleanly: exit 0, LOCK removed', async () => {
  for (let attempt = 1; attempt <= 5; attempt++) {
    const dataDir = temporaryDirectory('early-sigterm');
    assert.is(await sigtermAtReady(dataDir), 'exit 0', `attempt ${attempt}`);
    assert.is(existsSync(join(dataDir, 'LOCK')), false, `attempt ${attempt}: the LOCK removed`);
  }
});

test.run();
