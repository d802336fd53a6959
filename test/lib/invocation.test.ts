// The Context a handler sees (lib/invocation.ts), driven directly: state is loaded once and only when
// touched, writes are staged (read back by the handler, never written into the loaded record), effects
// are recorded in program order, every input is checked against the invocation's limits (ids, values,
// delays, tokens, egress names), and a closed context refuses everything with SC_ERR_CONTEXT_CLOSED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CompiledFunction } from '../../lib/compiled-function.js';
import { StatecraftError } from '../../lib/errors.js';
import { CANCELLATION_TOKEN_LENGTH_MAX, DELAY_MS_MAX } from '../../lib/function.js';
import { defineFunction, egressMessageBuilder, messageBuilder, Types } from '../../lib/index.js';
import { EFFECTS_PER_INVOCATION_MAX, EffectKind, Invocation, type Effect } from '../../lib/invocation.js';
import { Message } from '../../lib/message.js';
import { UNCHANGED } from '../../lib/state-layout.js';

const NOW_MS = 1_700_000_000_000;
const LIMITS = { valueBytesMax: 64, idBytesMax: 16 };

interface Profile {
  name: string;
}

const definition = defineFunction({
  typename: 'test/counter',
  specs: [
    { name: 'count', type: Types.int },
    { name: 'profile', type: Types.json<Profile>('test/profile') },
    { name: 'note', type: Types.string },
  ],
  fn() {},
});
const compiled = new CompiledFunction(definition);

type Storage = { count: number | null; profile: Profile | null; note: string | null; [name: string]: unknown };

/** An invocation of test/counter/alice from test/caller/bob; `record` is what the store holds. */
function open(record: unknown = [3, Types.json<Profile>('test/profile').serialize({ name: 'Alice' }), null]) {
  const loads: number[] = [];
  const message = new Message(0, 'test/counter', 'alice', 'test/caller', 'bob', 'io.statefun.types/string', 'hi', null);
  const invocation = new Invocation(compiled, message, () => (loads.push(1), record), LIMITS, NOW_MS);
  return { invocation, loads, storage: invocation.storage as unknown as Storage, record };
}

