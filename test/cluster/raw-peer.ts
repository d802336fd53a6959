// A raw peer connection to a node's /peer path, for tests that play an intruder (or a node): it says
// HELLO, proves a secret (the right one, a wrong one, or none) and sends whatever frames the test wants.
import { WebSocket } from 'ws';
import { randomBytes } from 'node:crypto';
import { NONCE_BYTES, PeerHandshake, authKey } from '../../cluster/peer-auth.js';
import { PEER_PATH, PEER_PROTOCOL_VERSION, PeerFrame, encodeControl, encodeProof, writeEnvelopesHeader, ENVELOPES_HEADER_BYTES } from '../../cluster/peer-protocol.js';
import { lengthPrefixedFrame, withTimeout } from '../helpers.js';

export class RawPeer {
  readonly frames: Buffer[] = [];
  closed: Promise<{ code: number; reason: string }>;
  /** The node's HELLO frame, as received. */
  nodeHello: Buffer | null = null;
  readonly hello: Uint8Array;
  private readonly handshake: (secret: string | Uint8Array) => PeerHandshake;

  private constructor(
    readonly socket: WebSocket,
    readonly nodeId: string,
    address: string,
  ) {
    this.hello = encodeControl(PeerFrame.Hello, { version: PEER_PROTOCOL_VERSION, nodeId, instance: `raw-${Math.random()}`, address, keyGroups: 128, valueBytesMax: 1024 * 1024, epoch: 0, nonce: randomBytes(NONCE_BYTES) });
    this.handshake = (secret) => new PeerHandshake(authKey(typeof secret === 'string' ? Buffer.from(secret) : secret), 'dialler', this.hello);
    socket.on('message', (data: Buffer) => {
      if (this.nodeHello === null && data[0] === PeerFrame.Hello) this.nodeHello = data;
      this.frames.push(data);
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Connects and waits for the node's HELLO. `keyGroups` must match the node's for a handshake to get past the checks after PROOF. */
  static async open(port: number, nodeId = 'intruder', address = '127.0.0.1:1'): Promise<RawPeer> {
    const socket = new WebSocket(`ws://127.0.0.1:${port}${PEER_PATH}`, { perMessageDeflate: false });
    const peer = new RawPeer(socket, nodeId, address);
    await withTimeout(new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject)), 5000, 'the peer path opens');
    await withTimeout(
      (async () => {
        while (peer.nodeHello === null) await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      5000,
      "the node's HELLO",
    );
    return peer;
  }

  sendHello(): void {
    this.socket.send(this.hello);
  }

  /** The PROOF this peer would send holding `secret`. */
  proof(secret: string | Uint8Array): Buffer {
    return encodeProof(this.handshake(secret).proofFor(this.nodeHello!));
  }

  /** Whether the node's PROOF (if it sent one) proves `secret`. */
  nodeProved(secret: string | Uint8Array): boolean {
    const proof = this.frames.find((frame) => frame[0] === PeerFrame.Proof);
    if (proof === undefined) return false;
    const handshake = this.handshake(secret);
    handshake.proofFor(this.nodeHello!);
    return handshake.verify(proof.subarray(1));
  }

  async until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; frames: ${this.frames.map((frame) => frame[0]).join(',')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

/** An ENVELOPES frame with these envelopes. */
export function envelopesFrame(seq: number, envelopes: Uint8Array[], epoch = 0): Buffer {
  const frame = lengthPrefixedFrame(ENVELOPES_HEADER_BYTES, envelopes);
  writeEnvelopesHeader(frame, seq, envelopes.length, epoch);
  return frame;
}
