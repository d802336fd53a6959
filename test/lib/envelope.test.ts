// The envelope codec: round trips, and truncated or inconsistent bytes rejected without reading past the end.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BARRIER_BYTES, EnvelopeDecoder, EnvelopeKind, ENVELOPE_HEADER_BYTES, invokeLengthMax, readBarrier, readKeyGroup, writeBarrier, writeEgress, writeInvoke, egressLengthMax } from '../../lib/envelope.js';
import { ProtocolError } from '../../lib/errors.js';
import { toTypedValue } from '../../lib/typed-value.js';
import { Types } from '../../lib/types.js';
import { keyGroupOf, murmur3Bytes, murmur3String } from '../../lib/key-group.js';

function encodeInvoke(typename: string, id: string, caller: [string, string] | null, value: unknown, type?: Parameters<typeof toTypedValue>[1]): Uint8Array {
  const typed = toTypedValue(value, type);
  const buffer = new Uint8Array(invokeLengthMax(typename, id, caller?.[0] ?? null, caller?.[1] ?? null, typed));
  const end = writeInvoke(buffer, 0, 77, typename, id, caller?.[0] ?? null, caller?.[1] ?? null, typed);
  return buffer.slice(0, end);
}

test('invoke envelopes round-trip every value kind', () => {
  const decoder = new EnvelopeDecoder();
  const cases: [unknown, Parameters<typeof toTypedValue>[1]][] = [
    [42, undefined],
    [-7, Types.int],
    [2 ** 40, undefined],
    [1.25, undefined],
    [true, undefined],
    ['hello', undefined],
    ['日本語', Types.string],
    [{ a: [1, 2] }, undefined],
    [new Uint8Array([9, 8]), undefined],
  ];
  for (const [value, type] of cases) {
    const bytes = encodeInvoke('ns/fn', 'id-ü', ['ns/caller', 'c1'], value, type);
    const message = decoder.decodeInvoke(bytes, 0, bytes.length);
    assert.is(message.targetTypename, 'ns/fn');
    assert.is(message.targetId, 'id-ü');
    assert.equal(message.callerTypename, 'ns/caller');
    assert.equal(message.callerId, 'c1');
    assert.is(message.keyGroup, 77);
    assert.equal(message.value, value);
  }
  const noCaller = encodeInvoke('ns/fn', 'x', null, 'v');
  const message = decoder.decodeInvoke(noCaller, 0, noCaller.length);
  assert.is(message.callerTypename, null);
  assert.is(readKeyGroup(noCaller, 0), 77);
});

test('egress envelopes round-trip', () => {
  const typed = toTypedValue({ ok: true });
  const buffer = new Uint8Array(egressLengthMax('out', 'ns/fn', 'id', typed));
  const end = writeEgress(buffer, 0, 3, 'out', 'ns/fn', 'id', typed);
  const egress = new EnvelopeDecoder().decodeEgress(buffer, 0, end);
  assert.equal({ ...egress, bytes: new TextDecoder().decode(egress.bytes!) }, {
    keyGroup: 3,
    recordSeq: null,
    egress: 'out',
    sourceTypename: 'ns/fn',
    sourceId: 'id',
    valueTypename: 'statecraft.types/json',
    decoded: undefined,
    bytes: '{"ok":true}',
  });
  // With a record seq (checkpoints on): the stable id's second half, and the egress name still readable.
  const withSeq = writeEgress(buffer, 0, 3, 'out', 'ns/fn', 'id', typed, 2 ** 40 + 7);
  const decoder = new EnvelopeDecoder();
  assert.is(decoder.decodeEgress(buffer, 0, withSeq).recordSeq, 2 ** 40 + 7);
  assert.is(decoder.readEgressName(buffer, 0, withSeq), 'out');
});

test('barrier envelopes carry their checkpoint number in the header', () => {
  const buffer = new Uint8Array(BARRIER_BYTES);
  assert.is(writeBarrier(buffer, 0, 4_000_000_000), BARRIER_BYTES);
  assert.is(buffer[0], EnvelopeKind.Barrier);
  assert.is(readBarrier(buffer, 0), 4_000_000_000);
});

test('every truncation of an envelope is a ProtocolError', () => {
  const decoder = new EnvelopeDecoder();
  const bytes = encodeInvoke('ns/fn', 'some-id', ['ns/c', 'c'], 'value');
  for (let length = 0; length < bytes.length; length++) {
    assert.throws(() => decoder.decodeInvoke(bytes, 0, length), (error: unknown) => error instanceof ProtocolError && error.code === 'SC_ERR_MALFORMED_FRAME', `length ${length}`);
  }
  const wrongKind = bytes.slice();
  wrongKind[0] = 9;
  assert.throws(() => decoder.decodeInvoke(wrongKind, 0, wrongKind.length), (error: unknown) => error instanceof ProtocolError);
  const badUtf8 = encodeInvoke('ns/fn', 'ab', null, 1);
  badUtf8[ENVELOPE_HEADER_BYTES + 1 + 5 + 2] = 0xff; // first byte of the id
  assert.throws(() => decoder.decodeInvoke(badUtf8, 0, badUtf8.length), /not valid UTF-8/);
});

test('key groups: murmur3_x86_32 of the UTF-8 id, seed 0, mod K', () => {
  // Published MurmurHash3 x86_32 vectors (seed 0).
  assert.is(murmur3String(''), 0);
  assert.is(murmur3String('hello'), 0x248bfa47);
  assert.is(murmur3String('The quick brown fox jumps over the lazy dog'), 0x2e4ff723);
  const encoder = new TextEncoder();
  for (const id of ['a', 'ab', 'abc', 'abcd', 'abcde', 'héllo', '日本語テキスト', '😀x', 'user-123456']) {
    assert.is(murmur3String(id), murmur3Bytes(encoder.encode(id)), id);
  }
  assert.is(keyGroupOf('hello', 1024), 0x248bfa47 % 1024);
  // spread: 100k ids over 1024 groups, no group more than twice the mean
  const counts = new Array(1024).fill(0);
  for (let index = 0; index < 100_000; index++) counts[keyGroupOf(`user-${index}`, 1024)]++;
  assert.ok(Math.max(...counts) < 2 * (100_000 / 1024));
  assert.ok(Math.min(...counts) > 0.5 * (100_000 / 1024));
});

test.run();
