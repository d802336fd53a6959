/**
 * Valid envelopes of every shape for the fuzz files (invoke with and without caller and producer mark,
 * egress with and without record seq, values of every built-in type and opaque ones), and where each
 * keeps its lengths, so a mutation can lie about them.
 */
import { egressLengthMax, invokeLengthMax, writeEgress, writeInvoke } from '../../lib/envelope.js';
import { TypedValue, toTypedValue } from '../../lib/typed-value.js';
import { Types } from '../../lib/types.js';
import type { LengthField, Random } from './fuzz-harness.js';

export interface Encoded {
  bytes: Uint8Array;
  fields: LengthField[];
}

export function randomTypename(random: Random): string {
  return random.pick([() => 'test/counter', () => 'ns/fn', () => `${random.text(6)}/${random.text(6)}`, () => random.text(10), () => 'n/' + 'é'.repeat(100)])();
}

export function randomId(random: Random): string {
  return random.chance(0.05) ? 'i'.repeat(random.between(256, 3000)) : random.text(20);
}

export function randomValue(random: Random): TypedValue {
  return random.pick<() => TypedValue>([
    () => toTypedValue(random.int(2 ** 32) - 2 ** 31, Types.int),
    () => toTypedValue(0, Types.int),
    () => toTypedValue(random.int(2 ** 53) * (random.chance(0.5) ? -1 : 1), Types.long),
    () => toTypedValue(random.float() * 1e6, Types.float),
    () => toTypedValue(random.float() * 1e300, Types.double),
    () => toTypedValue(random.chance(0.5), Types.bool),
    () => toTypedValue(random.text(30), Types.string),
    () => toTypedValue('s'.repeat(random.between(100, 400)), Types.string),
    () => toTypedValue({ a: random.int(9), b: [random.text(4)] }),
    () => toTypedValue(random.bytes(random.int(40)), Types.bytes),
    () => toTypedValue({ m: new Map([[1, 2]]) }, Types.msgpack()),
    () => new TypedValue(randomTypename(random), undefined, random.bytes(random.int(40))),
  ])();
}

/** A valid invoke envelope, at offset 0, with its length fields. */
export function randomInvoke(random: Random, options: { caller?: boolean; producer?: boolean; typename?: string; id?: string; value?: TypedValue } = {}): Encoded {
  const typename = options.typename ?? randomTypename(random);
  const id = options.id ?? randomId(random);
  const caller = options.caller ?? random.chance(0.4) ? [randomTypename(random), randomId(random)] as const : null;
  const producer = options.producer ?? random.chance(0.5) ? { session: random.text(16), seq: random.between(1, 2 ** 40) } : null;
  const value = options.value ?? randomValue(random);
  const buffer = new Uint8Array(invokeLengthMax(typename, id, caller?.[0] ?? null, caller?.[1] ?? null, value, producer));
  const end = writeInvoke(buffer, 0, random.int(1024), typename, id, caller?.[0] ?? null, caller?.[1] ?? null, value, producer);
  const bytes = buffer.slice(0, end);
  return { bytes, fields: invokeFields(bytes) };
}

/** A valid egress envelope, at offset 0, with its length fields. */
export function randomEgress(random: Random): Encoded {
  const egress = random.pick(['out', 'dead-letters', random.text(10)]);
  const typename = randomTypename(random);
  const id = randomId(random);
  const value = randomValue(random);
  const buffer = new Uint8Array(egressLengthMax(egress, typename, id, value));
  const end = writeEgress(buffer, 0, random.int(1024), egress, typename, id, value, random.chance(0.5) ? random.int(2 ** 40) : null);
  const bytes = buffer.slice(0, end);
  return { bytes, fields: egressFields(bytes) };
}

const u8 = (bytes: Uint8Array, offset: number) => bytes[offset]!;
const u16 = (bytes: Uint8Array, offset: number) => bytes[offset]! | (bytes[offset + 1]! << 8);

/** The header's kind, flags and key group, and each length prefix of a valid invoke envelope. */
export function invokeFields(bytes: Uint8Array): LengthField[] {
  const fields: LengthField[] = [{ offset: 0, kind: 'u8' }, { offset: 1, kind: 'u8' }, { offset: 4, kind: 'u32' }];
  const flags = bytes[1]!;
  let cursor = 8;
  const short = () => {
    fields.push({ offset: cursor, kind: 'u8' });
    cursor += 1 + u8(bytes, cursor);
  };
  const medium = () => {
    fields.push({ offset: cursor, kind: 'u16' });
    cursor += 2 + u16(bytes, cursor);
  };
  short();
  medium();
  if ((flags & 1) !== 0) {
    short();
    medium();
  }
  if ((flags & 2) !== 0) {
    short();
    fields.push({ offset: cursor, kind: 'f64' });
    cursor += 8;
  }
  short();
  fields.push({ offset: cursor, kind: 'u32' });
  return fields;
}

export function egressFields(bytes: Uint8Array): LengthField[] {
  const fields: LengthField[] = [{ offset: 0, kind: 'u8' }, { offset: 1, kind: 'u8' }, { offset: 4, kind: 'u32' }];
  let cursor = 8;
  if ((bytes[1]! & 1) !== 0) {
    fields.push({ offset: cursor, kind: 'f64' });
    cursor += 8;
  }
  for (const kind of ['u8', 'u8', 'u16', 'u8'] as const) {
    fields.push({ offset: cursor, kind });
    cursor += (kind === 'u8' ? 1 + u8(bytes, cursor) : 2 + u16(bytes, cursor));
  }
  fields.push({ offset: cursor, kind: 'u32' });
  return fields;
}
