/**
 * The client gateway: WebSocket connections from clients, on the main thread.
 *
 * An events frame is checked as a whole first (a malformed one closes the connection and admits
 * nothing), then each event is validated on its own: a bad one is answered with a rejection for its
 * sequence number, the others are admitted. Admitting an event means writing its envelope bytes, key
 * group filled in, to the ring of the shard that owns it; nothing is decoded twice or re-encoded.
 * While the node is over its admission limits (full rings, long shard queues) the gateway stops
 * reading from client sockets, so TCP and the clients' in-flight windows push back; no frame that was
 * read is ever dropped.
 *
 * A client re-sends, after a reconnect, every event it has no answer for, with its original sequence
 * number, including events this node already took (its REJECTED and ACK frames may have been lost with
 * the connection). Such an event is not admitted again; validation is deterministic, so if it fails
 * validation now it was rejected then, and the rejection is sent again.
 *
 * No client input may take the node down: an error that is not a protocol error closes that one
 * connection with 1011 and is logged.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { isTypename } from '../../lib/address.js';
import {
  CloseCode,
  EVENTS_HEADER_BYTES,
  Frame,
  PROTOCOL_VERSION,
  decodeControl,
  encodeAck,
  encodeControl,
  type Hello,
  type Limits,
  type Subscribe,
  type Welcome,
} from '../../lib/client-protocol.js';
import { ProtocolError, ValidationError, type ErrorCode } from '../../lib/errors.js';
import { EnvelopeDecoder, writeKeyGroup } from '../../lib/envelope.js';
import { truncateUtf8 } from '../../lib/utf8.js';
import { keyGroupOf } from '../../lib/key-group.js';
import type { Message } from '../../lib/message.js';
import { validateEgressName } from '../../lib/address.js';
import type { EgressHub, EgressSink } from './egress-hub.js';
import type { ClientTokens, Grant } from './client-tokens.js';
import { setMaxPayload } from '../../lib/ws-payload.js';
import { refuseUpgrade } from '../../lib/upgrade-refusal.js';

export interface GatewayHost {
  readonly nodeId: string;
  readonly egressLogId: string;
  readonly keyGroups: number;
  readonly limits: Limits;
  readonly functions: { has(typename: string): boolean; [Symbol.iterator](): Iterator<string> };
  readonly egress: EgressHub;
  /** Client tokens (--client-tokens-file), or null: every client is taken. */
  readonly tokens: ClientTokens | null;
  /** True while the node admits client events. */
  admits(): boolean;
  /** Writes an event's envelope (key group already set) to the shard that owns `keyGroup`. */
  admit(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void;
  /** Publishes what `admit` wrote. */
  flush(): void;
  /** Checkpoints on: events are confirmed once committed (COMMITTED frames). */
  readonly durable: boolean;
  /** Counts events for /metrics. */
  countEvents(accepted: number, rejected: number): void;
  /**
   * Counts a refusal: a client without a valid token ('token'), a request outside its token's scopes
   * ('scope'), a connection or subscription past a limit ('limit').
   */
  countRefusal(kind: 'token' | 'scope' | 'limit'): void;
  /** Client connections taken at most at once. */
  readonly connectionsMax: number;
  log(line: string): void;
}

const HELLO_TIMEOUT_MS = 10_000;
const PING_INTERVAL_MS = 30_000;
const SUBSCRIBER_BUFFERED_BYTES_MAX = 4 * 1024 * 1024;
const PRODUCERS_REMEMBERED_MAX = 100_000;
const PRODUCER_ID_LENGTH_MAX = 128;
const ADMISSION_RECHECK_MS = 1;
/** Longest WebSocket close reason: a close frame's payload is at most 125 bytes, 2 of them the code. */
const CLOSE_REASON_BYTES_MAX = 123;
const SUBSCRIPTION_ID_MAX = 0xffff_ffff; // RECORDS frames carry it as a u32
/** Until its HELLO is taken a client's frames are small (a HELLO is a few hundred bytes). */
export const HELLO_PAYLOAD_MAX = 4 * 1024;
/** Subscriptions one connection may hold; more are refused (each costs the node a cursor and buffers). */
export const SUBSCRIPTIONS_PER_CONNECTION_MAX = 1_000;
/** Client connections a node takes by default (--client-connections-max). */
export const CLIENT_CONNECTIONS_MAX_DEFAULT = 10_000;

