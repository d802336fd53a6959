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
import { ENVELOPE_HEADER_BYTES, EnvelopeKind, writeKeyGroup } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';

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

/** Reads an image; throws SC_ERR_MALFORMED_IMAGE for bytes that are not one. */
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
  return image;
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
