// Hostile input, hostile handlers and lost frames: none of it may take a node down, wedge an address,
// lose records, or make a client misreport an event. Real nodes with real shard threads and sockets (the
// client against a fake node is in test/lib/client.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { connect, Types, type Client, type DeadLetter, type StatecraftError } from 'statecraft';
import { utf8Length } from '../../lib/address.js';
import {
  CloseCode,
  Frame,
  PROTOCOL_VERSION,
  decodeAck,
  decodeControl,
  encodeControl,
  type Welcome,
} from '../../lib/client-protocol.js';
import { invokeLengthMax, writeInvoke } from '../../lib/envelope.js';
import { tcpProxy } from '../fake-node.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { TypedValue, toTypedValue } from '../../lib/typed-value.js';
import { truncateUtf8 } from '../../lib/utf8.js';
import { EgressHub } from '../../node/main/egress-hub.js';
import { Gateway, type GatewayHost } from '../../node/main/gateway.js';
import { TimerQueue } from '../../node/keygroups/timer-queue.js';
import { eventually, fixture, sleep, startTestNode, subscribed, take, withTimeout, type TestNode, eventsFrame } from '../helpers.js';
import { TTL_MS } from '../fixtures/functions.js';

let node: TestNode;
let client: Client;

test.before(async () => {
  node = await startTestNode({ functions: [fixture('functions'), fixture('hostile')], shards: 2 });
  client = await connect(node.url);
});

test.after(async () => {
  await client?.close();
  await node?.close();
});

// ---- helpers ----

/** A string value whose bytes are not UTF-8 (the protobuf wrapper of the single byte 0xff). */
const notUtf8 = new TypedValue('io.statefun.types/string', undefined, Uint8Array.from([0x0a, 0x01, 0xff]));
/** Lets the real client send those bytes: a custom type under the primitive's name sends them as they are. */
const rawStringBytes = Types.custom<Uint8Array>('io.statefun.types/string', (bytes) => bytes, (bytes) => bytes);

function envelope(typename: string, id: string, value: TypedValue): Uint8Array {
  const buffer = new Uint8Array(invokeLengthMax(typename, id, null, null, value));
  return buffer.slice(0, writeInvoke(buffer, 0, 0, typename, id, null, null, value));
}


interface RawConnection {
  socket: WebSocket;
  welcome: Welcome;
  frames: Buffer[];
  closed: Promise<[number, string]>;
}

/** A raw protocol connection, for frames the real client would never send. */
async function rawConnection(url: string): Promise<RawConnection> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  const frames: Buffer[] = [];
  const closed = new Promise<[number, string]>((resolve) => socket.once('close', (code, reason) => resolve([code, reason.toString()])));
  socket.on('message', (data: Buffer) => frames.push(data));
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  socket.send(encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId: `raw-${Math.random()}`, client: 'test' }));
  await eventually(() => frames.length > 0, 'WELCOME');
  return { socket, welcome: decodeControl<Welcome>(frames.shift()!), frames, closed };
}

/** Reads an egress from its oldest record until `count` records match. */
async function recordsOf<T = unknown>(egress: string, match: (value: T) => boolean, count: number, timeoutMs = 10_000): Promise<T[]> {
  const subscription = client.subscribe<T>(egress, { from: 'earliest' });
  const found: T[] = [];
  try {
    const deadline = Date.now() + timeoutMs;
    while (found.length < count) {
      const [record] = await take(subscription, 1, Math.max(1, deadline - Date.now())).catch((error: Error) => {
        throw new Error(`${error.message}; matched so far: ${JSON.stringify(found)}`);
      });
      if (match(record!.value)) found.push(record!.value);
    }
    return found;
  } finally {
    subscription.close();
  }
}

type SinkRecord = { id: string; value: unknown };

async function nodeStillServes(target: TestNode = node): Promise<void> {
  const check = await connect(target.url);
  const id = `alive-${Math.random()}`;
  const sink = check.subscribe<SinkRecord>('sink');
  await subscribed(sink);
  await check.send({ typename: 'test/sink', id }, 'alive');
  for (;;) {
    const [record] = await take(sink, 1);
    if (record!.value.id === id) break;
  }
  await check.close();
}

// ---- 1. malformed client input ----

