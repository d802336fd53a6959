// Embedded invocations through a fake shard (a real KeyGroupState and counters; effects, dead letters,
// forwards and runs recorded): state and effects of sync handlers, failures, async handlers keeping
// their address busy, what happens to waiting messages when the key group moves, and a recovery.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defineFunction, Types, type FunctionDefinition } from '../../../lib/index.js';
import type { StatecraftError } from '../../../lib/errors.js';
import { keyGroupOf } from '../../../lib/key-group.js';
import { Message } from '../../../lib/message.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { EmbeddedInvoker } from '../../../node/shard/embedded-invoker.js';
import { DelayedMessage, tokenKey } from '../../../node/keygroups/delayed-message.js';
import { FakeShard, KEY_GROUPS } from './fake-shard.js';
import { withTimeout } from '../../helpers.js';


function message(typename: string, id: string, value: unknown): Message {
  const typed = toTypedValue(value);
  return new Message(keyGroupOf(id, KEY_GROUPS), typename, id, null, null, typed.typename, typed.value, typed.bytes);
}

/** Promises the test settles by hand, one per key. */
class Gates {
  private readonly gates = new Map<string, { promise: Promise<void>; resolve: () => void; reject: (error: Error) => void }>();
  wait(key: string): Promise<void> {
    return this.get(key).promise;
  }
  open(key: string): void {
    this.get(key).resolve();
  }
  fail(key: string, error: Error): void {
    this.get(key).reject(error);
  }
  private get(key: string) {
    let gate = this.gates.get(key);
    if (gate === undefined) {
      let resolve!: () => void;
      let reject!: (error: Error) => void;
      const promise = new Promise<void>((onResolve, onReject) => ((resolve = onResolve), (reject = onReject)));
      gate = { promise, resolve, reject };
      this.gates.set(key, gate);
    }
    return gate;
  }
}

/** Lets every pending promise callback run (a completion takes a few microtask hops). */
async function settle(): Promise<void> {
  await withTimeout(new Promise((resolve) => setImmediate(resolve)), 1000, 'a turn of the event loop');
}

const gates = new Gates();
/** Names of the async invocations that started, in order. */
const started: string[] = [];

const counter = defineFunction({
  typename: 'test/counter',
  specs: [{ name: 'count', type: Types.int }],
  fn(context, incoming) {
    const count = (context.storage.count ?? 0) + incoming.asInt();
    context.storage.count = count;
    context.send({ typename: 'test/sink', id: 'first' }, `count ${count}`);
    context.sendAfter(500, { typename: 'test/sink', id: 'later' }, 'delayed', 'token-1');
    context.cancelDelayedMessage('token-0');
    context.send({ typename: 'test/sink', id: 'second' }, count);
    context.egress('counts', count);
  },
});

const thrower = defineFunction({
  typename: 'test/thrower',
  specs: [{ name: 'count', type: Types.int }],
  fn(context, incoming) {
    context.storage.count = (context.storage.count ?? 0) + 1;
    context.send({ typename: 'test/sink', id: 'from-thrower' }, 'must not be sent');
    if (incoming.asString() === 'boom') throw new TypeError('boom requested');
  },
});

/** Async: waits for its gate (named by the value), then appends the value to its list and reports it. */
const gated = defineFunction({
  typename: 'test/gated',
  specs: [{ name: 'seen', type: Types.json<string[]>('test/list') }],
  async fn(context, incoming) {
    const value = incoming.asString();
    started.push(value);
    await gates.wait(value);
    const seen = context.storage.seen ?? [];
    seen.push(value);
    context.storage.seen = seen;
    context.egress('gated', value);
  },
});

/** Returns a hand-made thenable that calls both of its callbacks, twice. */
const twoFaced = defineFunction({
  typename: 'test/two-faced',
  specs: [{ name: 'n', type: Types.int }],
  fn(context) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    return {
      then(onFulfilled: (value: unknown) => void, onRejected: (error: unknown) => void) {
        onFulfilled(undefined);
        onRejected(new Error('second outcome'));
        onFulfilled(undefined);
      },
    } as unknown as Promise<void>;
  },
});

/** Writes state, then asks for `n` delayed messages, catching what the limit throws: it must fail all the same. */
const flooder = defineFunction({
  typename: 'test/flooder',
  specs: [{ name: 'n', type: Types.int }],
  fn(context, incoming) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    try {
      for (let index = 0; index < incoming.asInt(); index++) context.sendAfter(60_000, { typename: 'test/sink', id: 'flooded' }, index);
    } catch {
      // a handler that swallows the refusal
    }
  },
});

