// The client against a fake node (a bare WebSocket server) where the test must control exactly what the
// client receives: records it cannot decode, reconnects that race close(), rejected events across
// reconnects.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type WebSocket from 'ws';
import { connect, type Client, type StatecraftError } from 'statecraft';
import { Frame, decodeControl, encodeAck, encodeControl } from '../../lib/client-protocol.js';
import { TypedValue, toTypedValue } from '../../lib/typed-value.js';
import { egressEnvelope, fakeNode, parseEvents, recordsFrame, welcomeFrame } from '../fake-node.js';
import { eventually, sleep, take, withTimeout } from '../helpers.js';

/** A string value whose bytes are not UTF-8 (the protobuf wrapper of the single byte 0xff). */
const notUtf8 = new TypedValue('io.statefun.types/string', undefined, Uint8Array.from([0x0a, 0x01, 0xff]));

test('an egress record the client cannot decode is skipped and reported; the subscription and connection go on', async () => {
  const fake = await fakeNode((socket) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) socket.send(welcomeFrame());
      if (data[0] !== Frame.Subscribe) return;
      const { subscription } = decodeControl<{ subscription: number }>(data);
      socket.send(encodeControl(Frame.Subscribed, { subscription, after: 0 }));
      socket.send(recordsFrame(subscription, 1, [egressEnvelope('fake', toTypedValue('one')), egressEnvelope('fake', notUtf8), egressEnvelope('fake', toTypedValue('three'))]));
    });
  });
  const errors: [number, string][] = [];
  const own = await connect(fake.url, { reconnect: false });
  try {
    const subscription = own.subscribe<string>('fake', { onError: (error, id) => errors.push([id, error.code]) });
    const records = await take(subscription, 2, 5000);
    assert.equal(records.map((record) => [record.id, record.value]), [[1, 'one'], [3, 'three']]);
    assert.equal(errors, [[2, 'SC_ERR_MALFORMED_FRAME']]);
    await sleep(50);
    assert.is(own.nodeId, 'fake', 'still connected');
  } finally {
    await own.close({ timeoutMs: 10 });
    await fake.close();
  }
});

test('egress records of one key group that arrive out of order are each delivered once: a late one is not taken for a repeat', async () => {
  // Seqs of key group 3 as a node's log may hold them after a hand-over (both sides released in one
  // commit), then again after a recovery; key group 5 was at 7 when the subscription started.
  const seqs = [1, 2, 4, 3, 5, 2, 4, 6, 7, 8, 5];
  const fake = await fakeNode((socket) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) socket.send(welcomeFrame());
      if (data[0] !== Frame.Subscribe) return;
      const { subscription } = decodeControl<{ subscription: number }>(data);
      socket.send(encodeControl(Frame.Subscribed, { subscription, after: 0, marks: [[5, 7]] }));
      const records = seqs.map((seq) => egressEnvelope('fake', toTypedValue(`kg3:${seq}`), { keyGroup: seq > 5 ? 5 : 3, seq }));
      socket.send(recordsFrame(subscription, 1, records));
    });
  });
  const own = await connect(fake.url, { reconnect: false });
  try {
    const subscription = own.subscribe<string>('fake');
    const records = await take(subscription, 6, 5000);
    assert.equal(
      records.map((record) => record.recordId),
      ['3:1', '3:2', '3:4', '3:3', '3:5', '5:8'],
      'each seq once, the late 3 included; 5:6 and 5:7 were produced before the subscription',
    );
    await sleep(50);
    assert.is(subscription.lastId, seqs.length, 'the repeats were read and dropped');
  } finally {
    await own.close({ timeoutMs: 10 });
    await fake.close();
  }
});

test('close() while a reconnect attempt waits for its WELCOME: the client stays closed', async () => {
  let first: WebSocket | null = null;
  let held: WebSocket | null = null;
  let heldClosed = false;
  const fake = await fakeNode((socket, connection) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] !== Frame.Hello) return;
      if (connection === 1) {
        first = socket;
        socket.send(welcomeFrame());
      } else if (held === null) {
        held = socket;
        socket.once('close', () => (heldClosed = true));
      }
    });
  });
  let own: Client | undefined;
  try {
    own = await connect(fake.url, { reconnect: { delayMs: 10, delayMaxMs: 20 } });
    first!.terminate();
    await eventually(() => held !== null, 'a reconnect attempt to say HELLO');
    await own.close();
    held!.send(welcomeFrame()); // the attempt succeeds after close()
    await eventually(() => heldClosed, 'the client to drop the connection it no longer wants', 3000);
    const closed = own;
    assert.is(closed.nodeId, null);
    assert.throws(
      () => closed.send({ typename: 'test/sink', id: 'x' }, 'after close'),
      (error: unknown) => (error as StatecraftError).code === 'SC_ERR_CLIENT_CLOSED',
    );
  } finally {
    await own?.close({ timeoutMs: 10 });
    await fake.close();
  }
});