test('EVENTS with a string value that is not UTF-8: that event is rejected, the others in the frame accepted', async () => {
  const raw = await rawConnection(node.url);
  raw.socket.send(
    eventsFrame(1, [
      envelope('test/sink', 'utf8-a', toTypedValue('a')),
      envelope('test/sink', 'utf8-b', notUtf8),
      envelope('test/sink', 'utf8-c', toTypedValue('c')),
    ]),
  );
  await eventually(() => raw.frames.length >= 2, 'REJECTED and ACK');
  const rejections = decodeControl<{ rejections: [number, string, string][] }>(raw.frames[0]!).rejections;
  assert.equal(rejections.map(([seq, code]) => [seq, code]), [[2, 'SC_ERR_INVALID_VALUE']]);
  assert.match(rejections[0]![2], /not valid UTF-8/);
  assert.is(decodeAck(raw.frames[1]!), 3);
  const accepted = await recordsOf<SinkRecord>('sink', (record) => record.id.startsWith('utf8-'), 2);
  assert.equal(accepted.map((record) => [record.id, record.value]).sort(), [['utf8-a', 'a'], ['utf8-c', 'c']]);
  assert.is(raw.socket.readyState, WebSocket.OPEN, 'the connection goes on');
  raw.socket.close();
});

test('SUBSCRIBE with a subscription id outside 0..2^32-1: closed with 4400, the node stays up', async () => {
  await client.send({ typename: 'test/sink', id: 'subscribe-bounds' }, 'a record to send'); // so the log has one to write
  await recordsOf<SinkRecord>('sink', (record) => record.id === 'subscribe-bounds', 1);
  for (const subscription of [-1, 5e9, 2 ** 32, 1.5]) {
    const raw = await rawConnection(node.url);
    raw.socket.send(encodeControl(Frame.Subscribe, { subscription, egress: 'sink', after: -1 }));
    const [code, reason] = await withTimeout(raw.closed, 5000, `close after subscription ${subscription}`);
    assert.is(code, CloseCode.MalformedFrame, String(subscription));
    assert.match(reason, /subscription id from 0 to 4294967295/);
  }
  // The largest id is fine.
  const raw = await rawConnection(node.url);
  raw.socket.send(encodeControl(Frame.Subscribe, { subscription: 2 ** 32 - 1, egress: 'sink', after: -1 }));
  await eventually(() => raw.frames.some((frame) => frame[0] === Frame.Records), 'records for subscription 2^32-1');
  const records = raw.frames.find((frame) => frame[0] === Frame.Records)!;
  assert.is(records.readUInt32LE(1), 2 ** 32 - 1);
  raw.socket.close();
  await nodeStillServes();
});

test('a close reason of multi-byte characters is cut on a character boundary within 123 bytes', async () => {
  const raw = await rawConnection(node.url);
  raw.socket.send(encodeControl(Frame.Subscribe, { subscription: 1, egress: '€'.repeat(40) }));
  const [code, reason] = await withTimeout(raw.closed, 5000, 'close after a bad egress name');
  assert.is(code, CloseCode.MalformedFrame);
  assert.ok(Buffer.byteLength(reason) <= 123, `${Buffer.byteLength(reason)} bytes`);
  assert.ok(reason.endsWith('…') && !reason.includes('\ufffd'), reason);
  await nodeStillServes();
});

test('truncateUtf8: within the byte limit, on a character boundary, marked when cut', () => {
  assert.is(truncateUtf8('short', 123), 'short');
  assert.is(truncateUtf8('€'.repeat(41), 123), '€'.repeat(41), 'exactly 123 bytes fits');
  for (const text of ['€'.repeat(42), '😀'.repeat(40), 'a' + '😀'.repeat(40), 'x'.repeat(1000) + 'é', '\ud800'.repeat(60)]) {
    for (const limit of [0, 1, 4, 5, 6, 7, 50, 123]) {
      const cut = truncateUtf8(text, limit);
      assert.ok(Buffer.byteLength(cut) <= Math.max(limit, 3), `${limit}: ${Buffer.byteLength(cut)} bytes`);
      assert.ok(cut.endsWith('…'), 'marked');
      assert.ok(!/\ufffd/.test(cut.slice(0, -1)) || text.startsWith('\ud800'), 'no split character');
    }
  }
  assert.is(truncateUtf8('x'.repeat(10), 8, '~'), 'xxxxxxx~');
});

