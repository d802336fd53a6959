// Seeded fuzzing of the envelope decoder (lib/envelope.ts): invoke and egress envelopes, their headers,
// caller, producer mark and record seq, mutated and random. Each call returns a message that accounts
// for every byte of its envelope and none outside it, or throws SC_ERR_MALFORMED_FRAME (the envelope) or
// SC_ERR_INVALID_VALUE (a built-in value's bytes). FUZZ_SEED=<n> replays one seed (see fuzz-harness.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ENVELOPE_HEADER_BYTES, EnvelopeDecoder, EnvelopeKind, readKeyGroup, type EgressEnvelope } from '../../lib/envelope.js';
import type { Message } from '../../lib/message.js';
import { primitiveType } from '../../lib/types.js';
import { Random, attempt, concat, expectContract, fail, mutateBytes, planSeeds, summary, type CaseLabel, type ErrorContract } from './fuzz-harness.js';
import { randomEgress, randomInvoke, type Encoded } from './fuzz-envelopes.js';

const plan = planSeeds('envelope', import.meta.url, 40, 8);
const CASES_PER_SEED = 600;
const CONTRACT: ErrorContract = { codes: ['SC_ERR_MALFORMED_FRAME', 'SC_ERR_INVALID_VALUE'] };
const utf8Bytes = (text: string) => Buffer.byteLength(text);

/** A decoded message as plain data, to compare two decodes of the same bytes. */
function plainMessage(message: Message): unknown {
  return [message.keyGroup, message.targetTypename, message.targetId, message.callerTypename, message.callerId, message.valueTypeName, message.decoded, message.bytes && [...message.bytes], message.producer && [message.producer.session, message.producer.seq]];
}

function plainEgress(egress: EgressEnvelope): unknown {
  return { ...egress, bytes: egress.bytes && [...egress.bytes] };
}

/** Every byte of an accepted invoke envelope is one of its fields: its length is the sum of theirs. */
function checkInvoke(label: CaseLabel, envelope: Uint8Array, message: Message, valueLength: number): void {
  const flags = envelope[1]!;
  let expected = ENVELOPE_HEADER_BYTES + 1 + utf8Bytes(message.targetTypename) + 2 + utf8Bytes(message.targetId) + 1 + utf8Bytes(message.valueTypeName) + 4 + valueLength;
  if (envelope[0] !== EnvelopeKind.Invoke) fail(label, `accepted an envelope of kind ${envelope[0]} as invoke`);
  if ((message.callerTypename !== null) !== ((flags & 1) !== 0)) fail(label, 'a caller present without its flag, or absent with it');
  if (message.callerTypename !== null) expected += 1 + utf8Bytes(message.callerTypename) + 2 + utf8Bytes(message.callerId!);
  if ((message.producer !== null) !== ((flags & 2) !== 0)) fail(label, 'a producer mark present without its flag, or absent with it');
  if (message.producer !== null) {
    expected += 1 + utf8Bytes(message.producer.session) + 8;
    if (!Number.isSafeInteger(message.producer.seq) || message.producer.seq < 1) fail(label, `accepted producer seq ${message.producer.seq}`);
  }
  if (expected !== envelope.length) fail(label, `its fields add up to ${expected} bytes, the envelope has ${envelope.length}`);
  if (message.keyGroup !== readKeyGroup(envelope, 0)) fail(label, 'key group differs from the header');
  checkValue(label, envelope, message.valueTypeName, message.decoded, message.bytes, valueLength);
}

function checkValue(label: CaseLabel, envelope: Uint8Array, typename: string, decoded: unknown, bytes: Uint8Array | null, valueLength: number): void {
  const primitive = primitiveType(typename);
  if (primitive !== undefined) {
    if (bytes !== null) fail(label, `a ${typename} value kept as bytes`);
    if (!primitive.check(decoded) && !(typename === 'io.statefun.types/float' && typeof decoded === 'number')) fail(label, `decoded ${String(decoded)} is not a ${typename}`);
  } else {
    if (bytes === null || bytes.length !== valueLength) fail(label, `value of ${bytes?.length} bytes, its length field says ${valueLength}`);
    if (Buffer.compare(bytes!, envelope.subarray(envelope.length - valueLength)) !== 0) fail(label, 'value bytes are not the envelope\'s last bytes');
  }
}

function checkEgress(label: CaseLabel, envelope: Uint8Array, egress: EgressEnvelope): void {
  let expected = ENVELOPE_HEADER_BYTES + 1 + utf8Bytes(egress.egress) + 1 + utf8Bytes(egress.sourceTypename) + 2 + utf8Bytes(egress.sourceId) + 1 + utf8Bytes(egress.valueTypename) + 4;
  if (envelope[0] !== EnvelopeKind.Egress) fail(label, `accepted an envelope of kind ${envelope[0]} as egress`);
  if ((egress.recordSeq !== null) !== ((envelope[1]! & 1) !== 0)) fail(label, 'a record seq present without its flag, or absent with it');
  if (egress.recordSeq !== null) {
    expected += 8;
    if (!Number.isSafeInteger(egress.recordSeq) || egress.recordSeq < 0) fail(label, `accepted record seq ${egress.recordSeq}`);
  }
  const valueLength = envelope.length - expected;
  if (valueLength < 0) fail(label, `its fields take ${expected} bytes, more than the envelope's ${envelope.length}`);
  const view = new DataView(envelope.buffer, envelope.byteOffset + expected - 4, 4);
  if (view.getUint32(0, true) !== valueLength) fail(label, `value length field ${view.getUint32(0, true)}, ${valueLength} bytes left`);
  if (egress.keyGroup !== readKeyGroup(envelope, 0)) fail(label, 'key group differs from the header');
  checkValue(label, envelope, egress.valueTypename, egress.decoded, egress.bytes, valueLength);
}

