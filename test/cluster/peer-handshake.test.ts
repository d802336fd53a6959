// The peer handshake's core (cluster/peer-auth.ts): proofs check out both ways with one secret, and
// fail with another secret, an altered HELLO, a proof from another connection, or a reflected proof.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { NONCE_BYTES, PeerHandshake, SECRET_BYTES_MIN, authKey, proofOf } from '../../cluster/peer-auth.js';
import { PeerFrame, encodeControl } from '../../cluster/peer-protocol.js';

const key = authKey(Buffer.from('handshake-test-secret-0123456789'));
const otherKey = authKey(Buffer.from('another-test-secret-0123456789'));
const hello = (nodeId: string, nonce = randomBytes(NONCE_BYTES)) => encodeControl(PeerFrame.Hello, { version: 2, nodeId, instance: `${nodeId}-1`, address: '127.0.0.1:1', keyGroups: 8, valueBytesMax: 1024, epoch: 0, nonce });

/** Both sides of one connection, `a` dialling `b`. */
function connection(aKey = key, bKey = key) {
  const aHello = hello('a');
  const bHello = hello('b');
  const a = new PeerHandshake(aKey, 'dialler', aHello);
  const b = new PeerHandshake(bKey, 'acceptor', bHello);
  return { a, b, aHello, bHello, aProof: a.proofFor(bHello), bProof: b.proofFor(aHello) };
}

test('one secret: each side verifies the other', () => {
  const { a, b, aProof, bProof } = connection();
  assert.ok(b.verify(aProof));
  assert.ok(a.verify(bProof));
  assert.is(aProof.length, 32);
});

test('another secret: both sides refuse', () => {
  const { a, b, aProof, bProof } = connection(key, otherKey);
  assert.not.ok(b.verify(aProof));
  assert.not.ok(a.verify(bProof));
});

test('an altered HELLO (another address, say) fails the proof', () => {
  const aHello = hello('a');
  const bHello = hello('b');
  const a = new PeerHandshake(key, 'dialler', aHello);
  const aProof = a.proofFor(bHello);
  const altered = Buffer.from(aHello);
  altered[altered.length - 1] ^= 1;
  const b = new PeerHandshake(key, 'acceptor', bHello);
  b.proofFor(altered);
  assert.not.ok(b.verify(aProof));
});

test('a proof from one connection is worthless on another (fresh nonces)', () => {
  const first = connection();
  const second = connection();
  assert.not.ok(second.b.verify(first.aProof));
  assert.not.ok(second.a.verify(first.bProof));
});

test('a proof cannot be reflected: the dialler\'s proof is not the acceptor\'s, for the same two HELLOs', () => {
  const { aHello, bHello, aProof, bProof } = connection();
  assert.ok(!aProof.equals(bProof));
  // An attacker replaying the node's own proof back to it, over the same transcript, in the other role.
  assert.not.ok(aProof.equals(proofOf(key, 'acceptor', aHello, bHello)));
  const node = new PeerHandshake(key, 'dialler', aHello);
  node.proofFor(bHello);
  assert.not.ok(node.verify(aProof), 'the node\'s own proof does not pass as its peer\'s');
});

test('no proof before the peer\'s HELLO, none of the wrong length, and no short secrets', () => {
  const handshake = new PeerHandshake(key, 'acceptor', hello('b'));
  assert.not.ok(handshake.verify(Buffer.alloc(32)));
  handshake.proofFor(hello('a'));
  assert.not.ok(handshake.verify(Buffer.alloc(31)));
  assert.throws(() => authKey(Buffer.alloc(SECRET_BYTES_MIN - 1)), /at least 16 bytes/);
});

test.run();
