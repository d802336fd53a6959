// test-exclusive
// Several real node processes on 127.0.0.1 forming one cluster: membership, placement, messages
// across nodes, egress through any node, failures (SIGKILL, SIGSTOP) and a peer that sends garbage.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { connect, type Client } from 'statecraft';
import { adminJson, clientEnvelope, clusterUntil, countReports, eventually, eventsFrame, fixture, killNodeProcesses, rawClientConnection, sleep, startClusterProcesses, startNodeProcess, subscribed, take, withTimeout, type NodeProcess } from '../helpers.js';
import { counted } from '../fixtures/functions.js';
import { computePlacement } from '../../cluster/placement.js';
import { keyGroupOf } from 'statecraft';

interface Status {
  nodeId: string;
  serving: boolean;
  viewVersion: number;
  viewId: string;
  keyGroups: number;
  view: string[];
  members: { id: string; state: string; incarnation: number; keyGroups: number }[];
}

const functions = fixture('functions');
// Faster failure detection than the defaults, so the test runs quickly; the defaults are measured by the benchmark.
const args = ['--functions', functions, '--port', '0', '--shards', '1', '--key-groups', '128', '--probe-interval', '100', '--probe-timeout', '40'];
let nodes: NodeProcess[] = [];
const clients: Client[] = [];

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  killNodeProcesses();
});

async function statuses(of: NodeProcess[]): Promise<Status[]> {
  return Promise.all(of.map(async (node) => (await adminJson<Status>(node.port)).body));
}

/** Waits until every node in `of` is serving with the same view of exactly `expected` members. */
async function converged(of: NodeProcess[], expected: number, timeoutMs = 15_000): Promise<Status[]> {
  return clusterUntil<Status>(of, `views converge on ${expected} members`, (last) => last.every((status) => status.serving && status.view.length === expected && status.viewId === last[0]!.viewId), timeoutMs);
}

/** A node's /metrics as numbers, by name without the `statecraft_` prefix. */
async function metricsOf(node: NodeProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  return Object.fromEntries([...text.matchAll(/^statecraft_(\w+) (\S+)$/gm)].map((match) => [match[1]!, Number(match[2])]));
}

/**
 * Invocations per node once they add up to at least `total` (a node publishes its counters once per
 * turn, after the egress that may already have reached the test): the caller checks for exactly.
 */
async function invocationsReaching(total: number): Promise<number[]> {
  let invocations: number[] = [];
  await eventually(async () => {
    invocations = await Promise.all(nodes.map(async (node) => (await metricsOf(node)).invocations!));
    return invocations.reduce((sum, count) => sum + count, 0) >= total;
  }, `${total} invocations over the cluster`, 20_000).catch((error: Error) => {
    throw new Error(`${error.message}: invocations per node: ${invocations}`);
  });
  return invocations;
}

/** How long the minority test's delayed message waits: n1 must have noticed it is alone well before. */
const MINORITY_TIMER_MS = 8000;

async function client(node: NodeProcess): Promise<Client> {
  const created = await connect(node.url);
  clients.push(created);
  return created;
}

test('three nodes converge, and every key group has exactly one owner', async () => {
  nodes = await startClusterProcesses(3, args);
  const views = await converged(nodes, 3);
  for (const status of views) {
    assert.equal(status.view, ['n1', 'n2', 'n3']);
    const owned = status.members.map((member) => member.keyGroups);
    assert.is(owned.reduce((sum, count) => sum + count, 0), 128, `${status.nodeId} sees ${owned}`);
    assert.ok(owned.every((count) => count > 0), `every member owns some key groups: ${owned}`);
    assert.equal(owned, views[0]!.members.map((member) => member.keyGroups), 'all nodes compute the same placement');
  }
});

