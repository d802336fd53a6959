// Remote batching through a fake shard (a real KeyGroupState; effects, dead letters, forwards recorded)
// against a real HTTP endpoint on 127.0.0.1 that holds each request until the test answers it.
import { createServer, type Server, type ServerResponse } from 'node:http';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EffectKind } from '../../../lib/invocation.js';
import { keyGroupOf } from '../../../lib/key-group.js';
import { Message } from '../../../lib/message.js';
import { decodeToFunction, encodeFromFunction, type FunctionResponse, type InvocationBatch, type InvocationResult, type RemoteValueSpec } from '../../../lib/statefun-protocol.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { Types } from '../../../lib/types.js';
import { closeRemoteConnections } from '../../../node/remote/remote-client.js';
import { RemoteDispatcher } from '../../../node/remote/remote-dispatcher.js';
import { ENDPOINT_DEFAULTS, EndpointTable, type EndpointSpec } from '../../../node/remote/remote-endpoints.js';
import { FakeShard, KEY_GROUPS } from '../shard/fake-shard.js';
import { eventually, sleep, withTimeout } from '../../helpers.js';

const TYPE = 'remote/fn';
const WAIT_MS = 5000;


type Answer = FunctionResponse | { status: number; body: string } | Uint8Array;

interface HeldRequest {
  batch: InvocationBatch;
  /** Answers; resolves once the answer is written out. */
  respond(answer: Answer): Promise<void>;
}

/** An endpoint that holds every request until the test answers it. */
class HeldEndpoint {
  readonly server: Server;
  readonly requests: InvocationBatch[] = [];
  private readonly held: HeldRequest[] = [];
  private wake: (() => void) | null = null;

