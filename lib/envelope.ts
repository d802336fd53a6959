/**
 * The envelope: how one message is laid out in bytes, in shard rings, peer frames and client frames.
 *
 *   offset  size  field
 *   0       1     kind            1 = invoke (a message to a function), 2 = egress record,
 *                                 3 = hand-over (a key group's state, timers and queued messages,
 *                                 moving between nodes; body: msgpack, see node/keygroups/key-group-image.ts),
 *                                 4 = checkpoint barrier (header only: the checkpoint number sits
 *                                 where the key group would; see docs/checkpoints.md),
 *                                 5 = checkpoint control between nodes (msgpack body),
 *                                 6 = route fence between nodes (see cluster/fence-envelope.ts)
 *   1       1     flags           invoke: bit 0 = has caller, bit 1 = has a producer mark;
 *                                 egress: bit 0 = has a record sequence number
 *   2       2     channel         reserved for the source channel (0)
 *   4       4     key group       u32 little-endian: keyGroupOf(target id), or the source's for egress
 *   8       ...   body            strings are UTF-8 with a length prefix (u8 for type and egress names,
 *                                 u16 for ids); the value is its type name (u8 length) and its bytes
 *                                 (u32 length) in that type's encoding
 *
 *   invoke body: target typename, target id, [caller typename, caller id], [producer session (u8
 *                length), producer seq (f64)], value typename, value bytes. A client event carries a
 *                producer mark: its client session and a sequence number counted per (session, key
 *                group), so the key group applies a re-sent event once, whichever node it came through.
 *   egress body: [record seq (f64), counted per source key group: with the key group, the record's
 *                stable id], egress name, source typename, source id, value typename, value bytes
 *
 * A router reads the 8-byte header and moves the bytes; only the destination decodes the body.
 * All multi-byte integers are little-endian.
 */
import { ProtocolError } from './errors.js';
import { murmur3Bytes } from './key-group.js';
import { Message } from './message.js';
import { TypedValue } from './typed-value.js';
import { primitiveType } from './types.js';
import { InternedStrings, readUtf8, writeUtf8 } from './utf8.js';

export const ENVELOPE_HEADER_BYTES = 8;

export const EnvelopeKind = {
  Invoke: 1,
  Egress: 2,
  Handover: 3,
  Barrier: 4,
  /** Checkpoint control between nodes (start, ack, outcome): msgpack body after the header. */
  CheckpointControl: 5,
  /** A route fence between nodes: a marker behind a key group's messages, or its owner's answer (cluster/fence-envelope.ts). */
  Fence: 6,
} as const;

/** Bytes of a barrier envelope (the header alone). */
export const BARRIER_BYTES = 8;

/** Writes barrier `checkpoint` (an integer from 1 to 2^32 - 1) at `offset`; returns the end offset. */
export function writeBarrier(target: Uint8Array, offset: number, checkpoint: number): number {
  writeHeader(target, offset, EnvelopeKind.Barrier, 0, checkpoint);
  return offset + BARRIER_BYTES;
}

/** The checkpoint number of a barrier envelope. */
export function readBarrier(source: Uint8Array, offset: number): number {
  return readKeyGroup(source, offset);
}

const FLAG_HAS_RECORD_SEQ = 1;

const FLAG_HAS_CALLER = 1;
/** Float64 through shared scratch (no allocation per event); the wire is little-endian. */
const float64Scratch = new Float64Array(1);
const float64Bytes = new Uint8Array(float64Scratch.buffer);
const BIG_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 0;
let cachedSession = '';
let cachedSessionBytes = new Uint8Array(0);
const FLAG_HAS_PRODUCER = 2;

/** A client event's producer mark: the client session and its sequence number within the key group. */
export interface ProducerMark {
  readonly session: string;
  readonly seq: number;
}

function malformed(why: string): ProtocolError {
  return new ProtocolError('SC_ERR_MALFORMED_FRAME', `malformed envelope: ${why}`);
}

export function readKind(source: Uint8Array, offset: number): number {
  return source[offset]!;
}

export function readKeyGroup(source: Uint8Array, offset: number): number {
  return (source[offset + 4]! | (source[offset + 5]! << 8) | (source[offset + 6]! << 16) | (source[offset + 7]! << 24)) >>> 0;
}

/**
 * The key group an invoke envelope's target id hashes to (key-group.ts), read from the bytes without
 * decoding the body: a receiver checks the header against it. Throws SC_ERR_MALFORMED_FRAME when the
 * envelope is too short to hold its target.
 */
