/**
 * The client protocol: binary WebSocket messages between a client and a node's gateway.
 * The first byte is the frame type. Event frames are raw envelopes (the gateway forwards their bytes to
 * a shard without re-encoding them); control frames carry a msgpack body.
 *
 *   client → node
 *     0x01 HELLO        msgpack { version, producerId, client, token? }   token: when the node takes
 *                       client tokens (--client-tokens-file), one of them; else the node closes 4401
 *     0x02 EVENTS       [f64 firstSeq][u32 count] then count × ([u32 length][invoke envelope]);
 *                       event i has sequence number firstSeq + i (per producer, from 1, no gaps).
 *                       Each envelope also carries a producer mark (client session, seq per key
 *                       group; see lib/envelope.ts) that its key group uses to apply it once.
 *     0x03 SUBSCRIBE    msgpack { subscription, egress, after }   after: id of the last record seen,
 *                       -1 for the oldest retained record, or omitted for new records only
 *     0x04 UNSUBSCRIBE  msgpack { subscription }
 *     0x05 FLOW         msgpack { subscription, paused }            subscriber-side backpressure
 *
 *   node → client
 *     0x81 WELCOME      msgpack { version, nodeId, egressLogId, lastSeq, keyGroups, limits, functions }
 *                       lastSeq: the last event this node has seen from the producer, accepted or
 *                       rejected (0 if none). A client re-sends every event it has no ACK for, with
 *                       its original seq; the node admits none twice and answers a re-sent rejected
 *                       event with its REJECTED entry again.
 *     0x82 ACK          [f64 lastSeq]   every event up to lastSeq was accepted, except rejected ones
 *     0x83 REJECTED     msgpack { rejections: [[seq, code, message], ...] }   sent before the ACK covering them
 *     0x84 RECORDS      [u32 subscription][f64 firstId][u32 count] then count × ([u32 length][egress envelope]);
 *                       record i has id firstId + i (ids are consecutive per egress)
 *     0x85 GAP          msgpack { subscription, from, to }   records from..to are no longer retained
 *     0x86 SUBSCRIBED   msgpack { subscription, after, marks? }   the subscription starts after record `after`;
 *                       from 'latest' (no `after` asked), marks: [[key group, record seq], ...], where the
 *                       log stands in stable ids, so a client that fails over to another node's log drops
 *                       what was produced before it subscribed
 *     0x87 COMMITTED    [f64 seq]   every event up to seq is covered by a committed checkpoint (sent only
 *                       by a node with checkpoints on, WELCOME.durable): it takes effect exactly once,
 *                       whatever fails from now on. Until then a client keeps the event to re-send it.
 *     0x88 REFUSED      msgpack { subscription, code, message }   the subscription is not taken (its
 *                       egress is outside the client token's scopes); nothing more comes for it
 *
 * A frame that breaks these rules closes the connection with code 4400 and a reason; a client of
 * another protocol version is closed with 4426, one without a valid token with 4401. All are final:
 * the client does not reconnect.
 */
import { Packr } from 'msgpackr';
import { ProtocolError, isErrorCode, type ErrorCode } from './errors.js';
import { KEY_GROUPS_MAX } from './key-group.js';

export const PROTOCOL_VERSION = 1;

export const Frame = {
  Hello: 0x01,
  Events: 0x02,
  Subscribe: 0x03,
  Unsubscribe: 0x04,
  Flow: 0x05,
  Welcome: 0x81,
  Ack: 0x82,
  Rejected: 0x83,
  Records: 0x84,
  Gap: 0x85,
  Subscribed: 0x86,
  Committed: 0x87,
  Refused: 0x88,
} as const;

export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  InternalError: 1011,
  /** The node rolled back to its last checkpoint: reconnect and re-send. */
  Restarting: 1012,
  /** The node cannot serve clients now (it lost its cluster's majority): try again or elsewhere. */
  TryAgainLater: 1013,
  MalformedFrame: 4400,
  /** No valid client token (the node takes tokens): final, like a protocol mismatch. */
  Unauthorized: 4401,
  ProtocolVersion: 4426,
} as const;

export const EVENTS_HEADER_BYTES = 1 + 8 + 4;

export interface Hello {
  version: number;
  producerId: string;
  client: string;
  /** A client token, when the node takes them. */
  token?: string;
}

export interface Limits {
  valueBytesMax: number;
  idBytesMax: number;
  frameBytesMax: number;
}