  constructor() {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const batch = decodeToFunction(Buffer.concat(chunks));
        this.requests.push(batch);
        this.held.push({ batch, respond: (answer) => write(response, answer) });
        this.wake?.();
      });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as { port: number }).port;
  }

  /** The next request to arrive (or that arrived and was not taken yet). */
  async next(): Promise<HeldRequest> {
    return withTimeout(
      (async () => {
        while (this.held.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
        return this.held.shift()!;
      })(),
      WAIT_MS,
      `a request to the endpoint (${this.requests.length} so far)`,
    );
  }

  get pending(): number {
    return this.held.length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function write(response: ServerResponse, answer: Answer): Promise<void> {
  return new Promise((resolve) => {
    response.once('finish', () => resolve());
    if (answer instanceof Uint8Array) response.writeHead(200, { 'content-type': 'application/octet-stream' }).end(answer);
    else if ('status' in answer) response.writeHead(answer.status, { 'content-type': 'text/plain' }).end(answer.body);
    else response.writeHead(200, { 'content-type': 'application/octet-stream' }).end(encodeFromFunction(answer));
  });
}

const OK: InvocationResult = Object.freeze({ kind: 'result', stateMutations: [], outgoingMessages: [], delayedInvocations: [], outgoingEgresses: [] }) as InvocationResult;
const SEEN: RemoteValueSpec = { name: 'seen', typename: 'io.statefun.types/int', expireMode: 'none', expireAfterMs: 0 };

const endpoints: HeldEndpoint[] = [];

test.after.each(async () => {
  for (const endpoint of endpoints.splice(0)) await endpoint.close();
  closeRemoteConnections();
});

async function setup(options: { batchMax?: number; backlogMax?: number; payloadMaxBytes?: number } = {}) {
  const endpoint = new HeldEndpoint();
  endpoints.push(endpoint);
  const port = await endpoint.listen();
  const spec: EndpointSpec = {
    ...ENDPOINT_DEFAULTS,
    functions: 'remote/*',
    urlPathTemplate: `http://127.0.0.1:${port}/fn/{function.name}`,
    maxNumBatchRequests: options.batchMax ?? 1000,
    payloadMaxBytes: options.payloadMaxBytes ?? ENDPOINT_DEFAULTS.payloadMaxBytes,
    timeouts: { callMs: 4000, connectMs: 1000, readMs: 4000, writeMs: 4000 },
  };
  const shard = new FakeShard(Date.now);
  const dispatcher = new RemoteDispatcher(shard, new EndpointTable([spec]), options.backlogMax ?? 100);
  return { endpoint, shard, dispatcher };
}

function message(id: string, value: string, typename = TYPE): Message {
  const typed = toTypedValue(value);
  return new Message(keyGroupOf(id, KEY_GROUPS), typename, id, null, null, typed.typename, typed.value, typed.bytes);
}

function argumentsOf(batch: InvocationBatch): string[] {
  return batch.invocations.map((invocation) => Types.string.deserialize(invocation.argument.value!));
}

function stringValue(text: string) {
  return { typename: 'io.statefun.types/string', value: Types.string.serialize(text) };
}

/** Waits until the dispatcher has no request in flight (an answer was applied). */
async function idle(dispatcher: RemoteDispatcher, what: string): Promise<void> {
  await eventually(() => dispatcher.inFlight === 0, what, WAIT_MS);
}

// ---- batching ----

test('one request in flight per address; what arrives meanwhile goes as the next batch, in order', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  assert.ok(dispatcher.deliver(message('a', 'a1')));
  assert.is(dispatcher.inFlight, 1);
  const first = await endpoint.next();
  assert.equal(argumentsOf(first.batch), ['a1']);
  assert.equal(first.batch.target, { namespace: 'remote', type: 'fn', id: 'a' });
  dispatcher.deliver(message('a', 'a2'));
  dispatcher.deliver(message('a', 'a3'));
  dispatcher.deliver(message('b', 'b1')); // another address: its own request at once
  assert.is(dispatcher.waiting, 2);
  assert.is(dispatcher.inFlight, 2);
  const other = await endpoint.next();
  assert.equal(argumentsOf(other.batch), ['b1']);
  await sleep(50);
  assert.is(endpoint.pending, 0, 'nothing more for address a while its request is in flight');
  await first.respond(OK);
  const second = await endpoint.next();
  assert.equal(argumentsOf(second.batch), ['a2', 'a3']);
  assert.is(dispatcher.waiting, 0);
  assert.is(dispatcher.inFlight, 2);
  await second.respond(OK);
  await other.respond(OK);
  await idle(dispatcher, 'both addresses idle');
  assert.is(dispatcher.waiting, 0);
  assert.is(shard.counters.invocations, 4);
  assert.is(shard.counters.remoteRequests, 3);
  assert.equal(shard.deadLetters, []);
  assert.is(shard.runs.filter((run) => run.startsWith('start')).length, 3);
  assert.is(shard.runs.filter((run) => run.startsWith('end')).length, 3);
  // Idle again: the next message goes at once.
  dispatcher.deliver(message('a', 'a4'));
  const third = await endpoint.next();
  assert.equal(argumentsOf(third.batch), ['a4']);
  await third.respond(OK);
  await idle(dispatcher, 'a idle');
});

test('maxNumBatchRequests caps a batch; the rest goes in the batches after it', async () => {
  const { endpoint, dispatcher } = await setup({ batchMax: 3 });
  dispatcher.deliver(message('a', 'm1'));
  const first = await endpoint.next();
  for (let index = 2; index <= 8; index++) dispatcher.deliver(message('a', `m${index}`));
  assert.is(dispatcher.waiting, 7);
  await first.respond(OK);
  const sizes: string[][] = [];
  for (let round = 0; round < 3; round++) {
    const request = await endpoint.next();
    sizes.push(argumentsOf(request.batch));
    await request.respond(OK);
  }
  assert.equal(sizes, [['m2', 'm3', 'm4'], ['m5', 'm6', 'm7'], ['m8']]);
  await idle(dispatcher, 'the address idle');
  assert.is(dispatcher.waiting, 0);
});

// ---- answers ----

test('a missing-state answer registers the spec and sends the same batch again; mutations land in the records', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  const id = 'stateful';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  const index = dispatcher.resolve(TYPE)!.index;
  assert.is(shard.groups.indexOf(TYPE), index, 'the remote type was added to the records');
  dispatcher.deliver(message(id, 's1'));
  const first = await endpoint.next();
  dispatcher.deliver(message(id, 's2'));
  assert.equal(first.batch.state, [], 'nothing registered yet');
  await first.respond({ kind: 'incomplete', missingValues: [SEEN] });
  const again = await endpoint.next();
  assert.equal(argumentsOf(again.batch), ['s1'], 'the same batch, not the waiting message');
  assert.equal(again.batch.state, [{ name: 'seen', value: { typename: 'io.statefun.types/int', value: null } }]);
  await again.respond({ ...OK, stateMutations: [{ name: 'seen', value: { typename: 'io.statefun.types/int', value: Types.int.serialize(1) } }] });
  const next = await endpoint.next();
  assert.equal(argumentsOf(next.batch), ['s2']);
  const stored = shard.groups.records.get(keyGroup, index, id) as unknown[];
  assert.equal([stored[0], stored[1], Types.int.deserialize(stored[2] as Uint8Array), stored[3]], ['seen', 'io.statefun.types/int', 1, 0]);
  assert.is(shard.groups.changed[keyGroup], 1);
  assert.is(Types.int.deserialize(next.batch.state[0]!.value.value!), 1, 'the next request carries the state');
  await next.respond({ ...OK, stateMutations: [{ name: 'seen', value: null }] });
  await idle(dispatcher, 'the address idle');
  assert.is(shard.groups.records.get(keyGroup, index, id), undefined, 'deleted');
  assert.equal(shard.deadLetters, []);
});

