// The function host's batch runner (lib/remote-batch.ts) on StateFun batches built by hand: a batch
// missing values is answered with the specs it lacks (nothing runs), invocations run in order each
// seeing the state the previous left, only changed values come back as mutations, effects come back in
// order per kind, and what cannot run (an unknown type, a value of the wrong type or malformed, a handler
// that throws) is a BatchError with the HTTP status to answer. A context kept past its invocation is
// closed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defineFunction, Types, type Context } from '../../lib/index.js';
import { BatchError, RemoteFunctionSet, runBatch } from '../../lib/remote-batch.js';
import type { FunctionResponse, InvocationBatch, InvocationResult, RemoteTypedValue } from '../../lib/statefun-protocol.js';

const NOW_MS = 1_700_000_000_000;
const LIMITS = { valueBytesMax: 1024, idBytesMax: 16 };
const log = Types.json<string[]>('test/log');

/** Handlers run here, in order, with the message each got. */
const ran: string[] = [];
let kept: Context | null = null;

/**
 * Each message is a command: counts it and appends it to `log`, then acts on it. "boom" throws, "send",
 * "later", "cancel", "egress" emit effects, "forget" deletes the log, "async" writes after a pause,
 * "keep" keeps the context past the invocation, "long-id" sends to an id over the limit.
 */
const counter = defineFunction({
  typename: 'test/counter',
  specs: [
    { name: 'count', type: Types.int },
    { name: 'log', type: log },
    { name: 'untouched', type: Types.string },
  ],
  async fn(context, message) {
    const command = message.asString();
    ran.push(command);
    context.storage.count = (context.storage.count ?? 0) + 1;
    context.storage.log = [...(context.storage.log ?? []), command];
    switch (command) {
      case 'boom':
        throw new Error('boom');
      case 'send':
        context.send({ typename: 'test/other', id: context.caller?.id ?? 'nobody' }, 'hello');
        break;
      case 'later':
        context.sendAfter(1500, { typename: 'test/other', id: 'x' }, 7, 'reminder');
        break;
      case 'cancel':
        context.cancelDelayedMessage('reminder');
        break;
      case 'egress':
        context.egress('greetings', 'hi');
        context.egress('shop/orders', { id: 1 });
        break;
      case 'forget':
        context.storage.log = null;
        break;
      case 'async':
        await new Promise((resolve) => setTimeout(resolve, 5));
        context.storage.count = 100;
        break;
      case 'keep':
        kept = context;
        break;
      case 'long-id':
        context.send({ typename: 'test/other', id: 'x'.repeat(17) }, 1);
        break;
    }
  },
});

const expiring = defineFunction({
  typename: 'test/expiring',
  specs: [
    { name: 'session', type: Types.string, expireAfterWrite: 60_000 },
    { name: 'seen', type: Types.long, expireAfterCall: 5_000 },
  ],
  fn(context) {
    ran.push(`expiring ${context.storage.session}`);
    context.storage.seen = (context.storage.seen ?? 0) + 1;
  },
});

const functions = new RemoteFunctionSet([counter, expiring]);

const text = (value: string): RemoteTypedValue => ({ typename: 'io.statefun.types/string', value: Types.string.serialize(value) });
const int = (value: number): RemoteTypedValue => ({ typename: 'io.statefun.types/int', value: Types.int.serialize(value) });
const absent = (typename: string): RemoteTypedValue => ({ typename, value: null });

function batch(commands: string[], state: InvocationBatch['state'] = counterState(null, null), caller: InvocationBatch['invocations'][number]['caller'] = null): InvocationBatch {
  return {
    target: { namespace: 'test', type: 'counter', id: 'alice' },
    state,
    invocations: commands.map((command) => ({ caller, argument: text(command) })),
  };
}

function counterState(count: number | null, entries: string[] | null): InvocationBatch['state'] {
  return [
    { name: 'count', value: count === null ? absent('io.statefun.types/int') : int(count) },
    { name: 'log', value: entries === null ? absent('test/log') : { typename: 'test/log', value: log.serialize(entries) } },
    { name: 'untouched', value: absent('io.statefun.types/string') },
  ];
}

async function result(response: Promise<FunctionResponse>): Promise<InvocationResult> {
  const answer = await response;
  assert.is(answer.kind, 'result');
  return answer as InvocationResult;
}

