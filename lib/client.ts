/**
 * The client applications embed to send events to functions and read egress records.
 *
 * ```ts
 * const client = await connect('ws://127.0.0.1:8080');
 * await client.send({ typename: 'example/greeter', id: 'alice' }, 'Alice');
 * for await (const record of client.subscribe('greetings')) console.log(record.value);
 * ```
 *
 * `send` resolves once a committed checkpoint covers the event, when the node checkpoints (the default;
 * `confirm: 'accept'` resolves on acceptance instead), else once the node has accepted it (validated it
 * and queued it for its shard). The client keeps every event until then and re-sends the unconfirmed
 * ones after a reconnect, to whichever node it reaches: marks in the key groups drop repeats. At most `window` events are in flight at a time; the rest wait in the client, at most `queueMax`.
 * When the connection drops the client reconnects (to the next URL when given several), tells the node
 * its producer id, and re-sends, in order and each with its own sequence number, every event it had no
 * ACK for. The node does not admit again what it already has, and answers again the rejections the lost
 * connection may have swallowed: so an event is never taken for accepted when the node rejected it.
 */
import { FifoQueue } from './fifo-queue.js';
import { HEARTBEAT_INTERVAL_MS_DEFAULT, HEARTBEAT_TIMEOUT_MS_DEFAULT, Heartbeat, type HeartbeatOptions } from './client-heartbeat.js';
import { randomBytes, randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { ID_BYTES_MAX_DEFAULT, validateAddress, validateEgressName, type Address } from './address.js';
import {
  CloseCode,
  EVENTS_HEADER_BYTES,
  Frame,
  PROTOCOL_VERSION,
  decodeAck,
  decodeControl,
  decodeRejections,
  decodeWelcome,
  encodeControl,
  type Hello,
  type Limits,
  type Subscribe,
  type Welcome,
  RECORDS_HEADER_BYTES,
} from './client-protocol.js';
import { ConnectionError, ProtocolError, StatecraftError, UnknownFunctionTypeError, ValidationError, isErrorCode, type ErrorCode } from './errors.js';
import { EnvelopeDecoder, invokeLengthMax, writeInvoke, type EgressEnvelope } from './envelope.js';
import { truncateUtf8 } from './utf8.js';
import { checkValueSize, toTypedValue } from './typed-value.js';
import { decodeKnown, primitiveType, type Type } from './types.js';
import { keyGroupOf } from './key-group.js';
import { DEAD_LETTER_TYPENAME } from './function.js';

export interface ReconnectOptions {
  /** First delay before reconnecting. Default 100 ms; doubles up to `delayMaxMs`. */
  delayMs?: number;
  /** Longest delay between attempts. Default 5 s. */
  delayMaxMs?: number;
  /** Attempts before giving up and failing pending sends. Default: unlimited. */
  attemptsMax?: number;
}

export interface ConnectOptions {
  /** Events sent and not yet acknowledged, at most. Default 10,000. */
  window?: number;
  /** Events waiting for room in the window, at most; beyond it `send` rejects with SC_ERR_QUEUE_FULL. Default 1,000,000. */
  queueMax?: number;
  /** Reconnect after losing the connection. Default true. */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Time allowed for each connection attempt, and for `connect()` to keep retrying a node that answers
   * "not now" (recovering, or without its cluster's majority). Default 10 s.
   */
  connectTimeoutMs?: number;
  /**
   * The liveness check of the connected node: the client pings it every `intervalMs` (default 1 s) and
   * drops a connection silent for `timeoutMs` (default 3 s), then reconnects to the next node and
   * re-sends what was not confirmed. A stopped or cut-off node never closes its sockets: without the
   * check (`false`) the client waits for it to come back. Reconnect attempts then also give up on a
   * node that has not answered within `timeoutMs`.
   */
  heartbeat?: boolean | HeartbeatOptions;
  /**
   * This client's producer id. Events carry it with a sequence number, so a node never applies an
   * event twice when the client re-sends after a reconnect. Default: a random UUID.
   */
  producerId?: string;
  /**
   * When `send()` resolves, with a node that checkpoints: `'commit'` (default) once a committed
   * checkpoint covers the event — it then takes effect exactly once whatever fails later; `'accept'`
   * once the node has accepted it (faster; the client still keeps and re-sends it until it is committed).
   * A node without checkpoints can only confirm acceptance.
   */
  confirm?: 'commit' | 'accept';
  /**
   * A client token, for a node started with `--client-tokens-file`. Without a valid one `connect()`
   * rejects with SC_ERR_UNAUTHORIZED; events and subscriptions outside the token's scopes are refused
   * with SC_ERR_UNAUTHORIZED too.
   */
  token?: string;
  /** For wss:// URLs: the CA certificate(s), PEM, the node's certificate is checked against. Default: the system's CAs. */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** For wss:// URLs: false accepts any certificate (tests only: it lets anyone on the path read and alter the traffic). Default true. */
  rejectUnauthorized?: boolean;
}

export interface SubscribeOptions<T = unknown> {
  /** Decode record values with this type (`record.value` is then a `T`). Default: built-in types by type name. */
  type?: Type<T>;
  /** Where to start: new records only (`'latest'`, default), the oldest retained (`'earliest'`), or after a record id. */
  from?: 'latest' | 'earliest' | number;
  /** Records buffered in the client before it asks the node to pause this subscription. Default 10,000. */
  bufferMax?: number;
  /** Called when the node no longer had records this subscriber needed (it lagged past the node's retention). */
  onGap?: (fromId: number, toId: number) => void;
  /**
   * Called with a ProtocolError (SC_ERR_MALFORMED_FRAME) for a record this client cannot decode; the
   * record is skipped and the subscription goes on. Default: a process warning.
   */
  onError?: (error: StatecraftError, recordId: number) => void;
}

/** One record of an egress, as a subscriber receives it. */
export class EgressRecord<T = unknown> {
  /** @internal */
  constructor(
    /** Consecutive per egress on a node; resume a subscription after it with `{ from: id }`. */
    readonly id: number,
    private readonly envelope: EgressEnvelope,
    private readonly type?: Type<T>,
  ) {}

  get egress(): string {
    return this.envelope.egress;
  }

  /**
   * The record's stable id, `keyGroup:seq`, when the node checkpoints (else null): the same when a
   * record is released again after a recovery, which the client drops as already delivered.
   */
  get recordId(): string | null {
    return this.envelope.recordSeq === null ? null : `${this.envelope.keyGroup}:${this.envelope.recordSeq}`;
  }

  /** The instance that emitted the record. */
  get source(): Address {
    return { typename: this.envelope.sourceTypename, id: this.envelope.sourceId };
  }

  get valueTypeName(): string {
    return this.envelope.valueTypename;
  }

  /** The value in its type's encoding. */
  get rawValueBytes(): Uint8Array {
    return this.envelope.bytes ?? primitiveType(this.envelope.valueTypename)!.serialize(this.envelope.decoded as never);
  }

  /**
   * The value: decoded with the subscription's `type` when it names this record's type, else by type name
   * for built-in types (primitives, JSON, dead letters, bytes), else its bytes.
   */
  get value(): T {
    const envelope = this.envelope;
    if (envelope.bytes === null) return envelope.decoded as T;
    if (this.type !== undefined && this.type.typename === envelope.valueTypename) return this.type.deserialize(envelope.bytes);
    if (envelope.valueTypename === DEAD_LETTER_TYPENAME) return JSON.parse(Buffer.from(envelope.bytes).toString('utf8')) as T;
    const known = decodeKnown(envelope.valueTypename, envelope.bytes);
    return (known === undefined ? envelope.bytes : known) as T;
  }

  is(type: Type<unknown>): boolean {
    return type.typename === this.valueTypeName;
  }

  as<V>(type: Type<V>): V {
    if (type.typename !== this.valueTypeName) {
      throw new ValidationError('SC_ERR_TYPE_MISMATCH', `egress record ${this.id} carries ${this.valueTypeName}, not ${type.typename}.`);
    }
    return this.envelope.bytes === null ? (this.envelope.decoded as V) : type.deserialize(this.envelope.bytes);
  }
}

export interface Subscription<T = unknown> extends AsyncIterableIterator<EgressRecord<T>> {
  readonly egress: string;
  /** Id of the last record delivered to the iterator (or that the subscription started after). */
  readonly lastId: number | undefined;
  /** Stops the subscription; the iterator ends. */
  close(): void;
}

export interface Client {
  /** Producer id this client sends with. */
  readonly producerId: string;
  /** Id of the node currently connected, or null while reconnecting. */
  readonly nodeId: string | null;
  /** Events not yet confirmed (queued, in flight, or accepted and waiting for a commit). */
  readonly pending: number;
  /**
   * Sends an event to a function. Resolves when a committed checkpoint covers it (or, with
   * `confirm: 'accept'` or a node without checkpoints, when the node has accepted it); rejects with a
   * typed error when the node refuses it. Invalid input throws at once, before anything is sent.
   */
  send<T>(target: Address, value: T, type?: Type<T>): Promise<void>;
  /** Receives the records of an egress, as an async iterator. */
  subscribe<T = unknown>(egress: string, options?: SubscribeOptions<T>): Subscription<T>;
  /** Resolves when every event sent so far has been confirmed or rejected. */
  drained(): Promise<void>;
  /** Waits (up to `timeoutMs`, default 10 s) for pending events, then closes. Events still pending reject. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

class PendingEvent {
  settled = false;
  constructor(
    readonly seq: number,
    readonly bytes: Uint8Array,
    readonly resolve: () => void,
    readonly reject: (error: Error) => void,
  ) {}
}

const FRAME_EVENTS_MAX = 8192;
/** Events are encoded into slabs of this size (a big value gets a slab of its own). */
const SLAB_BYTES = 256 * 1024;
const FRAME_BYTES_MAX = 1024 * 1024;
/** A node's answer that means "not now": it is recovering or has lost its majority. */
class NotNow extends Error {}

/** Longest WebSocket close reason: a close frame's payload is at most 125 bytes, 2 of them the code. */
const CLOSE_REASON_BYTES_MAX = 123;

function rejectionError(code: ErrorCode, message: string): StatecraftError {
  if (code === 'SC_ERR_UNKNOWN_FUNCTION_TYPE') return new StatecraftError(code, message);
  return new ValidationError(code, message);
}

/** Record seqs of one source key group above `low` delivered out of order, at most; past it the window moves up. */
const SEQS_AHEAD_MAX = 1024;

/**
 * The record seqs of one source key group a subscription has delivered: all up to `low`, and those
 * in `ahead`. Seqs are consecutive per key group, but records of one key group can reach a node out of
 * order (produced on both sides of a hand-over, released by different nodes in one commit), so a
 * high-water mark alone would drop the late one as a repeat.
 */
class DeliveredSeqs {
  private readonly ahead = new Set<number>();
  constructor(private low: number) {}

  /** True (and noted) when `seq` was not delivered before. */
  take(seq: number): boolean {
    if (seq <= this.low || this.ahead.has(seq)) return false;
    if (seq === this.low + 1) {
      this.low = seq;
      while (this.ahead.delete(this.low + 1)) this.low++;
    } else {
      this.ahead.add(seq);
      if (this.ahead.size > SEQS_AHEAD_MAX) {
        // A hole that does not fill (records retained no more): the window moves past it.
        this.low = Math.min(...this.ahead);
        this.ahead.delete(this.low);
        while (this.ahead.delete(this.low + 1)) this.low++;
      }
    }
    return true;
  }

  /** Everything up to `seq` counts as delivered (produced before a subscription from 'latest'). */
  raise(seq: number): void {
    if (seq <= this.low) return;
    this.low = seq;
    for (const ahead of this.ahead) if (ahead <= seq) this.ahead.delete(ahead);
    while (this.ahead.delete(this.low + 1)) this.low++;
  }
}

class SubscriptionImpl<T = unknown> implements Subscription<T> {
  lastId: number | undefined;
  /** Per source key group, the record seqs delivered (stable ids: repeats after a recovery or failover are dropped). */
  private readonly delivered = new Map<number, DeliveredSeqs>();
  private readonly buffer = new FifoQueue<EgressRecord<T>>();
  private waiter: ((result: IteratorResult<EgressRecord<T>>) => void) | null = null;
  private ended = false;
  /** Why the node refused this subscription, once it has. */
  private failure: StatecraftError | null = null;
  paused = false;
  /** `after` to send when (re)subscribing: undefined = new records only, -1 = oldest retained. */
  startAfter: number | undefined;

  constructor(
    readonly id: number,
    readonly egress: string,
    private readonly client: StatecraftClient,
    private readonly options: SubscribeOptions<T>,
  ) {
    const from = options.from ?? 'latest';
    this.startAfter = from === 'latest' ? undefined : from === 'earliest' ? -1 : from;
  }

  get bufferMax(): number {
    return this.options.bufferMax ?? 10_000;
  }

  /**
   * The node's SUBSCRIBED: the id the subscription starts after, and (from 'latest', the first time)
   * where the log stands per source key group: records up to those seqs were produced before this
   * subscription, and are dropped wherever they come from (another node's log after a failover).
   */
  started(after: number, marks: readonly [number, number][] | undefined): void {
    if (marks !== undefined && this.startAfter === undefined && this.lastId === undefined) {
      for (const [keyGroup, seq] of marks) this.seqsOf(keyGroup).raise(seq);
    }
    if (this.lastId === undefined || after > this.lastId) this.lastId = after;
  }

  /** Records from a RECORDS frame: envelopes at `offsets`, ids from `firstId`. */
  deliver(frame: Buffer, firstId: number, count: number, decoder: EnvelopeDecoder): void {
    if (this.ended) return;
    let cursor = RECORDS_HEADER_BYTES;
    for (let index = 0; index < count; index++) {
      const length = frame.readUInt32LE(cursor);
      if (cursor + 4 + length > frame.length) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `RECORDS frame ends inside record ${index} of ${count}`);
      const id = firstId + index;
      const start = cursor + 4;
      cursor = start + length;
      if (this.lastId !== undefined && id <= this.lastId) continue; // already delivered before a reconnect
      let envelope: EgressEnvelope;
      try {
        envelope = decoder.decodeEgress(frame, start, length);
      } catch (error) {
        // One record this client cannot read (a bug on either side) must not end the connection: after
        // a reconnect the node would send it again, and the client would close again, for good.
        this.lastId = id;
        this.undecodable(id, error);
        continue;
      }
      this.lastId = id;
      // Released again (after a recovery), or seen already through another node's log.
      if (envelope.recordSeq !== null && !this.seqsOf(envelope.keyGroup).take(envelope.recordSeq)) continue;
      const record = new EgressRecord<T>(id, envelope, this.options.type);
      if (this.waiter !== null) {
        const waiter = this.waiter;
        this.waiter = null;
        waiter({ value: record, done: false });
      } else this.buffer.push(record);
    }
    if (!this.paused && this.buffer.length >= this.bufferMax) {
      this.paused = true;
      this.client.sendFlow(this, true);
    }
  }

  private seqsOf(keyGroup: number): DeliveredSeqs {
    let seqs = this.delivered.get(keyGroup);
    if (seqs === undefined) this.delivered.set(keyGroup, (seqs = new DeliveredSeqs(-1)));
    return seqs;
  }

  gap(from: number, to: number): void {
    try {
      this.options.onGap?.(from, to);
    } catch (error) {
      process.emitWarning(`statecraft: the onGap callback of the subscription to "${this.egress}" threw: ${String((error as Error)?.message ?? error)}`);
    }
  }

  private undecodable(id: number, cause: unknown): void {
    const error = new ProtocolError(
      'SC_ERR_MALFORMED_FRAME',
      `egress record ${id} of "${this.egress}" cannot be decoded (${String((cause as Error)?.message ?? cause)}); it was skipped. Check that client and node run the same Statecraft version.`,
      { cause },
    );
    const onError = this.options.onError;
    try {
      if (onError !== undefined) return onError(error, id);
    } catch {
      // fall through: report it the default way
    }
    process.emitWarning(error);
  }

  next(): Promise<IteratorResult<EgressRecord<T>>> {
    if (!this.buffer.isEmpty) {
      const record = this.buffer.shift();
      if (this.paused && this.buffer.length <= this.bufferMax / 4) {
        this.paused = false;
        this.client.sendFlow(this, false);
      }
      return Promise.resolve({ value: record, done: false });
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = (result) => (this.failure !== null ? reject(this.failure) : resolve(result))));
  }

  return(): Promise<IteratorResult<EgressRecord<T>>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<EgressRecord<T>> {
    return this;
  }

  close(): void {
    if (this.ended) return;
    this.client.unsubscribe(this);
    this.end();
  }

  /** The node will not serve this subscription (its token's scopes): iterating rejects with `error`. */
  refused(error: StatecraftError): void {
    this.failure = error;
    this.end();
  }

  end(): void {
    this.ended = true;
    if (this.waiter !== null) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter({ value: undefined, done: true });
    }
  }
}

