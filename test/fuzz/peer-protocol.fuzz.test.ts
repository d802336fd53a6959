// Seeded fuzzing of the peer protocol's decoders, called directly: ACK (cluster/peer-protocol.ts),
// HELLO (decodeControl + validateHello), ENVELOPES frames as a peer link reads them (envelopesSeq,
// envelopesEpoch, readEnvelopes), checkpoint control envelopes (cluster/checkpoint-control.ts), and gossip
// bodies as the membership core takes them (cluster/membership.ts). Each call returns something that
// keeps the protocol's rules, or throws a PeerProtocolError / SC_ERR_MALFORMED_FRAME; membership never
// throws (a bad message is a 'malformed' action). FUZZ_SEED=<n> replays one seed (see fuzz-harness.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeControlEnvelope, decodeControlEnvelope, mayBeRollback } from '../../cluster/checkpoint-control.js';
import { Membership, type WireMessage } from '../../cluster/membership.js';
import {
  ENVELOPES_HEADER_BYTES,
  PEER_PROTOCOL_VERSION,
  PeerFrame,
  PeerProtocolError,
  decodeAck,
  decodeControl,
  encodeAck,
  encodeControl,
  envelopesEpoch,
  envelopesSeq,
  readEnvelopes,
  validateHello,
  writeEnvelopesHeader,
} from '../../cluster/peer-protocol.js';
import { ENVELOPE_HEADER_BYTES } from '../../lib/envelope.js';
import type { CheckpointControl } from '../../node/main/cluster-port.js';
import {
  KnownGaps,
  Random,
  attempt,
  concat,
  describeError,
  expectContract,
  fail,
  injectMsgpackHugeLength,
  isContracted,
  mutateBytes,
  mutateValue,
  planSeeds,
  summary,
  type CaseLabel,
  type ErrorContract,
  type LengthField,
} from './fuzz-harness.js';
import { randomEgress, randomInvoke } from './fuzz-envelopes.js';
import { isCheckpointRef, termId } from '../../node/checkpoint/terms.js';

const plan = planSeeds('peer-protocol', import.meta.url, 30, 6);
const CASES_PER_SEED = 700;
const PEER_CONTRACT: ErrorContract = { codes: ['SC_ERR_MALFORMED_FRAME'], classes: [PeerProtocolError] };
const CONTROL_CONTRACT: ErrorContract = { codes: ['SC_ERR_MALFORMED_FRAME'] };

const gaps = new KnownGaps('peer-protocol', []);

// ---- ACK ----

function fuzzAck(random: Random, label: (what: string, input: Uint8Array) => CaseLabel): void {
  const mutated = mutateBytes(random, encodeAck(random.pick([0, 1, random.int(2 ** 40)])), [{ offset: 1, kind: 'f64' }]);
  const caseLabel = label(`ACK ${mutated.kind}`, mutated.bytes);
  const seq = expectContract(caseLabel, attempt(() => decodeAck(mutated.bytes)), PEER_CONTRACT);
  if (seq !== undefined && (!Number.isSafeInteger(seq) || seq < 0 || mutated.bytes.length !== 9)) fail(caseLabel, `accepted ACK ${seq} from ${mutated.bytes.length} bytes`);
}

// ---- HELLO ----

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

function validHello(random: Random): Record<string, unknown> {
  return {
    version: PEER_PROTOCOL_VERSION,
    nodeId: `node-${random.text(6)}`,
    instance: `i-${random.int(1e6)}`,
    address: random.pick(['127.0.0.1:7000', 'host-a.example:65535', '[::1]:80']),
    keyGroups: random.pick([8, 1024]),
    valueBytesMax: 1 << 20,
    epoch: random.int(5),
  };
}