export function readTargetKeyGroup(source: Uint8Array, offset: number, length: number, keyGroups: number): number {
  const end = offset + length;
  const idLengthAt = offset + ENVELOPE_HEADER_BYTES + 1 + (source[offset + ENVELOPE_HEADER_BYTES] ?? 0);
  if (idLengthAt + 2 > end) throw malformed('an invoke cut short before its target id');
  const idLength = source[idLengthAt]! | (source[idLengthAt + 1]! << 8);
  if (idLengthAt + 2 + idLength > end) throw malformed('an invoke cut short inside its target id');
  return murmur3Bytes(source, idLengthAt + 2, idLength) % keyGroups;
}

export function writeKeyGroup(target: Uint8Array, offset: number, keyGroup: number): void {
  target[offset + 4] = keyGroup & 0xff;
  target[offset + 5] = (keyGroup >>> 8) & 0xff;
  target[offset + 6] = (keyGroup >>> 16) & 0xff;
  target[offset + 7] = (keyGroup >>> 24) & 0xff;
}

function writeHeader(target: Uint8Array, offset: number, kind: number, flags: number, keyGroup: number): void {
  target[offset] = kind;
  target[offset + 1] = flags;
  target[offset + 2] = 0;
  target[offset + 3] = 0;
  writeKeyGroup(target, offset, keyGroup);
}

/** Writes a string with a one-byte length prefix (names of at most 255 bytes); returns the end offset. */
function writeShortString(target: Uint8Array, offset: number, text: string): number {
  const written = writeUtf8(target, offset + 1, text);
  if (written > 0xff) throw malformed(`name of ${written} bytes is longer than 255 bytes`);
  target[offset] = written;
  return offset + 1 + written;
}

/** Writes a string with a two-byte length prefix (ids); returns the end offset. */
function writeMediumString(target: Uint8Array, offset: number, text: string): number {
  const written = writeUtf8(target, offset + 2, text);
  if (written > 0xffff) throw malformed(`id of ${written} bytes is longer than 65535 bytes`);
  target[offset] = written & 0xff;
  target[offset + 1] = written >>> 8;
  return offset + 2 + written;
}

function writeValue(target: Uint8Array, offset: number, value: TypedValue): number {
  let cursor = writeShortString(target, offset, value.typename);
  const start = cursor + 4;
  let end: number;
  if (value.bytes !== null) {
    target.set(value.bytes, start);
    end = start + value.bytes.length;
  } else {
    end = primitiveType(value.typename)!.writeTo(target, start, value.value as never);
  }
  const length = end - start;
  target[cursor] = length & 0xff;
  target[cursor + 1] = (length >>> 8) & 0xff;
  target[cursor + 2] = (length >>> 16) & 0xff;
  target[cursor + 3] = (length >>> 24) & 0xff;
  return end;
}

/** Upper bound of the bytes `writeInvoke` needs (3 bytes per UTF-16 unit). */
export function invokeLengthMax(
  targetTypename: string,
  targetId: string,
  callerTypename: string | null,
  callerId: string | null,
  value: TypedValue,
  producer: ProducerMark | null = null,
): number {
  let length = ENVELOPE_HEADER_BYTES + 1 + 2 + 1 + 4 + 3 * (targetTypename.length + targetId.length + value.typename.length);
  if (callerTypename !== null) length += 1 + 2 + 3 * (callerTypename.length + callerId!.length);
  if (producer !== null) length += 1 + 3 * producer.session.length + 8;
  return length + value.encodedLengthMax;
}

/** Writes an invoke envelope at `offset`; returns the end offset. The caller ensures `invokeLengthMax` bytes of room. */
export function writeInvoke(
  target: Uint8Array,
  offset: number,
  keyGroup: number,
  targetTypename: string,
  targetId: string,
  callerTypename: string | null,
  callerId: string | null,
  value: TypedValue,
  producer: ProducerMark | null = null,
): number {
  const flags = (callerTypename === null ? 0 : FLAG_HAS_CALLER) | (producer === null ? 0 : FLAG_HAS_PRODUCER);
  writeHeader(target, offset, EnvelopeKind.Invoke, flags, keyGroup);
  let cursor = writeShortString(target, offset + ENVELOPE_HEADER_BYTES, targetTypename);
  cursor = writeMediumString(target, cursor, targetId);
  if (callerTypename !== null) {
    cursor = writeShortString(target, cursor, callerTypename);
    cursor = writeMediumString(target, cursor, callerId!);
  }
  if (producer !== null) {
    // A client writes its one session into every event: encode it once.
    if (producer.session !== cachedSession) {
      cachedSession = producer.session;
      cachedSessionBytes = new TextEncoder().encode(producer.session);
      if (cachedSessionBytes.length > 0xff) throw malformed('producer session longer than 255 bytes');
    }
    target[cursor] = cachedSessionBytes.length;
    for (let index = 0; index < cachedSessionBytes.length; index++) target[cursor + 1 + index] = cachedSessionBytes[index]!;
    cursor += 1 + cachedSessionBytes.length;
    float64Scratch[0] = producer.seq;
    if (BIG_ENDIAN_HOST) float64Bytes.reverse();
    for (let index = 0; index < 8; index++) target[cursor + index] = float64Bytes[index]!;
    cursor += 8;
  }
  return writeValue(target, cursor, value);
}