test('events to 1,000 addresses through one node are each processed exactly once, and egress reaches a subscriber on another node', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const sender = await client(nodes[0]!);
  const watcher = await client(nodes[2]!);
  const counts = watcher.subscribe('counts', { type: counted });
  await subscribed(counts); // node 3 has it before the first record is emitted
  await Promise.all(Array.from({ length: 1000 }, (_, index) => sender.send({ typename: 'test/counter', id: `a${index}` }, 1)));
  const records = await take(counts, 1000, 20_000);
  const byId = new Map(records.map((record) => [record.value.id, record.value.count]));
  assert.is(byId.size, 1000, 'each address reported once');
  assert.ok([...byId.values()].every((count) => count === 1), 'each event applied once');
  // The addresses were spread: every node ran some of them.
  const invocations = await invocationsReaching(1000);
  assert.ok(invocations.every((count) => count > 100), `invocations per node: ${invocations}`);
  assert.is(invocations.reduce((sum, count) => sum + count, 0), 1000, `invocations per node: ${invocations}`);
});

test('functions message each other across nodes by address: every hop of 100 relays happens once', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const sender = await client(nodes[1]!);
  const done = sender.subscribe<string>('relay-done');
  await subscribed(done);
  // 100 relay chains of 20 hops each, over ids r0..r999 spread on all nodes.
  await Promise.all(Array.from({ length: 100 }, (_, index) => sender.send({ typename: 'test/relay', id: `r${index * 10}` }, 20)));
  const finished = await take(done, 100, 20_000);
  assert.is(finished.length, 100);
  const invocations = await invocationsReaching(100 * 21);
  assert.is(invocations.reduce((sum, count) => sum + count, 0), 100 * 21, `invocations per node: ${invocations}`);
});

test('SIGKILL of a node: the survivors agree on a new view and keep serving every address', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const killedAt = performance.now();
  nodes[2]!.kill('SIGKILL');
  const survivors = nodes.slice(0, 2);
  const views = await converged(survivors, 2, 15_000);
  const detectionMs = performance.now() - killedAt;
  assert.equal(views[0]!.view, ['n1', 'n2']);
  assert.ok(views.every((status) => status.members.find((member) => member.id === 'n3')?.state === 'dead'));
  console.log(`  new view ${Math.round(detectionMs)} ms after SIGKILL (probe interval 100 ms)`);
  const sender = await client(nodes[0]!);
  const counts = sender.subscribe('counts', { type: counted });
  await subscribed(counts);
  await Promise.all(Array.from({ length: 300 }, (_, index) => sender.send({ typename: 'test/counter', id: `k${index}` }, 1)));
  const records = await take(counts, 300, 20_000);
  assert.is(new Set(records.map((record) => record.value.id)).size, 300);
});

test('a node paused with SIGSTOP is declared dead, and rejoins with a higher incarnation after SIGCONT', async () => {
  nodes = await startClusterProcesses(3, args);
  const before = await converged(nodes, 3);
  const incarnationBefore = before[0]!.members.find((member) => member.id === 'n3')!.incarnation;
  nodes[2]!.kill('SIGSTOP');
  await eventually(
    async () => (await statuses(nodes.slice(0, 2))).every((status) => status.members.find((member) => member.id === 'n3')?.state === 'dead'),
    'n3 declared dead',
    15_000,
  );
  nodes[2]!.kill('SIGCONT');
  const after = await converged(nodes, 3, 20_000);
  const incarnationAfter = after[0]!.members.find((member) => member.id === 'n3')!.incarnation;
  assert.ok(incarnationAfter > incarnationBefore, `incarnation ${incarnationBefore} → ${incarnationAfter}`);
});

test('SIGTERM leaves gracefully: the others mark the node left, never dead, and take over its key groups', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  nodes[1]!.kill('SIGTERM');
  assert.is(await nodes[1]!.exited, 0);
  const views = await converged([nodes[0]!, nodes[2]!], 2);
  for (const status of views) {
    assert.is(status.members.find((member) => member.id === 'n2')?.state, 'left');
    assert.is(status.members.reduce((sum, member) => sum + member.keyGroups, 0), 128);
  }
});

