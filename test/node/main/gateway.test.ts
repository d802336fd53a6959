// The client gateway under bad input: invalid events, malformed frames, re-sent events, a full queue.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect as netConnect } from 'node:net';
import WebSocket from 'ws';
import { connect, Types, type Client, type StatecraftError } from 'statecraft';
import { CloseCode, Frame, PROTOCOL_VERSION, decodeAck, decodeControl, encodeControl, type Welcome } from '../../../lib/client-protocol.js';
import { invokeLengthMax, writeInvoke } from '../../../lib/envelope.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { counted } from '../../fixtures/functions.js';
import { eventually, fixture, startTestNode, subscribed, take, withTimeout, type TestNode, eventsFrame } from '../../helpers.js';

let node: TestNode;
let client: Client;

test.before(async () => {
  node = await startTestNode({ functions: [fixture('functions')], shards: 2, valueBytesMax: 4096, idBytesMax: 64, backlogMax: 50 });
  client = await connect(node.url);
});

test.after(async () => {
  await client?.close();
  await node?.close();
});

function envelope(typename: string, id: string, value: unknown): Uint8Array {
  const typed = toTypedValue(value);
  const buffer = new Uint8Array(invokeLengthMax(typename, id, null, null, typed));
  return buffer.slice(0, writeInvoke(buffer, 0, 0, typename, id, null, null, typed));
}


/** A raw protocol connection, for frames the real client would never send. */
async function rawConnection(producerId = `raw-${Math.random()}`): Promise<{ socket: WebSocket; welcome: Welcome; frames: Buffer[]; closed: Promise<[number, string]> }> {
  const socket = new WebSocket(node.url, { perMessageDeflate: false });
  const frames: Buffer[] = [];
  const closed = new Promise<[number, string]>((resolve) => socket.once('close', (code, reason) => resolve([code, reason.toString()])));
  socket.on('message', (data: Buffer) => frames.push(data));
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.send(encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId, client: 'test' }));
  await eventually(() => frames.length > 0, 'WELCOME');
  return { socket, welcome: decodeControl<Welcome>(frames.shift()!), frames, closed };
}

async function nodeStillServes(): Promise<void> {
  const counts = client.subscribe('counts', { type: counted });
  const id = `alive-${Math.random()}`;
  await client.send({ typename: 'test/counter', id }, 1);
  const [record] = await take(counts, 1);
  assert.equal(record!.value, { id, count: 1 });
  counts.close();
}

test('the client rejects bad input before sending, with a typed error that says what to do', () => {
  const cases: [() => unknown, string, RegExp][] = [
    [() => client.send({ typename: 'nonamespace', id: 'a' }, 1), 'SC_ERR_INVALID_TYPENAME', /namespace\/name/],
    [() => client.send({ typename: 'test/counter', id: '' }, 1), 'SC_ERR_INVALID_ID', /non-empty/],
    [() => client.send({ typename: 'test/counter', id: 'x'.repeat(65) }, 1), 'SC_ERR_INVALID_ID', /limit is 64 bytes/],
    [() => client.send({ typename: 'test/counter', id: 'a' }, 'v'.repeat(5000)), 'SC_ERR_VALUE_TOO_LARGE', /exceeds the limit of 4096 bytes/],
    [() => client.send({ typename: 'test/counter', id: 'a' }, undefined), 'SC_ERR_INVALID_VALUE', /needs a value/],
    [() => client.send({ typename: 'test/counter', id: 'a' }, 1.5, Types.int), 'SC_ERR_INVALID_VALUE', /32-bit signed integer/],
    [() => client.send({ typename: 'test/absent', id: 'a' }, 1), 'SC_ERR_UNKNOWN_FUNCTION_TYPE', /--functions/],
  ];
  for (const [call, code, message] of cases) {
    assert.throws(call, (error: unknown) => (error as StatecraftError).code === code && message.test((error as Error).message), code);
  }
  assert.is(client.pending, 0, 'nothing was queued');
});

