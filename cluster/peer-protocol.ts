/**
 * The peer protocol: binary WebSocket messages between two nodes, on the path `/peer` of each node's
 * port. The first byte is the frame type; control frames carry a msgpack body (`useRecords: false`, so
 * nodes of different builds decode each other).
 *
 *   0x01 HELLO     msgpack { version, nodeId, instance, address, keyGroups, valueBytesMax, epoch, nonce }
 *                  first frame, both ways; nonce: 32 fresh random bytes
 *   0x07 PROOF     [32 bytes]   after the peer's HELLO, both ways: this node holds the cluster secret
 *                  (peer-auth.ts). Nothing but HELLO and PROOF is read before the peer's PROOF checks
 *                  out; a bad one closes the connection with code 4401.
 *   0x02 RESUME    msgpack { stream, receivedStream, received }   after the peer's HELLO: this node's
 *                  outgoing stream id, and the last ENVELOPES seq it applied of the peer's stream
 *                  `receivedStream`. The peer drops what that covers and re-sends the rest, in order;
 *                  if it does not know that stream (it restarted, or its link is new), it numbers
 *                  its unacknowledged frames again from 1, as a new stream.
 *   0x03 GOSSIP    msgpack membership message
 *   0x04 ENVELOPES [f64 seq][u32 count][u32 epoch] then count × ([u32 length][envelope])   seq:
 *                  consecutive from 1 within the sender's stream; a receiver applies seq = last + 1
 *                  only. epoch: the sender's recovery epoch when it queued the envelopes (a receiver
 *                  drops envelopes of an older epoch and holds those of a newer one until it gets there)
 *   0x05 ACK       [f64 seq]  every ENVELOPES frame up to seq was applied; the sender may forget them
 *   0x06 REFUSED   msgpack { reason }   the peer will not talk to this node (protocol or key groups differ)
 *
 * A frame that breaks these rules closes the connection with code 4400 and a reason; the node stays up.
 * `instance` is random per process start, so a restarted node starts its sequences afresh.
 */

/** 2: HELLO carries a nonce and PROOF follows it (peer authentication). */
import { NONCE_BYTES, PROOF_BYTES } from './peer-auth.js';

export const PEER_PROTOCOL_VERSION = 2;
export const PEER_PATH = '/peer';

export const PeerFrame = {
  Hello: 0x01,
  Resume: 0x02,
  Gossip: 0x03,
  Envelopes: 0x04,
  Ack: 0x05,
  Refused: 0x06,
  Proof: 0x07,
} as const;

export const PeerClose = {
  Normal: 1000,
  GoingAway: 1001,
  Malformed: 4400,
  /** The peer did not prove it holds the cluster secret. */
  Unauthorized: 4401,
  Duplicate: 4409,
  Refused: 4426,
} as const;

export interface PeerHello {
  version: number;
  nodeId: string;
  instance: string;
  address: string;
  keyGroups: number;
  /** Every node of a cluster must take the same values (an envelope must fit every node's rings). */
  valueBytesMax: number;
  /** The sender's recovery epoch (a node that joins takes the cluster's). */
  epoch?: number;
  /** Fresh random bytes (NONCE_BYTES): the peer's proof covers them, so it is good for this connection only. */
  nonce: Uint8Array;
}

export interface PeerResume {
  /** The sender's outgoing stream on this link (its ENVELOPES seq numbers count within it). */
  stream: string;
  /** The stream of the receiver's that the sender last received from, and the last seq it applied. */
  receivedStream: string;
  received: number;
}

export const ENVELOPES_HEADER_BYTES = 1 + 8 + 4 + 4;

export function encodeProof(proof: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(1 + PROOF_BYTES);
  frame[0] = PeerFrame.Proof;
  frame.set(proof, 1);
  return frame;
}

export function decodeProof(frame: Uint8Array): Uint8Array {
  if (frame.length !== 1 + PROOF_BYTES) throw new PeerProtocolError(`PROOF frame of ${frame.length} bytes, expected ${1 + PROOF_BYTES}`);
  return frame.subarray(1);
}

export class PeerProtocolError extends Error {
  override readonly name = 'PeerProtocolError';
}

// Control frames are built as the client protocol's are: a type byte, then a msgpack body
// (`useRecords: false`). A malformed body is a ProtocolError (SC_ERR_MALFORMED_FRAME).
export { encodeControl, decodeControl } from '../lib/client-protocol.js';

