/**
 * A key group on the move: what its old owner exports and its new owner imports when the group changes
 * node (a node joins or leaves) — the instances' state records, the delayed messages its instances
 * scheduled, and the messages that were queued for its instances when it stopped.
 *
 * Body of a hand-over envelope (kind 3, see lib/envelope.ts), msgpack (`useRecords: false`):
 *   { v: 1, keyGroup, frozenAt,                    frozenAt: epoch ms when the old owner stopped it
 *     state:  [[typename, [[id, record], ...]], ...]   records as the state store keeps them
 *     timers: [[dueMs, tokenKey | null, targetTypename, targetId, callerTypename, callerId, valueTypename, valueBytes], ...]
 *     queued: [invokeEnvelope, ...],              in the order they were to be delivered
 *     marks:  [[session, highest, window], ...]    producer marks (client events applied once)
 *     egress: [[seq, egressEnvelope], ...],        records not yet released (checkpoints on)
 *     egressSeq }                                  the key group's next egress record seq
 * A checkpoint object of a key group (node/checkpoint/checkpoint-format.ts) is the same body.
 * Records hold JS primitives and byte arrays only, and deadlines in epoch ms, so they mean the same on
 * any node.
 */
import { Packr } from 'msgpackr';
import { ENVELOPE_HEADER_BYTES, EnvelopeKind, writeKeyGroup } from '../../lib/envelope.js';

export const HANDOVER_VERSION = 1;

export type ExportedTimer = [number, string | null, string, string, string, string, string, Uint8Array];

export interface KeyGroupExport {
  v: number;
  keyGroup: number;
  frozenAt: number;
  state: [string, [string, unknown][]][];
  timers: ExportedTimer[];
  queued: Uint8Array[];
  /** Producer marks: per client session, the highest sequence applied and the window below it (64 bytes). */
  marks?: [string, number, Uint8Array][];
  /** Egress records waiting for a checkpoint to commit: [seq, egress envelope]. */
  egress?: [number, Uint8Array][];
  /** The seq the key group's next egress record gets. */
  egressSeq?: number;
}

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeExport(value: KeyGroupExport): Uint8Array {
  // A copy: msgpackr may hand out a view of a buffer it reuses.
  return Uint8Array.prototype.slice.call(packr.pack(value));
}

export function decodeExport(bytes: Uint8Array): KeyGroupExport {
  const value = packr.unpack(bytes) as KeyGroupExport;
  if (value?.v !== HANDOVER_VERSION || !Number.isInteger(value.keyGroup) || !Array.isArray(value.state) || !Array.isArray(value.timers) || !Array.isArray(value.queued)) {
    throw new Error(`not a version ${HANDOVER_VERSION} key-group hand-over`);
  }
  return value;
}

/** Wraps an export in a hand-over envelope (8-byte header: kind 3 and the key group). */
export function handoverEnvelope(keyGroup: number, body: Uint8Array): Uint8Array {
  const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + body.length);
  envelope[0] = EnvelopeKind.Handover;
  writeKeyGroup(envelope, 0, keyGroup);
  envelope.set(body, ENVELOPE_HEADER_BYTES);
  return envelope;
}

export function handoverBody(envelope: Uint8Array, offset: number, length: number): Uint8Array {
  return envelope.slice(offset + ENVELOPE_HEADER_BYTES, offset + length);
}