test('outgoing messages, delayed messages, cancellations and egress go to applyEffects in order, with the address', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  const id = 'sender';
  dispatcher.deliver(message(id, 'go'));
  const request = await endpoint.next();
  await request.respond({
    ...OK,
    outgoingMessages: [
      { target: { namespace: 'test', type: 'sink', id: 'x' }, argument: stringValue('first') },
      { target: { namespace: 'test', type: 'sink', id: 'y' }, argument: stringValue('second') },
    ],
    delayedInvocations: [
      { cancel: false, delayMs: 250, target: { namespace: 'test', type: 'sink', id: 'z' }, argument: stringValue('later'), cancellationToken: 'tok' },
      { cancel: true, cancellationToken: 'old' },
    ],
    outgoingEgresses: [{ namespace: 'statecraft', type: 'out', argument: stringValue('record') }],
  });
  await idle(dispatcher, 'the answer applied');
  assert.is(shard.effects.length, 1);
  const call = shard.effects[0]!;
  assert.is(call.self, `${TYPE}/${id}`);
  assert.is(call.keyGroup, keyGroupOf(id, KEY_GROUPS));
  assert.equal(
    call.effects.map((effect) => [effect.kind, effect.targetTypename, effect.targetId, effect.value?.value ?? null, effect.delayMs, effect.cancellationToken]),
    [
      [EffectKind.Send, 'test/sink', 'x', 'first', 0, null],
      [EffectKind.Send, 'test/sink', 'y', 'second', 0, null],
      [EffectKind.SendAfter, 'test/sink', 'z', 'later', 250, 'tok'],
      [EffectKind.Cancel, '', '', null, 0, 'old'],
      [EffectKind.Egress, 'out', '', 'record', 0, null],
    ],
  );
});

