/**
 * Route fences on the peer links (route-fences.ts): a marker that follows a key group's messages to
 * its owner, and the owner's answer to the node that sent the marker.
 *
 *   offset  size  field
 *   0       1     kind       EnvelopeKind.Fence
 *   1       1     flags      bit 0: this is the answer (the marker reached the key group's owner)
 *   2       2     reserved   0
 *   4       4     key group  u32 little-endian
 *   8       4     fence id   u32 little-endian, counted by the node that opened the fence
 *   12      1     origin     length of the opening node's id, then its UTF-8 bytes
 */
import { ENVELOPE_HEADER_BYTES, EnvelopeKind, readKeyGroup, writeKeyGroup } from '../lib/envelope.js';
import { StatecraftError } from '../lib/errors.js';

const FLAG_ANSWER = 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export interface Fence {
  keyGroup: number;
  id: number;
  /** The node that opened the fence (the answer goes to it). */
  origin: string;
  /** True: the owner's answer; false: the marker on its way to the owner. */
  answer: boolean;
}

export function encodeFence(fence: Fence): Uint8Array {
  const origin = encoder.encode(fence.origin);
  if (origin.length > 255) throw new StatecraftError('SC_ERR_INVALID_OPTION', `node id ${JSON.stringify(fence.origin)} is longer than 255 bytes`);
  const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + 5 + origin.length);
  envelope[0] = EnvelopeKind.Fence;
  envelope[1] = fence.answer ? FLAG_ANSWER : 0;
  writeKeyGroup(envelope, 0, fence.keyGroup);
  new DataView(envelope.buffer).setUint32(ENVELOPE_HEADER_BYTES, fence.id, true);
  envelope[ENVELOPE_HEADER_BYTES + 4] = origin.length;
  envelope.set(origin, ENVELOPE_HEADER_BYTES + 5);
  return envelope;
}

/** Reads a fence envelope; a peer's bytes are checked before use. */
export function decodeFence(bytes: Uint8Array, offset: number, length: number): Fence {
  const originLength = bytes[offset + ENVELOPE_HEADER_BYTES + 4];
  if (bytes[offset] !== EnvelopeKind.Fence || length < ENVELOPE_HEADER_BYTES + 5 || originLength === undefined || length !== ENVELOPE_HEADER_BYTES + 5 + originLength) {
    throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `a route fence envelope of ${length} bytes that does not match its layout`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, length);
  let origin: string;
  try {
    origin = decoder.decode(bytes.subarray(offset + ENVELOPE_HEADER_BYTES + 5, offset + length));
  } catch {
    throw new StatecraftError('SC_ERR_MALFORMED_FRAME', 'a route fence whose origin is not UTF-8');
  }
  return { keyGroup: readKeyGroup(bytes, offset), id: view.getUint32(ENVELOPE_HEADER_BYTES, true), origin, answer: (bytes[offset + 1]! & FLAG_ANSWER) !== 0 };
}