function fuzzHello(random: Random, label: (what: string, input: Uint8Array) => CaseLabel): void {
  const body = validHello(random);
  const roll = random.int(3);
  let what: string;
  let frame: Uint8Array;
  if (roll === 0) {
    const mutated = mutateValue(random, body);
    ({ kind: what } = mutated);
    frame = encodeControl(PeerFrame.Hello, mutated.value);
  } else if (roll === 1) {
    const mutated = mutateBytes(random, encodeControl(PeerFrame.Hello, body));
    ({ kind: what, bytes: frame } = mutated);
  } else {
    what = 'msgpack-huge-length';
    frame = concat(Uint8Array.of(PeerFrame.Hello), injectMsgpackHugeLength(random, encodeControl(PeerFrame.Hello, body).subarray(1)));
  }
  // The peer network refuses an empty message before it decodes anything (peer-network.ts).
  if (frame.length === 0) return;
  const caseLabel = label(`HELLO ${what}`, frame);
  const hello = expectContract(caseLabel, attempt(() => validateHello(decodeControl(frame))), PEER_CONTRACT);
  if (hello === undefined) return;
  const problems = [
    typeof hello.version === 'number',
    typeof hello.nodeId === 'string' && hello.nodeId.length > 0 && hello.nodeId.length <= 256,
    typeof hello.instance === 'string',
    typeof hello.address === 'string' && HOST_PORT.test(hello.address) && Number(hello.address.slice(hello.address.lastIndexOf(':') + 1)) <= 65535,
    typeof hello.keyGroups === 'number',
    typeof hello.valueBytesMax === 'number',
  ];
  if (problems.includes(false)) fail(caseLabel, `accepted HELLO ${JSON.stringify(hello)}`);
}

// ---- ENVELOPES ----

/** A valid ENVELOPES frame of 0-5 envelopes (invoke, egress and opaque ones), with its length fields. */
function validEnvelopes(random: Random): { bytes: Uint8Array; fields: LengthField[]; envelopes: Uint8Array[] } {
  const envelopes = Array.from({ length: random.int(6) }, () => random.pick([() => randomInvoke(random).bytes, () => randomEgress(random).bytes, () => encodeControlEnvelope({ type: 'start', checkpoint: 1 }), () => random.bytes(random.between(8, 30))])());
  const frame = Buffer.alloc(ENVELOPES_HEADER_BYTES + envelopes.reduce((sum, envelope) => sum + 4 + envelope.length, 0));
  writeEnvelopesHeader(frame, random.between(1, 2 ** 40), envelopes.length, random.int(10));
  const fields: LengthField[] = [{ offset: 0, kind: 'u8' }, { offset: 1, kind: 'f64' }, { offset: 9, kind: 'u32' }, { offset: 13, kind: 'u32' }];
  let cursor = ENVELOPES_HEADER_BYTES;
  for (const envelope of envelopes) {
    fields.push({ offset: cursor, kind: 'u32' });
    frame.writeUInt32LE(envelope.length, cursor);
    frame.set(envelope, cursor + 4);
    cursor += 4 + envelope.length;
  }
  return { bytes: new Uint8Array(frame.buffer, frame.byteOffset, frame.length), fields, envelopes };
}

/**
 * Reads a frame as PeerLink.applyEnvelopes does (seq, epoch, then the envelopes); the envelopes visited
 * lie inside the frame, back to back, at least a header long, and only after the whole frame checked out.
 */
function readAsLink(label: CaseLabel, frame: Uint8Array): Uint8Array[] | undefined {
  const visits: [number, number][] = [];
  const outcome = attempt(() => {
    const seq = envelopesSeq(frame);
    const epoch = envelopesEpoch(frame);
    readEnvelopes(frame, (bytes, offset, length) => {
      if (bytes !== frame) fail(label, 'visited bytes other than the frame');
      visits.push([offset, length]);
    });
    return { seq, epoch };
  });
  const result = expectContract(label, outcome, PEER_CONTRACT);
  if (result === undefined) {
    if (visits.length > 0) fail(label, `visited ${visits.length} envelope(s) of a frame it then refused`);
    return undefined;
  }
  if (!Number.isSafeInteger(result.seq) || result.seq < 1) fail(label, `accepted seq ${result.seq}`);
  const count = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(9, true);
  if (visits.length !== count) fail(label, `visited ${visits.length} envelopes of ${count}`);
  let cursor = ENVELOPES_HEADER_BYTES;
  for (const [offset, length] of visits) {
    if (offset !== cursor + 4 || length < ENVELOPE_HEADER_BYTES || offset + length > frame.length) fail(label, `visited ${offset}+${length}, expected it at ${cursor + 4}`);
    cursor = offset + length;
  }
  if (cursor !== frame.length) fail(label, `the envelopes end at ${cursor}, the frame at ${frame.length}`);
  return visits.map(([offset, length]) => frame.subarray(offset, offset + length));
}