test('an internal error while handling a frame closes that connection with 1011 and is logged; the process goes on', async () => {
  const logs: string[] = [];
  const host: GatewayHost = {
    nodeId: 'fake',
    egressLogId: 'fake-log',
    keyGroups: 16,
    limits: { valueBytesMax: 1024, idBytesMax: 64, frameBytesMax: 1024 * 1024 },
    functions: new Set(['test/sink']),
    durable: false,
    egress: new EgressHub({ recordsMax: 100, bytesMax: 1024 * 1024 }),
    tokens: null,
    connectionsMax: 10_000,
    countRefusal: () => undefined,
    admits: () => true,
    admit: () => {
      throw new Error('the disk is on fire');
    },
    flush: () => undefined,
    countEvents: () => undefined,
    log: (line) => logs.push(line),
  };
  const gateway = new Gateway(host, () => undefined);
  const server = createServer();
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => gateway.handleUpgrade(request, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const raw = await rawConnection(url);
    raw.socket.send(eventsFrame(1, [envelope('test/sink', 'x', toTypedValue('v'))]));
    const [code, reason] = await withTimeout(raw.closed, 5000, 'close after an internal error');
    assert.is(code, CloseCode.InternalError);
    assert.match(reason, /the disk is on fire/);
    assert.ok(logs.some((line) => /internal error.*the disk is on fire/.test(line)), logs.join('\n'));
    // Other connections are not affected.
    const other = await rawConnection(url);
    assert.is(other.welcome.nodeId, 'fake');
    other.socket.close();
  } finally {
    await gateway.close(CloseCode.GoingAway, 'test over');
    await new Promise((resolve) => server.close(resolve));
  }
});

// ---- 2. handlers that throw the unexpected ----

test('handlers throwing huge errors, unprintable values, hostile proxies or bad thenables: dead letters, and each address goes on', async () => {
  const cases: [typename: string, id: string, op: string, reason: RegExp][] = [
    ['hostile/throw', 's-huge', 'huge', /^x{100,}… \[truncated: the message had 3145728 characters\]$/],
    ['hostile/throw', 's-null', 'null-proto', /cannot be turned into a string; throw an Error instead/],
    ['hostile/throw', 's-proxy', 'hostile-getter', /cannot be turned into a string/],
    ['hostile/throw', 's-thenable', 'bad-thenable', /^then getter$/],
    ['hostile/async-throw', 'a-huge', 'huge', /truncated: the message had 3145728 characters/],
    ['hostile/async-throw', 'a-null', 'null-proto', /cannot be turned into a string/],
    ['hostile/async-throw', 'a-proxy', 'hostile-getter', /cannot be turned into a string/],
  ];
  for (const [typename, id, op] of cases) {
    await client.send({ typename, id }, op);
    await client.send({ typename, id }, 'after');
  }
  const letters = await recordsOf<DeadLetter>('dead-letters', (letter) => letter.address.typename.startsWith('hostile/'), cases.length);
  for (const [typename, id, , reason] of cases) {
    const letter = letters.find((candidate) => candidate.address.id === id);
    assert.ok(letter, `a dead letter for ${id}`);
    assert.is(letter!.address.typename, typename);
    assert.is(letter!.code, 'SC_ERR_HANDLER');
    assert.match(letter!.reason, reason, id);
    assert.ok(Buffer.byteLength(letter!.reason) <= 4096, `${id}: reason of ${Buffer.byteLength(letter!.reason)} bytes`);
  }
  // The message after each failure was handled: no address is wedged, no shard died.
  const after = await recordsOf<string>('hostile', (text) => text.endsWith(' after'), cases.length);
  assert.equal(after.sort(), cases.map(([, id]) => `ok ${id} after`).sort());
  await nodeStillServes();
});

test('one invocation scheduling 1,000,000 delayed messages is refused whole (SC_ERR_LIMIT_REACHED), its state unchanged and nothing scheduled; the address and the node go on', async () => {
  const pendingBefore = node.metrics().DelayedPending;
  await client.send({ typename: 'hostile/flood', id: 'f' }, 1_000_000);
  const [letter] = await recordsOf<DeadLetter>('dead-letters', (candidate) => candidate.address.typename === 'hostile/flood', 1);
  assert.is(letter!.code, 'SC_ERR_LIMIT_REACHED');
  assert.match(letter!.reason, /hostile\/flood\/f asked for more than 100000 messages, delayed messages, cancellations and egress records in one invocation/);
  await client.send({ typename: 'hostile/flood', id: 'f' }, 3);
  const [report] = await recordsOf<{ id: string; runs: number }>('flood', (value) => value.id === 'f', 1);
  assert.is(report!.runs, 1, 'the refused invocation changed nothing in its state');
  await eventually(() => node.metrics().DelayedPending === pendingBefore + 3, 'only the 3 delayed messages of the second invocation are pending');
  await nodeStillServes();
});

