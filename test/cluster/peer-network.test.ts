// The peer transport between two real PeerNetworks over real sockets: FIFO and each frame applied once
// across a broken connection, a retired link, and a restarted peer; hostile frames close only their
// own connection.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket } from 'ws';
import { PeerNetwork } from '../../cluster/peer-network.js';
import { eventually, withTimeout } from '../helpers.js';

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

async function peer(id: string, port = 0): Promise<Peer> {
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