type State = 'connecting' | 'open' | 'reconnecting' | 'closing' | 'closed';

class StatecraftClient implements Client {
  readonly producerId: string;
  /**
   * This client instance's session: with a sequence number per key group it marks every event, so a
   * key group applies an event once even when it is re-sent through another node after a reconnect.
   */
  private readonly session: string;
  private readonly seqByKeyGroup = new Map<number, number>();
  private state: State = 'connecting';
  private socket: WebSocket | null = null;
  private welcome: Welcome | null = null;
  private limits: Limits = { valueBytesMax: 1024 * 1024, idBytesMax: ID_BYTES_MAX_DEFAULT, frameBytesMax: 16 * 1024 * 1024 };
  private functions: Set<string> | null = null;
  private nextSeq = 1;
  /** Sent, not yet acknowledged, in sequence order. */
  private readonly inFlight = new FifoQueue<PendingEvent>();
  /** Accepted by a node that checkpoints, not yet covered by a committed checkpoint (oldest first). */
  private readonly unconfirmed = new FifoQueue<PendingEvent>();
  private readonly confirm: 'commit' | 'accept';
  /** Not yet sent, in sequence order. */
  private readonly waiting = new FifoQueue<PendingEvent>();
  private frame: PendingEvent[] = [];
  private frameBytes = 0;
  private flushScheduled = false;
  private drainWaiters: (() => void)[] = [];
  private readonly subscriptions = new Map<number, SubscriptionImpl<any>>();
  private nextSubscription = 1;
  private egressLogId: string | null = null;
  private urlIndex = 0;
  private reconnectAttempts = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private heartbeat: Heartbeat | null = null;
  private readonly heartbeatOptions: Required<HeartbeatOptions> | null;
  private slab = new Uint8Array(SLAB_BYTES);
  private slabUsed = 0;
  private readonly decoder = new EnvelopeDecoder();
  private readonly window: number;
  private readonly queueMax: number;
  private readonly reconnect: Required<ReconnectOptions> | null;
  private readonly connectTimeoutMs: number;
  private readonly token: string | undefined;
  private readonly tls: { ca?: string | Buffer | (string | Buffer)[]; rejectUnauthorized?: boolean };