function setup(definitions: FunctionDefinition[] = [counter, thrower, gated, twoFaced]) {
  const shard = new FakeShard();
  const invoker = new EmbeddedInvoker(shard, definitions);
  return { shard, invoker };
}

function record(shard: FakeShard, typename: string, id: string): unknown {
  return shard.groups.records.get(keyGroupOf(id, KEY_GROUPS), shard.groups.indexOf(typename)!, id);
}

// ---- sync handlers ----

test('types are added to the records in order; deliver is false for a type not defined here', () => {
  const { shard, invoker } = setup();
  assert.equal(invoker.typenames, ['test/counter', 'test/thrower', 'test/gated', 'test/two-faced']);
  assert.equal(['test/counter', 'test/thrower', 'test/gated', 'test/two-faced'].map((typename) => shard.groups.indexOf(typename)), [0, 1, 2, 3]);
  assert.ok(invoker.has('test/counter'));
  assert.not.ok(invoker.has('test/remote'));
  assert.not.ok(invoker.deliver(message('test/remote', 'x', 1)));
  assert.is(shard.counters.invocations, 0);
  assert.equal(shard.effects, []);
  assert.equal(shard.deadLetters, []);
});

test('a sync handler: its state write lands in the records, its effects reach applyEffects in order', () => {
  const { shard, invoker } = setup();
  const id = 'c-1';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  shard.groups.changed.fill(0);
  assert.ok(invoker.deliver(message('test/counter', id, 5)));
  assert.is(record(shard, 'test/counter', id), 5);
  assert.is(shard.groups.changed[keyGroup], 1);
  assert.ok(invoker.deliver(message('test/counter', id, 3)));
  assert.is(record(shard, 'test/counter', id), 8);
  assert.is(record(shard, 'test/counter', 'c-2'), undefined, 'other instances untouched');
  assert.equal(shard.effects.map((call) => [call.self, call.keyGroup]), [[`test/counter/${id}`, keyGroup], [`test/counter/${id}`, keyGroup]]);
  assert.equal(shard.sent().slice(0, 5), [
    ['send', 'test/sink/first', 'count 5'],
    ['send-after', 'test/sink/later', 'delayed'],
    ['cancel', '/', 'token-0'],
    ['send', 'test/sink/second', 5],
    ['egress', 'counts', 5],
  ]);
  const delayed = shard.effects[0]!.effects[1]!;
  assert.is(delayed.delayMs, 500);
  assert.is(delayed.cancellationToken, 'token-1');
  assert.equal(shard.sent()[5], ['send', 'test/sink/first', 'count 8']);
  assert.is(shard.counters.invocations, 2);
  assert.is(shard.counters.failures, 0);
  assert.equal(shard.runs, [], 'a sync handler is no run across turns');
  assert.is(invoker.running, 0);
  assert.is(invoker.waiting, 0);
});

test('a throwing handler: one dead letter, no state change, no effects; the instance goes on', () => {
  const { shard, invoker } = setup();
  assert.ok(invoker.deliver(message('test/thrower', 't', 'fine')));
  assert.is(record(shard, 'test/thrower', 't'), 1);
  shard.effects.length = 0;
  assert.ok(invoker.deliver(message('test/thrower', 't', 'boom')));
  assert.is(shard.deadLetters.length, 1);
  const [letter] = shard.deadLetters;
  assert.is(letter!.message.targetId, 't');
  assert.instance(letter!.error, TypeError);
  assert.is((letter!.error as Error).message, 'boom requested');
  assert.is(record(shard, 'test/thrower', 't'), 1, 'the staged write was dropped');
  assert.equal(shard.effects, [], 'the send before the throw was dropped');
  assert.is(shard.counters.failures, 1);
  assert.ok(invoker.deliver(message('test/thrower', 't', 'fine again')));
  assert.is(record(shard, 'test/thrower', 't'), 2);
  assert.is(shard.deadLetters.length, 1);
});