type Rejection = [number, ErrorCode, string];

class ClientConnection implements EgressSink {
  producerId: string | null = null;
  /** What this client's token allows (null: no tokens on this node, everything). */
  private grant: Grant | null = null;
  /** The subscription ids this connection holds. */
  private readonly subscriptions = new Set<number>();
  private abandoned = false;
  private blockedFrames: Buffer[] = [];
  private alive = true;
  private readonly helloTimer: NodeJS.Timeout;

  constructor(
    readonly socket: WebSocket,
    private readonly gateway: Gateway,
  ) {
    this.helloTimer = setTimeout(() => this.close(CloseCode.MalformedFrame, 'no HELLO frame within 10 s'), HELLO_TIMEOUT_MS);
    this.helloTimer.unref();
    socket.on('message', (data, isBinary) => this.socketOnMessage(data, isBinary));
    socket.on('pong', () => (this.alive = true));
    socket.on('close', () => this.socketOnClose());
    socket.on('error', () => undefined); // 'close' follows; nothing to add
  }

  get blocked(): boolean {
    return this.blockedFrames.length > 0;
  }

  confirmCommitted(seq: number): void {
    this.send(encodeAck(seq, Frame.Committed));
  }

  /** Closes the connection and ignores whatever it still has or sends: nothing more of it is admitted. */
  abandon(code: number, reason: string): void {
    this.abandoned = true;
    this.blockedFrames = [];
    // A paused socket would never read the client's close reply: the close would hang for 30 s.
    this.socket.resume();
    this.close(code, reason);
    setTimeout(() => this.socket.terminate(), 1000).unref();
  }

  private socketOnMessage(data: RawData, isBinary: boolean): void {
    if (this.abandoned) return;
    if (!isBinary || !Buffer.isBuffer(data)) {
      this.close(CloseCode.MalformedFrame, 'frames must be binary');
      return;
    }
    if (this.blockedFrames.length > 0 || (data[0] === Frame.Events && !this.gateway.host.admits())) {
      this.blockedFrames.push(data);
      this.socket.pause();
      this.gateway.watchAdmission(this);
      return;
    }
    this.handle(data);
  }

  /** Handles frames held back while admission was closed; returns true when all are done. */
  retryBlocked(): boolean {
    while (this.blockedFrames.length > 0) {
      const frame = this.blockedFrames[0]!;
      if (frame[0] === Frame.Events && !this.gateway.host.admits()) return false;
      this.blockedFrames.shift();
      this.handle(frame);
    }
    if (this.socket.readyState === this.socket.OPEN) this.socket.resume();
    return true;
  }