test('SIGTERM to every node at once (a whole cluster stopped): no hand-overs among them; one final checkpoint across the cluster confirms what was accepted; each exits 0; a restart restores it', async () => {
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const store = `file://${mkdtempSync(`${tmpdir()}/statecraft-store-`)}`;
  // No periodic checkpoint after the first few seconds' worth: only the final one can make the events durable.
  const stopping = [...args, '--checkpoint-store', store, '--checkpoint-interval', '3600000'];
  nodes = await startClusterProcesses(4, stopping);
  await converged(nodes, 4);
  const sender = await client(nodes[0]!);
  const ids = Array.from({ length: 40 }, (_, index) => `w${index}`);
  // Confirmed on commit (the default): they stay pending until a checkpoint covers them.
  const sends = ids.map((id) => sender.send({ typename: 'test/counter', id }, 1));
  await invocationsReaching(ids.length);
  assert.is(sender.pending, ids.length, 'accepted, not yet covered by a commit');
  const started = Date.now();
  for (const node of nodes) node.kill('SIGTERM');
  // Well within 20 s on a quiet machine; the nodes bound their stop by --stop-timeout (25 s) anyway.
  const exits = await withTimeout(Promise.all(nodes.map(async (node) => [await node.exited, Date.now() - started] as const)), 60_000, 'every node exits');
  assert.equal(exits.map(([code]) => code), [0, 0, 0, 0]);
  const outputs = nodes.map((node) => node.output());
  console.log(`  whole-cluster stop: slowest exit ${Math.max(...exits.map(([, ms]) => ms))} ms`);
  assert.ok(outputs.every((output) => output.includes('every member of the view is stopping: no hand-over')), `every node found the others stopping:\n${outputs.map((output) => output.split('\n').slice(-12).join('\n')).join('\n---\n')}`);
  assert.ok(outputs.some((output) => /final checkpoint \d+ across the stopping cluster committed/.test(output)), 'the leader committed a final checkpoint');
  await withTimeout(Promise.all(sends), 5_000, 'the final checkpoint confirmed every event before the nodes closed their connections');
  await sender.close();
  clients.splice(clients.indexOf(sender), 1);
  // Started again on the same store: every increment is there, once.
  nodes = await startClusterProcesses(4, [...args, '--checkpoint-store', store, '--checkpoint-interval', '200']);
  await converged(nodes, 4, 30_000);
  const found = await countReports(await client(nodes[1]!), await client(nodes[2]!), ids);
  assert.equal([...found.values()], ids.map(() => 1));
});

