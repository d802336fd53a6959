// test-timeout-ms: 120000
// Remote functions over StateFun's request-reply protocol, against real HTTP servers: the function host
// (serve) running a module, and scripted endpoints that answer exactly as a test needs (slow, down,
// malformed, asking for state).
import { createServer, type Server } from 'node:http';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, Types, type Client, type DeadLetter } from '../../../lib/index.js';
import { serve, type FunctionHost } from '../../../lib/function-host.js';
import { decodeToFunction, encodeFromFunction, type FunctionResponse, type InvocationBatch, type InvocationResult } from '../../../lib/statefun-protocol.js';
import { ENDPOINT_DEFAULTS, type EndpointSpec } from '../../../node/remote/remote-endpoints.js';
import type { NodeOptions } from '../../../node/index.js';
import { pinged } from '../../fixtures/pinger.js';
import { tally } from '../../fixtures/remote-functions.js';
import { counted } from '../../fixtures/functions.js';
import { eventually, fixture, sleep, startTestNode, take, type TestNode } from '../../helpers.js';

const nodes: TestNode[] = [];
const clients: Client[] = [];
const hosts: FunctionHost[] = [];
const servers: Server[] = [];

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 500 }).catch(() => undefined);
  for (const node of nodes.splice(0)) await node.close().catch(() => undefined);
  for (const host of hosts.splice(0)) await host.close().catch(() => undefined);
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

function endpoint(functions: string, url: string, overrides: Partial<Omit<EndpointSpec, 'timeouts'>> & { timeouts?: Partial<EndpointSpec['timeouts']> } = {}): EndpointSpec {
  return { ...ENDPOINT_DEFAULTS, functions, urlPathTemplate: url, ...overrides, timeouts: { ...ENDPOINT_DEFAULTS.timeouts, ...overrides.timeouts } };
}

async function start(options: Partial<Omit<NodeOptions, 'functions'>> & { endpoints: EndpointSpec[]; functions?: string[] }): Promise<TestNode> {
  const node = await startTestNode({ shards: 2, keyGroups: 64, ...options, functions: options.functions ?? [] });
  nodes.push(node);
  return node;
}

async function client(node: TestNode): Promise<Client> {
  const created = await connect(node.url);
  clients.push(created);
  return created;
}

type Answer = FunctionResponse | { status: number; body: string | Uint8Array } | Uint8Array;