function fuzzEnvelopes(random: Random, label: (what: string, input: Uint8Array) => CaseLabel): void {
  const valid = validEnvelopes(random);
  const mutated = mutateBytes(random, valid.bytes, valid.fields);
  readAsLink(label(`ENVELOPES ${mutated.kind}`, mutated.bytes), mutated.bytes);
  // The two readers peer-link calls after envelopesSeq, on their own (as takeUndelivered calls readEnvelopes).
  const alone = label(`ENVELOPES ${mutated.kind}, readEnvelopes and envelopesEpoch alone`, mutated.bytes);
  for (const call of [() => envelopesEpoch(mutated.bytes), () => readEnvelopes(mutated.bytes, () => undefined)]) {
    expectContract(alone, attempt(call), PEER_CONTRACT);
  }
}

// ---- checkpoint control envelopes ----

function validControl(random: Random): CheckpointControl {
  const checkpoint = random.between(1, 2 ** 32 - 1);
  const epoch = random.int(100);
  return random.pick<() => CheckpointControl>([
    () => ({ type: 'start', checkpoint }),
    () => ({ type: 'ack', checkpoint, objects: [[random.int(8), `checkpoints/${checkpoint}/seg-a.bin#0+10`], [random.int(8), null], [random.int(8), '']], channels: [`checkpoints/${checkpoint}/ch-a.bin`] }),
    () => ({ type: 'failed', checkpoint, reason: random.text() }),
    () => ({ type: 'outcome', checkpoint, committed: random.chance(0.5) }),
    () => ({ type: 'rollback', epoch, members: ['a', 'b'], restore: random.chance(0.2) ? { checkpoint: 0, term: '' } : { checkpoint: 1 + random.int(50), term: termId(1 + random.int(9), '0000000f') }, claimant: 'b' }),
    () => ({ type: 'restarted', epoch, node: 'b' }),
    () => ({ type: 'behind', epoch }),
  ])();
}

const isCount = (value: unknown, min: number) => Number.isSafeInteger(value) && (value as number) >= min;
const isTexts = (value: unknown) => Array.isArray(value) && value.every((item) => typeof item === 'string');

/** Why `message` is not a CheckpointControl as node/main/cluster-port.ts documents it, or null. */
export function controlProblem(message: unknown): string | null {
  if (typeof message !== 'object' || message === null) return 'not an object';
  const fields = message as Record<string, unknown>;
  const checkpoint = () => (isCount(fields.checkpoint, 1) && (fields.checkpoint as number) <= 0xffff_ffff ? null : `checkpoint ${String(fields.checkpoint)}`);
  const epoch = () => (isCount(fields.epoch, 0) ? null : `epoch ${String(fields.epoch)}`);
  switch (fields.type) {
    case 'start':
      return checkpoint();
    case 'ack': {
      const objects = fields.objects;
      const objectsOk = Array.isArray(objects) && objects.every((entry) => Array.isArray(entry) && entry.length === 2 && isCount(entry[0], 0) && (typeof entry[1] === 'string' || entry[1] === null));
      return checkpoint() ?? (objectsOk ? null : 'objects are not [key group, key | null] pairs') ?? (isTexts(fields.channels) ? null : 'channels are not strings');
    }
    case 'failed':
      return checkpoint() ?? (typeof fields.reason === 'string' ? null : 'reason is not a string');
    case 'outcome':
      return checkpoint() ?? (typeof fields.committed === 'boolean' ? null : 'committed is not a boolean');
    case 'rollback':
      return epoch() ?? (isTexts(fields.members) ? null : 'members are not strings') ?? (isCheckpointRef(fields.restore) ? null : 'restore is not a checkpoint reference');
    case 'restarted':
      return epoch() ?? (typeof fields.node === 'string' ? null : 'node is not a string');
    case 'behind':
      return epoch();
    default:
      return `unknown type ${JSON.stringify(fields.type)?.slice(0, 40)}`;
  }
}