test('a node that cannot reach a majority of its view admits nothing and processes nothing, says why, and resumes', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const placement = computePlacement(['n1', 'n2', 'n3'], 128);
  const ownedByN1 = (prefix: string) => {
    for (let index = 0; ; index++) if (placement.members[placement.owners[keyGroupOf(`${prefix}${index}`, 128)]!] === 'n1') return `${prefix}${index}`;
  };
  // A delayed message of an instance on n1 falls due while n1 has no majority: n1 must hold it, not
  // process it. Armed and committed before the majority goes.
  const timerId = ownedByN1('t');
  const watcher = await client(nodes[0]!);
  const fired: number[] = [];
  const timerRecords = watcher.subscribe<{ at: number }>('self-timer');
  void (async () => {
    for await (const record of timerRecords) fired.push(record.value.at);
  })();
  await subscribed(timerRecords);
  // A client confirmed on acceptance, connected to n1 (the only node it knows) before the majority goes.
  const sender = await connect(nodes[0]!.url, { confirm: 'accept', reconnect: { delayMs: 50, delayMaxMs: 500 } });
  clients.push(sender);
  const armedAt = Date.now();
  await watcher.send({ typename: 'test/self-timer', id: timerId }, MINORITY_TIMER_MS);
  nodes[1]!.kill('SIGSTOP');
  nodes[2]!.kill('SIGSTOP');
  await eventually(async () => (await adminJson(nodes[0]!.port, '/health')).status === 503, 'n1 stops serving', 15_000);
  const alone = await metricsOf(nodes[0]!);
  assert.is(alone.delayed_pending, 1, `n1 lost its majority before the delayed message fell due (${Date.now() - armedAt} ms after it was armed for ${MINORITY_TIMER_MS} ms)`);
  // Without a majority n1 closes its client connections (clients given several nodes go to another)
  // and refuses new ones, saying why.
  await eventually(async () => (await metricsOf(nodes[0]!)).connections === 0, 'n1 closes its client connections', 15_000);
  const refused = await connect(nodes[0]!.url, { reconnect: false }).then(
    (unexpected) => (clients.push(unexpected), null),
    (error: Error) => error,
  );
  assert.ok(refused !== null && /503/.test(refused.message), `a new client is refused: ${refused?.message}`);
  // The client's event must wait (in the client, reconnecting) instead of being admitted by a minority.
  const counterId = ownedByN1('minority-');
  let accepted = false;
  const pending = sender.send({ typename: 'test/counter', id: counterId }, 1).then(() => (accepted = true));
  pending.catch(() => undefined); // awaited below; a failed check closes the client first
  // Until well past the delayed message's due time.
  await sleep(armedAt + MINORITY_TIMER_MS + 1000 - Date.now());
  const held = await metricsOf(nodes[0]!);
  assert.not.ok(accepted, 'no event is accepted without a majority');
  assert.is(held.events_accepted - alone.events_accepted, 0, 'events admitted without a majority');
  assert.is(held.invocations - alone.invocations, 0, 'invocations without a majority');
  // The shard pops the due timer, but n1's key groups are held while it is alone: the message it sends
  // waits at the shard. Either way exactly one delayed message waits, and none ran.
  assert.ok(held.delayed_fired - alone.delayed_fired <= 1, `delayed messages fired without a majority: ${held.delayed_fired - alone.delayed_fired}`);
  assert.is(held.delayed_pending + held.held_messages, 1, `the delayed message waits (pending ${held.delayed_pending}, held ${held.held_messages})`);
  assert.equal(fired, [], 'no delayed message processed');
  const [status] = await statuses([nodes[0]!]);
  assert.not.ok(status!.serving);
  assert.ok(status!.view.length >= 2 && status!.view.includes('n1'), `the minority never shrinks its view to itself: ${status!.view}`);
  assert.match((await adminJson<{ reason: string }>(nodes[0]!.port, '/health')).body.reason, /not a majority/);
  nodes[1]!.kill('SIGCONT');
  nodes[2]!.kill('SIGCONT');
  await converged(nodes, 3, 20_000);
  // Accepted now; the delayed message fires; its egress comes once committed.
  await withTimeout(pending, 30_000, 'the waiting event is accepted once the majority is back');
  await eventually(() => fired.length === 1, 'the held delayed message is processed once the majority is back', 30_000);
  const counts = await countReports(sender, watcher, [counterId]);
  assert.is(counts.get(counterId), 1, 'the event applied once');
  const back = await metricsOf(nodes[0]!);
  assert.ok(back.events_accepted - held.events_accepted >= 1, 'the event is admitted');
  assert.ok(back.delayed_fired - alone.delayed_fired >= 1, 'the delayed message fired');
  assert.ok(back.invocations - held.invocations >= 2, 'the event and the delayed message ran');
});

test('a client given several nodes fails over when its node leaves, and its events keep landing', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const sender = await connect([nodes[1]!.url, nodes[0]!.url, nodes[2]!.url], { reconnect: { delayMs: 50, delayMaxMs: 200 } });
  clients.push(sender);
  assert.is(sender.nodeId, 'n2');
  const watcher = await client(nodes[0]!);
  const counts = watcher.subscribe('counts', { type: counted });
  await subscribed(counts);
  await Promise.all(Array.from({ length: 100 }, (_, index) => sender.send({ typename: 'test/counter', id: `f${index}` }, 1)));
  nodes[1]!.kill('SIGTERM');
  await nodes[1]!.exited;
  await Promise.all(Array.from({ length: 100 }, (_, index) => sender.send({ typename: 'test/counter', id: `g${index}` }, 1)));
  assert.ok(sender.nodeId === 'n1' || sender.nodeId === 'n3', `reconnected to ${sender.nodeId}`);
  const records = await take(counts, 200, 20_000);
  assert.is(new Set(records.map((record) => record.value.id)).size, 200);
});