  constructor(
    private readonly urls: readonly string[],
    options: ConnectOptions,
  ) {
    this.producerId = options.producerId ?? randomUUID();
    if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length === 0)) {
      throw new ValidationError('SC_ERR_INVALID_OPTION', 'token must be a non-empty string (one of the node\'s client tokens)');
    }
    this.token = options.token;
    this.tls = {
      ...(options.ca === undefined ? {} : { ca: typeof options.ca === 'string' || Buffer.isBuffer(options.ca) ? options.ca : [...options.ca] }),
      ...(options.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: options.rejectUnauthorized }),
    };
    // 96 random bits: sessions must not collide, or one client's events would pass for another's repeats.
    this.session = randomBytes(12).toString('base64url');
    this.window = positive('window', options.window, 10_000);
    if (options.confirm !== undefined && options.confirm !== 'commit' && options.confirm !== 'accept') {
      throw new ValidationError('SC_ERR_INVALID_OPTION', `confirm must be 'commit' or 'accept', got ${JSON.stringify(options.confirm)}`);
    }
    this.confirm = options.confirm ?? 'commit';
    this.queueMax = positive('queueMax', options.queueMax, 1_000_000);
    this.connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs, 10_000);
    const reconnect = options.reconnect ?? true;
    this.reconnect =
      reconnect === false
        ? null
        : {
            delayMs: (reconnect === true ? undefined : reconnect.delayMs) ?? 100,
            delayMaxMs: (reconnect === true ? undefined : reconnect.delayMaxMs) ?? 5000,
            attemptsMax: (reconnect === true ? undefined : reconnect.attemptsMax) ?? Infinity,
          };
    const heartbeat = options.heartbeat ?? true;
    if (typeof heartbeat !== 'boolean' && (typeof heartbeat !== 'object' || heartbeat === null)) {
      throw new ValidationError('SC_ERR_INVALID_OPTION', `heartbeat must be true, false or { intervalMs, timeoutMs }, got ${JSON.stringify(heartbeat)}.`);
    }
    const intervalMs = heartbeat === false ? 0 : positive('heartbeat.intervalMs', heartbeat === true ? undefined : heartbeat.intervalMs, HEARTBEAT_INTERVAL_MS_DEFAULT);
    const timeoutMs = heartbeat === false ? 0 : positive('heartbeat.timeoutMs', heartbeat === true ? undefined : heartbeat.timeoutMs, HEARTBEAT_TIMEOUT_MS_DEFAULT);
    if (heartbeat !== false && timeoutMs < 2 * intervalMs) {
      throw new ValidationError('SC_ERR_INVALID_OPTION', `heartbeat.timeoutMs (${timeoutMs}) must be at least twice heartbeat.intervalMs (${intervalMs}): the node needs time to answer a ping.`);
    }
    this.heartbeatOptions = heartbeat === false ? null : { intervalMs, timeoutMs };
  }

  get nodeId(): string | null {
    return this.state === 'open' ? this.welcome!.nodeId : null;
  }

  get pending(): number {
    return this.unconfirmed.length + this.inFlight.length + this.waiting.length;
  }

  /**
   * Tries each URL in turn; resolves when one welcomes us. A node that answers "not now" (it is
   * recovering, or has lost its majority) is tried again, with the reconnect delays, until
   * `connectTimeoutMs` has passed; one that cannot be reached fails the connect at once.
   */
  async open(): Promise<void> {
    const deadline = Date.now() + this.connectTimeoutMs;
    const errors: string[] = [];
    let last: unknown;
    for (let round = 0; ; round++) {
      let transient = false;
      for (let attempt = 0; attempt < this.urls.length; attempt++) {
        try {
          await this.attempt();
          return;
        } catch (error) {
          last = error;
          errors.push(`${this.urls[this.urlIndex]}: ${(error as Error).message}`);
          if (error instanceof ProtocolError) break;
          if (error instanceof NotNow) transient = true;
          this.urlIndex = (this.urlIndex + 1) % this.urls.length;
        }
      }
      if (!transient || last instanceof ProtocolError || this.state !== 'connecting') break;
      const delayMs = Math.min(this.reconnect?.delayMaxMs ?? 5000, (this.reconnect?.delayMs ?? 100) * 2 ** Math.min(round, 20));
      if (Date.now() + delayMs >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
    this.state = 'closed';
    // No token, or a wrong one: its own code, so callers can tell it from a node that is down.
    if (last instanceof ProtocolError && last.code === 'SC_ERR_UNAUTHORIZED') throw new ConnectionError('SC_ERR_UNAUTHORIZED', `${last.message}; connect with { token } naming one of the node's client tokens`);
    const tried = errors.length > 6 ? [...errors.slice(0, 3), `... ${errors.length - 6} more ...`, ...errors.slice(-3)] : errors;
    throw new ConnectionError('SC_ERR_CONNECT_FAILED', `cannot connect to a Statecraft node (${tried.join('; ')}); check that a node is running and the URL is its ws:// URL.`, { cause: last });
  }

  /** One connection attempt to the current URL: open, HELLO, wait for WELCOME, within `timeoutMs`. */
  private attempt(timeoutMs = this.connectTimeoutMs): Promise<void> {
    const url = this.urls[this.urlIndex]!;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const socket = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs, maxPayload: 256 * 1024 * 1024, ...this.tls });
      socket.binaryType = 'nodebuffer';
      const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners();
        socket.on('error', () => undefined);
        socket.terminate();
        reject(error);
      };
      socket.on('error', (error) => fail(error));
      socket.on('unexpected-response', (request, response) => {
        // A node that refuses clients for now answers 503 with its reason as JSON.
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', () => undefined);
        response.on('end', () => {
          let reason = '';
          try {
            reason = String((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: unknown }).error ?? '');
          } catch {
            // not JSON: the status says enough
          }
          const text = `HTTP ${response.statusCode}${reason === '' ? '' : `: ${reason}`}`;
          request.destroy();
          fail(response.statusCode === 503 ? new NotNow(text) : new Error(text));
        });
      });
      socket.on('close', (code, reason) => {
        const text = reason.toString() || `code ${code}`;
        if (code === CloseCode.Unauthorized) fail(new ProtocolError('SC_ERR_UNAUTHORIZED', `the node refused this client: ${text}`));
        else if (code === CloseCode.ProtocolVersion || code === CloseCode.MalformedFrame) fail(new ProtocolError('SC_ERR_PROTOCOL_VERSION', text));
        else if (code === CloseCode.Restarting || code === CloseCode.TryAgainLater) fail(new NotNow(`closed: ${text}`));
        else fail(new Error(`closed: ${text}`));
      });
      socket.on('open', () => {
        socket.send(encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId: this.producerId, client: 'statecraft-js/0.1', ...(this.token === undefined ? {} : { token: this.token }) } satisfies Hello));
      });
      socket.once('message', (data: Buffer) => {
        if (data[0] !== Frame.Welcome) return fail(new ProtocolError('SC_ERR_MALFORMED_FRAME', `expected WELCOME, got frame 0x${data[0]?.toString(16)}`));
        let welcome: Welcome;
        try {
          welcome = decodeWelcome(data);
        } catch (error) {
          return fail(error as Error);
        }
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners();
        this.adopt(socket, welcome);
        resolve();
      });
    });
  }

  private adopt(socket: WebSocket, welcome: Welcome): void {
    if (this.state !== 'connecting' && this.state !== 'reconnecting') {
      // close() ran while this attempt was in flight: the client stays closed.
      socket.on('error', () => undefined);
      socket.terminate();
      return;
    }
    this.socket = socket;
    this.welcome = welcome;
    this.limits = welcome.limits;
    this.functions = new Set(welcome.functions);
    this.state = 'open';
    this.reconnectAttempts = 0;
    socket.on('message', (data: Buffer) => this.socketOnMessage(data));
    socket.on('close', (code, reason) => this.socketOnClose(socket, code, reason.toString()));
    socket.on('error', () => undefined); // 'close' follows
    if (this.heartbeatOptions !== null) {
      // terminate() emits 'close' (code 1006): the client reconnects to the next node and re-sends.
      this.heartbeat = new Heartbeat(socket, this.heartbeatOptions.intervalMs, this.heartbeatOptions.timeoutMs, () => socket.terminate());
    }

    // Re-send every event without an ACK, each with its own sequence number, rejected ones too (the
    // numbers stay consecutive). welcome.lastSeq cannot settle any of them: it covers rejected events
    // as well as accepted ones, and the REJECTED frame may have been lost with the connection. The node
    // skips what it already has, and answers again what it rejected.
    // Accepted but not committed: the node that took them may have lost them (a crash, a recovery).
    // They are older than anything in flight. A node that has them still skips them; marks in the key
    // groups drop repeats that reach other nodes.
    const unacknowledged = this.unconfirmed.drain().concat(this.inFlight.drain());
    if (unacknowledged.length > 0) this.waiting.unshiftAll(unacknowledged);
    const sameLog = this.egressLogId === welcome.egressLogId;
    this.egressLogId = welcome.egressLogId;
    for (const subscription of this.subscriptions.values()) {
      let after = subscription.startAfter;
      if (subscription.lastId !== undefined) after = sameLog ? subscription.lastId : -1;
      if (!sameLog && subscription.lastId !== undefined) subscription.lastId = undefined;
      this.sendSubscribe(subscription, after);
      if (subscription.paused) this.sendFlow(subscription, true);
    }
    this.pump();
  }

  send<T>(target: Address, value: T, type?: Type<T>): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') {
      throw new ConnectionError('SC_ERR_CLIENT_CLOSED', 'this client is closed; connect() again to send more events.');
    }
    validateAddress(target, this.limits.idBytesMax);
    // `ns/*`: a namespace the node serves remotely (any type in it).
    if (this.functions !== null && !this.functions.has(target.typename) && !this.functions.has(`${target.typename.slice(0, target.typename.indexOf('/'))}/*`)) {
      throw new UnknownFunctionTypeError(target.typename, [...this.functions]);
    }
    const typed = toTypedValue(value, type);
    checkValueSize(typed, this.limits.valueBytesMax);
    if (this.waiting.length >= this.queueMax) {
      return Promise.reject(
        new ConnectionError('SC_ERR_QUEUE_FULL', `${this.queueMax} events already wait to be sent; await send() or client.drained() before sending more.`),
      );
    }
    const keyGroup = keyGroupOf(target.id, this.welcome!.keyGroups);
    const producer = { session: this.session, seq: (this.seqByKeyGroup.get(keyGroup) ?? 0) + 1 };
    this.seqByKeyGroup.set(keyGroup, producer.seq);
    const lengthMax = invokeLengthMax(target.typename, target.id, null, null, typed, producer);
    // Events are written into a slab and kept as views of it: a typed array of its own per event
    // (over 64 bytes, V8 puts its store outside the heap) made the garbage collector the bottleneck.
    if (this.slabUsed + lengthMax > this.slab.length) {
      this.slab = new Uint8Array(Math.max(SLAB_BYTES, lengthMax));
      this.slabUsed = 0;
    }
    const start = this.slabUsed;
    const end = writeInvoke(this.slab, start, keyGroup, target.typename, target.id, null, null, typed, producer);
    const bytes = this.slab.subarray(start, end);
    this.slabUsed = (end + 7) & ~7;
    return new Promise<void>((resolve, reject) => {
      this.waiting.push(new PendingEvent(this.nextSeq++, bytes, resolve, reject));
      this.pump();
    });
  }

  /** Moves waiting events into the window and into frames. */
  private pump(): void {
    if (this.state !== 'open') return;
    while (!this.waiting.isEmpty && this.inFlight.length < this.window) {
      const event = this.waiting.shift();
      // A frame numbers its events firstSeq + index: never put a gap inside one.
      if (this.frame.length > 0 && event.seq !== this.frame[this.frame.length - 1]!.seq + 1) this.flushFrame();
      this.inFlight.push(event);
      this.frame.push(event);
      this.frameBytes += event.bytes.length + 4;
      if (this.frame.length >= FRAME_EVENTS_MAX || this.frameBytes >= FRAME_BYTES_MAX) this.flushFrame();
    }
    if (this.frame.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => {
        this.flushScheduled = false;
        this.flushFrame();
      });
    }
  }

  private flushFrame(): void {
    const events = this.frame;
    if (events.length === 0 || this.state !== 'open') return;
    this.frame = [];
    const frame = Buffer.allocUnsafe(EVENTS_HEADER_BYTES + this.frameBytes);
    this.frameBytes = 0;
    frame[0] = Frame.Events;
    frame.writeDoubleLE(events[0]!.seq, 1);
    frame.writeUInt32LE(events.length, 9);
    let cursor = EVENTS_HEADER_BYTES;
    for (const event of events) {
      frame.writeUInt32LE(event.bytes.length, cursor);
      frame.set(event.bytes, cursor + 4);
      cursor += 4 + event.bytes.length;
    }
    this.socket!.send(frame);
  }

  private socketOnMessage(data: Buffer): void {
    try {
      switch (data[0]) {
        case Frame.Ack:
          this.settleAcknowledged(decodeAck(data));
          this.pump();
          this.checkDrained();
          break;
        case Frame.Committed:
          this.settleCommitted(decodeAck(data));
          this.checkDrained();
          break;
        case Frame.Rejected: {
          for (const [seq, code, message] of decodeRejections(data)) {
            const event = this.inFlightEvent(seq);
            if (event !== undefined && !event.settled) {
              event.settled = true;
              event.reject(rejectionError(code, message));
            }
          }
          break;
        }
        case Frame.Records: {
          if (data.length < RECORDS_HEADER_BYTES) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'RECORDS frame shorter than its header');
          this.subscriptions.get(data.readUInt32LE(1))?.deliver(data, data.readDoubleLE(5), data.readUInt32LE(13), this.decoder);
          break;
        }
        case Frame.Subscribed: {
          const body = decodeControl<{ subscription: number; after: number; marks?: unknown }>(data);
          const marks = body?.marks;
          if (marks !== undefined && !(Array.isArray(marks) && marks.every((mark) => Array.isArray(mark) && mark.length === 2 && mark.every((part) => Number.isSafeInteger(part) && (part as number) >= 0)))) {
            throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'SUBSCRIBED marks must be [key group, record seq] pairs of integers >= 0');
          }
          this.subscriptions.get(body.subscription)?.started(body.after, marks as [number, number][] | undefined);
          break;
        }
        case Frame.Gap: {
          const body = decodeControl<{ subscription: number; from: number; to: number }>(data);
          this.subscriptions.get(body.subscription)?.gap(body.from, body.to);
          break;
        }
        case Frame.Refused: {
          const body = decodeControl<{ subscription?: unknown; code?: unknown; message?: unknown } | null>(data);
          if (!Number.isSafeInteger(body?.subscription) || !isErrorCode(body?.code) || typeof body?.message !== 'string') {
            throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'REFUSED needs { subscription, code, message }');
          }
          const subscription = this.subscriptions.get(body.subscription as number);
          if (subscription !== undefined) {
            this.subscriptions.delete(subscription.id);
            subscription.refused(new StatecraftError(body.code, body.message));
          }
          break;
        }
        default:
          throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `unknown frame type 0x${data[0]?.toString(16)}`);
      }
    } catch (error) {
      // A frame we cannot take ends the client (as a 4400 from the node does), with the error that says why.
      const socket = this.socket;
      this.socket = null;
      socket?.close(CloseCode.MalformedFrame, truncateUtf8(String((error as Error)?.message ?? error), CLOSE_REASON_BYTES_MAX));
      this.fail(error instanceof StatecraftError ? error : new ProtocolError('SC_ERR_MALFORMED_FRAME', String((error as Error)?.message ?? error)));
    }
  }

  /** The in-flight event with sequence number `seq`, if any (in-flight events are sorted by it). */
  private inFlightEvent(seq: number): PendingEvent | undefined {
    const inFlight = this.inFlight;
    let low = 0;
    let high = inFlight.length - 1;
    if (low > high) return undefined;
    const guess = seq - inFlight.peek()!.seq; // exact while the numbers are consecutive
    if (guess >= low && guess <= high && inFlight.at(guess)!.seq === seq) return inFlight.at(guess);
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const found = inFlight.at(middle)!.seq;
      if (found === seq) return inFlight.at(middle);
      if (found < seq) low = middle + 1;
      else high = middle - 1;
    }
    return undefined;
  }

  private settleAcknowledged(lastSeq: number): void {
    const durable = this.welcome?.durable === true;
    const inFlight = this.inFlight;
    while (!inFlight.isEmpty && inFlight.peek()!.seq <= lastSeq) {
      const event = inFlight.shift();
      // Kept until committed (re-sent after a reconnect); a rejected one is settled already.
      if (durable && !event.settled) this.unconfirmed.push(event);
      if (!event.settled && (!durable || this.confirm === 'accept')) {
        event.settled = true;
        event.resolve();
      }
    }
  }

  /** COMMITTED: events up to `seq` are covered by a committed checkpoint. */
  private settleCommitted(seq: number): void {
    const unconfirmed = this.unconfirmed;
    while (!unconfirmed.isEmpty && unconfirmed.peek()!.seq <= seq) {
      const event = unconfirmed.shift();
      if (!event.settled) {
        event.settled = true;
        event.resolve();
      }
    }
  }

  private socketOnClose(socket: WebSocket, code: number, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = null;
    this.heartbeat?.stop();
    this.heartbeat = null;
    this.frame = [];
    this.frameBytes = 0;
    if (this.state === 'closing' || this.state === 'closed') return;
    if (code === CloseCode.MalformedFrame || code === CloseCode.ProtocolVersion || code === CloseCode.Unauthorized) {
      const errorCode = code === CloseCode.ProtocolVersion ? 'SC_ERR_PROTOCOL_VERSION' : code === CloseCode.Unauthorized ? 'SC_ERR_UNAUTHORIZED' : 'SC_ERR_MALFORMED_FRAME';
      this.fail(new ProtocolError(errorCode, `the node closed the connection: ${reason}`));
      return;
    }
    if (this.reconnect === null) {
      this.fail(new ConnectionError('SC_ERR_NOT_CONNECTED', `connection to ${this.urls[this.urlIndex]} lost (${reason || `code ${code}`}) and reconnect is off.`));
      return;
    }
    this.state = 'reconnecting';
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const options = this.reconnect!;
    if (this.reconnectAttempts >= options.attemptsMax) {
      this.fail(new ConnectionError('SC_ERR_NOT_CONNECTED', `gave up reconnecting after ${this.reconnectAttempts} attempts.`));
      return;
    }
    const delay = Math.min(options.delayMaxMs, options.delayMs * 2 ** Math.min(this.reconnectAttempts, 20));
    this.reconnectAttempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.state !== 'reconnecting') return;
      this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      // A node that does not answer within the liveness timeout is as good as stopped: try the next one.
      this.attempt(Math.min(this.connectTimeoutMs, this.heartbeatOptions?.timeoutMs ?? Infinity)).catch((error: Error) => {
        if (this.state !== 'reconnecting') return;
        if (error instanceof ProtocolError) this.fail(error);
        else this.scheduleReconnect();
      });
    }, delay * (0.75 + Math.random() / 2));
  }

  /** Ends the client: every pending event rejects with `error`, subscriptions end. */
  private fail(error: Error): void {
    this.state = 'closed';
    for (const event of this.unconfirmed.drain()) if (!event.settled) event.reject(error);
    for (const event of this.inFlight.drain()) if (!event.settled) event.reject(error);
    for (const event of this.waiting.drain()) if (!event.settled) event.reject(error); // re-sends may be settled
    for (const subscription of this.subscriptions.values()) subscription.end();
    this.subscriptions.clear();
    this.checkDrained();
  }

  subscribe<T = unknown>(egress: string, options: SubscribeOptions<T> = {}): Subscription<T> {
    if (this.state === 'closing' || this.state === 'closed') {
      throw new ConnectionError('SC_ERR_CLIENT_CLOSED', 'this client is closed; connect() again to subscribe.');
    }
    validateEgressName(egress);
    const subscription = new SubscriptionImpl<T>(this.nextSubscription++, egress, this, options);
    this.subscriptions.set(subscription.id, subscription);
    if (this.state === 'open') this.sendSubscribe(subscription, subscription.startAfter);
    return subscription;
  }

  private sendSubscribe(subscription: SubscriptionImpl<any>, after: number | undefined): void {
    const body: Subscribe = { subscription: subscription.id, egress: subscription.egress };
    if (after !== undefined) body.after = after;
    this.socket?.send(encodeControl(Frame.Subscribe, body));
  }

  sendFlow(subscription: SubscriptionImpl<any>, paused: boolean): void {
    if (this.state === 'open') this.socket?.send(encodeControl(Frame.Flow, { subscription: subscription.id, paused }));
  }

  unsubscribe(subscription: SubscriptionImpl<any>): void {
    if (!this.subscriptions.delete(subscription.id)) return;
    if (this.state === 'open') this.socket?.send(encodeControl(Frame.Unsubscribe, { subscription: subscription.id }));
  }

  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private checkDrained(): void {
    if (this.pending !== 0 || this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const waiter of waiters) waiter();
  }

  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.state === 'closed') return;
    if (this.state === 'open' && this.pending > 0) {
      const timeoutMs = options.timeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.drained(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    this.state = 'closing';
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.heartbeat?.stop();
    this.heartbeat = null;
    const socket = this.socket;
    this.socket = null;
    if (socket !== null && socket.readyState === WebSocket.OPEN) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.close(CloseCode.Normal, 'client closed');
        setTimeout(() => {
          socket.terminate();
          resolve();
        }, 1000).unref();
      });
    }
    this.fail(new ConnectionError('SC_ERR_CLIENT_CLOSED', 'the client was closed before the node accepted this event.'));
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!(chosen > 0) || !Number.isSafeInteger(chosen)) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `${name} must be a positive whole number, got ${String(value)}.`);
  }
  return chosen;
}

/**
 * Connects to a node (or the first reachable of several URLs). Resolves once the node has welcomed the
 * client; rejects with `SC_ERR_CONNECT_FAILED` when none answers.
 */
export async function connect(url: string | readonly string[], options: ConnectOptions = {}): Promise<Client> {
  const urls = typeof url === 'string' ? [url] : [...url];
  if (urls.length === 0 || urls.some((entry) => typeof entry !== 'string' || !/^wss?:\/\//.test(entry))) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `connect() needs ws:// or wss:// URLs, as printed by a node's "ready" line; got ${JSON.stringify(url)}.`);
  }
  const client = new StatecraftClient(urls, options);
  await client.open();
  return client;
}
