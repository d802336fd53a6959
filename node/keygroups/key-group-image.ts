/**
 * The one binary image of a key group: what a shard holds for it, as it travels in a hand-over (a node
 * joins or leaves) and as a checkpoint stores it. Made and read by KeyGroupState (key-group-state.ts):
 * hand-over release, snapshot, adopt and restore all go through it.
 *
 * msgpack (`useRecords: false`):
 *   { v: 1, keyGroup, frozenAt,                    frozenAt: epoch ms when the image was taken
 *     state:  [[typename, [[id, record], ...]], ...]   records as the state store keeps them
 *     timers: [[dueMs, tokenKey | null, targetTypename, targetId, callerTypename, callerId, valueTypename, valueBytes], ...]
 *     queued: [invokeEnvelope, ...],              in the order they were to be delivered
 *     marks:  [[session, highest, window], ...]    producer marks (client events applied once)
 *     egress: [[seq, egressEnvelope], ...],        records not yet released (checkpoints on)
 *     egressSeq }                                  the key group's next egress record seq
 * A hand-over envelope (kind 3, see lib/envelope.ts) carries one image after its 8-byte header; a
 * checkpoint's segment object holds the images of a shard's key groups back to back
 * (node/checkpoint/checkpoint-format.ts). Records hold JS primitives and byte arrays only, and deadlines
 * in epoch ms, so they mean the same on any node.
 */
import { Packr } from 'msgpackr';
import { ENVELOPE_HEADER_BYTES, EnvelopeDecoder, EnvelopeKind, writeKeyGroup } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';
import { primitiveType } from '../../lib/types.js';
import { PRODUCER_WINDOW } from './producer-marks.js';

export const IMAGE_VERSION = 1;

/** A delayed message: [dueMs, tokenKey, targetTypename, targetId, callerTypename, callerId, valueTypename, valueBytes]. */
export type ImageTimer = [number, string | null, string, string, string, string, string, Uint8Array];

export interface KeyGroupImage {
  v: number;
  keyGroup: number;
  frozenAt: number;
  state: [string, [string, unknown][]][];
  timers: ImageTimer[];
  queued: Uint8Array[];
  /** Producer marks: per client session, the highest sequence applied and the window below it (64 bytes). */
  marks?: [string, number, Uint8Array][];
  /** Egress records waiting for a checkpoint to commit: [seq, egress envelope]. */
  egress?: [number, Uint8Array][];
  /** The seq the key group's next egress record gets. */
  egressSeq?: number;
}

/** An image of a key group that holds nothing (a checkpoint stores no object for it). */
export function isEmptyImage(image: KeyGroupImage): boolean {
  return (
    image.state.length === 0 &&
    image.timers.length === 0 &&
    image.queued.length === 0 &&
    (image.marks?.length ?? 0) === 0 &&
    (image.egress?.length ?? 0) === 0 &&
    (image.egressSeq ?? 0) === 0
  );
}

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeImage(image: KeyGroupImage): Uint8Array {
  // A copy: msgpackr may hand out a view of a buffer it reuses.
  return Uint8Array.prototype.slice.call(packr.pack(image));
}

/** Reads an image and checks every part (it comes from a peer or the store); throws SC_ERR_MALFORMED_IMAGE for bytes that are not one. */
export function decodeImage(bytes: Uint8Array): KeyGroupImage {
  let image: KeyGroupImage;
  try {
    image = packr.unpack(bytes) as KeyGroupImage;
  } catch (error) {
    throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `not a key-group image: ${(error as Error).message}`);
  }
  if (image?.v !== IMAGE_VERSION || !Number.isInteger(image.keyGroup) || !Array.isArray(image.state) || !Array.isArray(image.timers) || !Array.isArray(image.queued)) {
    throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `not a version ${IMAGE_VERSION} key-group image`);
  }
  const broken = brokenPart(image);
  if (broken !== null) throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `a version ${IMAGE_VERSION} key-group image whose ${broken}`);
  return image;
}

