/**
 * Checkpoint control envelopes on the peer links: an envelope header of kind CheckpointControl, then
 * the message (CheckpointControl, node/main/cluster-port.ts) in msgpack. The recovery messages
 * (rollback, restarted, behind) carry a recovery epoch; the checkpoint messages (start, ack, failed,
 * outcome) a checkpoint number. A peer's bytes are checked before use.
 */
import { Packr } from 'msgpackr';
import { ENVELOPE_HEADER_BYTES, EnvelopeKind } from '../lib/envelope.js';
import { StatecraftError } from '../lib/errors.js';
import type { CheckpointControl } from '../node/index.js';

const controlPackr = new Packr({ useRecords: false });

export function encodeControlEnvelope(message: CheckpointControl): Uint8Array {
  const body = controlPackr.pack(message);
  const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + body.length);
  envelope[0] = EnvelopeKind.CheckpointControl;
  envelope.set(body, ENVELOPE_HEADER_BYTES);
  return envelope;
}

function unpack(bytes: Uint8Array, offset: number, length: number): unknown {
  return controlPackr.unpack(bytes.subarray(offset + ENVELOPE_HEADER_BYTES, offset + length));
}

/** Decodes and checks a control envelope; throws SC_ERR_MALFORMED_FRAME when it is not one. */
export function decodeControlEnvelope(bytes: Uint8Array, offset: number, length: number): CheckpointControl {
  const message = unpack(bytes, offset, length) as CheckpointControl;
  const recovery = message?.type === 'rollback' || message?.type === 'restarted' || message?.type === 'behind';
  const counter = recovery ? (message as { epoch?: unknown }).epoch : (message as { checkpoint?: unknown } | null)?.checkpoint;
  if (typeof counter !== 'number') throw new StatecraftError('SC_ERR_MALFORMED_FRAME', 'malformed checkpoint control message');
  if (message.type === 'rollback') {
    if (!Array.isArray(message.members) || !message.members.every((member) => typeof member === 'string')) {
      throw new StatecraftError('SC_ERR_MALFORMED_FRAME', 'malformed rollback message');
    }
    if (!Number.isSafeInteger(message.restore) || message.restore < 0) throw new StatecraftError('SC_ERR_MALFORMED_FRAME', 'malformed rollback message');
  }
  return message;
}

/**
 * Whether a control envelope may be a rollback order (or is malformed: the usual path logs it). A
 * rollback order of a newer epoch is taken at once; everything else of that epoch waits for it.
 */
export function mayBeRollback(bytes: Uint8Array, offset: number, length: number): boolean {
  try {
    return (unpack(bytes, offset, length) as CheckpointControl | null)?.type === 'rollback';
  } catch {
    return true;
  }
}