test('connect(): a node that closes with "recovering" (1012) or "try again later" (1013) before its WELCOME is tried again', async () => {
  const fake = await fakeNode((socket, connection) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] !== Frame.Hello) return;
      if (connection === 1) socket.close(1012, 'the cluster is recovering: reconnect and re-send');
      else if (connection === 2) socket.close(1013, 'node-a reaches 1 of the 3 members');
      else socket.send(welcomeFrame());
    });
  });
  let own: Client | undefined;
  try {
    own = await connect(fake.url, { reconnect: { delayMs: 10, delayMaxMs: 20 } });
    assert.is(own.nodeId, 'fake');
  } finally {
    await own?.close({ timeoutMs: 10 });
    await fake.close();
  }
});

/** An HTTP server answering every WebSocket upgrade with `status` and a JSON reason, counting them. */
async function refusingServer(status: number): Promise<{ url: string; upgrades(): number; close(): Promise<void> }> {
  let upgrades = 0;
  const server = createServer((_request, response) => response.writeHead(404).end());
  server.on('upgrade', (_request, socket) => {
    upgrades++;
    const body = JSON.stringify({ error: 'node-a reaches 1 of the 3 members of the last agreed view, not a majority: connect to another node' });
    socket.end(`HTTP/1.1 ${status} Refused\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `ws://127.0.0.1:${port}`, upgrades: () => upgrades, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

test('connect(): a node that keeps answering 503 is tried again until connectTimeoutMs, and the error carries its reason', async () => {
  const refusing = await refusingServer(503);
  try {
    const error = await connect(refusing.url, { connectTimeoutMs: 500, reconnect: { delayMs: 20, delayMaxMs: 40 } }).then(
      (): StatecraftError => assert.unreachable('connect() should have failed') as never,
      (error: StatecraftError) => error,
    );
    assert.is(error.code, 'SC_ERR_CONNECT_FAILED');
    assert.match(error.message, /HTTP 503: node-a reaches 1 of the 3 members/);
    assert.ok(refusing.upgrades() > 1, `expected several attempts, got ${refusing.upgrades()}`);
  } finally {
    await refusing.close();
  }
});

test('connect(): any other refusal (here 404) fails at once, after one attempt', async () => {
  const refusing = await refusingServer(404);
  try {
    const error = await connect(refusing.url, { connectTimeoutMs: 5000, reconnect: { delayMs: 20, delayMaxMs: 40 } }).then(
      (): StatecraftError => assert.unreachable('connect() should have failed') as never,
      (error: StatecraftError) => error,
    );
    assert.is(error.code, 'SC_ERR_CONNECT_FAILED');
    assert.match(error.message, /HTTP 404/);
    assert.is(refusing.upgrades(), 1);
  } finally {
    await refusing.close();
  }
});

test('reconnect: each event keeps its sequence number, also after a rejected one', async () => {
  const numbered: string[][] = [[], [], []];
  const fake = await fakeNode((socket, connection) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) return socket.send(welcomeFrame(0));
      if (data[0] !== Frame.Events) return;
      const { firstSeq, values } = parseEvents(data);
      numbered[Math.min(connection, 2)]!.push(...values.map((value, index) => `${value}:${firstSeq + index}`));
      if (connection === 1) {
        // Reject the second event, then lose the connection before any ACK.
        socket.send(encodeControl(Frame.Rejected, { rejections: [[2, 'SC_ERR_INVALID_VALUE', 'e2 is not wanted']] }));
        setTimeout(() => socket.terminate(), 20);
      } else {
        socket.send(encodeAck(firstSeq + values.length - 1));
      }
    });
  });
  const own = await connect(fake.url, { reconnect: { delayMs: 10, delayMaxMs: 20 } });
  try {
    const outcomes = ['e1', 'e2', 'e3'].map((value) =>
      own.send({ typename: 'test/sink', id: 'r' }, value).then(
        () => 'accepted',
        (error: StatecraftError) => error.code,
      ),
    );
    assert.equal(await withTimeout(Promise.all(outcomes), 5000, 'every send to settle'), ['accepted', 'SC_ERR_INVALID_VALUE', 'accepted']);
    assert.equal(numbered[1], ['e1:1', 'e2:2', 'e3:3']);
    const again = new Map(numbered[2]!.map((entry) => [entry.split(':')[0], entry]));
    assert.is(again.get('e1'), 'e1:1');
    assert.is(again.get('e3'), 'e3:3', `re-sent as ${JSON.stringify(numbered[2])}`);
  } finally {
    await own.close({ timeoutMs: 10 });
    await fake.close();
  }
});