const isText = (value: unknown): value is string => typeof value === 'string';
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
/** State records hold JS primitives, byte arrays and arrays of them (lib/state-layout.ts, node/remote/remote-state.ts). */
const isRecord = (value: unknown): boolean =>
  value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || value instanceof Uint8Array || (Array.isArray(value) && value.every(isRecord));
const envelopes = new EnvelopeDecoder();
const decodes = (read: () => unknown): boolean => {
  try {
    read();
    return true;
  } catch {
    return false;
  }
};

/** What in a decoded image breaks its documented shape (above), or null: an image is refused before any of it applies. */
function brokenPart(image: KeyGroupImage): string | null {
  if (typeof image.frozenAt !== 'number' || !Number.isFinite(image.frozenAt)) return 'frozenAt is not a time';
  for (const entry of image.state) {
    if (!Array.isArray(entry) || entry.length !== 2 || !isText(entry[0]) || !Array.isArray(entry[1])) return 'state holds an entry that is not [typename, records]';
    for (const record of entry[1]) if (!Array.isArray(record) || record.length !== 2 || !isText(record[0]) || !isRecord(record[1])) return `state of ${entry[0].slice(0, 100)} holds a record that is not [id, plain data]`;
  }
  for (const timer of image.timers) {
    if (!Array.isArray(timer) || timer.length !== 8) return 'timers hold an entry that is not a delayed message';
    const [dueMs, key, targetTypename, targetId, callerTypename, callerId, valueTypename, value] = timer;
    if (typeof dueMs !== 'number' || !Number.isFinite(dueMs)) return 'timers hold a delayed message without a due time';
    if (!(key === null || isText(key)) || ![targetTypename, targetId, callerTypename, callerId, valueTypename].every(isText) || !(value instanceof Uint8Array)) return 'timers hold a delayed message of the wrong shape';
    const primitive = primitiveType(valueTypename);
    if (primitive !== undefined && !decodes(() => primitive.deserialize(value))) return `timers hold a delayed ${valueTypename} value that does not decode`;
  }
  for (const envelope of image.queued) if (!(envelope instanceof Uint8Array) || !decodes(() => envelopes.decodeInvoke(envelope, 0, envelope.length))) return 'queued holds a message that is not an invoke envelope';
  if (image.marks !== undefined) {
    if (!Array.isArray(image.marks)) return 'marks is not a list';
    for (const mark of image.marks) if (!Array.isArray(mark) || mark.length !== 3 || !isText(mark[0]) || !isCount(mark[1]) || !(mark[2] instanceof Uint8Array) || mark[2].length !== PRODUCER_WINDOW / 8) return 'marks hold a producer mark of the wrong shape';
  }
  if (image.egress !== undefined) {
    if (!Array.isArray(image.egress)) return 'egress is not a list';
    for (const entry of image.egress) {
      if (!Array.isArray(entry) || entry.length !== 2 || !isCount(entry[0]) || !(entry[1] instanceof Uint8Array)) return 'egress holds an entry that is not [seq, record]';
      const bytes = entry[1];
      let seq: number | null = null;
      if (!decodes(() => (seq = envelopes.decodeEgress(bytes, 0, bytes.length).recordSeq)) || seq !== entry[0]) return 'egress holds a record that is not an egress envelope of its seq';
    }
  }
  if (image.egressSeq !== undefined && !isCount(image.egressSeq)) return 'egressSeq is not a count';
  return null;
}

/** Wraps an image in a hand-over envelope (8-byte header: kind 3 and the key group). */
export function handoverEnvelope(keyGroup: number, image: Uint8Array): Uint8Array {
  const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + image.length);
  envelope[0] = EnvelopeKind.Handover;
  writeKeyGroup(envelope, 0, keyGroup);
  envelope.set(image, ENVELOPE_HEADER_BYTES);
  return envelope;
}

/** The image inside a hand-over envelope (a copy). */
export function handoverImage(envelope: Uint8Array, offset: number, length: number): Uint8Array {
  return envelope.slice(offset + ENVELOPE_HEADER_BYTES, offset + length);
}