function fuzzControl(random: Random, label: (what: string, input: Uint8Array) => CaseLabel, truncateTo?: number): void {
  let what: string;
  let envelope: Uint8Array;
  const valid = encodeControlEnvelope(validControl(random));
  if (truncateTo !== undefined) {
    what = `control truncated to ${truncateTo}`;
    envelope = valid.slice(0, truncateTo);
  } else {
    const roll = random.int(3);
    if (roll === 0) {
      const mutated = mutateValue(random, validControl(random));
      what = `control ${mutated.kind}`;
      envelope = encodeControlEnvelope(mutated.value as CheckpointControl);
    } else if (roll === 1) {
      const mutated = mutateBytes(random, valid);
      what = `control ${mutated.kind}`;
      envelope = mutated.bytes;
    } else {
      what = 'control msgpack-huge-length';
      envelope = concat(valid.subarray(0, ENVELOPE_HEADER_BYTES), injectMsgpackHugeLength(random, valid.subarray(ENVELOPE_HEADER_BYTES)));
    }
  }
  const caseLabel = label(what, envelope);
  // As cluster-node.ts calls it: the envelope inside its ENVELOPES frame, at an offset.
  const before = random.between(1, 20);
  const frame = concat(random.bytes(before), envelope, random.bytes(random.int(10)));
  const outcome = attempt(() => decodeControlEnvelope(frame, before, envelope.length));
  const maybe = attempt(() => mayBeRollback(frame, before, envelope.length));
  if (!maybe.ok) fail(caseLabel, `mayBeRollback threw ${describeError(maybe.error)}`);
  const message = expectContract(caseLabel, outcome, CONTROL_CONTRACT);
  if (message === undefined) return;
  if (message.type === 'rollback' && maybe.value !== true) fail(caseLabel, 'a rollback order that mayBeRollback does not see');
  const problem = controlProblem(message);
  if (problem !== null) fail(caseLabel, `accepted a malformed control message: ${problem}`);
  const alone = attempt(() => decodeControlEnvelope(envelope, 0, envelope.length));
  if (!alone.ok || JSON.stringify(alone.value) !== JSON.stringify(message)) fail(caseLabel, 'decodes differently at offset 0: it reads outside its envelope');
}

// ---- gossip ----

function validGossip(random: Random): WireMessage {
  const header = { from: random.pick(['b', 'c']), address: random.pick(['b:7000', 'c:7000']), incarnation: random.int(5) };
  const updates = () => Array.from({ length: random.int(3) }, () => ({ id: random.pick(['a', 'b', 'c', 'd']), address: 'x:1', incarnation: random.int(5), state: random.pick(['alive', 'suspect', 'dead', 'left'] as const), ...(random.chance(0.3) ? { from: 'c' } : {}) }));
  return random.pick<() => WireMessage>([
    () => ({ ...header, type: 'ping', seq: random.int(100), target: 'a', updates: updates() }),
    () => ({ ...header, type: 'ack', seq: random.int(100), updates: updates() }),
    () => ({ ...header, type: 'nack', seq: random.int(100), updates: updates() }),
    () => ({ ...header, type: 'ping-req', seq: random.int(100), target: 'c', targetAddress: 'c:7000', timeoutMs: 100, updates: updates() }),
    () => ({ ...header, type: 'join', protocolVersion: 1, keyGroups: random.pick([8, 16]), view: updates() }),
    () => ({ ...header, type: 'join-ack', view: updates() }),
    () => ({ ...header, type: 'join-refused', code: 'KEY_GROUPS_MISMATCH', reason: 'r' }),
    () => ({ ...header, type: 'leave', updates: updates() }),
  ])();
}

