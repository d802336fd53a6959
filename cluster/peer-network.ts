/**
 * The peer transport: one WebSocket per pair of nodes, carrying membership gossip and batches of
 * envelopes (see peer-protocol.ts for the frames; each peer's numbered frames live in its PeerLink,
 * peer-link.ts).
 *
 * Envelopes to a peer are queued on its link, corked and sent as one frame per turn of the event loop
 * (or sooner, at FRAME_BYTES_MAX). Every frame has a sequence number and stays in the link until the
 * peer acknowledges it, so a connection that breaks loses nothing: the next connection (either side
 * may dial) starts with RESUME, and the sender re-sends what the receiver did not apply. The receiver
 * applies only the next sequence number: FIFO per pair of nodes, and each frame once.
 *
 * Before anything else, the two nodes prove to each other that they hold the cluster secret (HELLO with
 * a fresh nonce, then PROOF: peer-auth.ts); a connection that does not is closed, having had nothing
 * it sent read but its HELLO.
 *
 * When both nodes dial each other at once, the connection dialled by the node with the smaller id wins.
 * Gossip is not queued: it is sent when a connection is open, else dropped (the membership protocol
 * expects loss). Links to members that are dead or left are closed; their unsent envelopes are handed
 * back to be routed again by the current placement.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { randomBytes, randomUUID } from 'node:crypto';
import { truncateUtf8 } from '../lib/utf8.js';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  ENVELOPES_HEADER_BYTES,
  PEER_PATH,
  PEER_PROTOCOL_VERSION,
  PeerClose,
  PeerFrame,
  PeerProtocolError,
  decodeAck,
  decodeControl,
  decodeProof,
  encodeControl,
  encodeProof,
  validateHello,
  type PeerHello,
  type PeerResume,
} from './peer-protocol.js';
import { PeerLink, type Connection } from './peer-link.js';
import { NONCE_BYTES, PeerHandshake, authKey } from './peer-auth.js';
import { setMaxPayload } from '../lib/ws-payload.js';
import { refuseUpgrade } from '../lib/upgrade-refusal.js';

const HEARTBEAT_MS = 2_000;
const HELLO_TIMEOUT_MS = 5_000;
const REDIAL_MAX_MS = 2_000;
const PAYLOAD_MAX = 64 * 1024 * 1024;
/** Until the peer has proved the cluster secret: its HELLO and PROOF are a few hundred bytes. */
export const HANDSHAKE_PAYLOAD_MAX = 4 * 1024;
/** Peer connections whose handshake is under way at once; more are refused (503) before the WebSocket upgrade. */
export const HANDSHAKES_MAX = 64;
/** Gossip frames kept for a seed while its handshake runs (membership re-sends; these are only the first). */
const OUTBOX_MAX = 16;

/** TLS between nodes: the CA their server certificates are checked against; with mutual TLS, this node's client certificate and key, and peers must present one. */
export interface PeerTls {
  ca?: Uint8Array;
  cert?: Uint8Array;
  key?: Uint8Array;
  /** Refuse a peer connection whose client certificate the node's port did not verify (against --peer-tls-ca). */
  requireClientCert?: boolean;
}

export interface PeerNetworkOptions {
  selfId: string;
  /** host:port that peers dial to reach this node. */
  selfAddress: string;
  keyGroups: number;
  valueBytesMax: number;
  /** The cluster secret (cluster-secret.ts): peers prove they hold it before anything they send is read. */
  secret: Uint8Array;
  /**
   * The nodes' ports speak TLS: peers are dialled with wss://, their certificates checked against `ca`
   * (PEM; the system's CAs when absent).
   */
  tls?: PeerTls | null;
  /** An envelope from a peer (bytes valid during the call only). */
  onEnvelope(bytes: Uint8Array, offset: number, length: number, fromPeer: string, epoch: number): void;
  /** A peer's HELLO: its process instance (new after a restart) and recovery epoch. */
  onPeerHello?(peerId: string, instance: string, epoch: number): void;
  /** Called after a batch of `onEnvelope` calls. */
  onEnvelopesDone(): void;
  /** A gossip message from a peer. */
  onGossip(fromAddress: string, message: unknown): void;
  /**
   * A node this node dialled refused it (protocol version, key groups or cluster secret differ), or could
   * not prove the cluster secret: while joining, this node cannot be part of the cluster.
   */
  onRefused(reason: string): void;
  /** Queued bytes changed materially (admission control watches them). */
  onBacklogChanged(): void;
  log(line: string): void;
}

