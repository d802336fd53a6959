// Dead letters: describing whatever a handler threw never throws, and the record always fits a ring.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ValidationError } from '../../../lib/errors.js';
import { egressLengthMax } from '../../../lib/envelope.js';
import { DEAD_LETTERS_EGRESS, DEAD_LETTER_TYPENAME, type DeadLetter } from '../../../lib/function.js';
import { Message } from '../../../lib/message.js';
import { decodeUtf8 } from '../../../lib/utf8.js';
import { recordBytesMax } from '../../../node/rings/spsc-ring.js';
import { deadLetterFor, describeThrown } from '../../../node/shard/dead-letters.js';

function utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

function message(targetId: string, callerId: string | null = null, typename = 'test/target'): Message {
  return new Message(3, typename, targetId, callerId === null ? null : 'test/caller', callerId, 'io.statefun.types/string', 'payload', null);
}

// ---- describeThrown ----

test('describes Errors and StatecraftErrors; keeps the code of a StatecraftError only', () => {
  assert.equal(describeThrown(new TypeError('bad type')), { code: 'SC_ERR_HANDLER', name: 'TypeError', message: 'bad type' });
  assert.equal(describeThrown(new ValidationError('SC_ERR_INVALID_VALUE', 'no value')), { code: 'SC_ERR_INVALID_VALUE', name: 'ValidationError', message: 'no value' });
  const withCode = Object.assign(new Error('not found'), { code: 'ENOENT' });
  assert.is(describeThrown(withCode).code, 'SC_ERR_HANDLER', 'a code property on a plain Error is not ours');
  assert.equal(describeThrown('a string'), { code: 'SC_ERR_HANDLER', name: 'Error', message: 'a string' });
  assert.equal(describeThrown(42), { code: 'SC_ERR_HANDLER', name: 'Error', message: '42' });
  assert.equal(describeThrown(undefined), { code: 'SC_ERR_HANDLER', name: 'Error', message: 'undefined' });
  assert.equal(describeThrown(null), { code: 'SC_ERR_HANDLER', name: 'Error', message: 'null' });
  assert.is(describeThrown(10n).message, '10');
});

test('never throws for hostile values', () => {
  const everyTrapThrows = new Proxy(
    {},
    new Proxy(
      {},
      {
        get() {
          return () => {
            throw new Error('trap');
          };
        },
      },
    ),
  );
  const errorWithThrowingMessage = new Error('hidden');
  Object.defineProperty(errorWithThrowingMessage, 'message', {
    get() {
      throw new Error('message getter');
    },
  });
  const errorWithThrowingName = new Error('visible');
  Object.defineProperty(errorWithThrowingName, 'name', {
    get() {
      throw new Error('name getter');
    },
  });
  const statecraftWithThrowingMessage = new ValidationError('SC_ERR_INVALID_ID', 'hidden');
  Object.defineProperty(statecraftWithThrowingMessage, 'message', {
    get() {
      throw new Error('message getter');
    },
  });
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const hostile: [string, unknown][] = [
    ['a null-prototype object', Object.create(null)],
    ['a Proxy that throws on every trap', everyTrapThrows],
    ['a Proxy of a function that throws on every trap', new Proxy(() => undefined, { get: () => { throw new Error('get'); }, getPrototypeOf: () => { throw new Error('proto'); }, apply: () => { throw new Error('apply'); } })],
    ['a revoked Proxy', revoked],
    ['a symbol', Symbol('thrown')],
    ['an Error whose message getter throws', errorWithThrowingMessage],
    ['an Error whose name getter throws', errorWithThrowingName],
    ['a StatecraftError whose message getter throws', statecraftWithThrowingMessage],
    ['an object whose toString throws', { toString: () => { throw new Error('toString'); } }],
    ['an object whose toString returns an object', { toString: () => ({}), valueOf: () => ({}) }],
    ['an object whose toPrimitive throws', { [Symbol.toPrimitive]: () => { throw new Error('toPrimitive'); } }],
    ['an Error whose message is an object that cannot be a string', Object.assign(new Error(), { message: Object.create(null) })],
  ];
  for (const [what, thrown] of hostile) {
    let described: ReturnType<typeof describeThrown>;
    try {
      described = describeThrown(thrown);
    } catch (error) {
      assert.unreachable(`describeThrown threw for ${what}: ${String(error)}`);
      return;
    }
    assert.type(described.code, 'string', what);
    assert.type(described.name, 'string', what);
    assert.type(described.message, 'string', what);
    assert.ok(described.message.length > 0, `${what}: says something`);
    // The description itself must survive JSON (it goes into the dead-letter record).
    JSON.stringify(described);
  }
  assert.is(describeThrown(Symbol('thrown')).message, 'Symbol(thrown)');
  assert.match(describeThrown(Object.create(null)).message, /cannot be turned into a string; throw an Error instead/);
  assert.match(describeThrown(errorWithThrowingMessage).message, /cannot be turned into a string/);
  assert.is(describeThrown(statecraftWithThrowingMessage).code, 'SC_ERR_INVALID_ID', 'the code is kept even when the message cannot be read');
});