function fuzzGossip(random: Random, membership: Membership, nowMs: number, label: (what: string, input: Uint8Array) => CaseLabel): void {
  const roll = random.int(3);
  let frame: Uint8Array;
  let what: string;
  if (roll === 0) {
    const mutated = mutateValue(random, validGossip(random));
    what = `gossip ${mutated.kind}`;
    frame = encodeControl(PeerFrame.Gossip, mutated.value);
  } else if (roll === 1) {
    const mutated = mutateBytes(random, encodeControl(PeerFrame.Gossip, validGossip(random)));
    what = `gossip ${mutated.kind}`;
    frame = mutated.bytes;
  } else {
    what = 'gossip valid';
    frame = encodeControl(PeerFrame.Gossip, validGossip(random));
  }
  if (frame.length === 0) return;
  const caseLabel = label(what, frame);
  const decoded = expectContract(caseLabel, attempt(() => decodeControl(frame)), PEER_CONTRACT);
  if (decoded === undefined) return;
  // As cluster-node.ts hands gossip on: whatever decoded, to the membership core.
  const received = attempt(() => membership.receive(nowMs, random.pick(['b:7000', 'c:7000']), decoded as WireMessage));
  if (!received.ok) fail(caseLabel, `membership threw ${describeError(received.error)}`);
  const ticked = attempt(() => membership.tick(nowMs + 1));
  if (!ticked.ok) fail(caseLabel, `membership tick threw ${describeError(ticked.error)}`);
  for (const member of membership.members()) {
    if (typeof member.id !== 'string' || typeof member.address !== 'string' || !Number.isSafeInteger(member.incarnation) || !['alive', 'suspect', 'dead', 'left'].includes(member.state)) {
      fail(caseLabel, `the view holds ${JSON.stringify(member)}`);
    }
  }
}

// ---- the loop ----

test('peer ACK, HELLO, ENVELOPES, checkpoint control and gossip: mutated and random frames decode within the rules or throw a typed error', () => {
  const started = performance.now();
  let cases = 0;
  for (const seed of plan.seeds) {
    const random = new Random(seed);
    const label = (what: string, input: Uint8Array): CaseLabel => ({ plan, seed, index: cases++, what, input });
    // Every truncation of a control envelope and of an ENVELOPES frame.
    const control = encodeControlEnvelope(validControl(random));
    for (let length = 0; length < control.length; length++) fuzzControl(new Random(seed * 31 + length), label, length);
    const envelopes = validEnvelopes(random);
    assert.is(readAsLink(label('ENVELOPES valid', envelopes.bytes), envelopes.bytes)?.length, envelopes.envelopes.length);
    for (let length = 0; length < envelopes.bytes.length; length++) {
      const prefix = envelopes.bytes.slice(0, length);
      if (readAsLink(label(`ENVELOPES truncated to ${length}`, prefix), prefix) !== undefined && envelopes.envelopes.length > 0) {
        fail(label(`ENVELOPES truncated to ${length}`, prefix), 'a strict prefix of a frame with envelopes was accepted');
      }
    }
    const membership = new Membership({ selfId: 'a', selfAddress: 'a:7000', keyGroups: 8, random: () => random.float() });
    let nowMs = 1_000;
    membership.start(nowMs, []);
    for (let index = 0; index < CASES_PER_SEED; index++) {
      nowMs += random.int(50);
      random.pick([fuzzAck, fuzzHello, fuzzEnvelopes, fuzzControl, fuzzControl, (r: Random, l: typeof label) => fuzzGossip(r, membership, nowMs, l)])(random, label);
    }
    // Random bytes as each kind of frame.
    for (let index = 0; index < 50; index++) {
      const bytes = random.bytes(random.int(64));
      const caseLabel = label('random bytes', bytes);
      expectContract(caseLabel, attempt(() => decodeAck(bytes)), PEER_CONTRACT);
      if (bytes.length > 0) expectContract(caseLabel, attempt(() => validateHello(decodeControl(bytes))), PEER_CONTRACT);
      readAsLink(caseLabel, bytes);
    }
  }
  summary('peer-protocol', plan.seeds.length, cases, started);
  gaps.report();
});