export interface Welcome {
  version: number;
  nodeId: string;
  /** Identifies this node's egress log; record ids are only comparable within one log. */
  egressLogId: string;
  lastSeq: number;
  keyGroups: number;
  limits: Limits;
  functions: string[];
  /** Checkpoints on: events are confirmed with COMMITTED once a committed checkpoint covers them. */
  durable?: boolean;
}

export interface Subscribe {
  subscription: number;
  egress: string;
  after?: number;
}

export const RECORDS_HEADER_BYTES = 1 + 4 + 8 + 4;

const packr = new Packr({ useRecords: false });

export function encodeControl(frame: number, body: unknown): Uint8Array {
  const packed = packr.pack(body);
  const bytes = new Uint8Array(packed.length + 1);
  bytes[0] = frame;
  bytes.set(packed, 1);
  return bytes;
}

export function decodeControl<T>(data: Uint8Array): T {
  if (data.length === 0) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'empty frame: every frame starts with its type byte');
  try {
    return packr.unpack(data.subarray(1)) as T;
  } catch (error) {
    throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `frame 0x${data[0]!.toString(16)} has a malformed body: ${(error as Error).message}`);
  }
}

function isCount(value: unknown, min: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min;
}

function malformed(frame: string, what: string): never {
  throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `${frame} ${what}; is the node a Statecraft node of this protocol version (${PROTOCOL_VERSION})?`);
}

/** A WELCOME's body, every field checked: the client sizes and routes events by it. */
export function decodeWelcome(data: Uint8Array): Welcome {
  const body = decodeControl<Partial<Record<keyof Welcome, unknown>> | null>(data);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) malformed('WELCOME', 'body is not a map');
  if (body.version !== PROTOCOL_VERSION) malformed('WELCOME', `has version ${String(body.version)}`);
  if (typeof body.nodeId !== 'string' || typeof body.egressLogId !== 'string') malformed('WELCOME', 'lacks nodeId or egressLogId');
  if (!isCount(body.lastSeq, 0)) malformed('WELCOME', `lastSeq ${String(body.lastSeq)} is not a whole number`);
  if (!isCount(body.keyGroups, 1) || body.keyGroups > KEY_GROUPS_MAX) malformed('WELCOME', `keyGroups ${String(body.keyGroups)} is not 1..${KEY_GROUPS_MAX}`);
  const limits = body.limits as Partial<Record<keyof Limits, unknown>> | null | undefined;
  if (typeof limits !== 'object' || limits === null || !isCount(limits.valueBytesMax, 1) || !isCount(limits.idBytesMax, 1) || !isCount(limits.frameBytesMax, 1)) {
    malformed('WELCOME', 'lacks limits { valueBytesMax, idBytesMax, frameBytesMax } of positive whole numbers');
  }
  if (!Array.isArray(body.functions) || !body.functions.every((name) => typeof name === 'string')) malformed('WELCOME', 'functions is not a list of typenames');
  if (body.durable !== undefined && typeof body.durable !== 'boolean') malformed('WELCOME', 'durable is not a boolean');
  return body as Welcome;
}

export type Rejection = [seq: number, code: ErrorCode, message: string];

/** A REJECTED frame's entries, each [seq, code, message] checked: the code reaches the caller's error. */
export function decodeRejections(data: Uint8Array): Rejection[] {
  const body = decodeControl<{ rejections?: unknown } | null>(data);
  const rejections = typeof body === 'object' && body !== null ? body.rejections : undefined;
  if (!Array.isArray(rejections)) malformed('REJECTED', 'body lacks its rejections list');
  for (const entry of rejections) {
    if (!Array.isArray(entry) || entry.length !== 3 || !isCount(entry[0], 1) || typeof entry[2] !== 'string') malformed('REJECTED', 'entry is not [seq, code, message]');
    if (!isErrorCode(entry[1])) malformed('REJECTED', `entry has code ${JSON.stringify(entry[1])}, not a Statecraft error code`);
  }
  return rejections as Rejection[];
}

export function encodeAck(lastSeq: number, frame: number = Frame.Ack): Uint8Array {
  const bytes = new Uint8Array(9);
  bytes[0] = frame;
  new DataView(bytes.buffer).setFloat64(1, lastSeq, true);
  return bytes;
}

export function decodeAck(data: Uint8Array): number {
  if (data.length !== 9) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `ACK frame of ${data.length} bytes, expected 9`);
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getFloat64(1, true);
}
