// test-exclusive
// test-timeout-ms: 420000
// Exactly-once across crashes (issue 4): the short verifier (embedded, and over remote functions with
// the function host killed), full-cluster restart, the leader killed during a checkpoint, a client
// re-sending across a node crash — real processes, SIGKILL, a shared store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type Client } from '../../lib/index.js';
import { adminJson, clusterUntil, countReports, eventually, fixture, killNodeProcesses, sleep, startNodeProcess, withinCluster, type NodeProcess } from '../helpers.js';
import { runVerifier } from './run-verifier.js';

const functions = fixture('functions');
const base = ['--functions', functions, '--port', '0', '--shards', '1', '--key-groups', '128', '--probe-interval', '100', '--probe-timeout', '40', '--checkpoint-interval', '100'];
const clients: Client[] = [];
const dirs: string[] = [];

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  killNodeProcesses();
});
test.after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(name: string): string {
  const dir = mkdtempSync(`${tmpdir()}/statecraft-${name}-`);
  dirs.push(dir);
  return dir;
}

/** n1 alone (it restores from the store), then the others joining it. */
async function startCluster(count: number, store: string, dataDirs: string[], extra: string[] = []): Promise<NodeProcess[]> {
  const args = [...base, '--checkpoint-store', `file://${store}`, ...extra];
  const first = await startNodeProcess([...args, '--node-id', 'n1', '--data-dir', dataDirs[0]!]);
  const rest = await Promise.all(
    Array.from({ length: count - 1 }, (_, index) => startNodeProcess([...args, '--node-id', `n${index + 2}`, '--data-dir', dataDirs[index + 1]!, '--join', `127.0.0.1:${first.port}`])),
  );
  const nodes = [first, ...rest];
  await settled(nodes);
  return nodes;
}

async function settled(nodes: NodeProcess[], timeoutMs = 30_000): Promise<void> {
  await clusterUntil(
    nodes,
    'the cluster settles',
    (statuses) =>
      statuses.every(
        (status) => status.serving && status.view.length === nodes.length && status.viewId === statuses[0].viewId && !status.recovery.recovering && status.recovery.awaiting === null && status.handovers.keyGroupsMoving === 0,
      ),
    timeoutMs,
  );
}

async function client(urls: string[], options: Parameters<typeof connect>[1] = {}): Promise<Client> {
  const created = await connect(urls, { reconnect: { delayMs: 50, delayMaxMs: 300 }, ...options });
  clients.push(created);
  return created;
}

test('the short verifier: random command trees, a node SIGKILLed and restarted, 0 mismatches', async () => {
  const result = await runVerifier(['--duration', '12', '--kills', '2', '--ids', '128', '--rate', '150', '--seed', String(1 + Math.floor(Math.random() * 1e6))], 180_000);
  console.log(`  verifier: ${JSON.stringify({ ...result, output: undefined })}`);
  assert.is(result.mismatches, 0, `mismatches:\n${result.output}`);
  assert.is(result.exitCode, 0, result.output);
  // Each kill landed while events were in flight (the verifier counts no other).
  assert.is(result.kills, 2, `kills with traffic in flight: ${result.kills} (idle ${result.idleKills}, in flight ${result.inFlightAtKills}); ${result.output}`);
  assert.ok(result.recoveries >= 1, `recoveries ${result.recoveries}; ${result.output}`);
  assert.ok(result.increments > 1000 && result.egressExpected > 100, `the run did real work; ${result.output}`);
});

test('the verifier over remote functions: the function host SIGKILLed twice and a node once mid-run, 0 mismatches', async () => {
  // The functions run in a function host process (cluster/serve.js) the nodes reach over HTTP; requests
  // in flight when it dies are retried, and batches in flight at a node's crash come back from the checkpoint.
  const result = await runVerifier(['--remote', '--host-kills', '2', '--duration', '12', '--kills', '1', '--ids', '128', '--rate', '150', '--seed', String(1 + Math.floor(Math.random() * 1e6))], 180_000);
  console.log(`  remote verifier: ${JSON.stringify({ ...result, output: undefined })}`);
  assert.is(result.mismatches, 0, `mismatches:\n${result.output}`);
  assert.is(result.exitCode, 0, result.output);
  assert.is(result.hostKills, 2, `host kills with traffic in flight: ${result.hostKills} (idle ${result.idleHostKills}, in flight ${result.inFlightAtHostKills}); ${result.output}`);
  assert.is(result.kills, 1, `kills with traffic in flight: ${result.kills} (idle ${result.idleKills}, in flight ${result.inFlightAtKills}); ${result.output}`);
  assert.ok(result.recoveries >= 1, `recoveries ${result.recoveries}; ${result.output}`);
  assert.ok(result.increments > 1000 && result.egressExpected > 100, `the run did real work; ${result.output}`);
});

test('the verifier fails when nodes do not checkpoint (state of a killed node is lost): it can catch a broken runtime', async () => {
  // The killed node stays down until it is declared dead (without checkpoints, a node back sooner with
  // the same id waits for hand-overs nobody sends).
  const result = await runVerifier(['--duration', '6', '--kills', '1', '--ids', '64', '--rate', '150', '--seed', '4', '--checkpoint-store', 'off', '--restart-delay', '2500'], 150_000);
  assert.ok(result.mismatches > 0, `expected mismatches without checkpoints: ${JSON.stringify({ ...result, output: undefined })}; ${result.output}`);
  assert.is(result.kills, 1, `kills with traffic in flight: ${result.kills}; ${result.output}`);
  assert.is(result.exitCode, 1, result.output);
});