// ---- defects this fuzz found, now fixed: their smallest inputs ----

// Once a bug (found by this fuzz, fixed): decodeControlEnvelope called msgpackr without a try: a body that is not
// msgpack (here: none at all, a bare 8-byte header) throws msgpackr's plain Error "Unexpected end of
// MessagePack data" instead of SC_ERR_MALFORMED_FRAME, which its comment promises. cluster-node.ts catches
// everything around it and logs the envelope as dropped, so the node survives; the contract does not hold.
test('decodeControlEnvelope: a body that is not msgpack is SC_ERR_MALFORMED_FRAME (msgpackr\'s own error once got through)', () => {
  const input = Uint8Array.of(5, 0, 0, 0, 0, 0, 0, 0);
  try {
    decodeControlEnvelope(input, 0, input.length);
    assert.unreachable('a header without a body was decoded');
  } catch (error) {
    assert.ok(isContracted(error, CONTROL_CONTRACT), describeError(error));
  }
});

// Once a bug (found by this fuzz, fixed): decodeControlEnvelope checked only that the checkpoint (or, for the
// recovery messages, the epoch) is a number, and a rollback's members and restore. It accepts an unknown
// type, a checkpoint of -1.5, NaN or 2^53, an ack whose objects are not [key group, key] pairs (the
// leader then runs `new Map(objects)`: a TypeError), a restarted message without a node, an outcome whose
// committed is not a boolean. The smallest: { checkpoint: 0 } (no type at all), 8 + 13 bytes.
test('decodeControlEnvelope refuses messages that are not a CheckpointControl (they were once accepted)', () => {
  const cases: unknown[] = [
    { checkpoint: 0 },
    { type: 'x', checkpoint: 0 },
    { type: 'start', checkpoint: -1.5 },
    { type: 'ack', checkpoint: 1, objects: 5, channels: [] },
    { type: 'restarted', epoch: 1 },
    { type: 'outcome', checkpoint: 1, committed: 'yes' },
  ];
  for (const message of cases) {
    const input = encodeControlEnvelope(message as CheckpointControl);
    const outcome = attempt(() => decodeControlEnvelope(input, 0, input.length));
    assert.ok(!outcome.ok && isContracted(outcome.error, CONTROL_CONTRACT), `${JSON.stringify(message)}: ${outcome.ok ? 'accepted' : describeError(outcome.error)}`);
  }
});

// Once a bug (found by this fuzz, fixed): envelopesEpoch and readEnvelopes read the header's u32 fields without
// checking the frame's length: on a frame shorter than 17 bytes they throw a RangeError (from Buffer /
// DataView), not a PeerProtocolError. PeerLink.applyEnvelopes calls envelopesSeq first, which checks the
// length, so no peer reaches this today; the functions' own contract ("checks an ENVELOPES frame's
// structure completely") does not hold. Smallest input: the one byte 0x04.
test('envelopesEpoch and readEnvelopes refuse a frame shorter than the ENVELOPES header (once a RangeError)', () => {
  const input = Uint8Array.of(PeerFrame.Envelopes);
  for (const call of [() => envelopesEpoch(input), () => readEnvelopes(input, () => undefined)]) {
    const outcome = attempt(call);
    assert.ok(!outcome.ok && isContracted(outcome.error, PEER_CONTRACT), outcome.ok ? 'accepted' : describeError(outcome.error));
  }
});

test.run();