test('a client whose node is paused (SIGSTOP: its sockets stay open and silent) leaves it by its heartbeat: its events are confirmed through another node while that node is still stopped, each applied once', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  // The default heartbeat: a ping a second, a connection silent for 3 s is dropped.
  const sender = await connect([nodes[1]!.url, nodes[2]!.url, nodes[0]!.url], { reconnect: { delayMs: 50, delayMaxMs: 200 } });
  clients.push(sender);
  assert.is(sender.nodeId, 'n2');
  const ids = Array.from({ length: 50 }, (_, index) => `s${index}`);
  await Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  nodes[1]!.kill('SIGSTOP');
  try {
    // Sent to the stopped node first (the client cannot know yet), then re-sent to the next one.
    await withTimeout(Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1))), 30_000, 'events confirmed while n2 is stopped');
    assert.ok(sender.nodeId === 'n1' || sender.nodeId === 'n3', `moved to ${sender.nodeId}`);
  } finally {
    nodes[1]!.kill('SIGCONT');
  }
  await converged(nodes, 3, 30_000);
  const counts = await countReports(sender, await client(nodes[0]!), ids);
  assert.equal([...counts.values()], ids.map(() => 2), 'each counter has exactly its 2 increments');
});

test("a subscription from 'latest' that fails over to another node (its node SIGKILLed) gets what came after it subscribed, and nothing from before", async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const sender = await client(nodes[1]!);
  const ids = (prefix: string, count: number) => Array.from({ length: count }, (_, index) => `${prefix}${index}`);
  // Committed before the subscription starts, and in n1's log (egress reaches every node's log after its commit).
  await Promise.all(ids('before-', 20).map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  const watcher = await connect([nodes[0]!.url, nodes[2]!.url], { reconnect: { delayMs: 50, delayMaxMs: 200 } });
  clients.push(watcher);
  const probe = watcher.subscribe('counts', { type: counted, from: 'earliest' });
  const logged = new Set<string>();
  while (ids('before-', 20).some((id) => !logged.has(id))) logged.add((await take(probe, 1, 15_000))[0]!.value.id);
  probe.close();
  const counts = watcher.subscribe('counts', { type: counted });
  await subscribed(counts);
  await Promise.all(ids('after-', 10).map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  nodes[0]!.kill('SIGKILL');
  await nodes[0]!.exited;
  // n3's log holds the records from before the subscription too; the client must not pass them on.
  await Promise.all(ids('later-', 10).map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  const wanted = new Set([...ids('after-', 10), ...ids('later-', 10)]);
  const seen: string[] = [];
  while ([...wanted].some((id) => !seen.includes(id))) {
    const [record] = await take(counts, 1, 30_000);
    seen.push(record!.value.id);
  }
  assert.equal(seen.filter((id) => id.startsWith('before-')), [], `records from before the subscription, after the failover to ${watcher.nodeId}`);
  assert.is(watcher.nodeId, 'n3');
});

test('a member paused long enough to be declared dead, back after retention deleted the checkpoint its recovery restored: it rejoins, and checkpoints and confirmations go on', async () => {
  // One checkpoint retained, a checkpoint every 50 ms: the one recovery 1 restores is long gone when n3 resumes.
  nodes = await startClusterProcesses(3, [...args, '--checkpoint-retain', '1', '--checkpoint-interval', '50']);
  await converged(nodes, 3);
  const sender = await connect([nodes[0]!.url, nodes[1]!.url], { reconnect: { delayMs: 50, delayMaxMs: 200 } });
  clients.push(sender);
  await Promise.all(Array.from({ length: 20 }, (_, index) => sender.send({ typename: 'test/counter', id: `p${index}` }, 1)));
  const leaderStats = async () => (await adminJson<{ checkpoints: { leader: { lastCommitted: number } | null } }>(nodes[0]!.port)).body.checkpoints.leader;
  const beforePause = (await leaderStats())?.lastCommitted ?? 0;
  nodes[2]!.kill('SIGSTOP');
  await converged(nodes.slice(0, 2), 2, 20_000);
  // Committed meanwhile, each commit deleting the one before: the restored checkpoint's manifest goes.
  await Promise.all(Array.from({ length: 20 }, (_, index) => sender.send({ typename: 'test/counter', id: `p${index}` }, 1)));
  await eventually(async () => ((await leaderStats())?.lastCommitted ?? 0) > beforePause + 5, 'a few checkpoints past the recovery', 20_000);
  const atResume = (await leaderStats())!.lastCommitted;
  nodes[2]!.kill('SIGCONT');
  await converged(nodes, 3, 30_000);
  // Checkpoints commit with n3 taking part again, and the events sent now are confirmed.
  const before = (await leaderStats())?.lastCommitted ?? 0;
  await eventually(async () => ((await leaderStats())?.lastCommitted ?? 0) > before + 3, 'checkpoints commit again with n3 in the view', 30_000);
  await withTimeout(Promise.all(Array.from({ length: 20 }, (_, index) => sender.send({ typename: 'test/counter', id: `p${index}` }, 1))), 30_000, 'events confirmed after n3 is back');
  const counts = await countReports(sender, await client(nodes[2]!), Array.from({ length: 20 }, (_, index) => `p${index}`));
  assert.equal([...counts.values()], Array.from({ length: 20 }, () => 3), 'each counter has exactly its 3 increments');
  const [third] = await statuses([nodes[2]!]);
  assert.ok(third!.serving, 'n3 serves');
  // The scenario happened: n3 was sent the order of the recovery it missed, for a checkpoint older than
  // the one committed when it resumed (retain 1: deleted by then), and rejoined empty instead of failing to read it.
  const missed = /cluster: recovery \d+ done: restored checkpoint (\d+) \(0 instances\)/.exec(nodes[2]!.output());
  assert.ok(missed !== null && Number(missed[1]) < atResume, `n3 restored nothing of a deleted checkpoint (committed at resume: ${atResume}):\n${nodes[2]!.output().split('\n').filter((line) => /recovery/.test(line)).join('\n')}`);
});

test('a node joins and another leaves under steady load: state moves with its key groups, every counter ends exactly right', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const sender = await client(nodes[0]!);
  const watcher = await client(nodes[0]!);
  const counts = watcher.subscribe('counts', { type: counted, bufferMax: 100_000 });
  await subscribed(counts);
  const seen = new Map<string, number[]>();
  let received = 0;
  void (async () => {
    for await (const record of counts) {
      const list = seen.get(record.value.id) ?? [];
      list.push(record.value.count);
      seen.set(record.value.id, list);
      received++;
    }
  })();
  const ids = Array.from({ length: 500 }, (_, index) => `m${index}`);
  const rounds = 30;
  let joiner: NodeProcess | null = null;
  for (let round = 1; round <= rounds; round++) {
    await Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1)));
    if (round === 8) joiner = await startNodeProcess([...args, '--node-id', 'n4', '--join', `127.0.0.1:${nodes[0]!.port}`]);
    if (round === 18) nodes[1]!.kill('SIGTERM');
    await sleep(20);
  }
  assert.is(await nodes[1]!.exited, 0);
  await eventually(() => received >= ids.length * rounds, `all ${ids.length * rounds} counts (got ${received})`, 30_000);
  await sleep(300); // nothing more may come
  const wrong = ids.filter((id) => JSON.stringify(seen.get(id)) !== JSON.stringify(Array.from({ length: rounds }, (_, index) => index + 1)));
  assert.equal(wrong.slice(0, 5).map((id) => [id, seen.get(id)]), [], `${wrong.length} counters went wrong`);
  assert.is(received, ids.length * rounds);
  const survivors = [nodes[0]!, nodes[2]!, joiner!];
  const views = await converged(survivors, 3);
  const adopted = views.reduce((sum, status) => sum + (status as unknown as { handovers: { adopted: number } }).handovers.adopted, 0);
  assert.ok(adopted > 0, 'key groups were handed over');
  const pauses = views.map((status) => (status as unknown as { handovers: { maxPauseMs: number } }).handovers.maxPauseMs);
  console.log(`  hand-overs adopted: ${adopted}; longest pause per node: ${pauses.join(', ')} ms`);
});

