// StateFun's request-reply messages against protobuf bytes built by hand here (tag = field << 3 | wire
// type; varints; length-delimited), independent of the library that encodes them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ProtocolError } from '../../lib/errors.js';
import { decodeFromFunction, decodeToFunction, encodeFromFunction, encodeToFunction, type FunctionResponse, type InvocationBatch } from '../../lib/statefun-protocol.js';

// ---- a minimal protobuf writer ----
function varint(value: number | bigint): number[] {
  let rest = BigInt.asUintN(64, BigInt(value));
  const bytes: number[] = [];
  do {
    let byte = Number(rest & 0x7fn);
    rest >>= 7n;
    if (rest !== 0n) byte |= 0x80;
    bytes.push(byte);
  } while (rest !== 0n);
  return bytes;
}
const utf8 = (text: string) => [...new TextEncoder().encode(text)];
/** Field `number` as a varint. */
const int = (number: number, value: number | bigint): number[] => [...varint((number << 3) | 0), ...varint(value)];
/** Field `number`, length-delimited (a string, bytes or an embedded message). */
const len = (number: number, payload: number[]): number[] => [...varint((number << 3) | 2), ...varint(payload.length), ...payload];
const str = (number: number, text: string) => len(number, utf8(text));
const address = (namespace: string, type: string, id: string) => [...str(1, namespace), ...str(2, type), ...str(3, id)];
const typedValue = (typename: string, value: number[]) => [...str(1, typename), ...int(2, 1), ...len(3, value)];
const bytesOf = (...parts: number[][]) => Uint8Array.from(parts.flat());

const INT = 'io.statefun.types/int';
const four = [0x08, 0x04]; // io.statefun.types/int wraps its value: IntWrapper { value (1) }

test('ToFunction: an invocation batch with state (present and absent) and invocations with and without a caller', () => {
  const batch: InvocationBatch = {
    target: { namespace: 'shop', type: 'cart', id: 'alice' },
    state: [
      { name: 'count', value: { typename: INT, value: Uint8Array.from(four) } },
      { name: 'items', value: { typename: 'shop/items', value: null } },
    ],
    invocations: [
      { caller: { namespace: 'shop', type: 'user', id: 'bob' }, argument: { typename: INT, value: Uint8Array.from(four) } },
      { caller: null, argument: { typename: 'shop/add', value: Uint8Array.from([1, 2, 3]) } },
    ],
  };
  const expected = bytesOf(
    len(100, [
      ...len(1, address('shop', 'cart', 'alice')),
      ...len(2, [...str(1, 'count'), ...len(2, typedValue(INT, four))]),
      ...len(2, [...str(1, 'items'), ...len(2, str(1, 'shop/items'))]),
      ...len(3, [...len(1, address('shop', 'user', 'bob')), ...len(2, typedValue(INT, four))]),
      ...len(3, len(2, typedValue('shop/add', [1, 2, 3]))),
    ]),
  );
  assert.equal([...encodeToFunction(batch)], [...expected], 'encoded exactly as StateFun lays it out');
  assert.equal(decodeToFunction(expected), batch);
});

test('FromFunction: an invocation result with every kind of effect', () => {
  const response: FunctionResponse = {
    kind: 'result',
    stateMutations: [
      { name: 'count', value: { typename: INT, value: Uint8Array.from(four) } },
      { name: 'items', value: null },
    ],
    outgoingMessages: [{ target: { namespace: 'shop', type: 'user', id: 'bob' }, argument: { typename: INT, value: Uint8Array.from(four) } }],
    delayedInvocations: [
      { cancel: false, delayMs: 1500, target: { namespace: 'shop', type: 'cart', id: 'alice' }, argument: { typename: 'shop/tick', value: Uint8Array.from([9]) }, cancellationToken: 'tick-1' },
      { cancel: true, cancellationToken: 'tick-0' },
    ],
    outgoingEgresses: [{ namespace: 'shop', type: 'receipts', argument: { typename: 'shop/receipt', value: Uint8Array.from([7, 7]) } }],
  };
  const expected = bytesOf(
    len(100, [
      ...len(1, [...int(1, 1), ...str(2, 'count'), ...len(3, typedValue(INT, four))]),
      ...len(1, str(2, 'items')), // DELETE is 0, the default: not on the wire
      ...len(2, [...len(1, address('shop', 'user', 'bob')), ...len(2, typedValue(INT, four))]),
      ...len(3, [...int(1, 1500), ...len(2, address('shop', 'cart', 'alice')), ...len(3, typedValue('shop/tick', [9])), ...str(11, 'tick-1')]),
      ...len(3, [...int(10, 1), ...str(11, 'tick-0')]),
      ...len(4, [...str(1, 'shop'), ...str(2, 'receipts'), ...len(3, typedValue('shop/receipt', [7, 7]))]),
    ]),
  );
  assert.equal([...encodeFromFunction(response)], [...expected]);
  assert.equal(decodeFromFunction(expected), response);
});

