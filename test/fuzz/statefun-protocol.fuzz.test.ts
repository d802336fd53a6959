// Seeded fuzzing of StateFun's request-reply messages (lib/statefun-protocol.ts: decodeToFunction, which
// the HTTP function host reads, and decodeFromFunction, which the remote invoker reads) and of their
// values and addresses as lib/remote-values.ts turns them into Statecraft's. Valid messages are mutated
// in their bytes, their length varints (huge, "negative"), their wire types and field numbers, and
// random bytes are fed too. A decode returns a message that keeps the protocol's rules or throws
// SC_ERR_MALFORMED_FRAME; remote-values returns valid names and values or throws a ValidationError.
// FUZZ_SEED=<n> replays one seed (see fuzz-harness.ts).
import { test } from 'uvu';
import { isTypename } from '../../lib/address.js';
import { fromRemoteAddress, fromRemoteEgress, fromRemoteValue } from '../../lib/remote-values.js';
import {
  decodeFromFunction,
  decodeToFunction,
  encodeFromFunction,
  encodeToFunction,
  type FunctionResponse,
  type InvocationBatch,
  type RemoteAddress,
  type RemoteTypedValue,
} from '../../lib/statefun-protocol.js';
import { TypedValue } from '../../lib/typed-value.js';
import { Types, primitiveType } from '../../lib/types.js';
import { KnownGaps, Random, attempt, concat, describeError, expectContract, isContracted, fail, mutateBytes, planSeeds, summary, type CaseLabel, type ErrorContract } from './fuzz-harness.js';

const plan = planSeeds('statefun-protocol', import.meta.url, 30, 6);
const CASES_PER_SEED = 500;
const DECODE_CONTRACT: ErrorContract = { codes: ['SC_ERR_MALFORMED_FRAME'] };
const VALUES_CONTRACT: ErrorContract = { codes: ['SC_ERR_INVALID_TYPENAME', 'SC_ERR_INVALID_ID', 'SC_ERR_INVALID_VALUE', 'SC_ERR_INVALID_EGRESS'] };
const ID_BYTES_MAX = 64;

const gaps = new KnownGaps('statefun-protocol', [
  { name: 'lone-surrogate-encoding', skippedTest: 'BUG: encodeToFunction and encodeFromFunction write a lone surrogate as invalid UTF-8, which the decoders then refuse' },
]);

/** Strings deep inside `value` that are not well-formed UTF-16 (a lone surrogate). */
function hasLoneSurrogate(value: unknown): boolean {
  if (typeof value === 'string') return !value.isWellFormed();
  if (value instanceof Uint8Array || value === null || typeof value !== 'object') return false;
  return Object.values(value).some(hasLoneSurrogate);
}

/** `value` with every string made well-formed (a lone surrogate becomes U+FFFD, as TextEncoder writes it). */
function wellFormed<T>(value: T): T {
  if (typeof value === 'string') return value.toWellFormed() as T;
  if (value instanceof Uint8Array || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(wellFormed) as T;
  return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, wellFormed(child)])) as T;
}

/**
 * A message's bytes. A message with a lone surrogate in a string encodes to bytes its decoder refuses
 * (the known gap): that is counted, and the message's well-formed twin is used instead.
 */
function encodeValid<T>(message: T, encode: (message: T) => Uint8Array, decode: (bytes: Uint8Array) => unknown): Uint8Array {
  const bytes = encode(message);
  if (!hasLoneSurrogate(message)) return bytes;
  const decoded = attempt(() => decode(bytes));
  if (!decoded.ok && isContracted(decoded.error, DECODE_CONTRACT) && /not valid for encoding utf-8/.test((decoded.error as Error).message)) gaps.hit('lone-surrogate-encoding');
  return encode(wellFormed(message));
}

// ---- valid messages ----

function randomAddress(random: Random): RemoteAddress {
  return { namespace: random.pick(['shop', 'a.b', random.text(5) || 'x']), type: random.pick(['cart', random.text(5) || 'y']), id: random.chance(0.9) ? `id-${random.int(100)}` : random.text(30) };
}

