// Functions running on real shard worker threads, driven through a real client over a real socket.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, Types, type Client, type DeadLetter } from 'statecraft';
import { eventually, fixture, sleep, startTestNode, take, type TestNode } from '../helpers.js';
import { counted } from '../fixtures/functions.js';

let node: TestNode;
let client: Client;

test.before(async () => {
  node = await startTestNode({ functions: [fixture('functions')], shards: 2 });
  client = await connect(node.url);
});

test.after(async () => {
  await client?.close();
  await node?.close();
});

test('state persists per address across invocations', async () => {
  const counts = client.subscribe('counts', { type: counted });
  await client.send({ typename: 'test/counter', id: 'a' }, 5);
  await client.send({ typename: 'test/counter', id: 'b' }, 1);
  await client.send({ typename: 'test/counter', id: 'a' }, 2);
  const records = await take(counts, 3);
  counts.close();
  const values = records.map((record) => record.value);
  assert.equal(values.filter((v) => v.id === 'a').map((v) => v.count), [5, 7]);
  assert.equal(values.filter((v) => v.id === 'b').map((v) => v.count), [1]);
});

test('async handlers: one message at a time per address, in order, other addresses go on meanwhile', async () => {
  const ordered = client.subscribe('ordered');
  const addresses = 20;
  const perAddress = 40;
  const sends: Promise<void>[] = [];
  for (let value = 0; value < perAddress; value++) {
    for (let index = 0; index < addresses; index++) sends.push(client.send({ typename: 'test/ordered', id: `o${index}` }, value));
  }
  await Promise.all(sends);
  const records = await take(ordered, addresses * perAddress, 20_000);
  ordered.close();
  const byId = new Map<string, number[]>();
  let activeMax = 0;
  for (const record of records) {
    const value = record.value as { id: string; value: number; seen: number; activeMax: number };
    byId.set(value.id, [...(byId.get(value.id) ?? []), value.value]);
    // the list in state grows by one per message: no lost update from overlapping invocations
    assert.is(value.seen, (byId.get(value.id) ?? []).length);
    activeMax = Math.max(activeMax, value.activeMax);
  }
  const expected = Array.from({ length: perAddress }, (_, value) => value);
  for (let index = 0; index < addresses; index++) assert.equal(byId.get(`o${index}`), expected, `order of o${index}`);
  assert.ok(activeMax > 1, `instances overlapped while awaiting (max ${activeMax} at once)`);
});

test('many addresses concurrently, across shards: every hop of every relay happens exactly once', async () => {
  const done = client.subscribe('relay-done');
  const chains = 200;
  const hops = 50;
  await Promise.all(Array.from({ length: chains }, (_, index) => client.send({ typename: 'test/relay', id: `r${index}` }, hops)));
  const finished = await take(done, chains, 20_000);
  done.close();
  assert.is(finished.length, chains);
  await eventually(() => node.metrics().Backlog === 0, 'backlog drained');
  const metrics = node.metrics();
  assert.ok(metrics.Invocations >= chains * (hops + 1), `invocations ${metrics.Invocations}`);
});

test('a throwing handler: state unchanged, messages discarded, dead letter emitted, address goes on', async () => {
  const deadLetters = client.subscribe('dead-letters');
  const thrower = client.subscribe('thrower');
  const sink = client.subscribe('sink');
  await client.send({ typename: 'test/thrower', id: 't1' }, 'ok');
  await client.send({ typename: 'test/thrower', id: 't1' }, 'boom');
  await client.send({ typename: 'test/thrower', id: 't1' }, 'ok');
  const counts = (await take(thrower, 2)).map((record) => record.value);
  assert.equal(counts, [1, 2], 'the failed invocation neither counted nor emitted');
  const [letter] = await take(deadLetters, 1);
  const dead = letter!.value as DeadLetter;
  assert.equal(dead.address, { typename: 'test/thrower', id: 't1' });
  assert.is(dead.reason, 'boom requested');
  assert.is(dead.code, 'SC_ERR_HANDLER');
  assert.is(dead.error, 'Error');
  assert.is(dead.messageType, 'io.statefun.types/string');
  const sent = await take(sink, 2);
  assert.equal(sent.map((record) => (record.value as { value: string }).value), ['count 1', 'count 2']);
  deadLetters.close();
  thrower.close();
  sink.close();
});

