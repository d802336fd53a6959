/**
 * One peer's link in the peer transport (peer-network.ts): the frames to that peer, numbered and kept
 * until acknowledged, and what this node applied of the peer's stream.
 *
 * Envelopes are corked into the frame being built (one copy from the caller's bytes) and sealed once per
 * turn of the event loop, or at FRAME_BYTES_MAX. A sealed frame stays until the peer acknowledges its
 * sequence number; after a reconnect, RESUME says what the peer has, and the rest is sent again. The
 * receiving side applies only the next sequence number: FIFO per pair of nodes, each frame once.
 */
import { randomUUID } from 'node:crypto';
import { WebSocket } from 'ws';
import { FifoQueue } from '../lib/fifo-queue.js';
import type { PeerHandshake } from './peer-auth.js';
import { ENVELOPES_HEADER_BYTES, PeerProtocolError, encodeAck, envelopesEpoch, envelopesSeq, readEnvelopes, writeEnvelopesHeader, type PeerHello } from './peer-protocol.js';

const FRAME_BYTES_MAX = 256 * 1024;
const FRAME_BUILD_INITIAL_BYTES = 16 * 1024;
const SOCKET_BUFFERED_MAX = 8 * 1024 * 1024;
const ACK_DELAY_MS = 10;
export const REDIAL_MIN_MS = 50;

/** What a link needs of the peer network that owns it. */
export interface LinkOwner {
  /** The recovery epoch stamped on frames sealed from now on. */
  readonly epoch: number;
  /** Per peer node: the stream last received from and the last seq applied (kept across links). */
  readonly receivedFrom: Map<string, { stream: string; seq: number }>;
  readonly options: {
    onEnvelope(bytes: Uint8Array, offset: number, length: number, fromPeer: string, epoch: number): void;
    onEnvelopesDone(): void;
  };
  /** Dials the link's peer unless a dial is under way or the link is retired. */
  ensureDialing(link: PeerLink): void;
  /** Queued bytes changed. */
  backlogChanged(): void;
}

export interface Connection {
  socket: WebSocket;
  dialedByUs: boolean;
  /** The peer's HELLO, once its PROOF checked out (null before: nothing else it sends is read). */
  peer: PeerHello | null;
  /** The peer's HELLO while its PROOF is awaited. */
  hello: PeerHello | null;
  /** This connection's handshake (peer-auth.ts). */
  handshake: PeerHandshake;
  /** Gossip for a seed waiting for the handshake to finish. */
  outbox: Uint8Array[];
  /** Where the socket comes from (for log lines about peers that are not members). */
  remote: string;
  /** Both HELLOs exchanged and the peer's RESUME applied: frames may flow. */
  resumed: boolean;
  alive: boolean;
}

export class PeerLink {
  address: string;
  connection: Connection | null = null;
  /** Envelopes not yet framed. */
  /**
   * The next frame, being built: its header is written when it is sealed, the envelopes go straight
   * in (one copy from the caller's bytes, no per-envelope allocation).
   */
  private building: Buffer | null = null;
  private buildingUsed = 0;
  private buildingCount = 0;
  private pendingBytes = 0;
  /** Frames sent (or to be sent) and not acknowledged, in seq order. */
  private readonly unacked = new FifoQueue<{ seq: number; frame: Buffer }>();
  private unackedBytes = 0;
  /** Index in `unacked` of the first frame not yet written to the current connection. */
  private unsentIndex = 0;
  private nextSeq = 1;
  /**
   * This link's outgoing stream: sequence numbers count within it. A new link (after a retire, or in a
   * new process) is a new stream, so a peer never confuses its numbers with an older stream's.
   */
  readonly streamId = randomUUID();
  /** Receiving side: the peer's stream we last received from, and its last applied seq. */
  receivedStream: string;
  received: number;
  private ackTimer: NodeJS.Timeout | null = null;
  private flushScheduled = false;
  redialTimer: NodeJS.Timeout | null = null;
  redialDelay = REDIAL_MIN_MS;
  /** The membership says the peer is gone: stop dialling. */
  retired = false;

  constructor(
    readonly network: LinkOwner,
    readonly peerId: string,
    address: string,
  ) {
    this.address = address;
    // What we applied from this peer outlives the link (a retired peer may still re-send on a new one).
    const received = network.receivedFrom.get(peerId);
    this.receivedStream = received?.stream ?? '';
    this.received = received?.seq ?? 0;
  }

  get queuedBytes(): number {
    return this.pendingBytes + this.unackedBytes;
  }