/** Calls `act`; it must throw a StatecraftError with `code` (and `text` in its message, when given). */
function refuses(act: () => unknown, code: string, text?: string | RegExp): void {
  try {
    act();
  } catch (error) {
    assert.instance(error, StatecraftError, `a StatecraftError, not ${String(error)}`);
    assert.is((error as StatecraftError).code, code, (error as Error).message);
    if (text !== undefined) assert.match((error as Error).message, text);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

const summary = (effects: Effect[] | null) =>
  (effects ?? []).map((effect) => [effect.kind, effect.targetTypename, effect.targetId, effect.value?.typename ?? null, effect.delayMs, effect.cancellationToken]);

test('state is loaded once, on first access, and never for a handler that does not touch it', () => {
  const { invocation, loads, storage } = open();
  assert.equal(invocation.self, { typename: 'test/counter', id: 'alice' });
  assert.equal(invocation.caller, { typename: 'test/caller', id: 'bob' });
  invocation.send({ typename: 'test/other', id: 'x' }, 'no state needed');
  assert.is(loads.length, 0);
  assert.is(invocation.touchedState, false);
  assert.is(invocation.record, undefined);
  assert.is(storage.count, 3);
  assert.equal(storage.profile, { name: 'Alice' });
  assert.is(storage.note, null);
  assert.is(loads.length, 1, 'loaded once for three reads');
  assert.is(invocation.touchedState, true);
  assert.ok(Array.isArray(invocation.record));
});

test('a write alone loads the record too (the runtime needs it to apply the write)', () => {
  const { invocation, loads, storage } = open();
  storage.note = 'x';
  assert.is(loads.length, 1);
  assert.is(invocation.touchedState, true);
});

test('writes are staged: the handler reads them back, the loaded record is untouched, unwritten values stay UNCHANGED', () => {
  const { invocation, storage, record } = open();
  storage.count = 5;
  storage.note = 'hello';
  assert.is(storage.count, 5);
  assert.is(storage.note, 'hello');
  assert.is((record as unknown[])[0], 3, 'the record as loaded');
  assert.equal(invocation.staged, [5, UNCHANGED, 'hello']);
  delete (storage as Record<string, unknown>).note;
  assert.is(storage.note, null, 'deleting stages null');
  storage.count = undefined as never;
  assert.is(storage.count, null, 'undefined deletes too');
  assert.equal(invocation.staged, [null, UNCHANGED, null]);
});

test('a structured value is stored serialised: mutating what the handler read changes nothing stored', () => {
  const { invocation, storage } = open();
  const profile = storage.profile!;
  profile.name = 'Mallory';
  assert.equal(storage.profile, { name: 'Alice' }, 'each read decodes afresh');
  storage.profile = { name: 'Bob' };
  const staged = invocation.staged![1];
  assert.instance(staged, Uint8Array, 'staged as bytes');
  const written = storage.profile!;
  written.name = 'Eve';
  assert.equal(storage.profile, { name: 'Bob' });
  assert.equal(JSON.parse(JSON.stringify(storage)), { count: 3, profile: { name: 'Bob' }, note: null });
});

test('refused writes stage nothing: a wrong primitive, a value over valueBytesMax, an undeclared name', () => {
  const { invocation, storage } = open();
  refuses(() => (storage.count = 'seven' as never), 'SC_ERR_INVALID_VALUE', 'io.statefun.types/int');
  refuses(() => (storage.count = 2 ** 40), 'SC_ERR_INVALID_VALUE');
  refuses(() => (storage.note = 'x'.repeat(100)), 'SC_ERR_VALUE_TOO_LARGE', 'exceeds the limit of 64 bytes');
  refuses(() => (storage.profile = { name: 'y'.repeat(100) }), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => storage.nope, 'SC_ERR_UNDECLARED_STATE', 'declared: count, profile, note');
  refuses(() => (storage.nope = 1), 'SC_ERR_UNDECLARED_STATE');
  assert.is(invocation.staged, null);
  assert.is(invocation.touchedState, false, 'nothing loaded for refused writes');
});

test('effects are recorded in program order, each with its kind, target, value type, delay and token', () => {
  const { invocation } = open();
  const other = { typename: 'test/other', id: 'x' };
  invocation.send(other, 'a');
  invocation.sendAfter(1.2, other, 2, 'token-1');
  invocation.egress('out', { n: 1 });
  invocation.cancelDelayedMessage('token-1');
  invocation.send(messageBuilder({ typename: 'test/other', id: 'y', value: true }));
  invocation.send(egressMessageBuilder({ typename: 'shop/orders', value: 'order' }));
  invocation.sendAfter(10, messageBuilder({ typename: 'test/other', id: 'z', value: 1.5 }), 'token-2');
  invocation.sendAfter(0, other, 'v', { cancellationToken: 'token-3', type: Types.string });
  invocation.sendAfter(DELAY_MS_MAX, other, new Uint8Array([1]));
  assert.equal(summary(invocation.effects), [
    [EffectKind.Send, 'test/other', 'x', 'io.statefun.types/string', 0, null],
    [EffectKind.SendAfter, 'test/other', 'x', 'io.statefun.types/int', 2, 'token-1'],
    [EffectKind.Egress, 'out', '', 'statecraft.types/json', 0, null],
    [EffectKind.Cancel, '', '', null, 0, 'token-1'],
    [EffectKind.Send, 'test/other', 'y', 'io.statefun.types/bool', 0, null],
    [EffectKind.Egress, 'shop/orders', '', 'io.statefun.types/string', 0, null],
    [EffectKind.SendAfter, 'test/other', 'z', 'io.statefun.types/double', 10, 'token-2'],
    [EffectKind.SendAfter, 'test/other', 'x', 'io.statefun.types/string', 0, 'token-3'],
    [EffectKind.SendAfter, 'test/other', 'x', 'statecraft.types/bytes', DELAY_MS_MAX, null],
  ]);
  assert.is(invocation.touchedState, false);
});

test("targets are checked against the invocation's id limit, in every form of send; a refused call records nothing", () => {
  const { invocation } = open();
  refuses(() => invocation.send({ typename: 'no-slash', id: 'x' }, 1), 'SC_ERR_INVALID_TYPENAME');
  refuses(() => invocation.send({ typename: 'test/other', id: '' }, 1), 'SC_ERR_INVALID_ID');
  refuses(() => invocation.send(null as never, 1), 'SC_ERR_INVALID_TYPENAME', 'an address must be an object');
  refuses(() => invocation.send({ typename: 'test/other', id: 'x'.repeat(17) }, 1), 'SC_ERR_INVALID_ID', 'the limit is 16 bytes');
  refuses(() => invocation.send({ typename: 'test/other', id: 'é'.repeat(9) }, 1), 'SC_ERR_INVALID_ID', '18 bytes long');
  // Built under the default limit (1,024 bytes), refused under this invocation's 16.
  const long = messageBuilder({ typename: 'test/other', id: 'y'.repeat(20), value: 1 });
  refuses(() => invocation.send(long), 'SC_ERR_INVALID_ID');
  refuses(() => invocation.sendAfter(1, long), 'SC_ERR_INVALID_ID');
  refuses(() => invocation.sendAfter(1, { typename: 'test/other', id: 'z'.repeat(17) }, 1), 'SC_ERR_INVALID_ID');
  refuses(() => invocation.send({ typename: 'test/other', id: 'x' }, undefined), 'SC_ERR_INVALID_VALUE', 'a message needs a value');
  invocation.send({ typename: 'test/other', id: 'x'.repeat(16) }, 1);
  assert.is(invocation.effects!.length, 1, 'only the call within limits');
});

test('values over valueBytesMax are refused by send, sendAfter and egress', () => {
  const { invocation } = open();
  const big = 'b'.repeat(100);
  const target = { typename: 'test/other', id: 'x' };
  refuses(() => invocation.send(target, big), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => invocation.send(target, { big }), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => invocation.sendAfter(1, target, big), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => invocation.egress('out', big), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => invocation.send(egressMessageBuilder({ typename: 'out', value: big })), 'SC_ERR_VALUE_TOO_LARGE');
  refuses(() => invocation.send(messageBuilder({ typename: 'test/other', id: 'x', value: new Uint8Array(65) })), 'SC_ERR_VALUE_TOO_LARGE');
  invocation.egress('out', 'b'.repeat(50));
  assert.is(invocation.effects!.length, 1);
});

test('sendAfter takes 0 ms up to one year, rounded up to whole ms; anything else is refused', () => {
  const { invocation } = open();
  const target = { typename: 'test/other', id: 'x' };
  for (const delay of [-1, Number.NaN, Number.POSITIVE_INFINITY, DELAY_MS_MAX + 1, '5' as never]) {
    refuses(() => invocation.sendAfter(delay, target, 1), 'SC_ERR_INVALID_VALUE', `between 0 and ${DELAY_MS_MAX} (one year)`);
  }
  invocation.sendAfter(0.001, target, 1);
  assert.equal(invocation.effects!.map((effect) => effect.delayMs), [1]);
});

test('cancellation tokens are 1 to 1,024 characters, in sendAfter and cancelDelayedMessage', () => {
  const { invocation } = open();
  const target = { typename: 'test/other', id: 'x' };
  const longest = 't'.repeat(CANCELLATION_TOKEN_LENGTH_MAX);
  for (const token of ['', longest + 't']) {
    refuses(() => invocation.sendAfter(1, target, 1, token), 'SC_ERR_INVALID_VALUE', 'a cancellation token must be a non-empty string of at most 1024 characters');
    refuses(() => invocation.sendAfter(1, target, 1, { cancellationToken: token }), 'SC_ERR_INVALID_VALUE');
    refuses(() => invocation.sendAfter(1, messageBuilder({ typename: 'test/other', id: 'x', value: 1 }), token), 'SC_ERR_INVALID_VALUE');
    refuses(() => invocation.cancelDelayedMessage(token), 'SC_ERR_INVALID_VALUE');
  }
  refuses(() => invocation.cancelDelayedMessage(42 as never), 'SC_ERR_INVALID_VALUE');
  invocation.sendAfter(1, target, 1, longest);
  invocation.cancelDelayedMessage(longest);
  assert.equal(summary(invocation.effects).map((effect) => effect[0]), [EffectKind.SendAfter, EffectKind.Cancel]);
});

test('egress names: 1-128 of letters, digits and . _ - /, starting with a letter or digit', () => {
  const { invocation } = open();
  for (const name of ['', '/orders', '-x', 'a b', 'x'.repeat(129), 42 as never]) refuses(() => invocation.egress(name, 1), 'SC_ERR_INVALID_EGRESS');
  invocation.egress('shop/orders.v2_final-1', 1);
  invocation.egress('x'.repeat(128), 1);
  assert.is(invocation.effects!.length, 2);
});

test('a closed context refuses every call with SC_ERR_CONTEXT_CLOSED, naming the method and the address', () => {
  const { invocation } = open();
  const storage = invocation.storage as unknown as Storage; // obtained while open
  invocation.send({ typename: 'test/other', id: 'x' }, 1);
  invocation.closed = true;
  const target = { typename: 'test/other', id: 'x' };
  const calls: [string, () => unknown][] = [
    ['storage', () => invocation.storage],
    ['storage', () => storage.count],
    ['storage', () => (storage.count = 1)],
    ['send', () => invocation.send(target, 1)],
    ['sendAfter', () => invocation.sendAfter(1, target, 1)],
    ['cancelDelayedMessage', () => invocation.cancelDelayedMessage('t')],
    ['egress', () => invocation.egress('out', 1)],
  ];
  for (const [method, call] of calls) {
    refuses(call, 'SC_ERR_CONTEXT_CLOSED', `context.${method}() called for test/counter/alice after its invocation finished; await every promise inside the handler`);
  }
  assert.is(invocation.effects!.length, 1, 'nothing recorded after closing');
  assert.is(invocation.staged, null);
  assert.equal(invocation.self, { typename: 'test/counter', id: 'alice' }, 'its address can still be read');
});

test('past EFFECTS_PER_INVOCATION_MAX effects of any kind the call throws SC_ERR_LIMIT_REACHED, and every later one too: the invocation is refused even if the handler catches it', () => {
  const { invocation } = open();
  for (let index = 0; index < EFFECTS_PER_INVOCATION_MAX / 2; index++) invocation.send({ typename: 'test/sink', id: 'a' }, index);
  for (let index = 0; index < EFFECTS_PER_INVOCATION_MAX / 2 - 1; index++) invocation.sendAfter(1000, { typename: 'test/sink', id: 'a' }, index);
  invocation.egress('out', 'last one in');
  assert.is(invocation.effects!.length, EFFECTS_PER_INVOCATION_MAX);
  assert.is(invocation.refused, null);
  refuses(() => invocation.cancelDelayedMessage('token'), 'SC_ERR_LIMIT_REACHED', /test\/counter\/alice asked for more than 100000 messages, delayed messages, cancellations and egress records in one invocation/);
  assert.is(invocation.refused?.code, 'SC_ERR_LIMIT_REACHED');
  assert.is(invocation.effects, null, 'what it collected is dropped');
  refuses(() => invocation.send({ typename: 'test/sink', id: 'a' }, 1), 'SC_ERR_LIMIT_REACHED');
  assert.is(invocation.effects, null, 'and nothing is collected again');
});

test.run();