export function egressLengthMax(egress: string, sourceTypename: string, sourceId: string, value: TypedValue): number {
  return (
    ENVELOPE_HEADER_BYTES + 8 + 1 + 1 + 2 + 1 + 4 +
    3 * (egress.length + sourceTypename.length + sourceId.length + value.typename.length) +
    value.encodedLengthMax
  );
}

/**
 * The record seq of an egress envelope (its stable id with the key group), read from the bytes without
 * decoding the body; null when it has none (checkpoints off). The envelope must be a whole, checked one.
 */
export function readEgressRecordSeq(source: Uint8Array, offset: number): number | null {
  if ((source[offset + 1]! & FLAG_HAS_RECORD_SEQ) === 0) return null;
  for (let index = 0; index < 8; index++) float64Bytes[index] = source[offset + ENVELOPE_HEADER_BYTES + index]!;
  if (BIG_ENDIAN_HOST) float64Bytes.reverse();
  return float64Scratch[0]!;
}

export function writeEgress(
  target: Uint8Array,
  offset: number,
  keyGroup: number,
  egress: string,
  sourceTypename: string,
  sourceId: string,
  value: TypedValue,
  recordSeq: number | null = null,
): number {
  writeHeader(target, offset, EnvelopeKind.Egress, recordSeq === null ? 0 : FLAG_HAS_RECORD_SEQ, keyGroup);
  let cursor = offset + ENVELOPE_HEADER_BYTES;
  if (recordSeq !== null) {
    float64Scratch[0] = recordSeq;
    if (BIG_ENDIAN_HOST) float64Bytes.reverse();
    for (let index = 0; index < 8; index++) target[cursor + index] = float64Bytes[index]!;
    cursor += 8;
  }
  cursor = writeShortString(target, cursor, egress);
  cursor = writeShortString(target, cursor, sourceTypename);
  cursor = writeMediumString(target, cursor, sourceId);
  return writeValue(target, cursor, value);
}

/**
 * Sequential reader with bounds checks: envelopes from clients and peers are untrusted, and a truncated
 * or inconsistent one must fail with a ProtocolError, never read past its end.
 */
class EnvelopeReader {
  offset = 0;
  end = 0;

  constructor(
    private source: Uint8Array,
    private readonly names: InternedStrings,
  ) {}

  reset(source: Uint8Array, offset: number, end: number): void {
    this.source = source;
    this.offset = offset;
    this.end = end;
  }

  name(what: string): string {
    if (this.offset >= this.end) throw malformed(`truncated before ${what}`);
    const length = this.source[this.offset]!;
    const start = this.offset + 1;
    if (start + length > this.end) throw malformed(`${what} runs past the end`);
    this.offset = start + length;
    try {
      return this.names.read(this.source, start, length);
    } catch {
      throw malformed(`${what} is not valid UTF-8`);
    }
  }

  id(what: string): string {
    if (this.offset + 2 > this.end) throw malformed(`truncated before ${what}`);
    const length = this.source[this.offset]! | (this.source[this.offset + 1]! << 8);
    const start = this.offset + 2;
    if (start + length > this.end) throw malformed(`${what} runs past the end`);
    this.offset = start + length;
    try {
      return readUtf8(this.source, start, length);
    } catch {
      throw malformed(`${what} is not valid UTF-8`);
    }
  }

  float64(what: string): number {
    if (this.offset + 8 > this.end) throw malformed(`truncated before ${what}`);
    // Through a scratch array: a DataView per read would allocate on every event.
    for (let index = 0; index < 8; index++) float64Bytes[index] = this.source[this.offset + index]!;
    if (BIG_ENDIAN_HOST) float64Bytes.reverse();
    this.offset += 8;
    return float64Scratch[0]!;
  }

  valueLength(): number {
    const offset = this.offset;
    if (offset + 4 > this.end) throw malformed('truncated before value length');
    const source = this.source;
    const length = (source[offset]! | (source[offset + 1]! << 8) | (source[offset + 2]! << 16) | (source[offset + 3]! << 24)) >>> 0;
    this.offset = offset + 4;
    if (this.offset + length !== this.end) throw malformed(`value length ${length} does not match the envelope's end`);
    return length;
  }
}