test('an invocation past the effects limit fails whole even when the handler catches the refusal: a dead letter SC_ERR_LIMIT_REACHED, no state change, nothing sent; the instance goes on', () => {
  const { shard, invoker } = setup([flooder]);
  assert.ok(invoker.deliver(message('test/flooder', 'f', 3)));
  assert.is(record(shard, 'test/flooder', 'f'), 1);
  assert.is(shard.effects[0]!.effects.length, 3);
  shard.effects.length = 0;
  assert.ok(invoker.deliver(message('test/flooder', 'f', 1_000_000)));
  assert.is(shard.deadLetters.length, 1);
  assert.is((shard.deadLetters[0]!.error as StatecraftError).code, 'SC_ERR_LIMIT_REACHED');
  assert.is(record(shard, 'test/flooder', 'f'), 1, 'its state write was dropped');
  assert.equal(shard.effects, [], 'none of its delayed messages applied');
  assert.ok(invoker.deliver(message('test/flooder', 'f', 2)));
  assert.is(record(shard, 'test/flooder', 'f'), 2);
  assert.is(shard.effects[0]!.effects.length, 2);
});

test('an invocation that would leave its instance over delayedPendingMax pending fails whole; what it cancels counts; other instances have their own count', () => {
  const { shard, invoker } = setup([counter, flooder]);
  shard.delayedPendingMax = 4;
  shard.schedulesTimers = true;
  const pendingOf = (typename: string, id: string) => shard.groups.timers.pendingOf(typename, id);
  // Pending already: four of f's (one with counter's token-0), as if scheduled by earlier invocations,
  // and ten of another instance (the shard's queue is then over the limit: no shortcut).
  for (let index = 0; index < 4; index++) {
    shard.groups.timers.schedule(60_000, new DelayedMessage('test/sink', 'x', 'test/counter', 'f', toTypedValue(index), keyGroupOf('f', KEY_GROUPS)), index === 0 ? tokenKey('test/counter', 'f', 'token-0') : null);
  }
  for (let index = 0; index < 10; index++) shard.groups.timers.schedule(60_000, new DelayedMessage('test/sink', 'x', 'test/counter', 'other', toTypedValue(index), keyGroupOf('other', KEY_GROUPS)));
  assert.is(pendingOf('test/counter', 'f'), 4);
  // counter schedules one and cancels token-0: 4 - 1 + 1 = 4, allowed (without the cancellation, 5).
  assert.ok(invoker.deliver(message('test/counter', 'f', 1)));
  assert.equal(shard.deadLetters, []);
  assert.is(record(shard, 'test/counter', 'f'), 1);
  shard.effects.length = 0;
  assert.is(pendingOf('test/counter', 'f'), 4);
  // Now at 4: the next schedules one more and cancels nothing pending (token-0 is gone): refused whole.
  assert.ok(invoker.deliver(message('test/counter', 'f', 1)));
  assert.is(shard.deadLetters.length, 1);
  const error = shard.deadLetters[0]!.error as StatecraftError;
  assert.is(error.code, 'SC_ERR_LIMIT_REACHED');
  assert.match(error.message, /test\/counter\/f would have 5 delayed messages pending, over the limit of 4 per instance/);
  assert.is(record(shard, 'test/counter', 'f'), 1, 'its state write was dropped');
  assert.equal(shard.effects, [], 'nothing of it applied');
  // Another instance has its own count.
  assert.ok(invoker.deliver(message('test/flooder', 'f', 4)));
  assert.is(shard.deadLetters.length, 1);
  assert.is(shard.effects[0]!.effects.length, 4);
});

test('a hand-made thenable that calls both callbacks twice settles once', async () => {
  const { shard, invoker } = setup();
  assert.ok(invoker.deliver(message('test/two-faced', 'x', 1)));
  assert.is(invoker.running, 1);
  await settle();
  assert.is(invoker.running, 0);
  assert.is(record(shard, 'test/two-faced', 'x'), 1);
  assert.equal(shard.deadLetters, []);
  assert.equal(shard.runs, [`start ${keyGroupOf('x', KEY_GROUPS)}`, `end ${keyGroupOf('x', KEY_GROUPS)}`]);
});

// ---- async handlers ----