  private handle(data: Buffer): void {
    try {
      if (data.length === 0) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'empty frame');
      const frame = data[0];
      if (this.producerId === null && frame !== Frame.Hello) {
        throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'the first frame must be HELLO');
      }
      switch (frame) {
        case Frame.Hello:
          this.onHello(decodeControl<Hello>(data));
          break;
        case Frame.Events:
          this.onEvents(data);
          break;
        case Frame.Subscribe: {
          const body = decodeControl<Subscribe>(data);
          const subscription = body?.subscription;
          if (!Number.isSafeInteger(subscription) || subscription < 0 || subscription > SUBSCRIPTION_ID_MAX) {
            throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `SUBSCRIBE needs a subscription id from 0 to ${SUBSCRIPTION_ID_MAX}, got ${String(subscription)}`);
          }
          if (body.after !== undefined && body.after !== null && !Number.isSafeInteger(body.after)) {
            throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'SUBSCRIBE after must be an integer');
          }
          try {
            validateEgressName(body.egress);
          } catch (error) {
            throw new ProtocolError('SC_ERR_MALFORMED_FRAME', (error as Error).message);
          }
          if (!this.subscriptions.has(body.subscription) && this.subscriptions.size >= SUBSCRIPTIONS_PER_CONNECTION_MAX) {
            this.gateway.host.countRefusal('limit');
            this.send(encodeControl(Frame.Refused, { subscription: body.subscription, code: 'SC_ERR_LIMIT_REACHED', message: `this connection holds ${SUBSCRIPTIONS_PER_CONNECTION_MAX} subscriptions, the most a node takes on one connection: close some first, or subscribe through another client` }));
            break;
          }
          if (this.grant !== null && !this.grant.maySubscribe(body.egress)) {
            this.gateway.host.countRefusal('scope');
            this.send(encodeControl(Frame.Refused, { subscription: body.subscription, code: 'SC_ERR_UNAUTHORIZED', message: `this client's token may not subscribe to "${body.egress}" (it may: ${this.grant.scopes})` }));
            break;
          }
          const latest = body.after === undefined || body.after === null;
          const after = this.gateway.host.egress.subscribe(this, body.subscription, body.egress, body.after ?? undefined);
          this.subscriptions.add(body.subscription);
          // From 'latest': where the log stands in stable ids too, so that after failing over to another
          // node (another log) the client drops what was produced before it subscribed.
          this.send(encodeControl(Frame.Subscribed, latest ? { subscription: body.subscription, after, marks: this.gateway.host.egress.marks(body.egress) } : { subscription: body.subscription, after }));
          this.gateway.pumpEgress();
          break;
        }
        case Frame.Unsubscribe: {
          const body = decodeControl<{ subscription: number }>(data);
          this.gateway.host.egress.unsubscribe(this, body?.subscription);
          this.subscriptions.delete(body?.subscription);
          break;
        }
        case Frame.Flow: {
          const body = decodeControl<{ subscription: number; paused: boolean }>(data);
          this.gateway.host.egress.setPaused(this, body?.subscription, body?.paused === true);
          if (body?.paused !== true) this.gateway.pumpEgress();
          break;
        }
        default:
          throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `unknown frame type 0x${frame!.toString(16)}`);
      }
    } catch (error) {
      if (error instanceof ProtocolError) {
        this.gateway.host.log(`gateway: closing a client connection: ${error.message}`);
        this.close(error.code === 'SC_ERR_PROTOCOL_VERSION' ? CloseCode.ProtocolVersion : error.code === 'SC_ERR_UNAUTHORIZED' ? CloseCode.Unauthorized : CloseCode.MalformedFrame, error.message);
        return;
      }
      // A bug of ours that this input reached: it costs this connection, never the node.
      const text = describeError(error);
      this.gateway.host.log(`gateway: closing a client connection after an internal error (please report it): ${text}`);
      this.close(CloseCode.InternalError, `internal error: ${text}`);
    }
  }

  private onHello(hello: Hello): void {
    if (this.producerId !== null) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'HELLO sent twice');
    if (hello?.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        'SC_ERR_PROTOCOL_VERSION',
        `client protocol version ${String(hello?.version)} is not supported; this node speaks version ${PROTOCOL_VERSION}: upgrade the client or the node`,
      );
    }
    if (typeof hello.producerId !== 'string' || hello.producerId.length === 0 || hello.producerId.length > PRODUCER_ID_LENGTH_MAX) {
      throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `producerId must be a string of 1-${PRODUCER_ID_LENGTH_MAX} characters`);
    }
    const tokens = this.gateway.host.tokens;
    if (tokens !== null) {
      this.grant = tokens.grant(hello.token);
      if (this.grant === null) {
        this.gateway.host.countRefusal('token');
        throw new ProtocolError('SC_ERR_UNAUTHORIZED', hello.token === undefined ? 'this node takes only clients with a token: connect(url, { token })' : 'this client token is not one this node takes');
      }
    }
    clearTimeout(this.helloTimer);
    this.producerId = hello.producerId;
    setMaxPayload(this.socket, this.gateway.host.limits.frameBytesMax);
    const host = this.gateway.host;
    const welcome: Welcome = {
      version: PROTOCOL_VERSION,
      nodeId: host.nodeId,
      egressLogId: host.egressLogId,
      lastSeq: this.gateway.lastSeq(hello.producerId),
      keyGroups: host.keyGroups,
      limits: host.limits,
      functions: [...host.functions],
      durable: host.durable,
    };
    this.send(encodeControl(Frame.Welcome, welcome));
  }

  private onEvents(data: Buffer): void {
    if (data.length < EVENTS_HEADER_BYTES) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', 'EVENTS frame shorter than its header');
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const firstSeq = view.getFloat64(1, true);
    const count = view.getUint32(9, true);
    if (!Number.isSafeInteger(firstSeq) || firstSeq < 1) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `EVENTS firstSeq ${firstSeq} is not a positive integer`);
    // Past 2^53 - 1 seqs round onto each other: an event could be taken for a re-send and dropped, yet acknowledged.
    // Compared without adding: firstSeq + count rounds above 2^53, and 2^53 - 1 + 2 - 1 would pass.
    if (count - 1 > Number.MAX_SAFE_INTEGER - firstSeq) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `EVENTS seqs ${firstSeq}..+${count} run past 2^53 - 1`);
    // Every event takes at least its 4-byte length: a larger count is a lie (and would size the arrays below).
    if (count > (data.length - EVENTS_HEADER_BYTES) / 4) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `EVENTS frame of ${data.length} bytes cannot hold ${count} events`);
    const gateway = this.gateway;
    const host = gateway.host;
    const decoder = gateway.decoder;
    // Pass 1: the frame's structure, all of it, before admitting anything.
    const offsets: number[] = new Array(count);
    const lengths: number[] = new Array(count);
    const messages: (Message | ValidationError)[] = new Array(count);
    const valueLengths: number[] = new Array(count);
    let cursor = EVENTS_HEADER_BYTES;
    for (let index = 0; index < count; index++) {
      if (cursor + 4 > data.length) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `EVENTS frame ends before event ${index} of ${count}`);
      const length = view.getUint32(cursor, true);
      cursor += 4;
      if (cursor + length > data.length) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `event ${index} runs past the end of its frame`);
      offsets[index] = cursor;
      lengths[index] = length;
      try {
        messages[index] = decoder.decodeInvoke(data, cursor, length);
        valueLengths[index] = decoder.lastValueLength;
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error; // ProtocolError: malformed frame
        messages[index] = error;
      }
      cursor += length;
    }
    if (cursor !== data.length) throw new ProtocolError('SC_ERR_MALFORMED_FRAME', `EVENTS frame has ${data.length - cursor} bytes after its last event`);

    // Pass 2: each event on its own.
    const producerId = this.producerId!;
    let lastSeq = gateway.lastSeq(producerId);
    const rejections: Rejection[] = [];
    let accepted = 0;
    let rejected = 0;
    for (let index = 0; index < count; index++) {
      const seq = firstSeq + index;
      const message = messages[index]!;
      const rejection = message instanceof ValidationError ? message : this.validate(message, valueLengths[index]!);
      if (seq <= lastSeq) {
        // A re-send of an event this node already has: admitted then if it is valid now, else rejected
        // then, and the client may not have seen that rejection: answer it again (not counted again).
        if (rejection !== null) rejections.push([seq, rejection.code, rejection.message]);
        continue;
      }
      if (rejection !== null) {
        rejections.push([seq, rejection.code, rejection.message]);
        rejected++;
        if (rejection.code === 'SC_ERR_UNAUTHORIZED') host.countRefusal('scope');
      } else {
        const keyGroup = keyGroupOf((message as Message).targetId, host.keyGroups);
        writeKeyGroup(data, offsets[index]!, keyGroup);
        host.admit(data, offsets[index]!, lengths[index]!, keyGroup);
        accepted++;
      }
      lastSeq = seq;
    }
    gateway.setLastSeq(producerId, lastSeq);
    host.countEvents(accepted, rejected);
    if (rejections.length > 0) this.send(encodeControl(Frame.Rejected, { rejections }));
    this.send(encodeAck(Math.max(lastSeq, firstSeq + count - 1)));
    // Publish after answering: the events are already in the rings (accepted), and waking a parked
    // shard can cost this thread its core for a while on a busy machine; the client need not wait for that.
    host.flush();
  }

  private validate(message: Message, valueLength: number): ValidationError | null {
    const host = this.gateway.host;
    if (message.callerTypename !== null) {
      return new ValidationError('SC_ERR_INVALID_VALUE', 'client events cannot name a caller; send them without one');
    }
    if (!isTypename(message.targetTypename)) {
      return new ValidationError('SC_ERR_INVALID_TYPENAME', `target typename ${JSON.stringify(message.targetTypename)} is not of the form namespace/name`);
    }
    if (!host.functions.has(message.targetTypename)) {
      return new ValidationError(
        'SC_ERR_UNKNOWN_FUNCTION_TYPE',
        `no function of type ${message.targetTypename} is loaded on this node (loaded: ${[...host.functions].join(', ') || 'none'}); check the typename or start the node with --functions <module> that defines it`,
      );
    }
    // After the type check: the grant remembers its answer per type, and only loaded types get here.
    if (this.grant !== null && !this.grant.maySend(message.targetTypename)) {
      return new ValidationError('SC_ERR_UNAUTHORIZED', `this client's token may not send to ${message.targetTypename} (it may: ${this.grant.scopes})`);
    }
    const id = message.targetId;
    if (id.length === 0 || Buffer.byteLength(id) > host.limits.idBytesMax) {
      return new ValidationError('SC_ERR_INVALID_ID', `address id must be 1-${host.limits.idBytesMax} bytes`);
    }
    if (valueLength > host.limits.valueBytesMax) {
      return new ValidationError('SC_ERR_VALUE_TOO_LARGE', `value of ${valueLength} bytes exceeds the node's limit of ${host.limits.valueBytesMax} bytes`);
    }
    return null;
  }

  writable(): boolean {
    return this.socket.readyState === this.socket.OPEN && this.socket.bufferedAmount < SUBSCRIBER_BUFFERED_BYTES_MAX;
  }

  sendRecords(frame: Uint8Array): void {
    this.send(frame);
  }

  sendGap(subscription: number, from: number, to: number): void {
    this.send(encodeControl(Frame.Gap, { subscription, from, to }));
  }

  /** Pings; terminates a connection that did not answer the previous ping. */
  heartbeat(): void {
    if (!this.alive) {
      this.socket.terminate();
      return;
    }
    this.alive = false;
    this.socket.ping();
  }

  close(code: number, reason: string): void {
    try {
      this.socket.close(code, truncateUtf8(reason, CLOSE_REASON_BYTES_MAX));
    } catch {
      this.socket.terminate(); // never expected; the connection must end either way
    }
  }

  private send(bytes: Uint8Array): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(bytes);
  }

  private socketOnClose(): void {
    clearTimeout(this.helloTimer);
    this.blockedFrames = [];
    this.gateway.forget(this);
  }
}