test('an endpoint that answers 4xx or garbage: dead letters for the batch, and the address goes on', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  dispatcher.deliver(message('a', 'x1'));
  const first = await endpoint.next();
  dispatcher.deliver(message('a', 'x2'));
  dispatcher.deliver(message('a', 'x3'));
  await first.respond({ status: 400, body: 'bad request' });
  const second = await endpoint.next();
  assert.equal(argumentsOf(second.batch), ['x2', 'x3'], 'the address goes on after a failure');
  assert.equal(shard.deadLetterCodes(), [['x1', 'SC_ERR_REMOTE_CALL']]);
  assert.match(String((shard.deadLetters[0]!.error as Error).message), /400/);
  dispatcher.deliver(message('a', 'x4'));
  await second.respond(Uint8Array.from([0xff, 0xff, 0xff, 0x01, 0x02])); // not a FromFunction message
  const third = await endpoint.next();
  assert.equal(argumentsOf(third.batch), ['x4']);
  assert.equal(shard.deadLetterCodes(), [
    ['x1', 'SC_ERR_REMOTE_CALL'],
    ['x2', 'SC_ERR_REMOTE_RESPONSE'],
    ['x3', 'SC_ERR_REMOTE_RESPONSE'],
  ]);
  await third.respond({ ...OK, stateMutations: [{ name: 'never-declared', value: { typename: 'io.statefun.types/int', value: Types.int.serialize(1) } }] });
  await idle(dispatcher, 'the address idle');
  assert.equal(shard.deadLetterCodes().at(-1), ['x4', 'SC_ERR_REMOTE_RESPONSE'], 'a write to undeclared state is rejected whole');
  assert.equal(shard.effects, [], 'nothing of a rejected answer applied');
  assert.is(shard.counters.failures, 4);
  assert.is(shard.counters.invocations, 0);
});

test('a batch whose handler threw (422) is retried one message per request: only the thrower is dead-lettered', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  dispatcher.deliver(message('a', 'h1'));
  const first = await endpoint.next();
  for (const value of ['h2', 'h3', 'h4']) dispatcher.deliver(message('a', value));
  await first.respond(OK);
  const batch = await endpoint.next();
  assert.equal(argumentsOf(batch.batch), ['h2', 'h3', 'h4']);
  dispatcher.deliver(message('a', 'h5'));
  await batch.respond({ status: 422, body: 'h3 throws' });
  const sent: string[][] = [];
  for (;;) {
    const request = await endpoint.next();
    const values = argumentsOf(request.batch);
    sent.push(values);
    await request.respond(values.includes('h3') ? { status: 422, body: 'h3 throws' } : OK);
    if (values.includes('h5')) break;
  }
  assert.equal(sent, [['h2'], ['h3'], ['h4'], ['h5']]);
  await idle(dispatcher, 'the address idle');
  assert.equal(shard.deadLetterCodes(), [['h3', 'SC_ERR_REMOTE_HANDLER']]);
});

test('an answer that would leave the address over delayedPendingMax: the batch is retried one message per request, and only the one that goes over is dead-lettered (SC_ERR_LIMIT_REACHED)', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  shard.delayedPendingMax = 2;
  shard.schedulesTimers = true;
  const later = (tag: string) => ({ cancel: false as const, delayMs: 60_000, target: { namespace: 'test', type: 'sink', id: 'z' }, argument: stringValue(tag), cancellationToken: null });
  dispatcher.deliver(message('a', 'd1'));
  const first = await endpoint.next();
  for (const value of ['d2', 'd3', 'd4']) dispatcher.deliver(message('a', value));
  await first.respond({ ...OK, delayedInvocations: [later('d1')] });
  const batch = await endpoint.next();
  assert.equal(argumentsOf(batch.batch), ['d2', 'd3', 'd4']);
  // One delayed message per invocation: 1 pending + 3 is over 2.
  await batch.respond({ ...OK, delayedInvocations: [later('d2'), later('d3'), later('d4')] });
  const sent: string[][] = [];
  for (;;) {
    const request = await endpoint.next();
    const values = argumentsOf(request.batch);
    sent.push(values);
    await request.respond({ ...OK, delayedInvocations: values.map(later) });
    if (values.includes('d4')) break;
  }
  assert.equal(sent, [['d2'], ['d3'], ['d4']]);
  await idle(dispatcher, 'the address idle');
  assert.equal(shard.deadLetterCodes(), [
    ['d3', 'SC_ERR_LIMIT_REACHED'],
    ['d4', 'SC_ERR_LIMIT_REACHED'],
  ]);
  assert.is(shard.groups.timers.pendingOf(TYPE, 'a'), 2);
});