/**
 * Decodes `envelope` alone, and inside two buffers with different bytes around it: all three agree,
 * so nothing outside [offset, offset + length) was read.
 */
function decodeEverywhere(label: CaseLabel, decoder: EnvelopeDecoder, random: Random, envelope: Uint8Array, kind: 'invoke' | 'egress'): number {
  const call = (source: Uint8Array, offset: number) =>
    attempt(() => {
      if (kind === 'invoke') {
        const message = decoder.decodeInvoke(source, offset, envelope.length);
        return { plain: plainMessage(message), message, valueLength: decoder.lastValueLength };
      }
      const egress = decoder.decodeEgress(source, offset, envelope.length);
      return { plain: plainEgress(egress), egress, valueLength: 0 };
    });
  const alone = call(envelope, 0);
  const result = expectContract(label, alone, CONTRACT);
  const before = random.int(12);
  for (const fill of [0x00, 0xff]) {
    const padded = concat(new Uint8Array(before).fill(fill), envelope, new Uint8Array(random.int(12)).fill(fill));
    const embedded = call(padded, before);
    expectContract(label, embedded, CONTRACT);
    if (alone.ok !== embedded.ok) fail(label, `decoded ${alone.ok ? 'alone only' : 'only when surrounded by 0x' + fill.toString(16)}: it reads outside its envelope`);
    if (alone.ok && embedded.ok) assert.equal(embedded.value.plain, alone.value.plain, `${label.what}: the same envelope decodes the same wherever it sits`);
  }
  if (result === undefined) return 0;
  if (kind === 'invoke') checkInvoke(label, envelope, result.message!, result.valueLength);
  else {
    checkEgress(label, envelope, result.egress!);
    // The main thread routes records by the name alone: it agrees with the full decode.
    const name = attempt(() => decoder.readEgressName(envelope, 0, envelope.length));
    if (!name.ok || name.value !== result.egress!.egress) fail(label, `readEgressName says ${name.ok ? name.value : describe(name.error)}, decodeEgress ${result.egress!.egress}`);
  }
  return 1;
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

test('invoke and egress envelopes: mutated, truncated at every length and random bytes decode or throw a typed error', () => {
  const started = performance.now();
  const decoder = new EnvelopeDecoder();
  let cases = 0;
  let accepted = 0;
  for (const seed of plan.seeds) {
    const random = new Random(seed);
    const bases: [Encoded, 'invoke' | 'egress'][] = Array.from({ length: 6 }, () => (random.chance(0.6) ? [randomInvoke(random), 'invoke'] : [randomEgress(random), 'egress']));
    // Each valid base decodes; each strict prefix is refused (the value length must meet the end).
    for (const [base, kind] of bases) {
      const label: CaseLabel = { plan, seed, index: cases, what: `valid ${kind}`, input: base.bytes };
      if (decodeEverywhere(label, decoder, random, base.bytes, kind) !== 1) fail(label, 'a valid envelope was refused');
      for (let length = 0; length < base.bytes.length; length++) {
        const prefix = base.bytes.slice(0, length);
        const prefixLabel: CaseLabel = { plan, seed, index: cases++, what: `${kind} truncated to ${length}`, input: prefix };
        if (decodeEverywhere(prefixLabel, decoder, random, prefix, kind) !== 0) fail(prefixLabel, 'a strict prefix of a valid envelope was accepted');
      }
    }
    for (let index = 0; index < CASES_PER_SEED; index++) {
      const [base, kind] = random.pick(bases);
      const mutated = mutateBytes(random, base.bytes, base.fields);
      // Either decoder on either kind: a wrong kind must be refused too.
      const as = random.chance(0.85) ? kind : kind === 'invoke' ? 'egress' : 'invoke';
      const label: CaseLabel = { plan, seed, index: cases++, what: `${kind} ${mutated.kind}, decoded as ${as}`, input: mutated.bytes };
      accepted += decodeEverywhere(label, decoder, random, mutated.bytes, as);
    }
    // The shared decoder is still sound after all that.
    for (const [base, kind] of bases) {
      if (decodeEverywhere({ plan, seed, index: cases, what: `valid ${kind} again`, input: base.bytes }, decoder, random, base.bytes, kind) !== 1) {
        fail({ plan, seed, index: cases, what: 'valid again', input: base.bytes }, 'refused after the fuzz cases');
      }
    }
  }
  summary('envelope', plan.seeds.length, cases, started);
  console.log(`[fuzz envelope] ${accepted} mutated envelopes were accepted and checked`);
});

test.run();