test('an instance may have at most --delayed-pending-max delayed messages pending: the invocation that would go over is refused whole, its state unchanged; other instances, and the same one once under, go on', async () => {
  const capped = await startTestNode({ functions: [fixture('functions'), fixture('hostile')], shards: 2, delayedPendingMax: 100 });
  const own = await connect(capped.url);
  try {
    const floods = own.subscribe<{ id: string; runs: number }>('flood', { from: 'earliest' });
    const letters = own.subscribe<DeadLetter>('dead-letters', { from: 'earliest' });
    await own.send({ typename: 'hostile/flood', id: 'g' }, 60);
    await own.send({ typename: 'hostile/flood', id: 'g' }, 60); // 120 pending: over
    await own.send({ typename: 'hostile/flood', id: 'h' }, 60); // another instance: its own 60
    await own.send({ typename: 'hostile/flood', id: 'g' }, 40); // exactly 100
    const [letter] = await take(letters, 1);
    assert.is(letter!.value.code, 'SC_ERR_LIMIT_REACHED');
    assert.equal(letter!.value.address, { typename: 'hostile/flood', id: 'g' });
    assert.match(letter!.value.reason, /hostile\/flood\/g would have 120 delayed messages pending, over the limit of 100 per instance \(--delayed-pending-max\)/);
    const reports = (await take(floods, 3)).map((record) => `${record.value.id}:${record.value.runs}`);
    assert.equal(reports.sort(), ['g:1', 'g:2', 'h:1'], 'the refused invocation did not count its run');
    await eventually(() => capped.metrics().DelayedPending === 160, '100 delayed messages of g pending, 60 of h');
  } finally {
    await own.close();
    await capped.close();
  }
});

test('an async handler that never settles is abandoned after --handler-timeout: a dead letter SC_ERR_HANDLER_TIMEOUT, its state write discarded, and its address goes on', async () => {
  const budgeted = await startTestNode({ functions: [fixture('functions'), fixture('hostile')], shards: 2, handlerTimeoutMs: 300 });
  const own = await connect(budgeted.url);
  try {
    const reports = own.subscribe<string>('hang', { from: 'earliest' });
    const letters = own.subscribe<DeadLetter>('dead-letters', { from: 'earliest' });
    await own.send({ typename: 'hostile/hang', id: 'h' }, 'hang');
    await own.send({ typename: 'hostile/hang', id: 'h' }, 'after');
    const [letter] = await take(letters, 1, 5000);
    assert.is(letter!.value.code, 'SC_ERR_HANDLER_TIMEOUT');
    assert.equal(letter!.value.address, { typename: 'hostile/hang', id: 'h' });
    const [report] = await take(reports, 1, 5000);
    assert.is(report!.value, 'after 1', 'the abandoned invocation\'s state write was discarded, and the next message ran');
    assert.is(budgeted.metrics().HandlerTimeouts, 1);
  } finally {
    await own.close();
    await budgeted.close();
  }
});

test('a string value just under valueBytesMax (1 MiB) fits its ring: it is delivered, the shard lives', async () => {
  const big = client.subscribe<string>('big');
  await subscribed(big);
  await client.send({ typename: 'hostile/big', id: 'big' }, 900 * 1024);
  const [record] = await take(big, 1);
  assert.is(record!.value.length, 900 * 1024);
  big.close();
});

// ---- 3. overflow while parked ----

test('an async handler that overfills a ring while its shard is parked: every record still arrives', async () => {
  // The smallest rings (64 KiB): thousands of egress records at once cannot all fit.
  const small = await startTestNode({ functions: [fixture('functions'), fixture('hostile')], shards: 2, ringBytes: 64 * 1024, valueBytesMax: 16 });
  const smallClient = await connect(small.url);
  try {
    const fanout = smallClient.subscribe<number>('fanout', { from: 'earliest' });
    const count = 5000;
    await smallClient.send({ typename: 'hostile/fanout', id: 'f' }, count);
    const records = await take(fanout, count, 10_000);
    assert.equal(records.map((record) => record.value), Array.from({ length: count }, (_, index) => index));
    await eventually(() => small.metrics().overflowBytes === 0, 'overflow queues drained');
  } finally {
    await smallClient.close();
    await small.close();
  }
});

// ---- 4. lone surrogates ----