export class PeerNetwork {
  readonly instance = randomUUID();
  /** The recovery epoch stamped on frames sealed from now on. */
  epoch = 0;
  private readonly server = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: PAYLOAD_MAX });
  private readonly links = new Map<string, PeerLink>();
  /** Per peer node: the stream we last received from and the last seq applied (kept across links). */
  readonly receivedFrom = new Map<string, { stream: string; seq: number }>();
  /** Connections not yet identified by a HELLO (dialled seeds, accepted sockets). */
  private readonly anonymous = new Set<Connection>();
  /** Seed dials by address, until their HELLO names them. */
  private readonly seedDials = new Map<string, Connection>();
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;
  private lastReportedBacklog = 0;
  /** Peers whose HELLO we refused, with the reason (shown in /cluster). */
  readonly refusals: string[] = [];
  /** Connections closed because the peer did not prove the cluster secret. */
  authFailures = 0;
  /** Peer connections refused before their upgrade: too many handshakes under way. */
  handshakesRefused = 0;
  /** Connections whose peer's proof failed here (their close is not reported again). */
  private readonly failedProofs = new WeakSet<Connection>();
  private readonly key: Buffer;

  constructor(readonly options: PeerNetworkOptions) {
    this.key = authKey(options.secret);
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Enters a recovery epoch: what was queued and not yet framed is dropped (frames already numbered keep their old epoch). */
  setEpoch(epoch: number): void {
    this.epoch = epoch;
    for (const link of this.links.values()) link.dropUnframed();
  }

  /** Bytes queued for peers and not yet acknowledged. */
  get queuedBytes(): number {
    let total = 0;
    for (const link of this.links.values()) total += link.queuedBytes;
    return total;
  }

  /** Takes an upgrade on the peer path. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if (this.closed || (request.url ?? '').split('?')[0] !== PEER_PATH) return false;
    if (this.options.tls?.requireClientCert === true && (request.socket as TLSSocket).authorized !== true) {
      // Mutual TLS: a peer connection without a certificate of the peers' CA goes no further than this.
      this.authFailures++;
      const why = (request.socket as TLSSocket).authorizationError ?? 'no client certificate';
      this.noteRefusal(`a peer connection from ${request.socket.remoteAddress ?? '?'}: no certificate of the peers' CA (${String(why)})`);
      if (this.authFailures === 1 || this.authFailures % 1000 === 0) this.options.log(`peer: refused a connection from ${request.socket.remoteAddress ?? '?'}: no certificate of the peers' CA (${String(why)})`);
      refuseUpgrade(socket, 403, 'a peer must present a certificate of the cluster\'s peer CA (--peer-tls-ca)\n');
      return true;
    }
    if (this.anonymous.size >= HANDSHAKES_MAX) {
      // Before any WebSocket: a flood of unauthenticated connections costs a short HTTP answer each.
      this.handshakesRefused++;
      if (this.handshakesRefused === 1 || this.handshakesRefused % 1000 === 0) {
        this.options.log(`peer: refused a connection from ${request.socket.remoteAddress ?? '?'}: ${HANDSHAKES_MAX} peer handshakes are under way (${this.handshakesRefused} refused so far)`);
      }
      refuseUpgrade(socket, 503, 'too many peer handshakes under way: try again\n');
      return true;
    }
    this.server.handleUpgrade(request, socket, head, (ws) => this.adopt(ws, false, `${request.socket.remoteAddress ?? '?'}:${request.socket.remotePort ?? '?'}`));
    return true;
  }

  /** Queues an envelope for a peer (by node id, reachable at address). */
  send(peerId: string, address: string, bytes: Uint8Array, offset: number, length: number): void {
    this.link(peerId, address).enqueue(bytes, offset, length);
  }

  /** Sends a gossip message to an address if a connection to it is open; dials it otherwise. */
  gossip(address: string, message: unknown): void {
    if (this.closed) return;
    const frame = encodeControl(PeerFrame.Gossip, message);
    for (const link of this.links.values()) {
      if (link.address !== address) continue;
      const connection = link.connection;
      if (connection?.peer && connection.socket.readyState === WebSocket.OPEN) connection.socket.send(frame);
      else this.ensureDialing(link);
      return;
    }
    // Not a known peer yet (a seed): dial the address and send once it answers.
    let dial = this.seedDials.get(address);
    if (dial === undefined) {
      const dialled = this.dial(address);
      if (dialled === null) return;
      dial = dialled;
      this.seedDials.set(address, dial);
    }
    // Sent once the seed has proved the cluster secret (and this node has).
    if (dial.socket.readyState === WebSocket.OPEN && dial.peer) dial.socket.send(frame);
    else if (dial.outbox.length < OUTBOX_MAX) dial.outbox.push(frame);
  }

  /** The membership names a peer's address (it may change across restarts). */
  learnAddress(peerId: string, address: string): void {
    const link = this.links.get(peerId);
    if (link) link.address = address;
  }

  /** The peer is dead or left: close its link and return its undelivered envelopes for re-routing. */
  retire(peerId: string): Uint8Array[] {
    const link = this.links.get(peerId);
    if (link === undefined) return [];
    link.retired = true;
    link.stop();
    this.links.delete(peerId);
    link.connection?.socket.close(PeerClose.GoingAway, 'declared dead or left');
    const undelivered = link.takeUndelivered();
    this.backlogChanged();
    return undelivered;
  }

  /** A retired peer came back (a new incarnation): talk to it again. */
  revive(peerId: string): void {
    const link = this.links.get(peerId);
    if (link) link.retired = false;
  }

  connectedPeers(): string[] {
    return [...this.links.values()].filter((link) => link.connection?.resumed).map((link) => link.peerId);
  }

  linkStats(): { peer: string; address: string; connected: boolean; queuedBytes: number; received: number }[] {
    return [...this.links.values()].map((link) => ({
      peer: link.peerId,
      address: link.address,
      connected: link.connection?.resumed === true,
      queuedBytes: link.queuedBytes,
      received: link.received,
    }));
  }

  /**
   * Before closing: acknowledges every frame received (so no peer re-routes what this node applied), and
   * waits up to `timeoutMs` for the peers to acknowledge this node's frames. Only connected peers are
   * waited for: one that is gone (stopping too, say) cannot acknowledge anything.
   */
  async drain(timeoutMs: number): Promise<void> {
    for (const link of this.links.values()) link.acknowledgeNow();
    const deadline = performance.now() + timeoutMs;
    const waiting = () => [...this.links.values()].some((link) => link.connection?.resumed === true && link.queuedBytes > 0);
    while (waiting() && performance.now() < deadline) {
      for (const link of this.links.values()) link.frame();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    for (const link of this.links.values()) {
      link.acknowledgeNow();
      link.stop();
      link.connection?.socket.close(PeerClose.GoingAway, 'node shutting down');
    }
    for (const connection of this.anonymous) connection.socket.close(PeerClose.GoingAway, 'node shutting down');
    this.server.close();
  }

  backlogChanged(): void {
    const bytes = this.queuedBytes;
    // Report crossings of 1 MiB steps, not every byte.
    if (Math.abs(bytes - this.lastReportedBacklog) >= 1024 * 1024 || bytes === 0) {
      this.lastReportedBacklog = bytes;
      this.options.onBacklogChanged();
    }
  }

  ensureDialing(link: PeerLink): void {
    if (this.closed || link.retired || link.connection !== null || link.redialTimer !== null) return;
    link.redialTimer = setTimeout(() => {
      link.redialTimer = null;
      if (this.closed || link.retired || link.connection !== null) return;
      link.connection = this.dial(link.address, link);
      link.redialDelay = Math.min(REDIAL_MAX_MS, link.redialDelay * 2);
      // An address that cannot be dialled: try again later (the membership may learn a good one).
      if (link.connection === null) this.ensureDialing(link);
    }, link.redialDelay);
    link.redialTimer.unref();
  }

  private link(peerId: string, address: string): PeerLink {
    let link = this.links.get(peerId);
    if (link === undefined) {
      link = new PeerLink(this, peerId, address);
      this.links.set(peerId, link);
    }
    return link;
  }

  /** Dials a peer; null when the address cannot even be dialled (malformed: from a bad HELLO or gossip). */
  private dial(address: string, link?: PeerLink): Connection | null {
    let socket: WebSocket;
    try {
      const tls = this.options.tls ?? null;
      socket = new WebSocket(`${tls === null ? 'ws' : 'wss'}://${address}${PEER_PATH}`, {
        perMessageDeflate: false,
        maxPayload: PAYLOAD_MAX,
        handshakeTimeout: HELLO_TIMEOUT_MS,
        ...(tls?.ca === undefined ? {} : { ca: Buffer.from(tls.ca) }),
        ...(tls?.cert === undefined || tls.key === undefined ? {} : { cert: Buffer.from(tls.cert), key: Buffer.from(tls.key) }),
      });
    } catch (error) {
      this.options.log(`peer: cannot dial ${JSON.stringify(address.slice(0, 100))}: ${(error as Error).message}`);
      return null;
    }
    const connection = this.adopt(socket, true, address);
    if (link) {
      // Pre-bind to the link it is meant for; the HELLO confirms the peer's id.
      (connection as Connection & { intended?: PeerLink }).intended = link;
    }
    return connection;
  }

  private adopt(socket: WebSocket, dialedByUs: boolean, remote: string): Connection {
    const hello = encodeControl(PeerFrame.Hello, {
      version: PEER_PROTOCOL_VERSION,
      nodeId: this.options.selfId,
      instance: this.instance,
      address: this.options.selfAddress,
      keyGroups: this.options.keyGroups,
      valueBytesMax: this.options.valueBytesMax,
      epoch: this.epoch,
      nonce: randomBytes(NONCE_BYTES),
    } satisfies PeerHello);
    const handshake = new PeerHandshake(this.key, dialedByUs ? 'dialler' : 'acceptor', hello);
    const connection: Connection = { socket, dialedByUs, peer: null, hello: null, handshake, outbox: [], remote, resumed: false, alive: true };
    this.anonymous.add(connection);
    // Small frames only until the peer has proved the secret (a dialled socket has its receiver once open).
    if (dialedByUs) socket.once('open', () => setMaxPayload(socket, HANDSHAKE_PAYLOAD_MAX));
    else setMaxPayload(socket, HANDSHAKE_PAYLOAD_MAX);
    // The handshake (HELLO both ways, PROOF both ways) must finish in time.
    const helloTimer = setTimeout(() => {
      if (connection.peer === null) socket.terminate();
    }, HELLO_TIMEOUT_MS);
    const sendHello = () => socket.send(hello);
    if (dialedByUs) socket.once('open', sendHello);
    else sendHello();
    socket.on('pong', () => (connection.alive = true));
    socket.on('message', (data: RawData, isBinary: boolean) => {
      try {
        if (!isBinary || !Buffer.isBuffer(data) || data.length === 0) throw new PeerProtocolError('peer frames are non-empty binary messages');
        this.onFrame(connection, data);
      } catch (error) {
        // Whatever a peer sends, the node stays up: the connection closes with the reason.
        const message = error instanceof Error ? error.message : String(error);
        const known = error instanceof PeerProtocolError || (error as { code?: string })?.code === 'SC_ERR_MALFORMED_FRAME';
        this.options.log(`peer: closing a connection${connection.peer ? ` from ${connection.peer.nodeId}` : ''}: ${known ? '' : 'internal error: '}${message}`);
        try {
          socket.close(PeerClose.Malformed, truncateUtf8(message, 120));
        } finally {
          socket.terminate();
        }
      }
    });
    socket.on('error', () => undefined); // 'close' follows; dial failures are retried
    socket.on('close', (code, reason) => {
      clearTimeout(helloTimer);
      this.anonymous.delete(connection);
      for (const [address, dial] of this.seedDials) if (dial === connection) this.seedDials.delete(address);
      const intended = (connection as Connection & { intended?: PeerLink }).intended;
      const link = connection.peer ? this.links.get(connection.peer.nodeId) : intended;
      if (code === PeerClose.Refused) this.options.log(`peer: ${connection.peer?.nodeId ?? 'a peer'} refused this node: ${reason.toString()}`);
      if (code === PeerClose.Unauthorized && connection.dialedByUs && connection.peer === null && !this.failedProofs.has(connection)) {
        this.options.log(`peer: the node at ${remote} refused this node's proof of the cluster secret: ${reason.toString()}`);
        this.options.onRefused(`the node at ${remote} refused this node's proof of the cluster secret: every node of a cluster needs the same secret (--cluster-secret-file or STATECRAFT_CLUSTER_SECRET)`);
      }
      if (link) {
        if (link.connection === connection) link.connectionLost(connection);
        else if (intended === link && link.connection === null) this.ensureDialing(link);
      }
    });
    return connection;
  }

  private onFrame(connection: Connection, data: Buffer): void {
    const type = data[0];
    if (connection.peer === null) {
      // Not authenticated yet: HELLO, then PROOF; nothing else is read.
      if (type === PeerFrame.Hello && connection.hello === null) return this.onHello(connection, data);
      if (type === PeerFrame.Proof && connection.hello !== null) return this.onProof(connection, connection.hello, decodeProof(data));
      if (type === PeerFrame.Refused && connection.dialedByUs) {
        // Only the node we dialled can refuse us (an inbound socket could be anyone).
        const body = decodeControl<{ reason?: unknown }>(data);
        if (typeof body?.reason !== 'string') throw new PeerProtocolError('REFUSED needs { reason }');
        connection.socket.close(PeerClose.Normal);
        this.options.onRefused(`refused by the node at ${connection.socket.url ?? 'a peer'}: ${body.reason}`);
        return;
      }
      throw new PeerProtocolError(connection.hello === null ? 'the first frame must be HELLO' : 'the frame after HELLO must be PROOF (of the cluster secret)');
    }
    const link = this.links.get(connection.peer.nodeId);
    if (link === undefined || link.connection !== connection) return; // a connection that lost a tie-break
    switch (type) {
      case PeerFrame.Resume: {
        const resume = decodeControl<PeerResume>(data);
        if (
          typeof resume?.stream !== 'string' ||
          resume.stream.length === 0 ||
          typeof resume.receivedStream !== 'string' ||
          !Number.isSafeInteger(resume.received) ||
          resume.received < 0
        ) {
          throw new PeerProtocolError('RESUME needs { stream, receivedStream, received }');
        }
        if (connection.resumed) throw new PeerProtocolError('RESUME sent twice on one connection');
        if (resume.stream !== link.receivedStream) {
          // A stream we have not received from: its numbers start at 1.
          link.receivedStream = resume.stream;
          link.received = 0;
          this.receivedFrom.set(connection.peer.nodeId, { stream: resume.stream, seq: 0 });
        }
        link.resume(resume.receivedStream === link.streamId, resume.received);
        break;
      }
      case PeerFrame.Gossip:
        this.options.onGossip(connection.peer.address, decodeControl(data));
        break;
      case PeerFrame.Envelopes:
        if (!connection.resumed) throw new PeerProtocolError('ENVELOPES before RESUME');
        link.applyEnvelopes(data);
        break;
      case PeerFrame.Ack:
        link.acknowledge(decodeAck(data));
        break;
      case PeerFrame.Hello:
        throw new PeerProtocolError('HELLO sent twice');
      case PeerFrame.Proof:
        throw new PeerProtocolError('PROOF sent twice');
      default:
        throw new PeerProtocolError(`unknown frame type 0x${type!.toString(16)}`);
    }
  }

  private refuse(connection: Connection, hello: PeerHello, reason: string): void {
    this.noteRefusal(`${hello.nodeId} (${hello.address}): ${reason}`);
    this.options.log(`peer: refused ${hello.nodeId} at ${hello.address}: ${reason}`);
    connection.socket.send(encodeControl(PeerFrame.Refused, { reason }));
    connection.socket.close(PeerClose.Refused, reason.slice(0, 120));
  }

  private noteRefusal(line: string): void {
    this.refusals.push(line);
    if (this.refusals.length > 20) this.refusals.shift();
  }

  /** The peer's HELLO (not yet trusted): answered with this node's proof, unless it cannot be talked to. */
  private onHello(connection: Connection, frame: Buffer): void {
    const hello = validateHello(decodeControl(frame));
    if (hello.version !== PEER_PROTOCOL_VERSION) {
      return this.refuse(connection, hello, `peer protocol version ${hello.version} differs from this node's ${PEER_PROTOCOL_VERSION}: run the same Statecraft version on every node`);
    }
    if (hello.nodeId === this.options.selfId) {
      // Checked before any proof is made: this node never proves itself to a peer claiming its id, so its
      // proofs cannot be reflected back to it on another connection (peer-auth.ts).
      if (hello.instance !== this.instance) return this.refuse(connection, hello, `its node id ${hello.nodeId} is this node's: give each node its own --node-id or --data-dir`);
      connection.socket.close(PeerClose.Normal, 'dialled itself');
      return;
    }
    connection.hello = hello;
    connection.socket.send(encodeProof(connection.handshake.proofFor(frame)));
  }

  /** The peer's PROOF: a good one makes the connection a peer's; a bad one closes it. */
  private onProof(connection: Connection, hello: PeerHello, proof: Uint8Array): void {
    if (!connection.handshake.verify(proof)) {
      this.authFailures++;
      this.failedProofs.add(connection);
      const who = `${JSON.stringify(hello.nodeId.slice(0, 64))} from ${connection.remote}`;
      this.noteRefusal(`${who}: did not prove the cluster secret`);
      this.options.log(`peer: closed a connection of ${who}: it did not prove the cluster secret (a node with another secret, or not a node of this cluster)`);
      connection.socket.close(PeerClose.Unauthorized, 'no proof of the cluster secret');
      if (connection.dialedByUs) {
        this.options.onRefused(`the node at ${connection.remote} could not prove it holds this node's cluster secret: every node of a cluster needs the same secret (--cluster-secret-file or STATECRAFT_CLUSTER_SECRET)`);
      }
      return;
    }
    this.onAuthenticated(connection, hello);
  }

  private onAuthenticated(connection: Connection, hello: PeerHello): void {
    setMaxPayload(connection.socket, PAYLOAD_MAX);
    const refuse = (reason: string) => this.refuse(connection, hello, reason);
    if (hello.keyGroups !== this.options.keyGroups) {
      return refuse(`it has ${hello.keyGroups} key groups and this cluster has ${this.options.keyGroups}: start it with --key-groups ${this.options.keyGroups}`);
    }
    if (hello.valueBytesMax !== this.options.valueBytesMax) {
      return refuse(`it takes values of up to ${hello.valueBytesMax} bytes and this cluster ${this.options.valueBytesMax}: start it with --value-bytes-max ${this.options.valueBytesMax}`);
    }
    connection.peer = hello;
    this.anonymous.delete(connection);
    this.options.onPeerHello?.(hello.nodeId, hello.instance, typeof hello.epoch === 'number' && Number.isSafeInteger(hello.epoch) && hello.epoch >= 0 ? hello.epoch : 0);
    const link = this.link(hello.nodeId, hello.address);
    link.address = hello.address;
    link.retired = false;
    const current = link.connection;
    if (current !== null && current !== connection && current.socket.readyState === WebSocket.OPEN && current.peer !== null) {
      // Both dialled: keep the connection dialled by the smaller id, on both sides alike.
      const currentDialer = current.dialedByUs ? this.options.selfId : hello.nodeId;
      const newDialer = connection.dialedByUs ? this.options.selfId : hello.nodeId;
      if (currentDialer <= newDialer) {
        connection.socket.close(PeerClose.Duplicate, 'duplicate connection');
        return;
      }
      current.socket.close(PeerClose.Duplicate, 'duplicate connection');
    }
    link.connectionSwitched();
    link.connection = connection;
    if (link.redialTimer) {
      clearTimeout(link.redialTimer);
      link.redialTimer = null;
    }
    connection.socket.send(
      encodeControl(PeerFrame.Resume, { stream: link.streamId, receivedStream: link.receivedStream, received: link.received } satisfies PeerResume),
    );
    for (const frame of connection.outbox.splice(0)) connection.socket.send(frame);
    // Our gossip to this address may have been waiting for the HELLO: membership re-sends on its own.
  }

  private beat(): void {
    const check = (connection: Connection) => {
      if (!connection.alive) {
        connection.socket.terminate();
        return;
      }
      connection.alive = false;
      if (connection.socket.readyState === WebSocket.OPEN) connection.socket.ping();
    };
    for (const link of this.links.values()) if (link.connection) check(link.connection);
    for (const connection of this.anonymous) check(connection);
  }
}

export { ENVELOPES_HEADER_BYTES };
