/**
 * Peer authentication (sans-I/O): the two nodes of a peer connection prove to each other that they
 * hold the cluster secret before either reads anything else the other sends (gossip, envelopes,
 * hand-overs, checkpoint control).
 *
 * Each side's HELLO carries a fresh random nonce. Once a side has the other's HELLO, it sends PROOF:
 * an HMAC-SHA256, under a key derived from the secret, of its role (the node that dialled, or the one
 * that accepted) and a hash of both HELLO frames exactly as sent (the dialler's first). So:
 * - the secret never crosses the wire, and a proof seen on one connection is worthless on another
 *   (the other side's fresh nonce is in it);
 * - a proof cannot be reflected: it names the prover's role and covers the prover's own HELLO, and a
 *   node proves nothing to a peer that claims the node's own id (peer-network.ts refuses it first),
 *   so an attacker cannot have a node compute the proof the attacker needs on another connection;
 * - the HELLO fields (id, address, key groups, epoch) are covered too: a HELLO altered in flight
 *   fails the proof.
 * What follows the handshake is not encrypted or signed: against an attacker who can alter traffic
 * on the path between nodes, use mutual TLS between them as well.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
/** The shortest secret taken (bytes): shorter ones are guessable offline from one captured handshake. */
export const SECRET_BYTES_MIN = 16;

const KEY_LABEL = 'statecraft peer authentication v1';

export type PeerRole = 'dialler' | 'acceptor';

/** The key proofs are made with: derived from the secret, so the secret itself is used for nothing else. */
export function authKey(secret: Uint8Array): Buffer {
  if (secret.length < SECRET_BYTES_MIN) throw new RangeError(`a cluster secret needs at least ${SECRET_BYTES_MIN} bytes`);
  return createHmac('sha256', secret).update(KEY_LABEL).digest();
}

function lengthPrefixed(bytes: Uint8Array): Buffer[] {
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(bytes.length);
  return [length, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)];
}

/** The proof that the holder of `key`, in `role`, took part in the handshake of these two HELLO frames. */
export function proofOf(key: Uint8Array, role: PeerRole, diallerHello: Uint8Array, acceptorHello: Uint8Array): Buffer {
  const transcript = createHash('sha256');
  for (const part of [...lengthPrefixed(diallerHello), ...lengthPrefixed(acceptorHello)]) transcript.update(part);
  return createHmac('sha256', key).update(role).update(transcript.digest()).digest();
}

/**
 * One connection's handshake: made with this node's HELLO frame (as sent) and its role; given the
 * peer's HELLO frame, it makes this node's proof; given the peer's proof, it says whether it is good.
 */
export class PeerHandshake {
  private peerHello: Uint8Array | null = null;

  constructor(
    private readonly key: Uint8Array,
    private readonly role: PeerRole,
    private readonly ownHello: Uint8Array,
  ) {}

  /** The peer's HELLO frame arrived: returns this node's proof to send. */
  proofFor(peerHello: Uint8Array): Buffer {
    this.peerHello = Uint8Array.prototype.slice.call(peerHello);
    return this.proof(this.role);
  }

  /** Whether the peer's proof is good (false before the peer's HELLO). */
  verify(peerProof: Uint8Array): boolean {
    if (this.peerHello === null || peerProof.length !== PROOF_BYTES) return false;
    const expected = this.proof(this.role === 'dialler' ? 'acceptor' : 'dialler');
    return timingSafeEqual(expected, peerProof);
  }

  private proof(role: PeerRole): Buffer {
    const [dialler, acceptor] = this.role === 'dialler' ? [this.ownHello, this.peerHello!] : [this.peerHello!, this.ownHello];
    return proofOf(this.key, role, dialler, acceptor);
  }
}
