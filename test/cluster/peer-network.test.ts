// The peer transport between two real PeerNetworks over real sockets: FIFO and each frame applied once
// across a broken connection, a retired link, and a restarted peer; hostile frames close only their
// own connection.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket } from 'ws';
import { HANDSHAKES_MAX, HANDSHAKE_PAYLOAD_MAX, PeerNetwork } from '../../cluster/peer-network.js';
import { eventually, withTimeout } from '../helpers.js';

const SECRET = Buffer.from('peer-network-test-secret-0123456789');

interface Peer {
  net: PeerNetwork;
  server: Server;
  address: string;
  got: string[];
  logs: string[];
  refused: string[];
  close(): Promise<void>;
}

const open: Peer[] = [];

async function peer(id: string, port = 0, secret: Uint8Array = SECRET): Promise<Peer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const got: string[] = [];
  const logs: string[] = [];
  const refused: string[] = [];
  const net = new PeerNetwork({
    selfId: id,
    selfAddress: address,
    keyGroups: 8,
    valueBytesMax: 1024 * 1024,
    secret,
    onEnvelope: (bytes, offset, length) => got.push(Buffer.from(bytes.subarray(offset + 8, offset + length)).toString()),
    onEnvelopesDone: () => undefined,
    onGossip: () => undefined,
    onRefused: (reason) => refused.push(reason),
    onBacklogChanged: () => undefined,
    log: (line) => logs.push(line),
  });
  server.on('upgrade', (request, socket, head) => net.upgrade(request, socket, head) || socket.destroy());
  const created: Peer = {
    net,
    server,
    address,
    got,
    logs,
    refused,
    close: async () => {
      net.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  open.push(created);
  return created;
}

test.after.each(async () => {
  for (const created of open.splice(0)) await created.close().catch(() => undefined);
});

/** An invoke-kind envelope carrying a text. */
function envelope(text: string): Buffer {
  const bytes = Buffer.alloc(8 + Buffer.byteLength(text));
  bytes[0] = 1;
  bytes.write(text, 8);
  return bytes;
}

function send(from: Peer, to: Peer, toId: string, texts: string[]): void {
  for (const text of texts) {
    const bytes = envelope(text);
    from.net.send(toId, to.address, bytes, 0, bytes.length);
  }
}

const texts = (prefix: string, count: number) => Array.from({ length: count }, (_, index) => `${prefix}${index}`);

test('envelopes arrive in order, once, across a connection cut mid-stream', async () => {
  const a = await peer('A');
  const b = await peer('B');
  send(a, b, 'B', texts('x', 500));
  await eventually(() => b.got.length > 0, 'the first frames arrive');
  // Cut every socket B has: A re-dials, RESUMEs, and re-sends what B had not acknowledged.
  b.server.closeAllConnections();
  send(a, b, 'B', texts('y', 500));
  await eventually(() => b.got.length >= 1000 && a.net.queuedBytes === 0, `all 1,000 delivered (got ${b.got.length})`);
  assert.equal(b.got, [...texts('x', 500), ...texts('y', 500)]);
});

test('after a link is retired (a peer wrongly thought dead), a new link delivers everything', async () => {
  const a = await peer('A');
  const b = await peer('B');
  send(a, b, 'B', texts('m', 5));
  await eventually(() => b.got.length === 5 && a.net.queuedBytes === 0, 'first five, acknowledged');
  assert.equal(a.net.retire('B'), []);
  send(a, b, 'B', texts('n', 5));
  await eventually(() => b.got.length === 10, `all ten (got ${b.got.join(',')})`);
  assert.equal(b.got, [...texts('m', 5), ...texts('n', 5)]);
});

test('a peer restarted with the same id and address gets what is sent to it, numbered afresh', async () => {
  const a = await peer('A');
  let b = await peer('B');
  const port = Number(b.address.split(':')[1]);
  send(a, b, 'B', texts('m', 3));
  await eventually(() => b.got.length === 3, 'first three');
  await b.close();
  open.splice(open.indexOf(b), 1);
  b = await peer('B', port);
  send(a, b, 'B', texts('n', 3));
  await eventually(() => b.got.length === 3, `the restarted peer gets three (got ${b.got.join(',')}; A logs ${a.logs.join(' | ')})`, 10_000);
  assert.equal(b.got, texts('n', 3));
  assert.not.ok(a.logs.some((line) => /skipped/.test(line)), a.logs.join('\n'));
});

test('hostile frames on /peer close that connection only; a REFUSED from an inbound socket is ignored', async () => {
  const a = await peer('A');
  const hostile = [Buffer.from([0x06, 0xc0]), Buffer.from([0x06, 0x81, 0xa6, 0x72, 0x65, 0x61, 0x73, 0x6f, 0x6e, 0xa1, 0x78]), Buffer.from([0x05, 1]), Buffer.from([0x01, 0xc1])];
  for (const frame of hostile) {
    const socket = new WebSocket(`ws://${a.address}/peer`);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send(frame);
    const code = await withTimeout(new Promise<number>((resolve) => socket.once('close', (closeCode) => resolve(closeCode))), 5000, 'closed');
    assert.ok(code === 4400 || code === 1006, `closed with ${code}`);
  }
  assert.equal(a.refused, [], 'an inbound socket cannot refuse this node');
  // A HELLO naming an address that cannot be dialled is refused as malformed; nothing dials it later.
  for (const address of ['h#x:1', 'host:123456', 'not an address']) {
    const socket = new WebSocket(`ws://${a.address}/peer`);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    const { encodeControl } = await import('../../cluster/peer-protocol.js');
    socket.send(encodeControl(0x01, { version: 1, nodeId: 'x', instance: 'i', address, keyGroups: 8, valueBytesMax: 1024 * 1024 }));
    const code = await withTimeout(new Promise<number>((resolve) => socket.once('close', (closeCode) => resolve(closeCode))), 5000, 'closed');
    assert.is(code, 4400, address);
  }
  a.net.gossip('h#x:1', { probe: true }); // a bad address from gossip: logged, not thrown
  assert.ok(a.logs.some((line) => /cannot dial/.test(line)));
  // Still serving peers.
  const b = await peer('B');
  send(b, a, 'A', texts('ok', 3));
  await eventually(() => a.got.length === 3, 'A still receives');
});

test('a peer with other limits is refused, with the reason on both sides', async () => {
  const a = await peer('A');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const refused: string[] = [];
  const odd = new PeerNetwork({
    selfId: 'odd',
    selfAddress: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    keyGroups: 16,
    valueBytesMax: 1024 * 1024,
    secret: SECRET,
    onEnvelope: () => undefined,
    onEnvelopesDone: () => undefined,
    onGossip: () => undefined,
    onRefused: (reason) => refused.push(reason),
    onBacklogChanged: () => undefined,
    log: () => undefined,
  });
  odd.gossip(a.address, { hello: true });
  await eventually(() => refused.length > 0, 'the odd node hears the refusal');
  assert.match(refused[0]!, /16 key groups and this cluster has 8: start it with --key-groups 8/);
  assert.ok(a.net.refusals.some((line) => /odd/.test(line)));
  odd.close();
  server.close();
});

test('a peer with another secret is refused both ways: nothing it sends is applied, and both sides say why', async () => {
  const a = await peer('A');
  const intruder = await peer('I', 0, Buffer.from('another-secret-0123456789'));
  send(intruder, a, 'A', texts('forged', 3));
  await eventually(() => a.net.authFailures > 0 && intruder.net.authFailures > 0, 'both sides refuse the other\'s proof', 5000);
  // The dialler (the intruder here) is told: a joining node stops on it.
  await eventually(() => intruder.refused.some((reason) => /could not prove it holds this node's cluster secret|refused this node's proof/.test(reason)), 'the dialler hears why', 5000);
  assert.ok(a.net.refusals.some((line) => /"I" from 127\.0\.0\.1:\d+: did not prove the cluster secret/.test(line)), JSON.stringify(a.net.refusals));
  assert.ok(a.logs.some((line) => /it did not prove the cluster secret/.test(line)));
  assert.equal(a.got, []);
  assert.equal(a.net.connectedPeers(), []);
  // With the secret, the same exchange goes through.
  const b = await peer('B');
  send(b, a, 'A', texts('real', 3));
  await eventually(() => a.got.length === 3, 'a node with the secret is heard');
  assert.equal(a.got, ['real0', 'real1', 'real2']);
});

test('before its proof a peer may send only small frames: a large first frame, or a half-sent 16 MB one, closes the connection at its header', async () => {
  const a = await peer('A');
  const big = new WebSocket(`ws://${a.address}/peer`, { perMessageDeflate: false });
  big.on('error', () => undefined);
  await new Promise((resolve) => big.once('open', resolve));
  big.send(Buffer.alloc(HANDSHAKE_PAYLOAD_MAX + 1, 1));
  const [code] = await withTimeout(new Promise<[number, string]>((resolve) => big.once('close', (closeCode, reason) => resolve([closeCode, reason.toString()]))), 5000, 'the big frame closes the connection');
  assert.is(code, 1009, 'message too big');
  // A frame header that announces 16 MB, and only its first bytes: closed on the header, not buffered.
  const raw = new WebSocket(`ws://${a.address}/peer`, { perMessageDeflate: false });
  raw.on('error', () => undefined);
  await new Promise((resolve) => raw.once('open', resolve));
  const header = Buffer.from([0x82, 0xff, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
  header.writeBigUInt64BE(16n * 1024n * 1024n, 2);
  (raw as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.concat([header, Buffer.alloc(1024)]));
  await withTimeout(new Promise((resolve) => raw.once('close', resolve)), 5000, 'the half-sent frame closes its connection');
  // After the handshake, large frames are fine: a 1 MB envelope from a real peer.
  const b = await peer('B');
  const large = envelope('x'.repeat(1024 * 1024 - 16));
  b.net.send('A', a.address, large, 0, large.length);
  await eventually(() => a.got.length === 1, 'the large envelope arrives after the handshake', 5000);
  assert.is(a.got[0]!.length, 1024 * 1024 - 16);
});

test('at most HANDSHAKES_MAX handshakes at once: more are refused with 503 before the upgrade, and real peers are taken once they are gone', async () => {
  const a = await peer('A');
  const idle: WebSocket[] = [];
  for (let index = 0; index < HANDSHAKES_MAX; index++) {
    const socket = new WebSocket(`ws://${a.address}/peer`, { perMessageDeflate: false });
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('open', resolve));
    idle.push(socket);
  }
  const refused = new WebSocket(`ws://${a.address}/peer`, { perMessageDeflate: false });
  const status = await withTimeout(
    new Promise<number>((resolve, reject) => {
      refused.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
      refused.once('open', () => reject(new Error('the connection past the cap was upgraded')));
      refused.on('error', () => undefined);
    }),
    5000,
    'the connection past the cap is answered',
  );
  assert.is(status, 503);
  assert.is(a.net.handshakesRefused, 1);
  assert.ok(a.logs.some((line) => /peer handshakes are under way/.test(line)));
  for (const socket of idle) socket.terminate();
  const b = await peer('B');
  await eventually(async () => {
    send(b, a, 'A', texts('after', 1));
    await new Promise((resolve) => setTimeout(resolve, 50));
    return a.got.length > 0;
  }, 'a real peer is taken once the idle handshakes are gone', 5000);
});

test('drain before closing waits for the acknowledgement of connected peers only: a peer that is gone does not hold the stop up', async () => {
  const a = await peer('a');
  const b = await peer('b');
  const gone = await peer('gone');
  send(a, b, 'b', texts('to-b-', 3));
  send(a, gone, 'gone', texts('to-gone-', 3));
  await eventually(() => b.got.length === 3 && gone.got.length === 3, 'both peers got their frames', 5000);
  await gone.close();
  await eventually(() => !a.net.connectedPeers().includes('gone'), 'a sees gone go', 5000);
  send(a, gone, 'gone', ['never acknowledged']);
  send(a, b, 'b', ['last to b']);
  const started = performance.now();
  await a.net.drain(10_000);
  const waited = performance.now() - started;
  assert.equal(b.got.slice(-1), ['last to b'], 'b has everything before the drain returns');
  assert.ok(a.net.queuedBytes > 0, 'what was queued for the peer that is gone is still queued');
  assert.ok(waited < 10_000, `drain returned without waiting out its deadline for the peer that is gone (${Math.round(waited)} ms)`);
});

test.run();
