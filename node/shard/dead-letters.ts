/**
 * Dead letters: a message that could not be handled (its handler threw, its type is unknown, its remote
 * endpoint failed for good) becomes a record on the `dead-letters` egress, and its instance goes on.
 * Whatever a handler threw, describing it never throws, and the record always fits a ring.
 */
import { StatecraftError } from '../../lib/errors.js';
import { egressLengthMax } from '../../lib/envelope.js';
import { DEAD_LETTERS_EGRESS, DEAD_LETTER_TYPENAME, type DeadLetter } from '../../lib/function.js';
import type { Message } from '../../lib/message.js';
import { TypedValue } from '../../lib/typed-value.js';
import { encodeUtf8, truncateUtf8 } from '../../lib/utf8.js';

/** Dead letters carry at most this much of the error's message (a handler may throw megabytes). */
const DEAD_LETTER_REASON_BYTES_MAX = 4096;
const DEAD_LETTER_NAME_BYTES_MAX = 256;
/** A smaller cut, when ids make the dead letter too long for a ring record even so. */
const DEAD_LETTER_SHORT_BYTES_MAX = 256;

/** What a dead letter says about a thrown value. Never throws, whatever the handler threw (a null-prototype object, a hostile Proxy). */
export function describeThrown(thrown: unknown): { code: string; name: string; message: string } {
  let code = 'SC_ERR_HANDLER';
  let name = 'Error';
  let message: string;
  try {
    if (thrown instanceof StatecraftError && typeof thrown.code === 'string') code = thrown.code;
    if (thrown instanceof Error) {
      name = String(thrown.name);
      message = String(thrown.message);
    } else {
      message = String(thrown);
    }
  } catch {
    message = `the handler threw ${typeof thrown === 'object' ? 'an object' : `a ${typeof thrown}`} that cannot be turned into a string; throw an Error instead`;
  }
  return {
    code,
    name: truncateUtf8(name, DEAD_LETTER_NAME_BYTES_MAX),
    message: truncateUtf8(message, DEAD_LETTER_REASON_BYTES_MAX, `… [truncated: the message had ${message.length} characters]`),
  };
}

/**
 * The dead-letter record for `message` and the value it travels in, shortened (ids and reason) when
 * it would not fit a ring record of `recordBytesMax` bytes. May throw only for a runtime bug.
 */
export function deadLetterFor(message: Message, error: unknown, nowMs: number, recordBytesMax: number): { record: DeadLetter; value: TypedValue } {
  const thrown = describeThrown(error);
  const record: DeadLetter = {
    address: { typename: message.targetTypename, id: message.targetId },
    caller: message.callerTypename === null ? null : { typename: message.callerTypename, id: message.callerId! },
    messageType: message.valueTypeName,
    code: thrown.code,
    error: thrown.name,
    reason: thrown.message,
    at: new Date(nowMs).toISOString(),
  };
  let value = new TypedValue(DEAD_LETTER_TYPENAME, undefined, encodeUtf8(JSON.stringify(record)));
  if (egressLengthMax(DEAD_LETTERS_EGRESS, message.targetTypename, message.targetId, value) > recordBytesMax) {
    // Long ids (escaped in JSON) on top of the reason: shorten both so the record fits a ring.
    record.address = { typename: record.address.typename, id: truncateUtf8(record.address.id, DEAD_LETTER_SHORT_BYTES_MAX) };
    if (record.caller !== null) record.caller = { typename: record.caller.typename, id: truncateUtf8(record.caller.id, DEAD_LETTER_SHORT_BYTES_MAX) };
    record.reason = truncateUtf8(record.reason, DEAD_LETTER_SHORT_BYTES_MAX);
    value = new TypedValue(DEAD_LETTER_TYPENAME, undefined, encodeUtf8(JSON.stringify(record)));
  }
  return { record, value };
}