test('FromFunction: the missing-state negotiation (IncompleteInvocationContext) with expiration specs', () => {
  const response: FunctionResponse = {
    kind: 'incomplete',
    missingValues: [
      { name: 'count', typename: INT, expireMode: 'none', expireAfterMs: 0 },
      { name: 'session', typename: 'shop/session', expireMode: 'after-write', expireAfterMs: 60_000 },
      { name: 'seen', typename: 'shop/seen', expireMode: 'after-invoke', expireAfterMs: 5_000 },
    ],
  };
  const expected = bytesOf(
    len(101, [
      ...len(1, [...str(1, 'count'), ...len(2, []), ...str(3, INT)]),
      ...len(1, [...str(1, 'session'), ...len(2, [...int(1, 1), ...int(2, 60_000)]), ...str(3, 'shop/session')]),
      ...len(1, [...str(1, 'seen'), ...len(2, [...int(1, 2), ...int(2, 5_000)]), ...str(3, 'shop/seen')]),
    ]),
  );
  assert.equal([...encodeFromFunction(response)], [...expected]);
  assert.equal(decodeFromFunction(expected), response);
  // A spec without an expiration spec at all (older SDKs): no expiry.
  assert.equal(decodeFromFunction(bytesOf(len(101, len(1, [...str(1, 'n'), ...str(3, INT)])))), { kind: 'incomplete', missingValues: [{ name: 'n', typename: INT, expireMode: 'none', expireAfterMs: 0 }] });
});

test('fields in another order, unknown fields and an empty value with has_value decode as StateFun means them', () => {
  // Fields out of order and an unknown field 7 (varint) inside the address: both allowed by protobuf.
  const reordered = bytesOf(len(100, [...len(3, len(2, [...int(2, 1), ...str(1, 'x/empty')])), ...len(1, [...str(3, 'id-1'), ...int(7, 99), ...str(2, 'fn'), ...str(1, 'ns')])]));
  assert.equal(decodeToFunction(reordered), {
    target: { namespace: 'ns', type: 'fn', id: 'id-1' },
    state: [],
    invocations: [{ caller: null, argument: { typename: 'x/empty', value: new Uint8Array(0) } }],
  });
});

test('malformed or incomplete messages are ProtocolErrors that say what is wrong', () => {
  const cases: [Uint8Array, RegExp, 'to' | 'from'][] = [
    [bytesOf([0xff, 0xff, 0xff]), /FromFunction/, 'from'],
    [new Uint8Array(0), /neither an invocation result nor an incomplete invocation context/, 'from'],
    [bytesOf(len(100, len(2, len(2, typedValue(INT, four))))), /outgoing message 0 has no address/, 'from'],
    [bytesOf(len(100, len(3, [...int(1, -5), ...len(2, address('a', 'b', 'c')), ...len(3, typedValue(INT, four))]))), /negative delay/, 'from'],
    [bytesOf(len(100, len(3, int(10, 1)))), /cancellation 0 has no cancellation token/, 'from'],
    [bytesOf(len(100, len(1, [...int(1, 1), ...str(2, 'count')]))), /state mutation count has no value/, 'from'],
    [bytesOf(len(100, len(4, len(3, typedValue(INT, four))))), /egress message 0 names no egress/, 'from'],
    [bytesOf(len(101, len(1, [...str(1, 'x'), ...len(2, int(1, 9))]))), /unknown expire mode 9/, 'from'],
    [new Uint8Array(0), /no invocation batch/, 'to'],
    [bytesOf(len(100, len(1, address('a', 'b', 'c')))), /at least one invocation/, 'to'],
    [bytesOf(len(100, [...len(1, str(3, 'id')), ...len(3, len(2, typedValue(INT, four)))])), /batch target has no address/, 'to'],
  ];
  for (const [bytes, message, which] of cases) {
    try {
      if (which === 'from') decodeFromFunction(bytes);
      else decodeToFunction(bytes);
      assert.unreachable(`decoded ${[...bytes]}`);
    } catch (error) {
      assert.instance(error, ProtocolError, String(error));
      assert.is((error as ProtocolError).code, 'SC_ERR_MALFORMED_FRAME');
      assert.match((error as Error).message, message);
    }
  }
});

test.run();