test('an answer with more effects than its messages may ask for (100,000 each) applies nothing: a batch is retried one message per request, and a single one over is dead-lettered (SC_ERR_LIMIT_REACHED)', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  const egress = (count: number) => Array.from({ length: count }, () => ({ namespace: 'statecraft', type: 'out', argument: stringValue('r') }));
  dispatcher.deliver(message('a', 'e1'));
  const first = await endpoint.next();
  for (const value of ['e2', 'e3']) dispatcher.deliver(message('a', value));
  await first.respond(OK);
  const batch = await endpoint.next();
  assert.equal(argumentsOf(batch.batch), ['e2', 'e3']);
  await batch.respond({ ...OK, outgoingEgresses: egress(200_001) });
  const single = await endpoint.next();
  assert.equal(argumentsOf(single.batch), ['e2']);
  await single.respond({ ...OK, outgoingEgresses: egress(100_001) });
  const last = await endpoint.next();
  assert.equal(argumentsOf(last.batch), ['e3']);
  await last.respond({ ...OK, outgoingEgresses: egress(100_000) });
  await idle(dispatcher, 'the address idle');
  assert.equal(shard.deadLetterCodes(), [['e2', 'SC_ERR_LIMIT_REACHED']]);
  assert.match(String((shard.deadLetters[0]!.error as Error).message), /answered one message with 100001 messages, delayed messages, cancellations and egress records, more than 100000 per invocation/);
  assert.equal(shard.effects.map((call) => call.effects.length), [0, 100_000], 'nothing of a refused answer applied');
});

test('an endpoint that asks again for the state it was given: dead letters, not an endless loop', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  dispatcher.deliver(message('a', 'q1'));
  for (let round = 0; round < 2; round++) {
    const request = await endpoint.next();
    await request.respond({ kind: 'incomplete', missingValues: [SEEN] });
  }
  await idle(dispatcher, 'the batch given up');
  assert.equal(shard.deadLetterCodes(), [['q1', 'SC_ERR_REMOTE_RESPONSE']]);
  assert.is(endpoint.requests.length, 2);
});

test('a batch over the endpoint\'s payload limit is split, in order; a single message over it is a dead letter', async () => {
  const { endpoint, shard, dispatcher } = await setup({ payloadMaxBytes: 300 });
  const value = (name: string) => `${name}:${'v'.repeat(80)}`;
  dispatcher.deliver(message('a', value('p1')));
  const first = await endpoint.next();
  for (const name of ['p2', 'p3', 'p4', 'p5', 'p6']) dispatcher.deliver(message('a', value(name)));
  dispatcher.deliver(message('a', `p7:${'w'.repeat(400)}`));
  dispatcher.deliver(message('a', value('p8')));
  await first.respond(OK);
  const sent: string[][] = [];
  while (!sent.flat().includes('p8')) {
    const request = await endpoint.next();
    sent.push(argumentsOf(request.batch).map((argument) => argument.slice(0, 2)));
    await request.respond(OK);
  }
  await idle(dispatcher, 'the address idle');
  assert.equal(sent.flat(), ['p2', 'p3', 'p4', 'p5', 'p6', 'p8'], 'every message once, in order');
  assert.ok(sent.every((batch) => batch.length <= 2), `batches under the limit: ${JSON.stringify(sent)}`);
  assert.ok(sent.some((batch) => batch.length === 2), 'messages that fit together went together');
  assert.equal(shard.deadLetterCodes().map(([text, code]) => [text.slice(0, 2), code]), [['p7', 'SC_ERR_REMOTE_CALL']]);
  assert.match((shard.deadLetters[0]!.error as Error).message, /payload_max_bytes/);
  assert.is(dispatcher.waiting, 0);
});