  enqueue(bytes: Uint8Array, offset: number, length: number): void {
    const needed = this.buildingUsed + 4 + length;
    if (this.building === null || needed > this.building.length) {
      const grown = Buffer.allocUnsafe(Math.max(FRAME_BUILD_INITIAL_BYTES, 2 * needed, ENVELOPES_HEADER_BYTES + 4 + length));
      if (this.building !== null) this.building.copy(grown, 0, 0, this.buildingUsed);
      else this.buildingUsed = ENVELOPES_HEADER_BYTES;
      this.building = grown;
    }
    const building = this.building;
    building.writeUInt32LE(length, this.buildingUsed);
    building.set(bytes.subarray(offset, offset + length), this.buildingUsed + 4);
    this.buildingUsed += 4 + length;
    this.buildingCount++;
    this.pendingBytes += length;
    if (this.pendingBytes >= FRAME_BYTES_MAX) this.frame();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.frame();
      });
    }
  }

  /** Seals pending envelopes into a numbered frame and sends what the socket takes. */
  frame(): void {
    this.seal();
    this.pump();
    if (this.connection === null) this.network.ensureDialing(this);
  }

  /** Turns the frame being built into a numbered frame waiting to be sent and acknowledged. */
  private seal(): void {
    if (this.building === null || this.buildingCount === 0) return;
    const frame = this.building.subarray(0, this.buildingUsed);
    writeEnvelopesHeader(frame, this.nextSeq, this.buildingCount, this.network.epoch);
    this.unacked.push({ seq: this.nextSeq++, frame });
    this.unackedBytes += frame.length;
    this.building = null;
    this.buildingUsed = 0;
    this.buildingCount = 0;
    this.pendingBytes = 0;
    this.network.backlogChanged();
  }

  /** Writes unsent frames while the socket's buffer has room. */
  pump(): void {
    const connection = this.connection;
    if (connection === null || !connection.resumed || connection.socket.readyState !== WebSocket.OPEN) return;
    while (this.unsentIndex < this.unacked.length && connection.socket.bufferedAmount < SOCKET_BUFFERED_MAX) {
      connection.socket.send(this.unacked.at(this.unsentIndex++)!.frame);
    }
    if (this.unsentIndex < this.unacked.length) setTimeout(() => this.pump(), 1);
  }

  acknowledge(seq: number): void {
    let dropped = 0;
    while (!this.unacked.isEmpty && this.unacked.peek()!.seq <= seq) {
      this.unackedBytes -= this.unacked.shift().frame.length;
      dropped++;
    }
    this.unsentIndex = Math.max(0, this.unsentIndex - dropped);
    if (dropped > 0) this.network.backlogChanged();
  }

  /**
   * The peer told us what it has of our stream: forget that, and send the rest again from the start.
   * A peer that does not know our stream (it restarted, or this link is new) has none of it: our
   * unacknowledged frames are numbered again from 1, as the start of the stream it now knows.
   */
  resume(knowsOurStream: boolean, received: number): void {
    this.unsentIndex = 0;
    if (knowsOurStream) this.acknowledge(received);
    else {
      let seq = 1;
      for (const entry of this.unacked) {
        entry.seq = seq++;
        entry.frame.writeDoubleLE(entry.seq, 1);
      }
      this.nextSeq = seq;
    }
    this.unsentIndex = 0;
    this.connection!.resumed = true;
    this.redialDelay = REDIAL_MIN_MS;
    this.pump();
  }

  /** Applies an ENVELOPES frame if it is the next one; acknowledges soon after. */
  applyEnvelopes(frame: Buffer): void {
    const seq = envelopesSeq(frame);
    if (seq <= this.received) return; // re-sent after a reconnect: applied already
    if (seq !== this.received + 1) throw new PeerProtocolError(`ENVELOPES seq ${seq} after ${this.received}: frames were skipped`);
    const epoch = envelopesEpoch(frame);
    readEnvelopes(frame, (bytes, offset, length) => this.network.options.onEnvelope(bytes, offset, length, this.peerId, epoch));
    this.received = seq;
    this.network.receivedFrom.set(this.peerId, { stream: this.receivedStream, seq });
    this.network.options.onEnvelopesDone();
    if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        const connection = this.connection;
        if (connection?.resumed && connection.socket.readyState === WebSocket.OPEN) connection.socket.send(encodeAck(this.received));
      }, ACK_DELAY_MS);
    }
  }

  acknowledgeNow(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const connection = this.connection;
    if (connection?.resumed && connection.socket.readyState === WebSocket.OPEN && this.received > 0) connection.socket.send(encodeAck(this.received));
  }

  /** Everything not yet acknowledged, as envelopes, and forgets it (the peer is gone for good). */
  takeUndelivered(): Uint8Array[] {
    this.seal();
    const envelopes: Uint8Array[] = [];
    for (const { frame } of this.unacked.drain()) readEnvelopes(frame, (bytes, offset, length) => envelopes.push(bytes.subarray(offset, offset + length)));
    this.unackedBytes = 0;
    this.unsentIndex = 0;
    return envelopes;
  }

  /** A recovery: envelopes queued and not yet framed belong to the old epoch and are dropped. */
  dropUnframed(): void {
    this.building = null;
    this.buildingUsed = 0;
    this.buildingCount = 0;
    this.pendingBytes = 0;
  }

  /** A new connection replaces the current one: an ACK planned for the old one is not sent. */
  connectionSwitched(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  connectionLost(connection: Connection): void {
    if (this.connection !== connection) return;
    this.connection = null;
    this.unsentIndex = 0;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.network.ensureDialing(this);
  }

  stop(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.redialTimer) clearTimeout(this.redialTimer);
    this.ackTimer = this.redialTimer = null;
  }
}