export function encodeAck(seq: number): Buffer {
  const frame = Buffer.allocUnsafe(9);
  frame[0] = PeerFrame.Ack;
  frame.writeDoubleLE(seq, 1);
  return frame;
}

export function decodeAck(frame: Uint8Array): number {
  if (frame.length !== 9) throw new PeerProtocolError(`ACK frame of ${frame.length} bytes, expected 9`);
  const seq = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).readDoubleLE(1);
  if (!Number.isSafeInteger(seq) || seq < 0) throw new PeerProtocolError(`ACK seq ${seq} is not a non-negative integer`);
  return seq;
}

/** Writes an ENVELOPES frame's header into a frame whose envelopes are in place after it. */
export function writeEnvelopesHeader(frame: Buffer, seq: number, count: number, epoch: number): void {
  frame[0] = PeerFrame.Envelopes;
  frame.writeDoubleLE(seq, 1);
  frame.writeUInt32LE(count, 9);
  frame.writeUInt32LE(epoch, 13);
}

export function envelopesEpoch(frame: Uint8Array): number {
  if (frame.length < ENVELOPES_HEADER_BYTES) throw new PeerProtocolError('ENVELOPES frame shorter than its header');
  return Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).readUInt32LE(13);
}


export function envelopesSeq(frame: Uint8Array): number {
  if (frame.length < ENVELOPES_HEADER_BYTES) throw new PeerProtocolError('ENVELOPES frame shorter than its header');
  const seq = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).readDoubleLE(1);
  if (!Number.isSafeInteger(seq) || seq < 1) throw new PeerProtocolError(`ENVELOPES seq ${seq} is not a positive integer`);
  return seq;
}

/**
 * Checks an ENVELOPES frame's structure completely, then calls `visit` for each envelope, so a
 * malformed frame is refused whole rather than half applied.
 */
export function readEnvelopes(frame: Uint8Array, visit: (bytes: Uint8Array, offset: number, length: number) => void, envelopeBytesMin = 8): void {
  if (frame.length < ENVELOPES_HEADER_BYTES) throw new PeerProtocolError('ENVELOPES frame shorter than its header');
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const count = view.getUint32(9, true);
  let cursor = ENVELOPES_HEADER_BYTES;
  for (let index = 0; index < count; index++) {
    if (cursor + 4 > frame.length) throw new PeerProtocolError(`ENVELOPES frame ends before envelope ${index} of ${count}`);
    const length = view.getUint32(cursor, true);
    if (length < envelopeBytesMin || cursor + 4 + length > frame.length) throw new PeerProtocolError(`envelope ${index} has a bad length ${length}`);
    cursor += 4 + length;
  }
  if (cursor !== frame.length) throw new PeerProtocolError(`ENVELOPES frame has ${frame.length - cursor} bytes after its last envelope`);
  cursor = ENVELOPES_HEADER_BYTES;
  for (let index = 0; index < count; index++) {
    const length = view.getUint32(cursor, true);
    visit(frame, cursor + 4, length);
    cursor += 4 + length;
  }
}

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;

export function validateHello(hello: unknown): PeerHello {
  const value = hello as Partial<PeerHello> | null;
  if (
    value === null ||
    typeof value !== 'object' ||
    typeof value.version !== 'number' ||
    typeof value.nodeId !== 'string' ||
    value.nodeId.length === 0 ||
    value.nodeId.length > 256 ||
    typeof value.instance !== 'string' ||
    typeof value.address !== 'string' ||
    typeof value.keyGroups !== 'number' ||
    typeof value.valueBytesMax !== 'number'
  ) {
    throw new PeerProtocolError('HELLO needs { version, nodeId, instance, address, keyGroups, valueBytesMax, nonce }');
  }
  // An older node's HELLO has no nonce: its version is refused by name (peer-network.ts), not as malformed.
  if (value.version === PEER_PROTOCOL_VERSION && !(value.nonce instanceof Uint8Array && value.nonce.length === NONCE_BYTES)) {
    throw new PeerProtocolError(`HELLO nonce must be ${NONCE_BYTES} bytes`);
  }
  if (!HOST_PORT.test(value.address) || Number(value.address.slice(value.address.lastIndexOf(':') + 1)) > 65535) {
    throw new PeerProtocolError(`HELLO address ${JSON.stringify(value.address.slice(0, 100))} is not host:port`);
  }
  return value as PeerHello;
}