test('heartbeat: a node that goes silent (frozen: it answers no ping) is dropped, and the client re-sends to the next node', async () => {
  const received: string[][] = [[], []];
  let silent: WebSocket | null = null;
  const frozen = await fakeNode((socket) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) {
        socket.send(welcomeFrame());
        return;
      }
      if (data[0] !== Frame.Events) return;
      received[0]!.push(...parseEvents(data).values);
      // Frozen from here on: reads nothing more (no pong), answers nothing, never closes.
      silent = socket;
      socket.pause();
    });
  });
  const alive = await fakeNode((socket) => {
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) return socket.send(welcomeFrame());
      if (data[0] !== Frame.Events) return;
      const { firstSeq, values } = parseEvents(data);
      received[1]!.push(...values);
      socket.send(encodeAck(firstSeq + values.length - 1));
    });
  });
  const own = await connect([frozen.url, alive.url], { heartbeat: { intervalMs: 100, timeoutMs: 400 }, reconnect: { delayMs: 10, delayMaxMs: 20 } });
  try {
    await withTimeout(own.send({ typename: 'test/sink', id: 'h' }, 'e1'), 5000, 'the event accepted by the node that is alive');
    assert.equal(received, [['e1'], ['e1']], 'sent to the frozen node, then re-sent to the live one');
    assert.ok(silent !== null && (silent as WebSocket).readyState === (silent as WebSocket).OPEN, 'the frozen node never closed its end');
  } finally {
    await own.close({ timeoutMs: 10 });
    await frozen.close();
    await alive.close();
  }
});

test('heartbeat: false waits for a frozen node; a client that was itself blocked does not take its own silence for the node\'s', async () => {
  let connections = 0;
  let frozen = false;
  const fake = await fakeNode((socket) => {
    connections++;
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) socket.send(welcomeFrame());
      if (frozen) socket.pause();
    });
  });
  const patient = await connect(fake.url, { heartbeat: false, reconnect: { delayMs: 10, delayMaxMs: 20 } });
  const watchful = await connect(fake.url, { heartbeat: { intervalMs: 100, timeoutMs: 400 }, reconnect: { delayMs: 10, delayMaxMs: 20 } });
  try {
    assert.is(connections, 2);
    // This process is busy for 3 timeouts: the node's pongs wait unread; the connection must survive it.
    const until = Date.now() + 1200;
    while (Date.now() < until) {
      // blocked
    }
    await sleep(300);
    assert.is(connections, 2, 'no reconnect after the client itself was blocked');
    assert.is(watchful.nodeId, 'fake');
    frozen = true;
    void patient.send({ typename: 'test/sink', id: 'p' }, 'e1').catch(() => undefined); // freezes its connection
    await sleep(1000);
    assert.is(connections, 2, 'without a heartbeat the client keeps waiting on the frozen node');
    assert.is(patient.nodeId, 'fake');
  } finally {
    await patient.close({ timeoutMs: 10 });
    await watchful.close({ timeoutMs: 10 });
    await fake.close();
  }
});

test('heartbeat: options are checked', async () => {
  for (const heartbeat of [{ intervalMs: 0 }, { timeoutMs: -1 }, { intervalMs: 1000, timeoutMs: 1500 }, 'yes']) {
    const code = await connect('ws://127.0.0.1:1', { heartbeat: heartbeat as never }).then(
      () => 'connected',
      (error: StatecraftError) => error.code,
    );
    assert.is(code, 'SC_ERR_INVALID_OPTION', JSON.stringify(heartbeat));
  }
});

test.run();