/** Decodes envelopes; one per thread (it interns type names and reuses its reader). */
export class EnvelopeDecoder {
  private readonly names = new InternedStrings();
  private readonly reader = new EnvelopeReader(new Uint8Array(0), this.names);
  /** Byte length of the value of the envelope decoded last. */
  lastValueLength = 0;

  decodeInvoke(source: Uint8Array, offset: number, length: number): Message {
    if (length < ENVELOPE_HEADER_BYTES) throw malformed(`${length} bytes is shorter than the header`);
    if (source[offset] !== EnvelopeKind.Invoke) throw malformed(`kind ${source[offset]} is not invoke`);
    const flags = source[offset + 1]!;
    const keyGroup = readKeyGroup(source, offset);
    const reader = this.reader;
    reader.reset(source, offset + ENVELOPE_HEADER_BYTES, offset + length);
    const targetTypename = reader.name('target typename');
    const targetId = reader.id('target id');
    let callerTypename: string | null = null;
    let callerId: string | null = null;
    if ((flags & FLAG_HAS_CALLER) !== 0) {
      callerTypename = reader.name('caller typename');
      callerId = reader.id('caller id');
    }
    let producer: ProducerMark | null = null;
    if ((flags & FLAG_HAS_PRODUCER) !== 0) {
      const session = reader.name('producer session');
      const seq = reader.float64('producer seq');
      if (!Number.isSafeInteger(seq) || seq < 1) throw malformed(`producer seq ${seq} is not a positive integer`);
      producer = { session, seq };
    }
    const valueTypename = reader.name('value typename');
    const valueLength = reader.valueLength();
    this.lastValueLength = valueLength;
    const start = reader.offset;
    const primitive = primitiveType(valueTypename);
    if (primitive !== undefined) {
      const decoded = primitive.readFrom(source, start, valueLength);
      return new Message(keyGroup, targetTypename, targetId, callerTypename, callerId, valueTypename, decoded, null, producer);
    }
    const bytes = source.slice(start, start + valueLength);
    return new Message(keyGroup, targetTypename, targetId, callerTypename, callerId, valueTypename, undefined, bytes, producer);
  }

  decodeEgress(source: Uint8Array, offset: number, length: number): EgressEnvelope {
    if (length < ENVELOPE_HEADER_BYTES) throw malformed(`${length} bytes is shorter than the header`);
    if (source[offset] !== EnvelopeKind.Egress) throw malformed(`kind ${source[offset]} is not egress`);
    const reader = this.reader;
    reader.reset(source, offset + ENVELOPE_HEADER_BYTES, offset + length);
    let recordSeq: number | null = null;
    if ((source[offset + 1]! & FLAG_HAS_RECORD_SEQ) !== 0) {
      recordSeq = reader.float64('record seq');
      if (!Number.isSafeInteger(recordSeq) || recordSeq < 0) throw malformed(`record seq ${recordSeq} is not an integer >= 0`);
    }
    const egress = reader.name('egress name');
    const sourceTypename = reader.name('source typename');
    const sourceId = reader.id('source id');
    const valueTypename = reader.name('value typename');
    const valueLength = reader.valueLength();
    const start = reader.offset;
    const primitive = primitiveType(valueTypename);
    return {
      keyGroup: readKeyGroup(source, offset),
      recordSeq,
      egress,
      sourceTypename,
      sourceId,
      valueTypename,
      decoded: primitive === undefined ? undefined : primitive.readFrom(source, start, valueLength),
      bytes: primitive === undefined ? source.slice(start, start + valueLength) : null,
    };
  }

  /** Only the egress name of an egress envelope (the main thread routes records by it, nothing more). */
  readEgressName(source: Uint8Array, offset: number, length: number): string {
    if (length < ENVELOPE_HEADER_BYTES || source[offset] !== EnvelopeKind.Egress) throw malformed('not an egress envelope');
    const seqBytes = (source[offset + 1]! & FLAG_HAS_RECORD_SEQ) !== 0 ? 8 : 0;
    this.reader.reset(source, offset + ENVELOPE_HEADER_BYTES + seqBytes, offset + length);
    return this.reader.name('egress name');
  }
}

/** An egress record as it leaves a shard. */
export interface EgressEnvelope {
  keyGroup: number;
  /**
   * Counted per source key group when the node checkpoints (null otherwise): (keyGroup, recordSeq) is
   * the record's stable id, the same when a record is released again after a recovery.
   */
  recordSeq: number | null;
  egress: string;
  sourceTypename: string;
  sourceId: string;
  valueTypename: string;
  /** The decoded value for primitive types, else undefined. */
  decoded: unknown;
  /** The value in its type's encoding, for non-primitive types; null for primitives. */
  bytes: Uint8Array | null;
}