export class Gateway {
  readonly decoder = new EnvelopeDecoder();
  private readonly server: WebSocketServer;
  private readonly connections = new Set<ClientConnection>();
  private readonly blocked = new Set<ClientConnection>();
  private readonly producers = new Map<string, number>();
  /** Producers whose last seq moved since the last checkpoint mark. */
  private readonly touched = new Set<string>();
  /** Per checkpoint begun and not yet decided: each producer's last seq at its cut. */
  private readonly marks = new Map<number, Map<string, number>>();
  private admissionTimer: NodeJS.Timeout | null = null;
  private readonly pingTimer: NodeJS.Timeout;

  constructor(
    readonly host: GatewayHost,
    private readonly onEgressDemand: () => void,
  ) {
    this.server = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: host.limits.frameBytesMax });
    this.pingTimer = setInterval(() => {
      for (const connection of this.connections) connection.heartbeat();
    }, PING_INTERVAL_MS);
    this.pingTimer.unref();
  }

  /** Takes over an HTTP upgrade request. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.connections.size >= this.host.connectionsMax) {
      // Before the upgrade: a flood costs a short HTTP answer per connection. The client tries another node.
      this.host.countRefusal('limit');
      refuseUpgrade(socket, 503, { error: `this node has ${this.connections.size} client connections, its most (--client-connections-max): try another node`, nodeId: this.host.nodeId });
      return;
    }
    this.server.handleUpgrade(request, socket, head, (ws) => {
      // Small frames only until its HELLO is taken.
      setMaxPayload(ws, HELLO_PAYLOAD_MAX);
      this.connections.add(new ClientConnection(ws, this));
    });
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  lastSeq(producerId: string): number {
    return this.producers.get(producerId) ?? 0;
  }

  setLastSeq(producerId: string, seq: number): void {
    // Re-insert so the Map's order is least recently used first, and forget the oldest beyond the bound.
    this.producers.delete(producerId);
    this.producers.set(producerId, seq);
    if (this.host.durable) this.touched.add(producerId);
    if (this.producers.size > PRODUCERS_REMEMBERED_MAX) {
      this.producers.delete(this.producers.keys().next().value!);
    }
  }

  /** Checkpoint c's cut on this node: the events accepted so far belong to c (or an earlier one). */
  markCheckpoint(checkpoint: number): void {
    if (this.touched.size === 0) return;
    const mark = new Map<string, number>();
    for (const producerId of this.touched) mark.set(producerId, this.producers.get(producerId) ?? 0);
    this.touched.clear();
    this.marks.set(checkpoint, mark);
  }

  /**
   * Checkpoint c committed (every one before it is decided too): tells each producer's connections how far
   * its events are durable. A failed checkpoint's events wait for the next commit, which covers them.
   */
  checkpointCommitted(checkpoint: number): void {
    const durable = new Map<string, number>();
    for (const [number, mark] of this.marks) {
      if (number > checkpoint) continue;
      for (const [producerId, seq] of mark) durable.set(producerId, Math.max(durable.get(producerId) ?? 0, seq));
      this.marks.delete(number);
    }
    if (durable.size === 0) return;
    for (const connection of this.connections) {
      const seq = connection.producerId === null ? undefined : durable.get(connection.producerId);
      if (seq !== undefined) connection.confirmCommitted(seq);
    }
  }

  /**
   * Closes every client connection with `reason` (code 1013, try again later), keeping what the node
   * knows of its producers: the node lost its majority, and clients go to another node meanwhile.
   */
  closeClients(reason: string): void {
    for (const connection of [...this.connections]) {
      this.blocked.delete(connection);
      connection.abandon(CloseCode.TryAgainLater, reason);
    }
  }

  /**
   * A recovery rolled the node back: what it accepted since the last commit is gone, so it forgets which
   * events it has seen and closes every connection; clients reconnect and re-send what was not committed.
   */
  async rollBack(reason: string): Promise<void> {
    this.producers.clear();
    this.touched.clear();
    this.marks.clear();
    for (const connection of [...this.connections]) {
      this.blocked.delete(connection);
      connection.abandon(CloseCode.Restarting, reason);
    }
  }

  pumpEgress(): void {
    this.onEgressDemand();
  }

  watchAdmission(connection: ClientConnection): void {
    this.blocked.add(connection);
    if (this.admissionTimer !== null) return;
    const recheck = () => {
      this.admissionTimer = null;
      for (const waiting of this.blocked) {
        if (waiting.retryBlocked()) this.blocked.delete(waiting);
        else break; // still closed: keep the rest in order
      }
      if (this.blocked.size > 0) this.admissionTimer = setTimeout(recheck, ADMISSION_RECHECK_MS);
    };
    this.admissionTimer = setTimeout(recheck, ADMISSION_RECHECK_MS);
  }

  forget(connection: ClientConnection): void {
    this.connections.delete(connection);
    this.blocked.delete(connection);
    this.host.egress.removeSink(connection);
  }

  /** Closes every connection with `code` (1001 when the node shuts down) and stops accepting. */
  async close(code: number, reason: string): Promise<void> {
    clearInterval(this.pingTimer);
    if (this.admissionTimer !== null) clearTimeout(this.admissionTimer);
    const closed = [...this.connections].map(
      (connection) =>
        new Promise<void>((resolve) => {
          if (connection.socket.readyState === connection.socket.CLOSED) return resolve();
          connection.socket.once('close', () => resolve());
          connection.close(code, reason);
          setTimeout(() => {
            connection.socket.terminate();
            resolve();
          }, 2000).unref();
        }),
    );
    await Promise.all(closed);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** An error's text for a log line, whatever was thrown. */
function describeError(error: unknown): string {
  try {
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  } catch {
    return 'an error that cannot be turned into text';
  }
}