test('an async handler that rejects is atomic too', async () => {
  const deadLetters = client.subscribe('dead-letters');
  const thrower = client.subscribe('thrower');
  await client.send({ typename: 'test/async-thrower', id: 'at' }, 'boom');
  await client.send({ typename: 'test/async-thrower', id: 'at' }, 'ok');
  const [count] = await take(thrower, 1);
  assert.is(count!.value, 1);
  const [letter] = await take(deadLetters, 1);
  assert.is((letter!.value as DeadLetter).error, 'TypeError');
  deadLetters.close();
  thrower.close();
});

test('an undeclared state name is a typed error reported as a dead letter', async () => {
  const deadLetters = client.subscribe('dead-letters');
  await client.send({ typename: 'test/undeclared', id: 'u' }, 1);
  const [letter] = await take(deadLetters, 1);
  const dead = letter!.value as DeadLetter;
  assert.is(dead.code, 'SC_ERR_UNDECLARED_STATE');
  assert.is(dead.error, 'UndeclaredStateError');
  assert.match(dead.reason, /state "unknown" is not declared by function test\/undeclared; declared: known/);
  deadLetters.close();
});

test('a message to an unknown function type becomes a dead letter', async () => {
  const deadLetters = client.subscribe('dead-letters');
  await client.send({ typename: 'test/lost', id: 'l' }, 1);
  const [letter] = await take(deadLetters, 1);
  const dead = letter!.value as DeadLetter;
  assert.is(dead.code, 'SC_ERR_UNKNOWN_FUNCTION_TYPE');
  assert.equal(dead.address, { typename: 'test/nowhere', id: 'x' });
  assert.equal(dead.caller, { typename: 'test/lost', id: 'l' });
  deadLetters.close();
});

test('delayed messages arrive after their delay, in due order; cancelled ones never arrive', async () => {
  const sink = client.subscribe('sink');
  const started = Date.now();
  const schedule = (tag: string, delayMs: number, token?: string) =>
    client.send({ typename: 'test/delayer', id: 'd1' }, { op: 'schedule', tag, delayMs, ...(token ? { token } : {}) }, Types.json());
  await schedule('late', 600);
  await schedule('early', 200);
  await schedule('cancelled', 300, 'tok-1');
  await schedule('also-cancelled', 400, 'tok-1');
  await schedule('other-token', 450, 'tok-2');
  // Another instance's cancel with the same token must not touch d1's messages (tokens are per sender).
  await client.send({ typename: 'test/delayer', id: 'd2' }, { op: 'cancel', token: 'tok-2' }, Types.json());
  await client.send({ typename: 'test/delayer', id: 'd1' }, { op: 'cancel', token: 'tok-1' }, Types.json());
  const records = await take(sink, 3, 5000);
  const tags = records.map((record) => (record.value as { value: string }).value);
  assert.equal(tags, ['early', 'other-token', 'late']);
  const early = records[0]!.value as { at: number; caller: unknown };
  assert.ok(early.at - started >= 190, `early arrived after ${early.at - started} ms`);
  assert.equal(early.caller, { typename: 'test/delayer', id: 'd1' });
  await sleep(300);
  const metrics = node.metrics();
  assert.is(metrics.DelayedCancelled, 2);
  assert.is(metrics.DelayedPending, 0);
  sink.close();
});

test('values expire after write and after the last call', async () => {
  const ttl = client.subscribe('ttl');
  const address = { typename: 'test/ttl', id: 'x' };
  await client.send(address, 'write');
  await take(ttl, 1);
  // Keep calling every 150 ms: `touched` stays alive, `written` expires 400 ms after its write.
  for (let call = 0; call < 4; call++) {
    await sleep(150);
    await client.send(address, 'read');
  }
  const reads = (await take(ttl, 4)).map((record) => record.value as { written: string | null; touched: string | null });
  assert.is(reads[0]!.written, 'w');
  assert.is(reads.at(-1)!.written, null, 'written expired 400 ms after the write');
  assert.ok(reads.every((read) => read.touched === 't'), 'touched refreshed by every call');
  await sleep(550);
  await client.send(address, 'read');
  const [last] = await take(ttl, 1);
  assert.equal(last!.value, { op: 'read', written: null, touched: null });
  await eventually(() => node.metrics().Instances === countWithout('x'), 'the expired instance is removed', 5000);
  ttl.close();
});

// Instances with state other than test/ttl x: every other test's addresses are still there.
let instancesBefore = -1;
function countWithout(_id: string): number {
  return instancesBefore;
}
test.before.each(() => {
  instancesBefore = node.metrics().Instances;
});

test.run();