test('the node validates again: each bad event is rejected on its own, good ones in the same frame are accepted', async () => {
  const raw = await rawConnection();
  const counts = client.subscribe('counts', { type: counted });
  await subscribed(counts); // the events go through another connection
  raw.socket.send(
    eventsFrame(1, [
      envelope('test/counter', 'v1', 3),
      envelope('test/absent', 'v1', 1),
      envelope('test/counter', 'x'.repeat(100), 1),
      envelope('test/counter', 'v1', 'y'.repeat(5000)),
      envelope('nonamespace', 'v1', 1),
      envelope('test/counter', 'v1', 4),
    ]),
  );
  await eventually(() => raw.frames.length >= 2, 'REJECTED and ACK');
  const rejected = decodeControl<{ rejections: [number, string, string][] }>(raw.frames[0]!).rejections;
  assert.equal(rejected.map(([seq, code]) => [seq, code]), [
    [2, 'SC_ERR_UNKNOWN_FUNCTION_TYPE'],
    [3, 'SC_ERR_INVALID_ID'],
    [4, 'SC_ERR_VALUE_TOO_LARGE'],
    [5, 'SC_ERR_INVALID_TYPENAME'],
  ]);
  assert.is(decodeAck(raw.frames[1]!), 6);
  const records = await take(counts, 2);
  assert.equal(records.map((record) => record.value.count), [3, 7]);
  counts.close();
  raw.socket.close();
  await nodeStillServes();
});

test('malformed frames close that connection with a reason; the node stays up', async () => {
  const cases: [string, (socket: WebSocket) => void, RegExp][] = [
    ['unknown frame type', (socket) => socket.send(Buffer.from([0x7e, 1, 2])), /unknown frame type 0x7e/],
    ['text frame', (socket) => socket.send('hello'), /frames must be binary/],
    ['truncated events frame', (socket) => socket.send(eventsFrame(1, [envelope('test/counter', 'm', 1)]).subarray(0, 20)), /ends before|runs past/],
    ['bad envelope inside', (socket) => {
      const bytes = envelope('test/counter', 'm', 1);
      bytes[8] = 200; // typename length points past the end
      socket.send(eventsFrame(1, [bytes]));
    }, /malformed envelope/],
    ['garbage control body', (socket) => socket.send(Buffer.from([Frame.Subscribe, 0x92, 0x01])), /malformed body/],
    ['trailing bytes', (socket) => socket.send(Buffer.concat([eventsFrame(1, [envelope('test/counter', 'm', 1)]), Buffer.from([1, 2, 3])])), /bytes after its last event/],
  ];
  for (const [name, send, reason] of cases) {
    const raw = await rawConnection();
    send(raw.socket);
    const [code, text] = await withTimeout(raw.closed, 5000, `close after ${name}`);
    assert.is(code, CloseCode.MalformedFrame, name);
    assert.match(text, reason, name);
  }
  // A frame before HELLO, and a wrong protocol version.
  const early = new WebSocket(node.url);
  const earlyClosed = new Promise<number>((resolve) => early.once('close', (code) => resolve(code)));
  early.once('open', () => early.send(Buffer.from([Frame.Events, 0, 0])));
  assert.is(await withTimeout(earlyClosed, 5000, 'close before HELLO'), CloseCode.MalformedFrame);
  const old = new WebSocket(node.url);
  const oldClosed = new Promise<[number, string]>((resolve) => old.once('close', (code, reason) => resolve([code, reason.toString()])));
  old.once('open', () => old.send(encodeControl(Frame.Hello, { version: 99, producerId: 'p', client: 'old' })));
  const [oldCode, oldReason] = await withTimeout(oldClosed, 5000, 'close on version mismatch');
  assert.is(oldCode, CloseCode.ProtocolVersion);
  assert.match(oldReason, /version 99 is not supported/);
  await nodeStillServes();
});