test('an event re-sent through another node is applied once: producer marks live in the key group', async () => {
  nodes = await startClusterProcesses(3, args);
  await converged(nodes, 3);
  const watcher = await client(nodes[0]!);
  const counts = watcher.subscribe('counts', { type: counted });
  await subscribed(counts);
  const ids = Array.from({ length: 20 }, (_, index) => `twice-${index}`);
  const envelopes = await Promise.all(ids.map((id, index) => clientEnvelope('test/counter', id, 1, { session: 'session-x', seq: index + 1 })));
  // The same events, as a client would re-send them after losing its node: through n2, then n3.
  const throughTwo = await rawClientConnection(nodes[1]!.url);
  const throughThree = await rawClientConnection(nodes[2]!.url);
  throughTwo.socket.send(eventsFrame(1, envelopes));
  await eventually(() => throughTwo.frames.length > 0, 'n2 acknowledges');
  throughThree.socket.send(eventsFrame(1, envelopes));
  await eventually(() => throughThree.frames.length > 0, 'n3 acknowledges');
  const records = await take(counts, 20, 10_000);
  assert.equal(new Set(records.map((record) => record.value.id)).size, 20);
  assert.ok(records.every((record) => record.value.count === 1));
  // The second copies reach their key groups after the first: wait until all 20 are counted, then
  // require exactly 20.
  let duplicates: number[] = [];
  await eventually(async () => {
    duplicates = await Promise.all(nodes.map(async (node) => (await metricsOf(node)).duplicates_dropped!));
    return duplicates.reduce((sum, count) => sum + count, 0) >= 20;
  }, 'the second copies dropped', 20_000).catch((error: Error) => {
    throw new Error(`${error.message}: duplicates dropped per node: ${duplicates}`);
  });
  assert.is(duplicates.reduce((sum, count) => sum + count, 0), 20, `duplicates dropped per node: ${duplicates}`);
  throughTwo.socket.close();
  throughThree.socket.close();
});