test('every node SIGKILLed, then started again with the same store: state and egress resume from the last checkpoint', async () => {
  const store = tempDir('store');
  const dataDirs = [tempDir('d1'), tempDir('d2'), tempDir('d3')];
  let nodes = await startCluster(3, store, dataDirs);
  const sender = await client(nodes.map((node) => node.url));
  const ids = Array.from({ length: 30 }, (_, index) => `restart-${index}`);
  // Committed when send() resolves: every increment below is covered by a committed checkpoint.
  for (let round = 0; round < 10; round++) await withinCluster(nodes, Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1))), `round ${round} committed`, 60_000);
  for (const node of nodes) node.kill('SIGKILL');
  await Promise.all(nodes.map((node) => node.exited));
  await sender.close({ timeoutMs: 100 }).catch(() => undefined);
  nodes = await startCluster(3, store, dataDirs);
  const restored = (await adminJson(nodes[0]!.port)).body.checkpoints.restored;
  assert.ok(restored > 0, `n1 restored checkpoint ${restored}`);
  const through = await client([nodes[1]!.url]);
  const watcher = await client([nodes[2]!.url]);
  const found = await countReports(through, watcher, ids);
  assert.equal([...found.values()], ids.map(() => 10), 'every counter has exactly its 10 committed increments');
});

test('the leader SIGKILLed while checkpoints run: every event is applied once', async () => {
  const store = tempDir('store');
  const nodes = await startCluster(3, store, [tempDir('d1'), tempDir('d2'), tempDir('d3')], ['--checkpoint-interval', '20']);
  // Leading begins a term in the store first: on a loaded machine that may take a moment after start.
  await eventually(async () => (await adminJson(nodes[0]!.port)).body.checkpoints.leader !== null, 'n1 (the smallest id) leads', 30_000);
  const sender = await client([nodes[1]!.url, nodes[2]!.url]);
  const ids = Array.from({ length: 50 }, (_, index) => `leader-${index}`);
  const sends: Promise<void>[] = [];
  for (let round = 0; round < 40; round++) {
    for (const id of ids) sends.push(sender.send({ typename: 'test/counter', id }, 1));
    if (round === 15) nodes[0]!.kill('SIGKILL'); // mid-stream, with a checkpoint almost always in flight
    await sleep(20);
  }
  await withinCluster(nodes, Promise.all(sends), 'every event committed after the leader died', 60_000);
  const survivors = nodes.slice(1);
  await eventually(async () => (await adminJson(survivors[0]!.port)).body.view.length === 2, 'n1 leaves the view');
  const statuses = await Promise.all(survivors.map(async (node) => (await adminJson(node.port)).body));
  assert.ok(statuses.every((status) => status.recovery.epoch >= 1), 'the survivors recovered');
  assert.ok(statuses.some((status) => status.checkpoints.leader !== null), 'a survivor leads checkpoints now');
  const found = await countReports(sender, await client([nodes[2]!.url]), ids);
  assert.equal([...found.values()], ids.map(() => 40), 'each counter has exactly its 40 increments');
});

test('a client re-sends across a crash of its node: every event applied once, through another node', async () => {
  const store = tempDir('store');
  const nodes = await startCluster(3, store, [tempDir('d1'), tempDir('d2'), tempDir('d3')]);
  const sender = await client([nodes[1]!.url, nodes[2]!.url]);
  assert.is(sender.nodeId, 'n2');
  const ids = Array.from({ length: 40 }, (_, index) => `resend-${index}`);
  const sends: Promise<void>[] = [];
  for (let round = 0; round < 30; round++) {
    for (const id of ids) sends.push(sender.send({ typename: 'test/counter', id }, 1));
    if (round === 10) nodes[1]!.kill('SIGKILL');
    await sleep(15);
  }
  await withinCluster(nodes, Promise.all(sends), 'every event committed after the client failed over', 60_000);
  assert.is(sender.nodeId, 'n3');
  const found = await countReports(sender, await client([nodes[0]!.url]), ids);
  assert.equal([...found.values()], ids.map(() => 30), 'each counter has exactly its 30 increments');
});

test('the founding node SIGKILLed and started again with its original command line rejoins its cluster, not founding a second one', async () => {
  const store = tempDir('store');
  const dataDirs = [tempDir('d1'), tempDir('d2'), tempDir('d3')];
  const nodes = await startCluster(3, store, dataDirs);
  const sender = await client([nodes[1]!.url, nodes[2]!.url]);
  const ids = Array.from({ length: 20 }, (_, index) => `founder-${index}`);
  for (let round = 0; round < 5; round++) await withinCluster(nodes, Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1))), `round ${round} committed`, 60_000);
  nodes[0]!.kill('SIGKILL');
  await nodes[0]!.exited;
  // The same command line as its first start: no --join.
  const again = await startNodeProcess([...base, '--checkpoint-store', `file://${store}`, '--node-id', 'n1', '--data-dir', dataDirs[0]!]);
  assert.match(again.output(), /rejoining it/);
  const cluster = [again, nodes[1]!, nodes[2]!];
  await settled(cluster, 45_000);
  for (let round = 0; round < 5; round++) await withinCluster(cluster, Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1))), `round ${round} after the founder's restart committed`, 60_000);
  const found = await countReports(sender, await client([again.url]), ids);
  assert.equal([...found.values()], ids.map(() => 10), 'one cluster, every increment once');
});

test.run();
