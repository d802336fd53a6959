/**
 * Checkpoint control envelopes on the peer links: an envelope header of kind CheckpointControl, then
 * the message (CheckpointControl, node/main/cluster-port.ts) in msgpack. The recovery messages
 * (rollback, restarted, behind) carry a recovery epoch; the checkpoint messages (start, ack, failed,
 * outcome) a checkpoint number. A peer's bytes are checked before use.
 */
import { Packr } from 'msgpackr';
import { ENVELOPE_HEADER_BYTES, EnvelopeKind } from '../lib/envelope.js';
import { StatecraftError } from '../lib/errors.js';
import { isCheckpointRef, type CheckpointControl } from '../node/index.js';

const controlPackr = new Packr({ useRecords: false });

export function encodeControlEnvelope(message: CheckpointControl): Uint8Array {
  const body = controlPackr.pack(message);
  const envelope = new Uint8Array(ENVELOPE_HEADER_BYTES + body.length);
  envelope[0] = EnvelopeKind.CheckpointControl;
  envelope.set(body, ENVELOPE_HEADER_BYTES);
  return envelope;
}

function unpack(bytes: Uint8Array, offset: number, length: number): unknown {
  try {
    return controlPackr.unpack(bytes.subarray(offset + ENVELOPE_HEADER_BYTES, offset + length));
  } catch (error) {
    throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `a checkpoint control message that is not msgpack: ${(error as Error).message}`);
  }
}

const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
/** Checkpoint numbers start at 1 and travel as u32 in barriers. */
const isCheckpoint = (value: unknown): value is number => isCount(value) && value >= 1 && value <= 0xffff_ffff;
const isText = (value: unknown): value is string => typeof value === 'string';

/** Whether `message` has the fields its type needs, of the right types (a peer's bytes are checked before use). */
function wellFormed(message: CheckpointControl): boolean {
  switch (message.type) {
    case 'start':
      return isCheckpoint(message.checkpoint);
    case 'ack':
      return (
        isCheckpoint(message.checkpoint) &&
        Array.isArray(message.objects) &&
        message.objects.every((entry) => Array.isArray(entry) && entry.length === 2 && isCount(entry[0]) && (entry[1] === null || isText(entry[1]))) &&
        Array.isArray(message.channels) &&
        message.channels.every(isText) &&
        (message.instances === undefined || (Array.isArray(message.instances) && message.instances.every((entry) => Array.isArray(entry) && entry.length === 2 && isCount(entry[0]) && isCount(entry[1]))))
      );
    case 'failed':
      return isCheckpoint(message.checkpoint) && isText(message.reason) && (message.seen === undefined || isCheckpoint(message.seen));
    case 'outcome':
      return isCheckpoint(message.checkpoint) && typeof message.committed === 'boolean';
    case 'rollback':
      return isCount(message.epoch) && Array.isArray(message.members) && message.members.every(isText) && isCheckpointRef(message.restore) && isText(message.claimant);
    case 'restarted':
      return isCount(message.epoch) && isText(message.node);
    case 'behind':
      return isCount(message.epoch);
    default:
      return false;
  }
}

/** Decodes and checks a control envelope; throws SC_ERR_MALFORMED_FRAME when it is not one. */
export function decodeControlEnvelope(bytes: Uint8Array, offset: number, length: number): CheckpointControl {
  const message = unpack(bytes, offset, length) as CheckpointControl | null;
  if (message === null || typeof message !== 'object' || !wellFormed(message)) {
    throw new StatecraftError('SC_ERR_MALFORMED_FRAME', message?.type === 'rollback' ? 'malformed rollback message' : 'malformed checkpoint control message');
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

/**
 * Whether a control envelope is a member's request about recovery ('restarted', 'behind'). These pass
 * the epoch fence from an older epoch: a member that missed a recovery asks from the epoch it is in.
 */
export function isRecoveryRequest(bytes: Uint8Array, offset: number, length: number): boolean {
  try {
    const type = (unpack(bytes, offset, length) as CheckpointControl | null)?.type;
    return type === 'restarted' || type === 'behind';
  } catch {
    return false;
  }
}