test('truncates huge messages and names on a character boundary, saying how long the message was', () => {
  const huge = new Error('x'.repeat(3 * 1024 * 1024));
  const described = describeThrown(huge);
  assert.ok(utf8Bytes(described.message) <= 4096, `${utf8Bytes(described.message)} bytes`);
  assert.match(described.message, /^x+… \[truncated: the message had 3145728 characters\]$/);
  // Multi-byte characters are not cut in half.
  const euros = describeThrown(new Error('€'.repeat(10_000))).message;
  assert.ok(utf8Bytes(euros) <= 4096);
  assert.not.ok(euros.includes('\uFFFD'), 'no broken character');
  assert.ok(euros.startsWith('€'.repeat(1000)));
  const surrogates = describeThrown('😀'.repeat(5000)).message;
  assert.ok(utf8Bytes(surrogates) <= 4096);
  assert.not.ok(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(surrogates), 'no lone high surrogate');
  const longName = Object.assign(new Error('short'), { name: 'N'.repeat(10_000) });
  assert.ok(utf8Bytes(describeThrown(longName).name) <= 256);
  assert.is(describeThrown(longName).message, 'short');
});

// ---- deadLetterFor ----

test('deadLetterFor: the record and its JSON value, untouched when it fits', () => {
  const nowMs = Date.UTC(2024, 0, 2, 3, 4, 5);
  const { record, value } = deadLetterFor(message('target-1', 'caller-1'), new TypeError('went wrong'), nowMs, 1024 * 1024);
  const expected: DeadLetter = {
    address: { typename: 'test/target', id: 'target-1' },
    caller: { typename: 'test/caller', id: 'caller-1' },
    messageType: 'io.statefun.types/string',
    code: 'SC_ERR_HANDLER',
    error: 'TypeError',
    reason: 'went wrong',
    at: '2024-01-02T03:04:05.000Z',
  };
  assert.equal(record, expected);
  assert.is(value.typename, DEAD_LETTER_TYPENAME);
  assert.equal(JSON.parse(decodeUtf8(value.bytes!)), expected);
  assert.is(deadLetterFor(message('no-caller'), 'x', nowMs, 1024 * 1024).record.caller, null);
});

test('deadLetterFor shortens ids and reason so the egress record fits recordBytesMax', () => {
  const recordMax = 8192;
  const targetId = 'a'.repeat(1500);
  const callerId = '"'.repeat(1500); // each escapes to two bytes in JSON
  const error = new Error('\u0001'.repeat(4000)); // each escapes to six bytes in JSON
  const letter = message(targetId, callerId);
  const full = deadLetterFor(letter, error, 0, 1024 * 1024);
  assert.ok(egressLengthMax(DEAD_LETTERS_EGRESS, letter.targetTypename, letter.targetId, full.value) > recordMax, 'too long as it is');
  const { record, value } = deadLetterFor(letter, error, 0, recordMax);
  assert.ok(egressLengthMax(DEAD_LETTERS_EGRESS, letter.targetTypename, letter.targetId, value) <= recordMax);
  assert.ok(utf8Bytes(record.address.id) <= 256);
  assert.ok(targetId.startsWith(record.address.id.replace(/…$/, '')), 'a prefix of the id');
  assert.ok(utf8Bytes(record.caller!.id) <= 256);
  assert.ok(utf8Bytes(record.reason) <= 256);
  assert.is(record.address.typename, 'test/target', 'type names are kept whole');
  assert.is(record.caller!.typename, 'test/caller');
  assert.equal(JSON.parse(decodeUtf8(value.bytes!)), record, 'the value is the shortened record');
});

test('with the smallest ring a node accepts for its id limit, even the most hostile dead letter fits', () => {
  // node.ts: rings hold at least valueBytesMax + names + 6 × idBytesMax, and are powers of two of 64 KiB or more.
  const typename = `ns/${'t'.repeat(252)}`;
  for (const idBytesMax of [1, 1024, 8192, 65535]) {
    const envelopeBytesMax = 16 + 3 * 255 * 3 + 2 * idBytesMax * 3 + 64;
    let ringBytes = 64 * 1024;
    while (recordBytesMax(ringBytes) < envelopeBytesMax) ringBytes *= 2;
    const recordMax = recordBytesMax(ringBytes);
    const id = '\u0001'.repeat(idBytesMax);
    const letter = new Message(0, typename, id, typename, id, typename, undefined, new Uint8Array(1), null);
    const thrown = Object.assign(new Error('\u0002'.repeat(100_000)), { name: '\u0003'.repeat(1000) });
    const { value } = deadLetterFor(letter, thrown, 0, recordMax);
    const length = egressLengthMax(DEAD_LETTERS_EGRESS, letter.targetTypename, letter.targetId, value);
    assert.ok(length <= recordMax, `idBytesMax ${idBytesMax}: ${length} bytes for a ring record of at most ${recordMax}`);
  }
});

test.run();