test('an async handler keeps its address busy: later messages wait in order and run after it; other addresses go on', async () => {
  const { shard, invoker } = setup();
  started.length = 0;
  const id = 'g-order';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  invoker.deliver(message('test/gated', id, 'o1'));
  invoker.deliver(message('test/gated', id, 'o2'));
  invoker.deliver(message('test/gated', id, 'o3'));
  assert.is(invoker.running, 1);
  assert.is(invoker.waiting, 2);
  assert.equal(started, ['o1']);
  assert.equal(shard.runs, [`start ${keyGroup}`]);
  // Another address is not held up.
  invoker.deliver(message('test/gated', 'g-other', 'x1'));
  assert.is(invoker.running, 2);
  assert.equal(started, ['o1', 'x1']);

  gates.open('o1');
  await settle();
  assert.equal(started, ['o1', 'x1', 'o2'], 'o2 started once o1 ended');
  assert.is(invoker.waiting, 1);
  assert.equal(Types.json<string[]>('test/list').deserialize(record(shard, 'test/gated', id) as Uint8Array), ['o1'], 'o1 committed before o2 ran');
  gates.open('o2');
  await settle();
  assert.equal(started, ['o1', 'x1', 'o2', 'o3']);
  assert.is(invoker.waiting, 0);
  assert.is(invoker.running, 2, 'o3 and x1');
  gates.open('o3');
  gates.open('x1');
  await settle();
  assert.is(invoker.running, 0);
  const seen = Types.json<string[]>('test/list').deserialize(record(shard, 'test/gated', id) as Uint8Array);
  assert.equal(seen, ['o1', 'o2', 'o3']);
  assert.equal(shard.sent().filter(([kind]) => kind === 'egress').map(([, , value]) => value), ['o1', 'o2', 'o3', 'x1']);
  assert.ok(shard.refreshes >= 4, 'the clock is refreshed for each completion');
  // Idle again: the next message starts at once.
  invoker.deliver(message('test/gated', id, 'o4'));
  assert.equal(started.at(-1), 'o4');
  assert.is(invoker.waiting, 0);
  gates.open('o4');
  await settle();
});