test('utf8Length counts a lone surrogate as the 3 bytes of U+FFFD, as the encoder writes it', () => {
  for (const text of ['\ud800', '\udc00', 'a\ud800b', '\ud800é', '\ud800\ud800\udc00', '😀', '\udc00\ud800', 'x'.repeat(50) + '\ud800é', '€😀\udfff']) {
    assert.is(utf8Length(text), Buffer.byteLength(text), JSON.stringify(text));
  }
  const text = 'x'.repeat(50) + '\ud800é';
  assert.is(Types.string.deserialize(Types.string.serialize(text)), 'x'.repeat(50) + '\ufffdé');
});

test('a string with a lone surrogate reaches another shard and the client as U+FFFD; the client goes on', async () => {
  const own = await connect(node.url);
  try {
    const shardOf = (id: string) => node.shardOf(keyGroupOf(id, node.keyGroups));
    let other = 'lone-0';
    for (let index = 1; shardOf(other) === shardOf('lone-src'); index++) other = `lone-${index}`;
    const lone = own.subscribe<string>('lone', { from: 'earliest' });
    await own.send({ typename: 'hostile/lone', id: 'lone-src' }, other);
    const expected = 'x'.repeat(50) + '\ufffdé';
    const [record] = await take(lone, 1);
    assert.is(record!.value, expected);
    const [delivered] = await recordsOf<SinkRecord>('sink', (candidate) => candidate.id === other, 1);
    assert.is(delivered!.value, expected, 'the message to the other shard was decodable');
    assert.ok(own.nodeId !== null, 'still connected');
    await own.send({ typename: 'test/sink', id: 'lone-after' }, 'still usable');
  } finally {
    await own.close();
  }
});

// ---- 5, 9, 11: timers and expiry on a one-shard node ----

test('timers and expiry (one shard)', async () => {
  // keyGroups 64: one sweep tick covers every key group.
  const single = await startTestNode({ functions: [fixture('functions'), fixture('hostile'), fixture('timer-probe')], shards: 1, keyGroups: 64 });
  const own = await connect(single.url);
  try {
    await farTimerDoesNotSpin(single, own);
    await cancellationKeysDoNotCollide(own);
    await expiredStateIsSweptWhileIdle(single, own);
  } finally {
    await own.close();
    await single.close();
  }
});

