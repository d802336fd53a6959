// Stand-ins for a node and the network, for tests of the client that must control exactly what it
// receives: a bare WebSocket server speaking the client protocol, frames built by hand, and a TCP proxy
// that swallows or cuts a real node's answers.
import { connect as netConnect, createServer as createNetServer, type Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { EVENTS_HEADER_BYTES, Frame, PROTOCOL_VERSION, RECORDS_HEADER_BYTES, encodeControl, type Welcome } from '../lib/client-protocol.js';
import { EnvelopeDecoder, egressLengthMax, writeEgress } from '../lib/envelope.js';
import type { TypedValue } from '../lib/typed-value.js';
import { lengthPrefixedFrame } from './helpers.js';

/** The string values of an EVENTS frame, with the sequence number the node gives each. */
export function parseEvents(data: Buffer): { firstSeq: number; values: string[] } {
  const decoder = new EnvelopeDecoder();
  const firstSeq = data.readDoubleLE(1);
  const values: string[] = [];
  let cursor = EVENTS_HEADER_BYTES;
  for (let index = 0; index < data.readUInt32LE(9); index++) {
    const length = data.readUInt32LE(cursor);
    values.push(decoder.decodeInvoke(data, cursor + 4, length).asString());
    cursor += 4 + length;
  }
  return { firstSeq, values };
}

/** An egress record; with `seq`, a checkpointed one: its stable id is `keyGroup:seq`. */
export function egressEnvelope(egress: string, value: TypedValue, seq?: { keyGroup: number; seq: number }): Uint8Array {
  const buffer = new Uint8Array(egressLengthMax(egress, 'test/sink', 'x', value) + (seq === undefined ? 0 : 8));
  return buffer.slice(0, writeEgress(buffer, 0, seq?.keyGroup ?? 0, egress, 'test/sink', 'x', value, seq?.seq ?? null));
}

export function recordsFrame(subscription: number, firstId: number, envelopes: Uint8Array[]): Buffer {
  const frame = lengthPrefixedFrame(RECORDS_HEADER_BYTES, envelopes);
  frame[0] = Frame.Records;
  frame.writeUInt32LE(subscription, 1);
  frame.writeDoubleLE(firstId, 5);
  frame.writeUInt32LE(envelopes.length, 13);
  return frame;
}

export function welcomeFrame(lastSeq = 0): Uint8Array {
  return encodeControl(Frame.Welcome, {
    version: PROTOCOL_VERSION,
    nodeId: 'fake',
    egressLogId: 'fake-log',
    lastSeq,
    keyGroups: 16,
    limits: { valueBytesMax: 1024 * 1024, idBytesMax: 1024, frameBytesMax: 16 * 1024 * 1024 },
    functions: ['test/sink'],
  } satisfies Welcome);
}

/** A bare WebSocket server standing in for a node; `onConnection` gets each socket and its number (from 1). */
export async function fakeNode(onConnection: (socket: WebSocket, connection: number) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  let connections = 0;
  server.on('connection', (socket) => onConnection(socket, ++connections));
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of server.clients) socket.terminate();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A TCP proxy to `port` that can swallow what the node sends on open connections, and cut them. */
export async function tcpProxy(port: number): Promise<{ url: string; swallow(): void; cut(): void; close(): Promise<void> }> {
  let swallowing = false;
  const sockets = new Set<Socket>();
  const server = createNetServer((downstream) => {
    const upstream = netConnect(port, '127.0.0.1');
    sockets.add(downstream).add(upstream);
    downstream.on('data', (data) => upstream.write(data));
    upstream.on('data', (data) => {
      if (!swallowing) downstream.write(data);
    });
    const end = () => {
      downstream.destroy();
      upstream.destroy();
      sockets.delete(downstream);
      sockets.delete(upstream);
    };
    for (const socket of [downstream, upstream]) {
      socket.on('close', end);
      socket.on('error', () => undefined);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: proxyPort } = server.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${proxyPort}`,
    swallow: () => (swallowing = true),
    cut: () => {
      swallowing = false; // for the connections that come next
      for (const socket of sockets) socket.destroy();
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export type { WebSocket };