test('a peer sending garbage is disconnected; the node keeps serving', async () => {
  nodes = await startClusterProcesses(2, args);
  await converged(nodes, 2);
  const closes: number[] = [];
  for (const garbage of [Buffer.from([0x04, 1, 2, 3]), Buffer.from('not a frame'), Buffer.from([0x01, 0xc1, 0xc1])]) {
    const socket = new WebSocket(`ws://127.0.0.1:${nodes[0]!.port}/peer`);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(garbage);
    closes.push(await withTimeout(new Promise<number>((resolve) => socket.once('close', (code) => resolve(code))), 5000, 'the node closes the garbage connection'));
  }
  assert.equal(closes, [4400, 4400, 4400]);
  // A text frame and a cut mid-frame do not hurt either.
  const cut = new WebSocket(`ws://127.0.0.1:${nodes[0]!.port}/peer`);
  await new Promise((resolve) => cut.once('open', resolve));
  (cut as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x82, 0x7e, 0x10, 0x00, 0x04]));
  cut.terminate();
  const [status] = await statuses([nodes[0]!]);
  assert.ok(status!.serving);
  await converged(nodes, 2);
  const sender = await client(nodes[0]!);
  const counts = sender.subscribe('counts', { type: counted });
  await subscribed(counts);
  await sender.send({ typename: 'test/counter', id: 'after-garbage' }, 1);
  assert.is((await take(counts, 1))[0]!.value.count, 1);
});

test('a node with a different key-group count is refused at join, with a clear error on both sides', async () => {
  nodes = await startClusterProcesses(1, args);
  const oddArgs = ['--functions', functions, '--port', '0', '--shards', '1', '--key-groups', '256', '--node-id', 'odd'];
  const refused = startNodeProcess([...oddArgs, '--join', `127.0.0.1:${nodes[0]!.port}`], 15_000);
  const error = await refused.then(
    () => null,
    (failure: Error) => failure,
  );
  assert.ok(error, 'the odd node never became ready');
  assert.match(error!.message, /256 key groups.*128/, error!.message);
  await eventually(() => /refused odd/.test(nodes[0]!.output()), 'the seed logs the refusal');
  const [status] = await statuses(nodes);
  assert.equal(status!.view, ['n1']);
});

test.run();