/** The mutations, decoded by name. */
function mutations(answer: InvocationResult): Record<string, unknown> {
  const decoded: Record<string, unknown> = {};
  for (const mutation of answer.stateMutations) {
    if (mutation.value === null) decoded[mutation.name] = null;
    else if (mutation.name === 'count') decoded.count = [mutation.value.typename, Types.int.deserialize(mutation.value.value!)];
    else if (mutation.name === 'log') decoded.log = [mutation.value.typename, log.deserialize(mutation.value.value!)];
    else decoded[mutation.name] = mutation.value;
  }
  return decoded;
}

async function rejects(response: Promise<unknown>, status: number, code: string, text: string | RegExp): Promise<BatchError> {
  try {
    await response;
  } catch (error) {
    assert.instance(error, BatchError, String(error));
    const failure = error as BatchError;
    assert.is(failure.status, status, failure.message);
    assert.is(failure.code, code);
    assert.match(failure.message, text);
    return failure;
  }
  assert.unreachable(`expected a BatchError ${status}`);
  throw new Error('unreachable');
}

test.before.each(() => {
  ran.length = 0;
  kept = null;
});

test('a type this host does not serve: 404, naming what it serves', async () => {
  const unknown = { ...batch(['x']), target: { namespace: 'test', type: 'nope', id: 'a' } };
  await rejects(runBatch(functions, unknown, LIMITS), 404, 'SC_ERR_UNKNOWN_FUNCTION_TYPE', "this host does not serve test/nope (it serves test/counter, test/expiring); check the endpoint's functions pattern");
  await rejects(runBatch(new RemoteFunctionSet([]), unknown, LIMITS), 404, 'SC_ERR_UNKNOWN_FUNCTION_TYPE', '(it serves nothing)');
});

test('a batch without every declared value runs nothing and asks for the missing specs, with their expiry', async () => {
  const partial = batch(['a'], [counterState(1, null)[0]!]);
  assert.equal(await runBatch(functions, partial, LIMITS), {
    kind: 'incomplete',
    missingValues: [
      { name: 'log', typename: 'test/log', expireMode: 'none', expireAfterMs: 0 },
      { name: 'untouched', typename: 'io.statefun.types/string', expireMode: 'none', expireAfterMs: 0 },
    ],
  });
  const bare = { target: { namespace: 'test', type: 'expiring', id: 'a' }, state: [], invocations: [{ caller: null, argument: text('x') }] };
  assert.equal(await runBatch(functions, bare, LIMITS), {
    kind: 'incomplete',
    missingValues: [
      { name: 'session', typename: 'io.statefun.types/string', expireMode: 'after-write', expireAfterMs: 60_000 },
      { name: 'seen', typename: 'io.statefun.types/long', expireMode: 'after-invoke', expireAfterMs: 5_000 },
    ],
  });
  assert.equal(ran, [], 'no handler ran');
});

test('invocations run in order, each seeing the state the previous one left; only changed values come back', async () => {
  const answer = await result(runBatch(functions, batch(['a', 'b', 'c'], counterState(10, ['before'])), LIMITS, NOW_MS));
  assert.equal(ran, ['a', 'b', 'c']);
  assert.equal(mutations(answer), {
    count: ['io.statefun.types/int', 13],
    log: ['test/log', ['before', 'a', 'b', 'c']],
  }, "one mutation per changed value, in spec order; 'untouched' is left out");
  assert.equal(answer.outgoingMessages, []);
  assert.equal(answer.delayedInvocations, []);
  assert.equal(answer.outgoingEgresses, []);
});

test('a value deleted in the batch comes back as a delete; absent values start as null', async () => {
  const answer = await result(runBatch(functions, batch(['a', 'forget']), LIMITS, NOW_MS));
  assert.equal(mutations(answer), { count: ['io.statefun.types/int', 2], log: null });
});

test('effects come back grouped by kind, in the order the handlers asked for them; egress names map to StateFun namespaces', async () => {
  const caller = { namespace: 'test', type: 'caller', id: 'bob' };
  const answer = await result(runBatch(functions, batch(['send', 'later', 'egress', 'cancel', 'send'], counterState(0, []), caller), LIMITS, NOW_MS));
  const other = (id: string) => ({ namespace: 'test', type: 'other', id });
  assert.equal(answer.outgoingMessages, [
    { target: other('bob'), argument: text('hello') },
    { target: other('bob'), argument: text('hello') },
  ]);
  assert.equal(answer.delayedInvocations, [
    { cancel: false, delayMs: 1500, target: other('x'), argument: int(7), cancellationToken: 'reminder' },
    { cancel: true, cancellationToken: 'reminder' },
  ]);
  assert.equal(answer.outgoingEgresses, [
    { namespace: 'statecraft', type: 'greetings', argument: text('hi') },
    { namespace: 'shop', type: 'orders', argument: { typename: 'statecraft.types/json', value: Types.json().serialize({ id: 1 }) } },
  ]);
});

