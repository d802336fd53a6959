// One peer's link without a network: frames sealed with consecutive sequence numbers and the epoch,
// kept until acknowledged, written to a connection only once resumed and while its buffer has room,
// renumbered for a peer that does not know the stream, applied in order on the receiving side, and
// handed back as envelopes when the peer is gone. A fake socket records what is sent.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { PeerHandshake, authKey } from '../../cluster/peer-auth.js';
import { PeerLink, type Connection, type LinkOwner } from '../../cluster/peer-link.js';
import { ENVELOPES_HEADER_BYTES, envelopesEpoch, envelopesSeq, readEnvelopes, writeEnvelopesHeader } from '../../cluster/peer-protocol.js';

/** 8-byte envelopes (the smallest the protocol reads), each carrying one number. */
function envelope(value: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setUint32(4, value, true);
  return bytes;
}
const valueOf = (bytes: Uint8Array, offset: number) => new DataView(bytes.buffer, bytes.byteOffset + offset).getUint32(4, true);

function framesValues(frames: Buffer[]): { seq: number; epoch: number; values: number[] }[] {
  return frames.map((frame) => {
    const values: number[] = [];
    readEnvelopes(frame, (bytes, offset) => values.push(valueOf(bytes, offset)));
    return { seq: envelopesSeq(frame), epoch: envelopesEpoch(frame), values };
  });
}

class FakeOwner implements LinkOwner {
  epoch = 3;
  readonly receivedFrom = new Map<string, { stream: string; seq: number }>();
  readonly applied: [string, number, number][] = [];
  dials = 0;
  backlogChanges = 0;
  readonly options = {
    onEnvelope: (bytes: Uint8Array, offset: number, _length: number, fromPeer: string, epoch: number) => this.applied.push([fromPeer, epoch, valueOf(bytes, offset)]),
    onEnvelopesDone: () => undefined,
  };
  ensureDialing(): void {
    this.dials++;
  }
  backlogChanged(): void {
    this.backlogChanges++;
  }
}

/** A connection whose socket records the frames sent; `bufferedAmount` is the test's to set. */
function fakeConnection(): { connection: Connection; sent: Buffer[]; socket: { bufferedAmount: number } } {
  const sent: Buffer[] = [];
  const socket = { readyState: WebSocket.OPEN, bufferedAmount: 0, send: (frame: Buffer) => sent.push(Buffer.from(frame)) };
  return { connection: { socket: socket as unknown as WebSocket, dialedByUs: true, peer: null, hello: null, handshake: new PeerHandshake(authKey(Buffer.alloc(16)), 'dialler', Buffer.alloc(1)), outbox: [], remote: 'test', resumed: false, alive: true }, sent, socket };
}

test('envelopes are sealed into numbered frames with the epoch; without a connection the link asks to dial', () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'b', '127.0.0.1:1');
  for (const value of [1, 2, 3]) link.enqueue(envelope(value), 0, 8);
  assert.is(link.queuedBytes, 24);
  link.frame();
  assert.is(owner.dials, 1, 'no connection: dial');
  link.enqueue(envelope(4), 0, 8);
  owner.epoch = 4;
  link.frame();
  assert.equal(link.takeUndelivered().map((bytes) => valueOf(bytes, 0)), [1, 2, 3, 4], 'every envelope comes back, in order');
  assert.is(link.queuedBytes, 0);
});

test('frames go out only once resumed, stay until acknowledged, and the rest is re-sent after a new connection', () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'b', '127.0.0.1:1');
  const first = fakeConnection();
  link.connection = first.connection;
  link.enqueue(envelope(1), 0, 8);
  link.frame();
  assert.equal(first.sent, [], 'not resumed yet: nothing is written');
  link.resume(true, 0);
  link.enqueue(envelope(2), 0, 8);
  link.frame();
  assert.equal(framesValues(first.sent), [
    { seq: 1, epoch: 3, values: [1] },
    { seq: 2, epoch: 3, values: [2] },
  ]);
  link.acknowledge(1);
  assert.is(link.queuedBytes, 8 + ENVELOPES_HEADER_BYTES + 4, 'frame 2 is kept until acknowledged');
  link.connectionLost(first.connection);
  assert.is(owner.dials, 1);
  const second = fakeConnection();
  link.connection = second.connection;
  link.resume(true, 1); // the peer has frame 1 of this stream
  assert.equal(framesValues(second.sent), [{ seq: 2, epoch: 3, values: [2] }], 'only what the peer lacks');
});

test('a peer that does not know our stream gets the unacknowledged frames numbered again from 1, in order', () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'b', '127.0.0.1:1');
  const first = fakeConnection();
  link.connection = first.connection;
  link.resume(true, 0);
  for (const value of [10, 11, 12]) {
    link.enqueue(envelope(value), 0, 8);
    link.frame();
  }
  link.acknowledge(1);
  link.connectionLost(first.connection);
  const second = fakeConnection();
  link.connection = second.connection;
  link.resume(false, 0);
  assert.equal(framesValues(second.sent), [
    { seq: 1, epoch: 3, values: [11] },
    { seq: 2, epoch: 3, values: [12] },
  ]);
  link.enqueue(envelope(13), 0, 8);
  link.frame();
  assert.equal(framesValues(second.sent).at(-1), { seq: 3, epoch: 3, values: [13] }, 'numbering goes on from there');
});

test('a full socket buffer holds frames back until it drains', async () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'b', '127.0.0.1:1');
  const { connection, sent, socket } = fakeConnection();
  link.connection = connection;
  link.resume(true, 0);
  socket.bufferedAmount = 64 * 1024 * 1024;
  link.enqueue(envelope(1), 0, 8);
  link.frame();
  assert.equal(sent, []);
  socket.bufferedAmount = 0;
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(framesValues(sent), [{ seq: 1, epoch: 3, values: [1] }]);
  link.stop();
});

test('the receiving side applies each frame once and in order; a gap is a protocol error; what was applied outlives the link', () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'a', '127.0.0.1:1');
  const frame = (seq: number, values: number[]) => {
    const buffer = Buffer.alloc(ENVELOPES_HEADER_BYTES + values.length * 12);
    let cursor = ENVELOPES_HEADER_BYTES;
    for (const value of values) {
      buffer.writeUInt32LE(8, cursor);
      buffer.set(envelope(value), cursor + 4);
      cursor += 12;
    }
    writeEnvelopesHeader(buffer, seq, values.length, 7);
    return buffer;
  };
  link.applyEnvelopes(frame(1, [1, 2]));
  link.applyEnvelopes(frame(1, [1, 2])); // re-sent after a reconnect
  link.applyEnvelopes(frame(2, [3]));
  assert.equal(owner.applied, [
    ['a', 7, 1],
    ['a', 7, 2],
    ['a', 7, 3],
  ]);
  assert.throws(() => link.applyEnvelopes(frame(4, [5])), /seq 4 after 2/);
  link.stop();
  const again = new PeerLink(owner, 'a', '127.0.0.1:1');
  again.applyEnvelopes(frame(2, [3]));
  assert.is(owner.applied.length, 3, 'a new link to the same peer remembers what was applied');
  again.stop();
});

test('a recovery drops envelopes not yet framed; sealed frames stay', () => {
  const owner = new FakeOwner();
  const link = new PeerLink(owner, 'b', '127.0.0.1:1');
  link.enqueue(envelope(1), 0, 8);
  link.frame();
  link.enqueue(envelope(2), 0, 8);
  link.dropUnframed();
  const values: number[] = [];
  for (const bytes of link.takeUndelivered()) values.push(valueOf(bytes, 0));
  assert.equal(values, [1]);
});

test.run();