/** 5: a delay Node's setTimeout cannot take (over 2^31-1 ms) must not turn into a 1 ms wake-up loop. */
async function farTimerDoesNotSpin(single: TestNode, own: Client): Promise<void> {
  const warnings: string[] = [];
  const write = process.stderr.write;
  // A shard's warnings reach this thread's stderr: Node says "TimeoutOverflowWarning" for each too-long timer.
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (String(chunk).includes('TimeoutOverflowWarning')) warnings.push(String(chunk));
    return (write as (...args: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    await own.send({ typename: 'test/delayer', id: 'far' }, { op: 'schedule', delayMs: 3e9, tag: 'far' }, Types.json());
    await eventually(() => single.metrics().DelayedPending === 1, 'the far timer to be scheduled');
    // The shard's own wake-ups by timer (test/fixtures/timer-probe.ts), not the process's CPU time:
    // another node runs in this process, and a loaded machine makes CPU figures noisy. Idle, the shard
    // has its sweep (once a second) at most; a 1 ms loop would show hundreds.
    const before = await timerWakeups(own);
    await sleep(1000);
    const woken = (await timerWakeups(own)) - before;
    assert.equal(warnings, [], 'no timer was set beyond 2^31-1 ms');
    assert.ok(woken <= 5, `an idle shard with one far timer was woken ${woken} times by timers in 1 s`);
    assert.is(single.metrics().DelayedPending, 1, 'the timer is still pending');
  } finally {
    process.stderr.write = write;
  }
}

/** How many timers have fired in the (only) shard of a node that loads test/fixtures/timer-probe.ts. */
async function timerWakeups(own: Client): Promise<number> {
  const reports = own.subscribe<number>('timer-wakeups');
  await subscribed(reports);
  await own.send({ typename: 'probe/timer-wakeups', id: 'probe' }, 'report');
  const [record] = await take(reports, 1);
  reports.close();
  return record!.value;
}

/** 9: ("a\0b", token "c") and ("a", token "b\0c") are different senders' tokens. */
async function cancellationKeysDoNotCollide(own: Client): Promise<void> {
  const timer = own.subscribe<SinkRecord>('sink');
  await subscribed(timer);
  // Sent in one frame: the other sender's cancel runs long before the delayed message is due, so a
  // cancel that wrongly matched it would remove it.
  await Promise.all([
    own.send({ typename: 'hostile/timers', id: 'a' }, { op: 'schedule', delayMs: 1000, tag: 'from a', token: 'b\u0000c' }, Types.json()),
    own.send({ typename: 'hostile/timers', id: 'a\u0000b' }, { op: 'cancel', token: 'c' }, Types.json()),
  ]);
  const [record] = await take(timer, 1, 20_000);
  assert.equal([record!.value.id, record!.value.value], ['timer', 'from a']);
  timer.close();
}

/** 11: expired state leaves memory while the shard has nothing else to do. */
async function expiredStateIsSweptWhileIdle(single: TestNode, own: Client): Promise<void> {
  const before = single.metrics().Instances;
  const ids = Array.from({ length: 20 }, (_, index) => `ttl-${index}`);
  await Promise.all(ids.map((id) => own.send({ typename: 'test/ttl', id }, 'write')));
  await eventually(() => single.metrics().Instances === before + ids.length, 'instances with state');
  // Values expire TTL_MS after the write; no message arrives after that.
  await eventually(() => single.metrics().Instances === before, 'expired instances swept', TTL_MS + 10_000);
}

// ---- 8. cancelled timers ----

test('timer queue: cancelled entries leave memory long before they would be due; the rest fire in order', () => {
  const queue = new TimerQueue<number>();
  const far = Date.now() + 1e10;
  for (let index = 0; index < 10_000; index++) queue.schedule(far + (index % 100), index, `t${index}`);
  for (let index = 0; index < 10_000; index++) if (index % 4 !== 0) queue.cancel(`t${index}`);
  assert.is(queue.size, 2500);
  assert.ok(queue.held <= 2 * queue.size + 1024, `holds ${queue.held} entries for ${queue.size} pending`);
  const expected = Array.from({ length: 10_000 }, (_, index) => index)
    .filter((index) => index % 4 === 0)
    .sort((a, b) => (a % 100) - (b % 100) || a - b);
  assert.equal(queue.popDue(far + 100), expected);
  assert.is(queue.held, 0);

  for (let index = 0; index < 10_000; index++) queue.schedule(far + index, index, `u${index}`);
  for (let index = 0; index < 10_000; index++) queue.cancel(`u${index}`);
  assert.is(queue.size, 0);
  assert.ok(queue.held < 1024, `holds ${queue.held} cancelled entries`);
});

// ---- 6, 7: the client across reconnects ----

test('reconnect after the REJECTED frame was lost: the rejected event still rejects, the others resolve once', async () => {
  const proxy = await tcpProxy(Number(new URL(node.url).port));
  const own = await connect(proxy.url, { reconnect: { delayMs: 20, delayMaxMs: 50 } });
  try {
    const before = node.metrics();
    proxy.swallow(); // the node's answers (REJECTED, ACK) never reach the client
    const outcomes = [
      own.send({ typename: 'test/sink', id: 'lost-1' }, 'e1'),
      own.send({ typename: 'test/sink', id: 'lost-2' }, Uint8Array.from([0x0a, 0x01, 0xff]), rawStringBytes),
      own.send({ typename: 'test/sink', id: 'lost-3' }, 'e3'),
    ].map((sent) =>
      sent.then(
        () => 'accepted',
        (error: StatecraftError) => error.code,
      ),
    );
    await eventually(() => node.metrics().EventsRejected === before.EventsRejected + 1 && node.metrics().EventsAccepted === before.EventsAccepted + 2, 'the node to take all three');
    proxy.cut();
    assert.equal(await withTimeout(Promise.all(outcomes), 10_000, 'every send to settle after the reconnect'), ['accepted', 'SC_ERR_INVALID_VALUE', 'accepted']);
    assert.ok(own.nodeId !== null, 'reconnected');
    const delivered = await recordsOf<SinkRecord>('sink', (record) => record.id.startsWith('lost-'), 2);
    assert.equal(delivered.map((record) => record.id).sort(), ['lost-1', 'lost-3']);
    await sleep(200);
    assert.is(node.metrics().EventsAccepted, before.EventsAccepted + 2, 'nothing admitted twice');
    assert.is(node.metrics().EventsRejected, before.EventsRejected + 1, 'a re-answered rejection is not counted again');
  } finally {
    await own.close({ timeoutMs: 10 });
    await proxy.close();
  }
});

test.run();