/** An HTTP endpoint that records each decoded request and answers with what `answer` returns. */
async function scriptedEndpoint(answer: (batch: InvocationBatch, index: number) => Answer | Promise<Answer>): Promise<{ url: string; requests: InvocationBatch[] }> {
  const requests: InvocationBatch[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', async () => {
      const batch = decodeToFunction(Buffer.concat(chunks));
      requests.push(batch);
      const reply = await answer(batch, requests.length - 1);
      if (reply instanceof Uint8Array) {
        response.writeHead(200, { 'content-type': 'application/octet-stream' }).end(reply);
      } else if ('status' in reply) {
        response.writeHead(reply.status, { 'content-type': 'text/plain' }).end(reply.body);
      } else {
        response.writeHead(200, { 'content-type': 'application/octet-stream' }).end(encodeFromFunction(reply));
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}/fn/{function.name}`, requests };
}

const EMPTY_RESULT: InvocationResult = Object.freeze({ kind: 'result', stateMutations: [], outgoingMessages: [], delayedInvocations: [], outgoingEgresses: [] });

function intBytes(value: number): Uint8Array {
  return Types.int.serialize(value);
}

function deadLetters(watcher: Client) {
  return watcher.subscribe<DeadLetter>('dead-letters', { type: Types.json<DeadLetter>('statecraft.types/dead-letter') });
}

test('an embedded function and a function served by serve() message each other, and both keep state', async () => {
  const host = await serve(fixture('remote-functions'), { port: 0, threads: 1 });
  hosts.push(host);
  assert.equal(host.functions, ['remote/adder']);
  const node = await start({ functions: [fixture('pinger')], endpoints: [endpoint('remote/*', host.url)] });
  assert.ok(node.functions.includes('local/pinger') && node.functions.includes('remote/*'), node.functions.join(','));
  const sender = await client(node);
  const pinger = sender.subscribe('pinger', { type: pinged });
  const tallies = sender.subscribe('remote-tallies', { type: tally });
  for (const value of [1, 2, 3, 4, 5]) await sender.send({ typename: 'local/pinger', id: 'a' }, value, Types.int);
  const answers = (await take(pinger, 5)).map((record) => record.value);
  assert.equal(answers.map((answer) => answer.answers), [1, 2, 3, 4, 5]);
  assert.equal(answers.map((answer) => answer.total), [1, 3, 6, 10, 15]);
  const remote = (await take(tallies, 5)).map((record) => record.value);
  assert.equal(remote.map((entry) => entry.total), [1, 3, 6, 10, 15]);
  assert.ok(remote.every((entry) => entry.from === 'local/pinger/a' && entry.id === 'a'));

  // A hot address: what arrives while its request is in flight goes as the next batch.
  const before = node.metrics().RemoteRequests;
  for (let index = 0; index < 300; index++) void sender.send({ typename: 'remote/adder', id: 'hot' }, 1, Types.int);
  const hot = await take(tallies, 300);
  assert.is(hot[299]!.value.total, 300);
  const requests = node.metrics().RemoteRequests - before;
  assert.ok(requests < 100, `300 messages to one address took ${requests} requests; they should go in batches`);
});

test('missing state is negotiated: the same invocations are sent again with the registered specs, and remote state expires', async () => {
  // Long enough that the second message surely finds the value of the first, even on a slow machine.
  const SEEN_TTL_MS = 1500;
  const endpointServer = await scriptedEndpoint((batch) => {
    const seen = batch.state.find((entry) => entry.name === 'seen');
    if (seen === undefined) return { kind: 'incomplete', missingValues: [{ name: 'seen', typename: 'io.statefun.types/int', expireMode: 'after-write', expireAfterMs: SEEN_TTL_MS }] };
    const before = seen.value.value === null ? 0 : Types.int.deserialize(seen.value.value);
    const after = before + batch.invocations.length;
    return {
      ...EMPTY_RESULT,
      stateMutations: [{ name: 'seen', value: { typename: 'io.statefun.types/int', value: intBytes(after) } }],
      outgoingEgresses: [{ namespace: 'test', type: 'seen', argument: { typename: 'io.statefun.types/int', value: intBytes(after) } }],
    };
  });
  const node = await start({ endpoints: [endpoint('scripted/*', endpointServer.url)] });
  const sender = await client(node);
  const seen = sender.subscribe<number>('test/seen', { type: Types.int });
  await sender.send({ typename: 'scripted/fn', id: 'x' }, 'first');
  assert.equal((await take(seen, 1)).map((record) => record.value), [1]);
  const [asked, again] = endpointServer.requests;
  assert.is(endpointServer.requests.length, 2);
  assert.equal(asked!.state, [], 'nothing registered before the function asked');
  assert.equal(again!.state, [{ name: 'seen', value: { typename: 'io.statefun.types/int', value: null } }]);
  assert.equal(again!.invocations, asked!.invocations, 'the same invocations are sent again');
  assert.equal(asked!.target, { namespace: 'scripted', type: 'fn', id: 'x' });
  assert.is(asked!.invocations[0]!.argument.typename, 'io.statefun.types/string');

  await sender.send({ typename: 'scripted/fn', id: 'x' }, 'second');
  assert.equal((await take(seen, 1)).map((record) => record.value), [2]);
  assert.equal(endpointServer.requests[2]!.state[0]!.value.value, intBytes(1), 'the registered value travels with the next request');

  await sleep(SEEN_TTL_MS + 100); // from after the second answer was applied: past the value's expire-after-write
  await sender.send({ typename: 'scripted/fn', id: 'x' }, 'third');
  assert.equal((await take(seen, 1)).map((record) => record.value), [1], 'the expired value is gone: counting starts again');
  assert.is(endpointServer.requests[3]!.state[0]!.value.value, null);
  assert.is(endpointServer.requests.length, 4, 'a registered spec is not negotiated again');
});

test('with --remote-attempts-max 1, an endpoint that is down: retried with back-off within the call budget, then a dead letter with the reason, and the address goes on', async () => {
  let down = true;
  const endpointServer = await scriptedEndpoint((batch) => {
    if (down) return { status: 503, body: 'warming up' };
    return { ...EMPTY_RESULT, outgoingEgresses: [{ namespace: 'test', type: 'ok', argument: batch.invocations[0]!.argument }] };
  });
  const node = await start({
    endpoints: [endpoint('flaky/*', endpointServer.url, { timeouts: { callMs: 1500 } }), endpoint('gone/*', 'http://127.0.0.1:1/', { timeouts: { callMs: 300 } })],
    functions: [fixture('functions')],
    remoteAttemptsMax: 1,
  });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const ok = sender.subscribe<string>('test/ok', { type: Types.string });
  const counts = sender.subscribe('counts', { type: counted });
  const startedAt = Date.now();
  await sender.send({ typename: 'flaky/fn', id: 'a' }, 'lost');
  // The cluster is not stalled meanwhile: an embedded function answers at once.
  await sender.send({ typename: 'test/counter', id: 'c' }, 1);
  assert.is((await take(counts, 1))[0]!.value.count, 1);
  const [letter] = (await take(letters, 1, 20_000)).map((record) => record.value);
  assert.is(letter!.code, 'SC_ERR_REMOTE_CALL');
  assert.equal(letter!.address, { typename: 'flaky/fn', id: 'a' });
  assert.match(letter!.reason, /HTTP 503: warming up/);
  assert.match(letter!.reason, /gave up after \d+ attempts in 1500 ms\); calls of this message that failed: 1 \(--remote-attempts-max 1\)/, letter!.reason);
  assert.ok(endpointServer.requests.length >= 3, `retried: ${endpointServer.requests.length} attempts`);
  // Back-off starts at 10 ms, doubles, and keeps 50-100 % of each step: giving up before the next step
  // would pass the budget of 1500 ms cannot happen sooner than 635 ms in. Only the lower bound is
  // exact (a slow machine makes everything later); the upper one only says the endpoint's budget, not
  // the default of 60 s, was spent.
  const elapsed = Date.now() - startedAt;
  assert.ok(elapsed >= 600, `retries spend most of the call budget of 1500 ms, not ${elapsed} ms`);
  assert.ok(elapsed < 20_000, `retries stop when the call budget of 1500 ms is spent, not after ${elapsed} ms`);

  down = false;
  await sender.send({ typename: 'flaky/fn', id: 'a' }, 'works');
  assert.equal((await take(ok, 1)).map((record) => record.value), ['works']);

  await sender.send({ typename: 'gone/fn', id: 'b' }, 'nobody listens');
  const [refused] = (await take(letters, 1, 20_000)).map((record) => record.value);
  assert.is(refused!.code, 'SC_ERR_REMOTE_CALL');
  assert.match(refused!.reason, /ECONNREFUSED/);
});

test('an endpoint down for several call budgets loses nothing (the default): its messages wait in order and each is applied once when it is back; the outage is logged when it begins and ends', async () => {
  let down = true;
  const endpointServer = await scriptedEndpoint((batch) => {
    if (down) return { status: 503, body: 'down for maintenance' };
    return { ...EMPTY_RESULT, outgoingEgresses: batch.invocations.map((invocation) => ({ namespace: 'test', type: 'ok', argument: invocation.argument })) };
  });
  const node = await start({ endpoints: [endpoint('flaky/*', endpointServer.url, { timeouts: { callMs: 400 } })], functions: [fixture('functions')] });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const ok = sender.subscribe<string>('test/ok', { type: Types.string });
  const counts = sender.subscribe('counts', { type: counted });
  const values = Array.from({ length: 8 }, (_, index) => `m${index}`);
  for (const value of values) await sender.send({ typename: 'flaky/fn', id: 'a' }, value);
  await sender.send({ typename: 'flaky/fn', id: 'b' }, 'other');
  // Down for about five call budgets; the cluster is not stalled meanwhile.
  await sleep(1000);
  await sender.send({ typename: 'test/counter', id: 'c' }, 1);
  assert.is((await take(counts, 1))[0]!.value.count, 1);
  await sleep(1000);
  assert.ok(endpointServer.requests.length >= 4, `called again while down: ${endpointServer.requests.length} requests`);
  down = false;
  const received = (await take(ok, values.length + 1, 40_000)).map((record) => record.value);
  assert.equal(received.filter((value) => value !== 'other'), values, 'every message of the address, once, in order');
  assert.ok(received.includes('other'));
  await sleep(300);
  const unexpected: string[] = [];
  void (async () => {
    for await (const record of letters) unexpected.push(record.value.reason);
  })();
  await sleep(200);
  assert.equal(unexpected, [], 'no dead letter');
  assert.ok(node.logs.some((line) => /^remote: http:\/\/127\.0\.0\.1:\d+\/fn\/fn fails \(.*HTTP 503: down for maintenance.*\): its messages wait, in order, and are sent again until it answers$/.test(line)), node.logs.join('\n'));
  assert.ok(node.logs.some((line) => /^remote: .* answers again, after \d+ s$/.test(line)), node.logs.join('\n'));
});

test('while an endpoint is down, one request at a time goes to it (per shard): the other addresses wait for its outcome, and all go, in order, once it answers', async () => {
  let down = true;
  let active = 0;
  let activeMax = 0;
  let downRequests = 0;
  const endpointServer = await scriptedEndpoint(async (batch) => {
    if (down) {
      downRequests++;
      active++;
      activeMax = Math.max(activeMax, active);
      await sleep(50);
      active--;
      return { status: 503, body: 'down' };
    }
    return { ...EMPTY_RESULT, outgoingEgresses: batch.invocations.map((invocation) => ({ namespace: 'test', type: 'ok', argument: invocation.argument })) };
  });
  const node = await start({ endpoints: [endpoint('flaky/*', endpointServer.url, { timeouts: { callMs: 300 } })], shards: 1 });
  const sender = await client(node);
  const ok = sender.subscribe<string>('test/ok', { type: Types.string });
  await sender.send({ typename: 'flaky/fn', id: 'first' }, 'first');
  await eventually(() => node.logs.some((line) => / fails \(/.test(line)), 'the outage to be noticed', 10_000);
  activeMax = 0;
  const before = downRequests;
  const ids = Array.from({ length: 20 }, (_, index) => `w${index}`);
  for (const id of ids) await sender.send({ typename: 'flaky/fn', id }, id);
  await sleep(2500);
  assert.is(activeMax, 1, 'one request at a time while the endpoint is down');
  // Without the breaker each of the 20 addresses would spend its own call budget (several attempts each).
  assert.ok(downRequests - before < 40, `${downRequests - before} requests in 2.5 s of outage`);
  down = false;
  const received = (await take(ok, ids.length + 1, 40_000)).map((record) => record.value);
  assert.equal([...received].sort(), ['first', ...ids].sort(), 'every message, once');
});

test('a StateFun SDK answers 500 when a handler throws: the batch is sent again message by message, the innocent ones are applied, and the one that keeps failing is a dead letter after --remote-attempts-max calls', async () => {
  const endpointServer = await scriptedEndpoint((batch) => {
    const values = batch.invocations.map((invocation) => Types.string.deserialize(invocation.argument.value!));
    if (values.includes('poison')) return { status: 500, body: 'handler threw' };
    return { ...EMPTY_RESULT, outgoingEgresses: values.map((value) => ({ namespace: 'test', type: 'ok', argument: { typename: 'io.statefun.types/string', value: Types.string.serialize(value) } })) };
  });
  const node = await start({ endpoints: [endpoint('sdk/*', endpointServer.url, { timeouts: { callMs: 200 } })], remoteAttemptsMax: 3 });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const ok = sender.subscribe<string>('test/ok', { type: Types.string });
  await sender.send({ typename: 'sdk/fn', id: 'p' }, 'first');
  const sends = ['i1', 'i2', 'poison', 'i3', 'i4'].map((value) => sender.send({ typename: 'sdk/fn', id: 'p' }, value));
  await Promise.all(sends);
  const [letter] = (await take(letters, 1, 30_000)).map((record) => record.value);
  assert.is(letter!.code, 'SC_ERR_REMOTE_CALL');
  assert.match(letter!.reason, /HTTP 500: handler threw.*calls of this message that failed: 3 \(--remote-attempts-max 3\)/);
  assert.equal((await take(ok, 5, 30_000)).map((record) => record.value), ['first', 'i1', 'i2', 'i3', 'i4'], 'the innocent messages, in order');
});

test('a slow endpoint backs up only its own addresses; what waited goes in one batch', async () => {
  // The slow endpoint answers nothing until the test lets it: what must not wait for it has to finish
  // first, and what queues behind its first request is all there before the second one is made.
  let answerSlow!: () => void;
  const slowMayAnswer = new Promise<void>((resolve) => (answerSlow = resolve));
  const slow = await scriptedEndpoint(async (batch) => {
    await slowMayAnswer;
    return { ...EMPTY_RESULT, outgoingEgresses: batch.invocations.map((invocation) => ({ namespace: 'test', type: 'slow', argument: invocation.argument })) };
  });
  const fast = await scriptedEndpoint((batch) => ({ ...EMPTY_RESULT, outgoingEgresses: batch.invocations.map((invocation) => ({ namespace: 'test', type: 'fast', argument: invocation.argument })) }));
  const node = await start({ endpoints: [endpoint('slow/*', slow.url, { timeouts: { readMs: 120_000 } }), endpoint('fast/*', fast.url)], functions: [fixture('functions')] });
  const sender = await client(node);
  try {
    const slowOut = sender.subscribe<number>('test/slow', { type: Types.int });
    const fastOut = sender.subscribe<number>('test/fast', { type: Types.int });
    const counts = sender.subscribe('counts', { type: counted });
    for (let index = 0; index < 50; index++) await sender.send({ typename: 'slow/fn', id: 'x' }, index, Types.int);
    await eventually(() => slow.requests.length === 1 && node.metrics().RemoteBacklog === 49, 'the first message in flight alone and the other 49 waiting for it');
    for (let index = 0; index < 20; index++) await sender.send({ typename: 'fast/fn', id: `y${index}` }, index, Types.int);
    await sender.send({ typename: 'test/counter', id: 'k' }, 5);
    // Other endpoints and embedded functions do not wait for the slow one (which has not answered yet).
    assert.is((await take(fastOut, 20, 20_000)).length, 20);
    assert.is((await take(counts, 1, 20_000))[0]!.value.count, 5);
    assert.is(slow.requests.length, 1, 'nothing more went to the slow endpoint meanwhile');
    answerSlow();
    const slowRecords = await take(slowOut, 50, 20_000);
    assert.equal(slowRecords.map((record) => record.value), Array.from({ length: 50 }, (_, index) => index), 'in order');
    assert.is(slow.requests.length, 2, 'the first message alone, then the 49 that waited as one batch');
    assert.is(slow.requests[1]!.invocations.length, 49);
  } finally {
    answerSlow(); // a failed check must not leave a request hanging for the node's close to wait on
  }
});

test('malformed, oversize and invalid answers are rejected whole: a clear dead letter, nothing applied', async () => {
  const modes: string[] = ['garbage', 'undeclared', 'oversize', 'bad-target', 'good'];
  const endpointServer = await scriptedEndpoint((batch) => {
    if (batch.state.length === 0) return { kind: 'incomplete', missingValues: [{ name: 'n', typename: 'io.statefun.types/int', expireMode: 'none', expireAfterMs: 0 }] };
    const mode = new TextDecoder().decode(batch.invocations[0]!.argument.value!).slice(2);
    const write = { name: 'n', value: { typename: 'io.statefun.types/int', value: intBytes(7) } };
    const egress = { namespace: 'test', type: 'applied', argument: { typename: 'io.statefun.types/string', value: Types.string.serialize(mode) } };
    switch (mode) {
      case 'garbage':
        return new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]);
      case 'undeclared':
        return { ...EMPTY_RESULT, stateMutations: [write, { name: 'other', value: write.value }], outgoingEgresses: [egress] };
      case 'oversize':
        return { ...EMPTY_RESULT, stateMutations: [write], outgoingEgresses: [egress, { ...egress, argument: { typename: 'test/blob', value: new Uint8Array(4096) } }] };
      case 'bad-target':
        return { ...EMPTY_RESULT, stateMutations: [write], outgoingEgresses: [egress], outgoingMessages: [{ target: { namespace: 'bad namespace', type: 'x', id: 'y' }, argument: egress.argument }] };
      default:
        return { ...EMPTY_RESULT, stateMutations: [write], outgoingEgresses: [egress] };
    }
  });
  const node = await start({ endpoints: [endpoint('strict/*', endpointServer.url, { payloadMaxBytes: 2048 })] });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const applied = sender.subscribe<string>('test/applied', { type: Types.string });
  for (const mode of modes) {
    await sender.send({ typename: 'strict/fn', id: 'z' }, mode);
    if (mode === 'good') break;
    const [letter] = (await take(letters, 1, 20_000)).map((record) => record.value);
    assert.is(letter!.code, 'SC_ERR_REMOTE_RESPONSE', `${mode}: ${letter!.reason}`);
    assert.match(letter!.reason, /nothing of it (was )?applied/);
    if (mode === 'undeclared') assert.match(letter!.reason, /writes state "other", which the function never declared/);
    if (mode === 'oversize') assert.match(letter!.reason, /over the endpoint's limit of 2048|more than 2048/);
    if (mode === 'bad-target') assert.match(letter!.reason, /outgoing message 0/);
  }
  assert.equal((await take(applied, 1)).map((record) => record.value), ['good'], 'only the good answer emitted anything');
  // Each rejected answer left the state as it was: every request after the negotiation carried n unset.
  const carried = endpointServer.requests.filter((request) => request.state.length > 0).map((request) => request.state[0]!.value.value);
  assert.equal(carried, [null, null, null, null, null]);
  await sender.send({ typename: 'strict/fn', id: 'z' }, 'good');
  await take(applied, 1);
  assert.equal(endpointServer.requests.at(-1)!.state[0]!.value.value, intBytes(7), 'the good answer applied');
});

test('a batch larger than the endpoint accepts is split; one message too large alone becomes a dead letter', async () => {
  // The first request is answered once the other 29 messages wait behind it: they go as batches.
  let answerFirst!: () => void;
  const firstMayAnswer = new Promise<void>((resolve) => (answerFirst = resolve));
  const endpointServer = await scriptedEndpoint(async (batch) => {
    await firstMayAnswer;
    return { ...EMPTY_RESULT, outgoingEgresses: batch.invocations.map(() => ({ namespace: 'test', type: 'done', argument: { typename: 'io.statefun.types/int', value: intBytes(batch.invocations.length) } })) };
  });
  const node = await start({ endpoints: [endpoint('split/*', endpointServer.url, { payloadMaxBytes: 3000, timeouts: { readMs: 120_000 } })], valueBytesMax: 16_384 });
  const sender = await client(node);
  const done = sender.subscribe<number>('test/done', { type: Types.int });
  const letters = deadLetters(sender);
  await Promise.all(Array.from({ length: 30 }, () => sender.send({ typename: 'split/fn', id: 's' }, 'x'.repeat(400))));
  try {
    await eventually(() => endpointServer.requests.length === 1 && node.metrics().RemoteBacklog === 29, 'the first message in flight and 29 waiting');
  } finally {
    answerFirst();
  }
  assert.is((await take(done, 30, 20_000)).length, 30, 'every message was invoked');
  const sizes = endpointServer.requests.map((request) => request.invocations.length);
  assert.ok(sizes.every((size) => size * 400 < 3000), `batches stayed under the limit: ${sizes.join(',')}`);
  assert.ok(sizes.some((size) => size > 1), `messages still went in batches: ${sizes.join(',')}`);
  await sender.send({ typename: 'split/fn', id: 's' }, 'y'.repeat(5000));
  const [letter] = (await take(letters, 1, 20_000)).map((record) => record.value);
  assert.is(letter!.code, 'SC_ERR_REMOTE_CALL');
  assert.match(letter!.reason, /over the endpoint's payload limit of 3000/);
});

test('a handler that throws in the function host dead-letters only its own message', async () => {
  const host = await serve(fixture('remote-functions'), { port: 0, threads: 1 });
  hosts.push(host);
  const node = await start({ endpoints: [endpoint('remote/*', host.url)] });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const tallies = sender.subscribe('remote-tallies', { type: tally });
  const sends = [sender.send({ typename: 'remote/adder', id: 'q' }, 1, Types.int)];
  sends.push(sender.send({ typename: 'remote/adder', id: 'q' }, 'boom'));
  for (let index = 0; index < 5; index++) sends.push(sender.send({ typename: 'remote/adder', id: 'q' }, 10, Types.int));
  await Promise.all(sends);
  const totals = (await take(tallies, 6)).map((record) => record.value.total);
  assert.equal(totals, [1, 11, 21, 31, 41, 51]);
  const [letter] = (await take(letters, 1)).map((record) => record.value);
  assert.is(letter!.code, 'SC_ERR_REMOTE_HANDLER');
  assert.is(letter!.messageType, 'io.statefun.types/string');
  assert.match(letter!.reason, /boom requested/);
  await eventually(() => (host.answered[422] ?? 0) >= 1, 'the host answered 422');
});

test('a handler in a synchronous loop in the function host: past handlerTimeoutMs its thread is replaced and the request answered 422; only its message is dead-lettered, and the host goes on', async () => {
  const host = await serve(fixture('remote-functions'), { port: 0, threads: 1, handlerTimeoutMs: 500 });
  hosts.push(host);
  const node = await start({ endpoints: [endpoint('remote/*', host.url)] });
  const sender = await client(node);
  const letters = deadLetters(sender);
  const tallies = sender.subscribe('remote-tallies', { type: tally });
  const sends = [sender.send({ typename: 'remote/adder', id: 'w' }, 1, Types.int)];
  sends.push(sender.send({ typename: 'remote/adder', id: 'w' }, 'spin'));
  for (let index = 0; index < 3; index++) sends.push(sender.send({ typename: 'remote/adder', id: 'w' }, 10, Types.int));
  await Promise.all(sends);
  const [letter] = (await take(letters, 1, 20_000)).map((record) => record.value);
  assert.is(letter!.code, 'SC_ERR_REMOTE_HANDLER');
  assert.match(letter!.reason, /SC_ERR_HANDLER_TIMEOUT: a handler of this batch did not finish within 500 ms \(handlerTimeoutMs\): it was abandoned and the thread running it replaced/);
  assert.equal((await take(tallies, 4, 20_000)).map((record) => record.value.total), [1, 11, 21, 31]);
  // The one pool thread was replaced: the host still answers.
  await sender.send({ typename: 'remote/adder', id: 'w' }, 5, Types.int);
  assert.equal((await take(tallies, 1, 10_000)).map((record) => record.value.total), [36]);
  assert.ok((host.answered[422] ?? 0) >= 1);
});

test('the function host answers bad requests with clear statuses and goes on', async () => {
  const host = await serve(fixture('remote-functions'), { port: 0, threads: 1, bodyBytesMax: 4096 });
  hosts.push(host);
  const post = async (body: Uint8Array) => {
    const response = await fetch(host.url, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    return { status: response.status, text: response.status === 200 ? '' : await response.text() };
  };
  const garbage = await post(new Uint8Array([1, 2, 3, 0xff]));
  assert.is(garbage.status, 400);
  assert.match(garbage.text, /SC_ERR_MALFORMED_FRAME/);
  const { encodeToFunction } = await import('../../../lib/statefun-protocol.js');
  const request = (type: string, bytes = Types.int.serialize(1)) =>
    encodeToFunction({ target: { namespace: 'remote', type, id: 'h' }, state: [{ name: 'total', value: { typename: 'io.statefun.types/int', value: null } }], invocations: [{ caller: null, argument: { typename: 'io.statefun.types/int', value: bytes } }] });
  const unknown = await post(request('nobody'));
  assert.is(unknown.status, 404);
  assert.match(unknown.text, /does not serve remote\/nobody/);
  const large = await post(new Uint8Array(10_000));
  assert.is(large.status, 413);
  const good = await fetch(host.url, { method: 'POST', body: request('adder') });
  assert.is(good.status, 200);
  assert.is(good.headers.get('content-type'), 'application/octet-stream');
  const get = await fetch(host.url);
  assert.match(await get.text(), /serves remote\/adder/);
});

test.run();