// ---- limits and recovery ----

test('backlog over backlogMax: the message is dead-lettered with SC_ERR_REMOTE_BACKLOG_FULL; the waiting ones go on', async () => {
  const { endpoint, shard, dispatcher } = await setup({ backlogMax: 2 });
  dispatcher.deliver(message('a', 'k1'));
  const first = await endpoint.next();
  assert.ok(dispatcher.deliver(message('a', 'k2')));
  assert.ok(dispatcher.deliver(message('a', 'k3')));
  assert.ok(dispatcher.deliver(message('a', 'k4')), 'handled (as a dead letter)');
  assert.is(dispatcher.waiting, 2);
  assert.equal(shard.deadLetterCodes(), [['k4', 'SC_ERR_REMOTE_BACKLOG_FULL']]);
  assert.match((shard.deadLetters[0]!.error as Error).message, /--remote-backlog-max/);
  dispatcher.deliver(message('b', 'other address')); // another address has its own backlog
  assert.is(shard.deadLetters.length, 1);
  await first.respond(OK);
  const requests = [await endpoint.next(), await endpoint.next()];
  const batches = requests.map((request) => argumentsOf(request.batch)).sort();
  assert.equal(batches, [['k2', 'k3'], ['other address']]);
  for (const request of requests) await request.respond(OK);
  await idle(dispatcher, 'idle');
});

test('reset() while a request is in flight: its answer applies nothing; the address starts afresh', async () => {
  const { endpoint, shard, dispatcher } = await setup();
  const id = 'r';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  const index = dispatcher.resolve(TYPE)!.index;
  dispatcher.deliver(message(id, 'before'));
  const first = await endpoint.next();
  dispatcher.deliver(message(id, 'waiting'));
  assert.is(dispatcher.waiting, 1);
  dispatcher.reset();
  assert.is(dispatcher.waiting, 0);
  assert.is(dispatcher.inFlight, 0);
  const runsBefore = shard.runs.length;
  await first.respond({ kind: 'incomplete', missingValues: [SEEN] });
  await sleep(150);
  assert.is(endpoint.pending, 0, 'the missing-state answer of a dropped batch sends nothing again');
  assert.is(shard.runs.length, runsBefore, 'no endRun for a dropped batch');
  assert.equal(shard.deadLetters, []);
  // The address is free: a new message gets its own request; a late answer to it applies as usual.
  dispatcher.deliver(message(id, 'after'));
  assert.is(dispatcher.inFlight, 1);
  const fresh = await endpoint.next();
  assert.equal(argumentsOf(fresh.batch), ['after'], 'the message that waited before the reset is gone');
  dispatcher.reset();
  await fresh.respond({ ...OK, outgoingMessages: [{ target: { namespace: 'test', type: 'sink', id: 'x' }, argument: stringValue('late') }] });
  await sleep(150);
  assert.equal(shard.effects, [], 'a late answer applies nothing');
  assert.is(shard.groups.records.get(keyGroup, index, id), undefined);
  assert.is(dispatcher.inFlight, 0);
});

test("fate 'gone': what waits is forwarded in order; deliver is false for a type no endpoint serves", async () => {
  const { endpoint, shard, dispatcher } = await setup();
  assert.not.ok(dispatcher.deliver(message('a', 'nowhere', 'elsewhere/fn')));
  dispatcher.deliver(message('a', 'g1'));
  const first = await endpoint.next();
  dispatcher.deliver(message('a', 'g2'));
  dispatcher.deliver(message('a', 'g3'));
  shard.fate = 'gone';
  await first.respond(OK);
  await idle(dispatcher, 'the batch ended');
  assert.equal(shard.forwarded.map((forwarded) => forwarded.asString()), ['g2', 'g3']);
  assert.is(dispatcher.waiting, 0);
  await sleep(50);
  assert.is(endpoint.pending, 0, 'nothing more sent from here');
});

test.run();
