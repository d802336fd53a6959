// Functions running on real shard worker threads, driven through a real client over a real socket.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, Types, type Client, type DeadLetter } from 'statecraft';
import { eventually, fixture, sleep, startTestNode, take, type TestNode } from '../helpers.js';
import { TTL_MS, counted } from '../fixtures/functions.js';

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
  const done = client.subscribe<string>('relay-done');
  const chains = 200;
  const hops = 50;
  const before = node.metrics();
  await Promise.all(Array.from({ length: chains }, (_, index) => client.send({ typename: 'test/relay', id: `r${index}` }, hops)));
  const finished = await take(done, chains, 20_000);
  // Each chain ends where test/relay's ring of ids takes it: r<i> → r<(7i + 13) mod 1000>, once per hop.
  const ends = Array.from({ length: chains }, (_, index) => {
    let id = index;
    for (let hop = 0; hop < hops; hop++) id = (id * 7 + 13) % 1000;
    return `r${id}`;
  });
  assert.equal(finished.map((record) => record.value).sort(), ends.sort(), 'each chain ended once, where it must');
  // A marker through the same egress after every chain has ended: a record repeated by a duplicated
  // last hop would come before it.
  await client.send({ typename: 'test/relay', id: 'r-marker' }, 0);
  assert.equal((await take(done, 1)).map((record) => record.value), ['r-marker'], 'no relay-done record beyond one per chain');
  done.close();
  // Every hop ran before its chain's last record: wait for the counters to show at least that many,
  // then require exactly that many (a duplicated hop is one invocation more).
  const invocations = chains * (hops + 1) + 1;
  const records = chains + 1;
  await eventually(() => {
    const now = node.metrics();
    return now.Backlog === 0 && now.Invocations - before.Invocations >= invocations && now.EgressRecords - before.EgressRecords >= records;
  }, `at least ${invocations} invocations and ${records} egress records, and no backlog`);
  const after = node.metrics();
  assert.is(after.Invocations - before.Invocations, invocations, 'invocations: one per hop, plus the marker');
  assert.is(after.EgressRecords - before.EgressRecords, records, 'egress records: one per chain, plus the marker');
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
  const before = node.metrics();
  const started = Date.now();
  const schedule = (tag: string, delayMs: number, token?: string) =>
    client.send({ typename: 'test/delayer', id: 'd1' }, { op: 'schedule', tag, delayMs, ...(token ? { token } : {}) }, Types.json());
  // Sent together (one frame, d1's in order): the due times stay hundreds of ms apart even when the
  // machine is slow to run the commands, and the cancel lands long before 'cancelled' is due.
  await Promise.all([
    schedule('late', 2000),
    schedule('early', 200),
    schedule('cancelled', 1000, 'tok-1'),
    schedule('also-cancelled', 1200, 'tok-1'),
    schedule('other-token', 1400, 'tok-2'),
    // Another instance's cancel with the same token must not touch d1's messages (tokens are per sender).
    client.send({ typename: 'test/delayer', id: 'd2' }, { op: 'cancel', token: 'tok-2' }, Types.json()),
    client.send({ typename: 'test/delayer', id: 'd1' }, { op: 'cancel', token: 'tok-1' }, Types.json()),
  ]);
  const records = await take(sink, 3, 20_000);
  const tags = records.map((record) => (record.value as { value: string }).value);
  assert.equal(tags, ['early', 'other-token', 'late']);
  const early = records[0]!.value as { at: number; caller: unknown };
  assert.ok(early.at - started >= 200, `early arrived after ${early.at - started} ms, before its delay`);
  const late = records[2]!.value as { at: number };
  assert.ok(late.at - started >= 2000, `late arrived after ${late.at - started} ms, before its delay`);
  assert.equal(early.caller, { typename: 'test/delayer', id: 'd1' });
  // Nothing pending any more: the cancelled two can never arrive.
  await eventually(() => node.metrics().DelayedPending === 0, 'no delayed message pending');
  const after = node.metrics();
  assert.is(after.DelayedScheduled - before.DelayedScheduled, 5);
  assert.is(after.DelayedCancelled - before.DelayedCancelled, 2);
  assert.is(after.DelayedFired - before.DelayedFired, 3);
  sink.close();
});

test('values expire after write and after the last call', async () => {
  const ttl = client.subscribe('ttl');
  const address = { typename: 'test/ttl', id: 'x' };
  await client.send(address, 'write');
  await take(ttl, 1);
  const writtenBy = Date.now(); // the write ran before its record arrived
  // Call every 100 ms until a call is sent more than TTL_MS after the write: `written` has expired by
  // then, while `touched` stays alive (each call far less than TTL_MS after the one before).
  const reads: { written: string | null; touched: string | null }[] = [];
  for (;;) {
    await sleep(100);
    const sentAt = Date.now();
    await client.send(address, 'read');
    reads.push((await take(ttl, 1))[0]!.value as { written: string | null; touched: string | null });
    if (sentAt - writtenBy > TTL_MS) break;
  }
  assert.ok(reads.length >= 3, `${reads.length} reads`);
  assert.is(reads[0]!.written, 'w');
  assert.is(reads.at(-1)!.written, null, `written expired ${TTL_MS} ms after the write`);
  assert.ok(reads.every((read) => read.touched === 't'), 'touched refreshed by every call');
  await sleep(TTL_MS + 10); // from after the last call's record: the next call is more than TTL_MS after it
  await client.send(address, 'read');
  const [last] = await take(ttl, 1);
  assert.equal(last!.value, { op: 'read', written: null, touched: null });
  await eventually(() => node.metrics().Instances === countWithout('x'), 'the expired instance is removed');
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