function randomTypedValue(random: Random): RemoteTypedValue {
  const serialized = random.pick<() => RemoteTypedValue>([
    () => ({ typename: 'io.statefun.types/int', value: Types.int.serialize(random.int(2 ** 32) - 2 ** 31) }),
    () => ({ typename: 'io.statefun.types/long', value: Types.long.serialize(random.int(2 ** 53)) }),
    () => ({ typename: 'io.statefun.types/string', value: Types.string.serialize(random.text(40)) }),
    () => ({ typename: 'io.statefun.types/bool', value: Types.bool.serialize(random.chance(0.5)) }),
    () => ({ typename: 'io.statefun.types/double', value: Types.double.serialize(random.float()) }),
    () => ({ typename: 'shop/item', value: random.bytes(random.int(30)) }),
    () => ({ typename: 'shop/absent', value: null }),
  ])();
  return serialized;
}

function randomBatch(random: Random): InvocationBatch {
  return {
    target: randomAddress(random),
    state: Array.from({ length: random.int(4) }, () => ({ name: random.pick(['count', 'items', random.text(6)]), value: randomTypedValue(random) })),
    invocations: Array.from({ length: random.between(1, 3) }, () => ({ caller: random.chance(0.5) ? randomAddress(random) : null, argument: { ...randomTypedValue(random), value: random.bytes(random.int(10)) } })),
  };
}

function randomResponse(random: Random): FunctionResponse {
  if (random.chance(0.2)) {
    return {
      kind: 'incomplete',
      missingValues: Array.from({ length: random.between(1, 3) }, () => ({ name: random.pick(['count', 'seen']), typename: 'io.statefun.types/int', expireMode: random.pick(['none', 'after-write', 'after-invoke'] as const), expireAfterMs: random.int(2 ** 40) })),
    };
  }
  const value = () => ({ ...randomTypedValue(random), value: random.bytes(random.between(1, 10)) });
  return {
    kind: 'result',
    stateMutations: Array.from({ length: random.int(3) }, () => (random.chance(0.7) ? { name: 'count', value: value() } : { name: 'items', value: null })),
    outgoingMessages: Array.from({ length: random.int(3) }, () => ({ target: randomAddress(random), argument: value() })),
    delayedInvocations: Array.from({ length: random.int(3) }, () =>
      random.chance(0.3)
        ? { cancel: true as const, cancellationToken: `t-${random.int(9)}` }
        : { cancel: false as const, delayMs: random.int(2 ** 45), target: randomAddress(random), argument: value(), cancellationToken: random.chance(0.5) ? 't' : null },
    ),
    outgoingEgresses: Array.from({ length: random.int(3) }, () => ({ namespace: random.pick(['statecraft', 'io.ns']), type: random.pick(['out', 'a/b', random.text(4) || 'z']), argument: value() })),
  };
}

// ---- protobuf-aware mutations ----

interface Tag {
  /** Offset of the tag's varint. */
  offset: number;
  /** Where the field (tag and payload) ends. */
  end: number;
  /** For a length-delimited field: where its length varint starts and ends. */
  length?: [number, number];
}

function readVarint(bytes: Uint8Array, offset: number, end: number): [number, number] | null {
  let value = 0;
  let scale = 1;
  for (let index = offset; index < end && index < offset + 10; index++) {
    value += (bytes[index]! & 0x7f) * scale;
    scale *= 128;
    if ((bytes[index]! & 0x80) === 0) return [value, index + 1];
  }
  return null;
}

/** Every tag of a valid message, recursing into length-delimited fields that parse as messages. */
function tagsOf(bytes: Uint8Array, start = 0, end = bytes.length, into: Tag[] = []): Tag[] | null {
  const found: Tag[] = [];
  let cursor = start;
  while (cursor < end) {
    const key = readVarint(bytes, cursor, end);
    if (key === null) return null;
    const tag: Tag = { offset: cursor, end: cursor };
    cursor = key[1];
    const wire = key[0] & 7;
    if (wire === 0) {
      const value = readVarint(bytes, cursor, end);
      if (value === null) return null;
      cursor = value[1];
    } else if (wire === 1) cursor += 8;
    else if (wire === 5) cursor += 4;
    else if (wire === 2) {
      const length = readVarint(bytes, cursor, end);
      if (length === null || length[1] + length[0] > end) return null;
      tag.length = [cursor, length[1]];
      const nested = tagsOf(bytes, length[1], length[1] + length[0], []);
      if (nested !== null) found.push(...nested);
      cursor = length[1] + length[0];
    } else return null;
    if (cursor > end) return null;
    tag.end = cursor;
    found.push(tag);
  }
  into.push(...found);
  return into;
}