test('a socket cut in the middle of a frame leaves the node serving', async () => {
  const url = new URL(node.url);
  const socket = netConnect(Number(url.port), url.hostname);
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(
    'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  await new Promise((resolve) => socket.once('data', resolve));
  // A masked binary frame header announcing 1000 bytes, then only 10 of them, then the cut.
  socket.write(Buffer.from([0x82, 0xfe, 0x03, 0xe8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]));
  socket.destroy();
  await nodeStillServes();
});

test('events re-sent on a new connection are acknowledged but applied once', async () => {
  const producerId = `resend-${Math.random()}`;
  const counts = client.subscribe('counts', { type: counted });
  await subscribed(counts); // the events go through other connections
  const first = await rawConnection(producerId);
  assert.is(first.welcome.lastSeq, 0);
  first.socket.send(eventsFrame(1, [envelope('test/counter', 'once', 1), envelope('test/counter', 'once', 10)]));
  await eventually(() => first.frames.length >= 1, 'ACK');
  first.socket.terminate();
  const second = await rawConnection(producerId);
  assert.is(second.welcome.lastSeq, 2, 'the node remembers what this producer sent');
  second.socket.send(eventsFrame(1, [envelope('test/counter', 'once', 1), envelope('test/counter', 'once', 10), envelope('test/counter', 'once', 100)]));
  await eventually(() => second.frames.length >= 1, 'ACK');
  assert.is(decodeAck(second.frames[0]!), 3);
  const records = await take(counts, 3);
  assert.equal(records.map((record) => record.value.count), [1, 11, 111]);
  second.socket.close();
  counts.close();
});

test('a client event re-sent on another connection is applied once: the key group remembers its session and sequence', async () => {
  const counts = client.subscribe('counts', { type: counted });
  await subscribed(counts); // the events go through other connections
  const id = `marked-${Math.random()}`;
  const typed = toTypedValue(1);
  const producer = { session: 'session-a', seq: 1 };
  const buffer = new Uint8Array(invokeLengthMax('test/counter', id, null, null, typed, producer));
  const marked = buffer.slice(0, writeInvoke(buffer, 0, 0, 'test/counter', id, null, null, typed, producer));
  const before = node.metrics().DuplicatesDropped;
  // Two connections with different producer ids: the gateway's per-connection dedupe cannot see the
  // repeat; the key group's producer marks do.
  const first = await rawConnection();
  const second = await rawConnection();
  first.socket.send(eventsFrame(1, [marked]));
  await eventually(() => first.frames.some((frame) => frame[0] === Frame.Ack), 'first ACK');
  second.socket.send(eventsFrame(1, [marked]));
  await eventually(() => second.frames.some((frame) => frame[0] === Frame.Ack), 'second ACK');
  const [record] = await take(counts, 1);
  assert.equal(record!.value, { id, count: 1 });
  await eventually(() => node.metrics().DuplicatesDropped === before + 1, 'the repeat counted as a duplicate');
  // The next sequence number of the session is applied.
  const next = { session: 'session-a', seq: 2 };
  const buffer2 = new Uint8Array(invokeLengthMax('test/counter', id, null, null, typed, next));
  second.socket.send(eventsFrame(2, [buffer2.slice(0, writeInvoke(buffer2, 0, 0, 'test/counter', id, null, null, typed, next))]));
  const [again] = await take(counts, 1);
  assert.equal(again!.value, { id, count: 2 });
  counts.close();
  first.socket.close();
  second.socket.close();
});

test('a full queue: the node stops admitting events until it drains, and loses none', async () => {
  // test/slow takes 5 ms per message and handles one at a time per address: 4 addresses, 200 events each.
  const slow = client.subscribe<{ id: string; count: number }>('slow', { type: Types.json() });
  await subscribed(slow); // the events go through another client
  const producer = await connect(node.url, { window: 20 });
  const sends: Promise<void>[] = [];
  for (let index = 0; index < 800; index++) sends.push(producer.send({ typename: 'test/slow', id: `s${index % 4}` }, 5));
  let backlogMax = 0;
  let sawWaiting = false;
  const watcher = setInterval(() => {
    backlogMax = Math.max(backlogMax, node.metrics().Backlog);
    if (producer.pending > 20 && node.metrics().Backlog >= 50) sawWaiting = true;
  }, 5);
  await withTimeout(Promise.all(sends), 30_000, 'every event accepted');
  const records = await take(slow, 800, 30_000);
  clearInterval(watcher);
  slow.close();
  await producer.close();
  const last = new Map<string, number>();
  for (const record of records) last.set(record.value.id, Math.max(last.get(record.value.id) ?? 0, record.value.count));
  assert.equal([...last.values()], [200, 200, 200, 200], 'each address counted every event exactly once');
  assert.ok(sawWaiting, 'events waited in the client while the node was full');
  // Admission is checked per frame, so the backlog passes the limit by at most one frame (the window).
  assert.ok(backlogMax <= 50 + 20, `backlog peaked at ${backlogMax}`);
});

test.run();
