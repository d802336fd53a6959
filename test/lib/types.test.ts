// StateFun's type names and wire encodings, checked against hand-built protobuf bytes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Types, ValidationError } from 'statecraft';

const bytes = (...values: number[]) => new Uint8Array(values);

test('type names are StateFun\'s', () => {
  assert.is(Types.int.typename, 'io.statefun.types/int');
  assert.is(Types.long.typename, 'io.statefun.types/long');
  assert.is(Types.float.typename, 'io.statefun.types/float');
  assert.is(Types.double.typename, 'io.statefun.types/double');
  assert.is(Types.bool.typename, 'io.statefun.types/bool');
  assert.is(Types.string.typename, 'io.statefun.types/string');
  assert.is(Types.json().typename, 'statecraft.types/json');
  assert.is(Types.json('shop/order').typename, 'shop/order');
  assert.is(Types.bytes.typename, 'statecraft.types/bytes');
});

test('int: IntWrapper { sfixed32 value = 1 }', () => {
  assert.equal(Types.int.serialize(1), bytes(0x0d, 1, 0, 0, 0));
  assert.equal(Types.int.serialize(-2), bytes(0x0d, 0xfe, 0xff, 0xff, 0xff));
  assert.equal(Types.int.serialize(0), bytes(), 'proto3 leaves a default value out');
  assert.is(Types.int.deserialize(bytes()), 0);
  assert.is(Types.int.deserialize(bytes(0x0d, 0x78, 0x56, 0x34, 0x12)), 0x12345678);
  // an unknown field before it (field 2, varint 5) is skipped
  assert.is(Types.int.deserialize(bytes(0x10, 0x05, 0x0d, 7, 0, 0, 0)), 7);
  assert.throws(() => Types.int.serialize(1.5), (error: unknown) => error instanceof ValidationError && /32-bit signed integer/.test(error.message));
  assert.throws(() => Types.int.serialize(2 ** 31), (error: unknown) => error instanceof ValidationError);
  assert.throws(() => Types.int.deserialize(bytes(0x0d, 1, 2)), /malformed io.statefun.types\/int value: truncated field/);
});

test('long: LongWrapper { sfixed64 value = 1 }', () => {
  assert.equal(Types.long.serialize(1), bytes(0x09, 1, 0, 0, 0, 0, 0, 0, 0));
  assert.equal(Types.long.serialize(-1), bytes(0x09, 255, 255, 255, 255, 255, 255, 255, 255));
  for (const value of [0, 1, -1, 2 ** 40 + 3, -(2 ** 52), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
    assert.is(Types.long.deserialize(Types.long.serialize(value)), value);
  }
  assert.throws(() => Types.long.deserialize(bytes(0x09, 0, 0, 0, 0, 0, 0, 0, 0x7f)), /beyond/);
});

test('float and double: FloatWrapper { float } and DoubleWrapper { double }', () => {
  assert.equal(Types.float.serialize(1.5), bytes(0x0d, 0, 0, 0xc0, 0x3f));
  assert.is(Types.float.deserialize(bytes(0x0d, 0, 0, 0xc0, 0x3f)), 1.5);
  assert.equal(Types.double.serialize(1.5), bytes(0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f));
  assert.is(Types.double.deserialize(Types.double.serialize(Math.PI)), Math.PI);
  assert.equal(Types.double.serialize(0), bytes());
  assert.ok(Object.is(Types.double.deserialize(Types.double.serialize(-0)), -0), '-0 is not the default value');
});

test('bool: BooleanWrapper { bool value = 1 }', () => {
  assert.equal(Types.bool.serialize(true), bytes(0x08, 1));
  assert.equal(Types.bool.serialize(false), bytes());
  assert.is(Types.bool.deserialize(bytes(0x08, 1)), true);
  assert.is(Types.bool.deserialize(bytes()), false);
  assert.throws(() => Types.bool.serialize(1 as unknown as boolean), (error: unknown) => error instanceof ValidationError);
});

test('string: StringWrapper { string value = 1 }', () => {
  assert.equal(Types.string.serialize('hi'), bytes(0x0a, 2, 0x68, 0x69));
  assert.equal(Types.string.serialize(''), bytes());
  assert.is(Types.string.deserialize(bytes(0x0a, 2, 0x68, 0x69)), 'hi');
  const long = 'é'.repeat(200); // 400 bytes: a two-byte length varint
  const encoded = Types.string.serialize(long);
  assert.equal([...encoded.subarray(0, 3)], [0x0a, 0x90, 0x03]);
  assert.is(Types.string.deserialize(encoded), long);
  assert.is(Types.string.deserialize(Types.string.serialize('日本語 ok 😀')), '日本語 ok 😀');
});

test('json, bytes, msgpack and custom types', () => {
  const order = Types.json<{ items: string[] }>('shop/order');
  assert.equal(new TextDecoder().decode(order.serialize({ items: ['a'] })), '{"items":["a"]}');
  assert.equal(order.deserialize(order.serialize({ items: ['a', 'b'] })), { items: ['a', 'b'] });
  const raw = bytes(1, 2, 3);
  assert.equal(Types.bytes.deserialize(Types.bytes.serialize(raw)), raw);
  const packed = Types.msgpack<{ when: Date; tags: Set<string> }>('test/packed');
  const value = packed.deserialize(packed.serialize({ when: new Date(5), tags: new Set(['x']) }));
  assert.is(value.when.getTime(), 5);
  assert.ok(value.tags.has('x'));
  const upper = Types.custom<string>('test/upper', (text) => new TextEncoder().encode(text.toUpperCase()), (data) => new TextDecoder().decode(data));
  assert.is(upper.deserialize(upper.serialize('abc')), 'ABC');
  assert.throws(() => Types.json('not a typename'), /namespace\/name/);
  assert.throws(() => order.serialize(undefined as never), /use null to clear state/);
});

test.run();