const PROTOBUF_MUTATIONS = ['length-varint', 'wire-type', 'field-number', 'drop-field', 'duplicate-field'] as const;

/**
 * A length varint set to a lie (huge, 2^64 - 1 as "negative", off by one), a tag's wire type or field
 * number changed, or a whole field dropped or repeated (the enclosing lengths then lie too, unless the
 * field is at the top level).
 */
function mutateProtobuf(random: Random, bytes: Uint8Array): { kind: string; bytes: Uint8Array } | null {
  const tags = tagsOf(bytes);
  if (tags === null || tags.length === 0) return null;
  const kind = random.pick(PROTOBUF_MUTATIONS);
  if (kind === 'length-varint') {
    const withLength = tags.filter((tag) => tag.length !== undefined);
    if (withLength.length === 0) return null;
    const [from, to] = random.pick(withLength).length!;
    const current = readVarint(bytes, from, to)![0];
    const lie = random.pick<number[]>([
      [0xff, 0xff, 0xff, 0xff, 0x0f], // 2^32 - 1
      [0xff, 0xff, 0xff, 0xff, 0x07], // 2^31 - 1
      [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 2^64 - 1: -1 as int64
      [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // 11 bytes: too long
      [(current + 1) & 0x7f],
      [Math.max(0, current - 1) & 0x7f],
      [0],
    ]);
    return { kind, bytes: concat(bytes.subarray(0, from), Uint8Array.from(lie), bytes.subarray(to)) };
  }
  const tag = random.pick(tags);
  if (kind === 'drop-field') return { kind, bytes: concat(bytes.subarray(0, tag.offset), bytes.subarray(tag.end)) };
  if (kind === 'duplicate-field') return { kind, bytes: concat(bytes.subarray(0, tag.end), bytes.subarray(tag.offset, tag.end), bytes.subarray(tag.end)) };
  const key = readVarint(bytes, tag.offset, bytes.length)!;
  const wire = key[0] & 7;
  const field = Math.floor(key[0] / 8);
  const next = kind === 'wire-type' ? field * 8 + random.pick([0, 1, 2, 3, 4, 5, 6, 7].filter((other) => other !== wire)) : random.pick([1, 2, 3, 10, 11, 100, 101, 536870911]) * 8 + wire;
  const varint: number[] = [];
  let rest = next;
  while (rest >= 0x80) {
    varint.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  varint.push(rest);
  return { kind, bytes: concat(bytes.subarray(0, tag.offset), Uint8Array.from(varint), bytes.subarray(key[1])) };
}

// ---- invariants ----

function checkTypedValue(label: CaseLabel, value: RemoteTypedValue | null, required: boolean, where: string): void {
  if (value === null) {
    if (required) fail(label, `${where}: a required value is missing`);
    return;
  }
  if (typeof value.typename !== 'string' || !(value.value === null || value.value instanceof Uint8Array)) fail(label, `${where}: ${String(value)} is not a typed value`);
}

function checkAddress(label: CaseLabel, address: RemoteAddress, where: string): void {
  if (typeof address.namespace !== 'string' || address.namespace === '' || typeof address.type !== 'string' || address.type === '' || typeof address.id !== 'string') fail(label, `${where}: address ${JSON.stringify(address)}`);
}

/** What remote-values makes of a value: a valid TypedValue or a ValidationError. */
function checkRemoteValue(label: CaseLabel, value: RemoteTypedValue): void {
  const typed = expectContract(label, attempt(() => fromRemoteValue(value, 'fuzz')), VALUES_CONTRACT);
  if (typed === undefined) return;
  if (!(typed instanceof TypedValue) || !isTypename(typed.typename)) fail(label, `fromRemoteValue gave ${String(typed?.typename)}`);
  const primitive = primitiveType(typed.typename);
  if (primitive !== undefined && (typed.bytes !== null || !(primitive.check(typed.value) || (typed.typename === 'io.statefun.types/float' && typeof typed.value === 'number')))) fail(label, `a ${typed.typename} value ${String(typed.value)}`);
  if (primitive === undefined && !(typed.bytes instanceof Uint8Array)) fail(label, 'a value without bytes');
}

function checkRemoteAddress(label: CaseLabel, address: RemoteAddress): void {
  const converted = expectContract(label, attempt(() => fromRemoteAddress(address, ID_BYTES_MAX)), VALUES_CONTRACT);
  if (converted === undefined) return;
  if (!isTypename(converted.typename) || converted.id.length === 0 || Buffer.byteLength(converted.id) > ID_BYTES_MAX) fail(label, `fromRemoteAddress gave ${JSON.stringify(converted)}`);
}

function checkBatch(label: CaseLabel, batch: InvocationBatch): void {
  checkAddress(label, batch.target, 'target');
  if (batch.invocations.length === 0) fail(label, 'a batch without invocations');
  for (const entry of batch.state) {
    if (typeof entry.name !== 'string') fail(label, 'a state entry without a name');
    checkTypedValue(label, entry.value, true, `state ${entry.name}`);
  }
  for (const invocation of batch.invocations) {
    if (invocation.caller !== null) {
      checkAddress(label, invocation.caller, 'caller');
      checkRemoteAddress(label, invocation.caller);
    }
    checkTypedValue(label, invocation.argument, true, 'argument');
    checkRemoteValue(label, invocation.argument);
  }
  checkRemoteAddress(label, batch.target);
}

function checkResponse(label: CaseLabel, response: FunctionResponse): void {
  if (response.kind === 'incomplete') {
    for (const spec of response.missingValues) {
      if (typeof spec.name !== 'string' || spec.name === '' || typeof spec.typename !== 'string') fail(label, `missing value ${JSON.stringify(spec)}`);
      if (!['none', 'after-write', 'after-invoke'].includes(spec.expireMode) || !Number.isSafeInteger(spec.expireAfterMs) || spec.expireAfterMs < 0) fail(label, `expiry ${spec.expireMode} ${spec.expireAfterMs}`);
    }
    return;
  }
  for (const mutation of response.stateMutations) {
    if (typeof mutation.name !== 'string' || mutation.name === '') fail(label, 'a state mutation without a name');
    checkTypedValue(label, mutation.value, false, `mutation ${mutation.name}`);
    if (mutation.value !== null) checkRemoteValue(label, mutation.value);
  }
  for (const outgoing of response.outgoingMessages) {
    checkAddress(label, outgoing.target, 'outgoing');
    checkRemoteAddress(label, outgoing.target);
    checkTypedValue(label, outgoing.argument, true, 'outgoing');
    checkRemoteValue(label, outgoing.argument);
  }
  for (const delayed of response.delayedInvocations) {
    if (delayed.cancel) {
      if (typeof delayed.cancellationToken !== 'string' || delayed.cancellationToken === '') fail(label, 'a cancellation without a token');
      continue;
    }
    if (!Number.isSafeInteger(delayed.delayMs) || delayed.delayMs < 0) fail(label, `a delay of ${delayed.delayMs} ms`);
    checkAddress(label, delayed.target, 'delayed');
    checkRemoteAddress(label, delayed.target);
    checkTypedValue(label, delayed.argument, true, 'delayed');
    checkRemoteValue(label, delayed.argument);
  }
  for (const egress of response.outgoingEgresses) {
    if (typeof egress.namespace !== 'string' || egress.namespace === '' || typeof egress.type !== 'string' || egress.type === '') fail(label, `egress ${egress.namespace}/${egress.type}`);
    checkTypedValue(label, egress.argument, true, 'egress');
    checkRemoteValue(label, egress.argument);
    expectContract(label, attempt(() => fromRemoteEgress(egress.namespace, egress.type)), VALUES_CONTRACT);
  }
}

function decodeCase(label: CaseLabel, direction: 'to' | 'from', bytes: Uint8Array): boolean {
  if (direction === 'to') {
    const batch = expectContract(label, attempt(() => decodeToFunction(bytes)), DECODE_CONTRACT);
    if (batch !== undefined) checkBatch(label, batch);
    return batch !== undefined;
  }
  const response = expectContract(label, attempt(() => decodeFromFunction(bytes)), DECODE_CONTRACT);
  if (response !== undefined) checkResponse(label, response);
  return response !== undefined;
}

test('ToFunction and FromFunction: mutated, truncated and random messages decode within the protocol or throw SC_ERR_MALFORMED_FRAME', () => {
  const started = performance.now();
  let cases = 0;
  let accepted = 0;
  for (const seed of plan.seeds) {
    const random = new Random(seed);
    const label = (what: string, input: Uint8Array): CaseLabel => ({ plan, seed, index: cases++, what, input });
    const batch = () => encodeValid(randomBatch(random), encodeToFunction, decodeToFunction);
    const response = () => encodeValid(randomResponse(random), encodeFromFunction, decodeFromFunction);
    const bases: ['to' | 'from', Uint8Array][] = [['to', batch()], ['to', batch()], ['from', response()], ['from', response()], ['from', response()]];
    for (const [direction, bytes] of bases) {
      const valid = attempt(() => (direction === 'to' ? decodeToFunction(bytes) : decodeFromFunction(bytes)));
      if (!valid.ok) fail(label(`valid ${direction}`, bytes), `a valid message was refused: ${describeError(valid.error)}`);
      decodeCase(label(`valid ${direction}`, bytes), direction, bytes);
      for (let length = 0; length < bytes.length; length++) decodeCase(label(`${direction} truncated to ${length}`, bytes.slice(0, length)), direction, bytes.slice(0, length));
    }
    for (let index = 0; index < CASES_PER_SEED; index++) {
      const [direction, base] = random.pick(bases);
      const mutated = (random.chance(0.4) ? mutateProtobuf(random, base) : null) ?? mutateBytes(random, base);
      // Either decoder: a message of the other direction must be refused or read within the rules too.
      const as = random.chance(0.9) ? direction : direction === 'to' ? 'from' : 'to';
      if (decodeCase(label(`${direction} ${mutated.kind}, read as ${as}`, mutated.bytes), as, mutated.bytes)) accepted++;
    }
  }
  summary('statefun-protocol', plan.seeds.length, cases, started);
  console.log(`[fuzz statefun-protocol] ${accepted} mutated messages were accepted and checked`);
  gaps.report();
});

// ---- known gaps, pinned ----

// BUG (reported, not fixed here; an encoder's, found by the fuzz's round trips): protobufjs writes a
// string with a lone surrogate as the 3 bytes ED A0 80, which is not UTF-8, so the message's own decoder
// refuses it whole (SC_ERR_MALFORMED_FRAME, "not valid for encoding utf-8"), and so would another SDK.
// Envelopes write U+FFFD instead (lib/utf8.ts). The decoders are right to refuse; the encoders should
// write U+FFFD. A handler in the function host that sends to an id with a lone surrogate makes its whole
// response unreadable for the runtime. Smallest: a batch whose target id is '\ud800'.
test.skip('BUG: encodeToFunction and encodeFromFunction write a lone surrogate as invalid UTF-8, which the decoders then refuse', () => {
  const batch: InvocationBatch = { target: { namespace: 'a', type: 'b', id: '\ud800' }, state: [], invocations: [{ caller: null, argument: { typename: 'a/b', value: new Uint8Array(0) } }] };
  const decoded = attempt(() => decodeToFunction(encodeToFunction(batch)));
  if (!decoded.ok) throw new Error(`a batch with id "\\ud800" does not survive its round trip: ${describeError(decoded.error)}`);
  if (decoded.value.target.id !== '\ufffd') throw new Error(`id came back as ${JSON.stringify(decoded.value.target.id)}`);
  const response: FunctionResponse = { kind: 'result', stateMutations: [], outgoingMessages: [], delayedInvocations: [], outgoingEgresses: [{ namespace: 'statecraft', type: '\udc00', argument: { typename: 'a/b', value: new Uint8Array(1) } }] };
  const answered = attempt(() => decodeFromFunction(encodeFromFunction(response)));
  if (!answered.ok) throw new Error(`a response with egress type "\\udc00" does not survive its round trip: ${describeError(answered.error)}`);
});

test.run();