test('an async handler is awaited before the next invocation runs', async () => {
  const answer = await result(runBatch(functions, batch(['async', 'a']), LIMITS, NOW_MS));
  assert.equal(ran, ['async', 'a']);
  assert.equal(mutations(answer).count, ['io.statefun.types/int', 101], "the second invocation saw the first's late write");
});

test('a handler that throws fails the whole batch with 422 SC_ERR_REMOTE_HANDLER; later invocations do not run', async () => {
  await rejects(runBatch(functions, batch(['a', 'boom', 'c']), LIMITS, NOW_MS), 422, 'SC_ERR_REMOTE_HANDLER', 'test/counter/alice threw Error: boom');
  assert.equal(ran, ['a', 'boom']);
});

test("limits apply inside handlers: a send beyond the host's id limit is the handler's failure", async () => {
  await rejects(runBatch(functions, batch(['long-id']), LIMITS, NOW_MS), 422, 'SC_ERR_REMOTE_HANDLER', /threw ValidationError: address id is 17 bytes long; the limit is 16 bytes/);
});

test('a context kept past its invocation is closed: SC_ERR_CONTEXT_CLOSED', async () => {
  await result(runBatch(functions, batch(['keep']), LIMITS, NOW_MS));
  assert.ok(kept);
  assert.throws(() => kept!.send({ typename: 'test/other', id: 'x' }, 1), (error: Error & { code?: string }) => error.code === 'SC_ERR_CONTEXT_CLOSED');
  assert.throws(() => kept!.storage, (error: Error & { code?: string }) => error.code === 'SC_ERR_CONTEXT_CLOSED');
});

test('a state value of another type than declared is 422; a malformed primitive value is 400', async () => {
  const wrongType = counterState(null, null);
  wrongType[0] = { name: 'count', value: text('three') };
  await rejects(
    runBatch(functions, batch(['a'], wrongType), LIMITS),
    422,
    'SC_ERR_REMOTE_HANDLER',
    'state value count of test/counter is stored as io.statefun.types/string, but the function declares io.statefun.types/int',
  );
  const malformed = counterState(null, null);
  malformed[0] = { name: 'count', value: { typename: 'io.statefun.types/int', value: new Uint8Array([0x0d, 0x01]) } };
  await rejects(runBatch(functions, batch(['a'], malformed), LIMITS), 400, 'SC_ERR_MALFORMED_FRAME', /^state value count of test\/counter: /);
  assert.equal(ran, []);
});

test("an invocation without a value, or from a caller whose id is over the limit, is 400 naming the invocation", async () => {
  const noValue = batch(['a', 'b']);
  noValue.invocations[1] = { caller: null, argument: absent('io.statefun.types/string') };
  await rejects(runBatch(functions, noValue, LIMITS), 400, 'SC_ERR_MALFORMED_FRAME', 'invocation 1 of the batch for test/counter: invocation 1 carries no value (has_value is false)');
  const longCaller = batch(['a'], counterState(null, null), { namespace: 'test', type: 'caller', id: 'c'.repeat(17) });
  await rejects(runBatch(functions, longCaller, LIMITS), 400, 'SC_ERR_MALFORMED_FRAME', /^invocation 0 of the batch for test\/counter: address id is 17 bytes long/);
});

test('values with expiry are given to the handler as stored (the cluster keeps the deadlines) and come back when written', async () => {
  const state = [
    { name: 'session', value: text('s-1') },
    { name: 'seen', value: { typename: 'io.statefun.types/long', value: Types.long.serialize(41) } },
  ];
  const answer = await result(runBatch(functions, { target: { namespace: 'test', type: 'expiring', id: 'a' }, state, invocations: [{ caller: null, argument: text('x') }] }, LIMITS, NOW_MS));
  assert.equal(ran, ['expiring s-1']);
  assert.equal(answer.stateMutations, [{ name: 'seen', value: { typename: 'io.statefun.types/long', value: Types.long.serialize(42) } }]);
});

test.run();