test('an async handler past handlerTimeoutMs is abandoned: a dead letter SC_ERR_HANDLER_TIMEOUT, nothing of it applied even when it ends later, and its address goes on', async () => {
  const { shard, invoker } = setup();
  shard.handlerTimeoutMs = 50;
  started.length = 0;
  const id = 'g-slow';
  invoker.deliver(message('test/gated', id, 't1'));
  invoker.deliver(message('test/gated', id, 't2'));
  assert.equal(started, ['t1']);
  await withTimeout(
    (async () => {
      while (shard.deadLetters.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    2000,
    'the time budget to run out',
  );
  const error = shard.deadLetters[0]!.error as StatecraftError;
  assert.is(error.code, 'SC_ERR_HANDLER_TIMEOUT');
  assert.match(error.message, /the handler of test\/gated\/g-slow did not finish within 50 ms \(--handler-timeout\)/);
  assert.is(shard.counters.handlerTimeouts, 1);
  assert.equal(started, ['t1', 't2'], 'the next message runs at once');
  gates.open('t1'); // the abandoned one ends late: nothing of it lands
  gates.open('t2');
  await settle();
  assert.equal(Types.json<string[]>('test/list').deserialize(record(shard, 'test/gated', id) as Uint8Array), ['t2']);
  assert.equal(shard.sent().filter(([kind]) => kind === 'egress').map(([, , value]) => value), ['t2']);
  assert.is(shard.deadLetters.length, 1);
  assert.is(invoker.running, 0);
  assert.is(shard.counters.handlerTimeouts, 1, 't2 ended in time: its timer was cleared');
});

test('an async handler that rejects: a dead letter, no state change, and the next message still runs', async () => {
  const { shard, invoker } = setup();
  const id = 'g-reject';
  invoker.deliver(message('test/gated', id, 'r1'));
  invoker.deliver(message('test/gated', id, 'r2'));
  gates.fail('r1', new RangeError('async failure'));
  await settle();
  assert.is(shard.deadLetters.length, 1);
  assert.is(shard.deadLetters[0]!.message.asString(), 'r1');
  assert.instance(shard.deadLetters[0]!.error, RangeError);
  assert.is(shard.counters.failures, 1);
  assert.equal(started.slice(-2), ['r1', 'r2'], 'r2 started after r1 failed');
  assert.is(invoker.running, 1);
  gates.open('r2');
  await settle();
  assert.is(invoker.running, 0);
  assert.equal(Types.json<string[]>('test/list').deserialize(record(shard, 'test/gated', id) as Uint8Array), ['r2']);
  assert.equal(shard.sent().map(([, , value]) => value), ['r2']);
});

test("fate 'gone': the waiting messages are forwarded in order and the address is free", async () => {
  const { shard, invoker } = setup();
  const id = 'g-gone';
  invoker.deliver(message('test/gated', id, 'n1'));
  invoker.deliver(message('test/gated', id, 'n2'));
  invoker.deliver(message('test/gated', id, 'n3'));
  shard.fate = 'gone';
  gates.open('n1');
  await settle();
  assert.equal(shard.forwarded.map((forwarded) => forwarded.asString()), ['n2', 'n3']);
  assert.is(invoker.waiting, 0);
  assert.is(invoker.running, 0);
  assert.not.ok(started.includes('n2'), 'nothing more ran here');
  assert.equal(shard.sent().map(([, , value]) => value), ['n1'], 'the running invocation itself committed');
  // The address is not busy any more: a message delivered here now starts at once.
  shard.fate = 'here';
  invoker.deliver(message('test/gated', id, 'n4'));
  assert.equal(started.at(-1), 'n4');
  gates.open('n4');
  await settle();
});

test("fate 'releasing': the waiting messages stay for the release, and takeWaiting hands them over in order", async () => {
  const { shard, invoker } = setup();
  const id = 'g-release';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  invoker.deliver(message('test/gated', id, 'l1'));
  invoker.deliver(message('test/gated', id, 'l2'));
  invoker.deliver(message('test/gated', id, 'l3'));
  shard.fate = 'releasing';
  gates.open('l1');
  await settle();
  assert.equal(shard.forwarded, []);
  assert.is(invoker.waiting, 2);
  assert.is(invoker.running, 0);
  assert.not.ok(started.includes('l2'));
  invoker.deliver(message('test/gated', id, 'l4'));
  assert.is(invoker.waiting, 3, 'still busy: a new message waits too');
  const taken: [number, string][] = [];
  invoker.takeWaiting((anId) => keyGroupOf(anId, KEY_GROUPS), new Set([keyGroup]), (group, waiting) => taken.push([group, waiting.asString()]));
  assert.equal(taken, [[keyGroup, 'l2'], [keyGroup, 'l3'], [keyGroup, 'l4']]);
  assert.is(invoker.waiting, 0);
});

test('reset(): a late completion applies nothing and starts nothing; the address is free again', async () => {
  const { shard, invoker } = setup();
  const id = 'g-reset';
  invoker.deliver(message('test/gated', id, 'z1'));
  invoker.deliver(message('test/gated', id, 'z2'));
  assert.is(invoker.running, 1);
  assert.is(invoker.waiting, 1);
  invoker.reset();
  assert.is(invoker.running, 0);
  assert.is(invoker.waiting, 0);
  const runsBefore = shard.runs.length;
  gates.open('z1');
  gates.open('z2');
  await settle();
  assert.equal(shard.effects, [], 'the completion applied nothing');
  assert.is(record(shard, 'test/gated', id), undefined);
  assert.equal(shard.deadLetters, []);
  assert.is(shard.runs.length, runsBefore, 'no endRun for a forgotten run');
  assert.not.ok(started.includes('z2'), 'the message that waited is gone');
  assert.is(invoker.running, 0);
  invoker.deliver(message('test/gated', id, 'z3'));
  assert.is(invoker.running, 1, 'the address starts afresh');
  gates.open('z3');
  await settle();
  assert.is(invoker.running, 0);
  assert.equal(shard.sent().map(([, , value]) => value), ['z3']);
});

test('peekWaiting lists the running message, then the waiting ones, and keeps them', () => {
  const { invoker } = setup();
  const id = 'g-peek';
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  invoker.deliver(message('test/gated', id, 'p1'));
  invoker.deliver(message('test/gated', id, 'p2'));
  invoker.deliver(message('test/gated', id, 'p3'));
  const peeked: string[] = [];
  invoker.peekWaiting((anId) => keyGroupOf(anId, KEY_GROUPS), (group) => group === keyGroup, (_group, waiting) => peeked.push(waiting.asString()));
  assert.equal(peeked, ['p1', 'p2', 'p3']);
  assert.is(invoker.waiting, 2);
  const none: string[] = [];
  invoker.peekWaiting((anId) => keyGroupOf(anId, KEY_GROUPS), () => false, (_group, waiting) => none.push(waiting.asString()));
  assert.equal(none, []);
  invoker.reset();
});

test.run();
