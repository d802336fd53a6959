// Seeded fuzzing of the client protocol (lib/client-protocol.ts) and of how the gateway reads client
// frames (node/main/gateway.ts): control bodies and ACKs decoded directly, then HELLO, EVENTS, SUBSCRIBE,
// UNSUBSCRIBE, FLOW and random frames sent over a real WebSocket to a real Gateway with a fake host.
// A decoder returns or throws SC_ERR_MALFORMED_FRAME; the gateway answers or closes that connection
// with 4400/4426, never with 1011 (an internal error), and admits only whole, valid envelopes.
// FUZZ_SEED=<n> replays one seed (see fuzz-harness.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { connect } from '../../lib/client.js';
import { StatecraftError } from '../../lib/errors.js';
import { CloseCode, EVENTS_HEADER_BYTES, Frame, PROTOCOL_VERSION, decodeAck, decodeControl, encodeAck, encodeControl } from '../../lib/client-protocol.js';
import { EnvelopeDecoder } from '../../lib/envelope.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { EgressHub } from '../../node/main/egress-hub.js';
import { Gateway, type GatewayHost } from '../../node/main/gateway.js';
import {
  KnownGaps,
  Random,
  attempt,
  attemptAsync,
  concat,
  describeError,
  expectContract,
  fail,
  injectMsgpackHugeLength,
  isContracted,
  mutateBytes,
  mutateValue,
  planSeeds,
  summary,
  type CaseLabel,
  type ErrorContract,
  type LengthField,
} from './fuzz-harness.js';
import { randomInvoke } from './fuzz-envelopes.js';

const plan = planSeeds('client-protocol', import.meta.url, 12, 3);
const DIRECT_CASES_PER_SEED = 1500;
const SOCKET_CASES_PER_SEED = 150;
const CONTRACT: ErrorContract = { codes: ['SC_ERR_MALFORMED_FRAME'] };
const KEY_GROUPS = 16;
const FUNCTIONS = new Set(['test/counter', 'ns/fn']);

const gaps = new KnownGaps('client-protocol', []);

// ---- valid frames ----

/** A control frame client → node or node → client, as the protocol documents its body. */
function randomControl(random: Random): { frame: number; body: unknown } {
  const subscription = random.chance(0.9) ? random.int(1000) : random.int(2 ** 32);
  return random.pick<() => { frame: number; body: unknown }>([
    () => ({ frame: Frame.Hello, body: { version: PROTOCOL_VERSION, producerId: `p-${random.text(8)}`, client: 'fuzz' } }),
    () => ({ frame: Frame.Subscribe, body: random.chance(0.5) ? { subscription, egress: random.pick(['out', 'probe', 'a/b']) } : { subscription, egress: 'out', after: random.between(-1, 50) } }),
    () => ({ frame: Frame.Unsubscribe, body: { subscription } }),
    () => ({ frame: Frame.Flow, body: { subscription, paused: random.chance(0.5) } }),
    () => ({
      frame: Frame.Welcome,
      body: { version: 1, nodeId: 'n', egressLogId: 'l', lastSeq: random.int(100), keyGroups: KEY_GROUPS, limits: { valueBytesMax: 4096, idBytesMax: 64, frameBytesMax: 1 << 20 }, functions: [...FUNCTIONS], durable: random.chance(0.5) },
    }),
    () => ({ frame: Frame.Rejected, body: { rejections: [[random.int(100), 'SC_ERR_INVALID_ID', 'why']] } }),
    () => ({ frame: Frame.Gap, body: { subscription, from: random.int(10), to: random.int(100) } }),
    () => ({ frame: Frame.Subscribed, body: { subscription, after: random.int(100) } }),
  ])();
}

/**
 * A valid EVENTS frame of 0-4 client events (some for functions the node lacks), with its length fields;
 * with `mutateEvent`, one event's envelope is mutated and the frame's lengths still fit it.
 */
function randomEvents(random: Random, firstSeq: number, mutateEvent = false): { bytes: Uint8Array; fields: LengthField[]; what: string } {
  const envelopes = Array.from({ length: random.int(5) + (mutateEvent ? 1 : 0) }, () =>
    randomInvoke(random, { caller: random.chance(0.1), producer: true, typename: random.chance(0.8) ? random.pick([...FUNCTIONS]) : undefined!, id: random.chance(0.8) ? `id-${random.int(50)}` : undefined! }),
  );
  let what = 'valid';
  if (mutateEvent) {
    const index = random.int(envelopes.length);
    const mutated = mutateBytes(random, envelopes[index]!.bytes, envelopes[index]!.fields);
    envelopes[index] = { bytes: mutated.bytes, fields: [] };
    what = `event ${index} ${mutated.kind}`;
  }
  const fields: LengthField[] = [{ offset: 1, kind: 'f64' }, { offset: 9, kind: 'u32' }];
  const parts: Uint8Array[] = [Uint8Array.of(Frame.Events), new Uint8Array(12)];
  new DataView(parts[1]!.buffer).setFloat64(0, firstSeq, true);
  new DataView(parts[1]!.buffer).setUint32(8, envelopes.length, true);
  let cursor = EVENTS_HEADER_BYTES;
  for (const envelope of envelopes) {
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, envelope.bytes.length, true);
    fields.push({ offset: cursor, kind: 'u32' });
    for (const field of envelope.fields) fields.push({ offset: cursor + 4 + field.offset, kind: field.kind });
    parts.push(length, envelope.bytes);
    cursor += 4 + envelope.bytes.length;
  }
  return { bytes: concat(...parts), fields, what };
}

/** A control frame changed in its decoded body, in its bytes, or given a msgpack header that lies. */
function mutatedControl(random: Random): { what: string; bytes: Uint8Array } {
  const { frame, body } = randomControl(random);
  const name = `0x${frame.toString(16)}`;
  const roll = random.int(3);
  if (roll === 0) {
    const mutated = mutateValue(random, body);
    return { what: `control ${name} ${mutated.kind}`, bytes: encodeControl(frame, mutated.value) };
  }
  const valid = encodeControl(frame, body);
  if (roll === 1) {
    const mutated = mutateBytes(random, valid);
    return { what: `control ${name} ${mutated.kind}`, bytes: mutated.bytes };
  }
  return { what: `control ${name} msgpack-huge-length`, bytes: concat(Uint8Array.of(frame), injectMsgpackHugeLength(random, valid.subarray(1))) };
}

// ---- 1. the decoders, called directly ----

/** `value` as it comes back from UTF-8: a lone surrogate becomes U+FFFD. */
function wellFormed(value: unknown): unknown {
  if (typeof value === 'string') return value.toWellFormed();
  if (Array.isArray(value)) return value.map(wellFormed);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, wellFormed(child)]));
  return value;
}

function checkDecodeControl(label: CaseLabel, bytes: Uint8Array): void {
  const outcome = attempt(() => decodeControl<unknown>(bytes));
  expectContract(label, outcome, CONTRACT);
}

test('decodeControl and decodeAck: mutated and random frames decode or throw SC_ERR_MALFORMED_FRAME', () => {
  const started = performance.now();
  let cases = 0;
  for (const seed of plan.seeds) {
    const random = new Random(seed);
    // Every truncation of a few valid control frames, the empty frame included.
    for (let base = 0; base < 3; base++) {
      const { frame, body } = randomControl(random);
      const valid = encodeControl(frame, body);
      const decoded = decodeControl<unknown>(valid);
      assert.equal(decoded, wellFormed(body), 'a valid control frame decodes to its body');
      for (let length = 0; length < valid.length; length++) {
        const prefix = valid.slice(0, length);
        checkDecodeControl({ plan, seed, index: cases++, what: `control 0x${frame.toString(16)} truncated to ${length}`, input: prefix }, prefix);
      }
    }
    for (let index = 0; index < DIRECT_CASES_PER_SEED; index++) {
      if (random.chance(0.8)) {
        const { what, bytes } = mutatedControl(random);
        checkDecodeControl({ plan, seed, index: cases++, what, input: bytes }, bytes);
      } else {
        const valid = encodeAck(random.pick([0, 1, random.int(2 ** 40)]), random.pick([Frame.Ack, Frame.Committed]));
        const mutated = mutateBytes(random, valid, [{ offset: 1, kind: 'f64' }]);
        const label: CaseLabel = { plan, seed, index: cases++, what: `ack ${mutated.kind}`, input: mutated.bytes };
        const seq = expectContract(label, attempt(() => decodeAck(mutated.bytes)), CONTRACT);
        if (seq !== undefined && mutated.bytes.length !== 9) fail(label, `accepted an ACK of ${mutated.bytes.length} bytes`);
      }
    }
  }
  summary('client-protocol decoders', plan.seeds.length, cases, started);
});

// ---- 2. the gateway, over real sockets ----

interface Admitted {
  bytes: Uint8Array;
  offset: number;
  length: number;
  keyGroup: number;
}

interface Harness {
  url: string;
  logs: string[];
  admitted: Admitted[];
  close(): Promise<void>;
}

async function startGateway(): Promise<Harness> {
  const logs: string[] = [];
  const admitted: Admitted[] = [];
  const host: GatewayHost = {
    nodeId: 'fuzz-node',
    egressLogId: 'fuzz-log',
    keyGroups: KEY_GROUPS,
    limits: { valueBytesMax: 4096, idBytesMax: 64, frameBytesMax: 1 << 20 },
    functions: FUNCTIONS,
    durable: false,
    egress: new EgressHub({ recordsMax: 100, bytesMax: 1 << 20 }),
    tokens: null,
    connectionsMax: 10_000,
    countRefusal: () => undefined,
    admits: () => true,
    // The bytes are the frame's and valid only during the call: keep a copy.
    admit: (bytes, offset, length, keyGroup) => admitted.push({ bytes: bytes.slice(), offset, length, keyGroup }),
    flush: () => undefined,
    countEvents: () => undefined,
    log: (line) => logs.push(line),
  };
  const gateway = new Gateway(host, () => undefined);
  const server: Server = createServer();
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => gateway.handleUpgrade(request, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`,
    logs,
    admitted,
    close: async () => {
      await gateway.close(CloseCode.GoingAway, 'fuzz over');
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** One client connection; `next` resolves when the probe is answered or the connection closes. */
class Connection {
  readonly frames: Buffer[] = [];
  closed: [number, string] | null = null;
  private waiter: (() => void) | null = null;
  private probeId = 4_000_000_000;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      this.frames.push(data);
      this.waiter?.();
    });
    socket.on('close', (code, reason) => {
      this.closed = [code, reason.toString()];
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async open(url: string): Promise<Connection> {
    const socket = new WebSocket(url, { perMessageDeflate: false });
    const connection = new Connection(socket); // listening before 'open', so nothing sent at once is missed
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    return connection;
  }

  /** Sends `frame`, then a SUBSCRIBE probe: the gateway handles frames in order, so its answer means `frame` was handled. */
  async exchange(frame: Uint8Array, probe = true): Promise<'answered' | 'closed'> {
    const probeId = ++this.probeId;
    const answered = () => this.frames.some((data) => data[0] === Frame.Subscribed && (decodeControl<{ subscription: number }>(data)).subscription === probeId);
    this.socket.send(frame);
    if (probe) this.socket.send(encodeControl(Frame.Subscribe, { subscription: probeId, egress: 'probe' }));
    const deadline = Date.now() + 3000;
    while (this.closed === null && !(probe ? answered() : this.frames.length > 0)) {
      if (Date.now() > deadline) return Promise.reject(new Error('no answer and no close within 3 s'));
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 50);
      });
      this.waiter = null;
    }
    return this.closed === null ? 'answered' : 'closed';
  }

  terminate(): void {
    this.socket.terminate();
  }
}

/** Checks what the gateway sent back: every frame decodes, every ACK is a whole number. */
function checkAnswers(label: CaseLabel, frames: Buffer[]): void {
  for (const data of frames.splice(0)) {
    switch (data[0]) {
      case Frame.Ack: {
        const seq = decodeAck(data);
        if (!Number.isSafeInteger(seq) || seq < 0) fail(label, `ACK of ${seq}`);
        break;
      }
      case Frame.Rejected: {
        const { rejections } = decodeControl<{ rejections: [number, string, string][] }>(data);
        for (const [seq, code] of rejections) {
          if (!Number.isSafeInteger(seq) || !/^SC_ERR_[A-Z_]+$/.test(code)) fail(label, `REJECTED [${seq}, ${code}]`);
        }
        break;
      }
      case Frame.Welcome:
      case Frame.Subscribed:
      case Frame.Gap:
        decodeControl(data);
        break;
      default:
        fail(label, `the gateway sent frame 0x${data[0]?.toString(16)}`);
    }
  }
}

/** Every event the gateway admitted is a whole, valid invoke envelope inside its frame, for its key group. */
function checkAdmitted(label: CaseLabel, admitted: Admitted[]): number {
  const decoder = new EnvelopeDecoder();
  let count = 0;
  for (const { bytes, offset, length, keyGroup } of admitted.splice(0)) {
    count++;
    if (!(offset >= 0 && length >= 8 && offset + length <= bytes.length)) fail(label, `admitted ${offset}+${length} of a ${bytes.length}-byte frame`);
    const decoded = attempt(() => decoder.decodeInvoke(bytes, offset, length));
    if (!decoded.ok) fail(label, `admitted an envelope that does not decode: ${describeError(decoded.error)}`);
    const message = decoded.value;
    if (keyGroup !== keyGroupOf(message.targetId, KEY_GROUPS) || message.keyGroup !== keyGroup) fail(label, `admitted to key group ${keyGroup}, its id hashes to ${keyGroupOf(message.targetId, KEY_GROUPS)}`);
    if (!FUNCTIONS.has(message.targetTypename)) fail(label, `admitted an event for ${message.targetTypename}`);
    if (message.callerTypename !== null) fail(label, 'admitted a client event with a caller');
    if (message.targetId.length === 0 || Buffer.byteLength(message.targetId) > 64) fail(label, 'admitted an id beyond the limits');
  }
  return count;
}

function checkClose(label: CaseLabel, connection: Connection, harness: Harness): void {
  const [code, reason] = connection.closed!;
  if (code !== CloseCode.MalformedFrame && code !== CloseCode.ProtocolVersion) fail(label, `the gateway closed with ${code} ${reason}`);
  const internal = harness.logs.find((line) => /internal error/.test(line));
  if (internal !== undefined) fail(label, `the gateway logged: ${internal}`);
}

async function hello(connection: Connection, random: Random): Promise<void> {
  const frame = encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId: `fuzz-${random.int(2 ** 31)}`, client: 'fuzz' });
  const outcome = await connection.exchange(frame, false);
  assert.is(outcome, 'answered', 'a valid HELLO is welcomed');
  assert.is(connection.frames.shift()![0], Frame.Welcome);
}

test('the gateway: mutated HELLO, EVENTS and control frames are answered or close that connection with 4400/4426, never 1011', async () => {
  const started = performance.now();
  const harness = await startGateway();
  let cases = 0;
  let admitted = 0;
  let closes = 0;
  let connection: Connection | null = null;
  try {
    for (const seed of plan.seeds) {
      const random = new Random(seed);
      connection?.terminate();
      connection = null;
      for (let index = 0; index < SOCKET_CASES_PER_SEED; index++) {
        let frame: Uint8Array;
        let what: string;
        const first = connection === null;
        if (first) connection = await Connection.open(harness.url);
        if (first && random.chance(0.3)) {
          // The first frame itself: a mutated HELLO, or anything else (refused before HELLO).
          const mutated = random.chance(0.7)
            ? mutateBytes(random, encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId: `fuzz-${random.int(1000)}`, client: 'fuzz' }))
            : { kind: 'non-hello first', bytes: randomEvents(random, 1).bytes };
          frame = mutated.bytes;
          what = `first frame ${mutated.kind}`;
        } else {
          if (first) await hello(connection!, random);
          const roll = random.int(10);
          if (roll < 3) {
            const events = randomEvents(random, random.between(1, 40));
            const mutated = random.chance(0.85) ? mutateBytes(random, events.bytes, events.fields) : { kind: 'valid', bytes: events.bytes };
            frame = mutated.bytes;
            what = `EVENTS ${mutated.kind}`;
          } else if (roll < 6) {
            // The frame holds together; one event inside it does not.
            const events = randomEvents(random, random.between(1, 40), true);
            frame = events.bytes;
            what = `EVENTS with ${events.what}`;
          } else if (roll < 9) {
            ({ what, bytes: frame } = mutatedControl(random));
          } else {
            frame = random.bytes(random.between(1, 40));
            what = 'random bytes';
          }
        }
        // An empty WebSocket message is a frame too (the gateway refuses it).
        const label: CaseLabel = { plan, seed, index: cases++, what, input: frame };
        let outcome: 'answered' | 'closed';
        try {
          outcome = await connection!.exchange(frame);
        } catch (error) {
          fail(label, (error as Error).message);
        }
        checkAnswers(label, connection!.frames);
        admitted += checkAdmitted(label, harness.admitted);
        if (outcome === 'closed') {
          checkClose(label, connection!, harness);
          closes++;
          connection = null;
        }
      }
    }
  } finally {
    connection?.terminate();
    await harness.close();
  }
  summary('client-protocol gateway', plan.seeds.length, cases, started);
  console.log(`[fuzz client-protocol] the gateway admitted ${admitted} events and closed ${closes} connections`);
  gaps.report();
});

// ---- gaps the fuzz found, fixed and held here ----

// decodeControl built its error message from `data[0]!.toString(16)`: an empty frame threw a TypeError.
test('decodeControl of an empty frame throws SC_ERR_MALFORMED_FRAME', () => {
  const input = new Uint8Array(0);
  try {
    decodeControl(input);
    assert.unreachable('an empty frame was decoded');
  } catch (error) {
    assert.ok(isContracted(error, CONTRACT), describeError(error));
  }
});

// The gateway checked that an EVENTS frame's firstSeq is a safe integer, not that firstSeq + count - 1 is.
// From 2^53 on seqs are inexact: with firstSeq = 2^53 - 1 and three events, the third's seq (2^53 + 1)
// rounds to the second's, so the gateway took it for a re-send and dropped it, yet the ACK covered it.
// The frame is refused whole now, before anything in it is admitted.
test('the gateway refuses an EVENTS frame whose seqs run past 2^53 - 1 (two events or three), admitting none of it', async () => {
  // Two: 2^53 - 1 + 2 rounds to 2^53, and minus 1 it looked safe again (found by fuzz seed 1992328709).
  for (const count of [2, 3]) {
    const harness = await startGateway();
    const connection = await Connection.open(harness.url);
    try {
      await hello(connection, new Random(1));
      const random = new Random(2);
      const events = Array.from({ length: count }, (_, index) => index).map((index) => randomInvoke(random, { caller: false, producer: true, typename: 'ns/fn', id: `id-${index}` }).bytes);
      const frame = concat(Uint8Array.of(Frame.Events), new Uint8Array(12), ...events.flatMap((bytes) => [new Uint8Array(4), bytes]));
      const view = new DataView(frame.buffer);
      view.setFloat64(1, Number.MAX_SAFE_INTEGER, true);
      view.setUint32(9, events.length, true);
      let cursor = EVENTS_HEADER_BYTES;
      for (const bytes of events) {
        view.setUint32(cursor, bytes.length, true);
        cursor += 4 + bytes.length;
      }
      const outcome = await connection.exchange(frame);
      assert.equal({ outcome, admitted: harness.admitted.length, acks: connection.frames.filter((data) => data[0] === Frame.Ack).length }, { outcome: 'closed', admitted: 0, acks: 0 });
    } finally {
      connection.terminate();
      await harness.close();
    }
  }
});

/**
 * A fake node for the client's side of the protocol: it answers HELLO with `welcome`, then each EVENTS
 * frame with `answer(seq)`. Returns its URL and a close function.
 */
async function fakeNode(welcome: unknown, answer: (firstSeq: number) => Uint8Array[] = () => []): Promise<{ url: string; close(): Promise<void> }> {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((resolve) => server.once('listening', resolve));
  server.on('connection', (socket) =>
    socket.on('message', (data: Buffer) => {
      if (data[0] === Frame.Hello) socket.send(encodeControl(Frame.Welcome, welcome));
      else if (data[0] === Frame.Events) for (const frame of answer(data.readDoubleLE(1))) socket.send(frame);
    }),
  );
  return {
    url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: async () => {
      for (const client of server.clients) client.terminate();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const WELCOME = { version: PROTOCOL_VERSION, nodeId: 'n', egressLogId: 'l', lastSeq: 0, keyGroups: KEY_GROUPS, limits: { valueBytesMax: 4096, idBytesMax: 64, frameBytesMax: 1 << 20 }, functions: ['a/b'] };

// The client took a WELCOME whose body was any msgpack and kept its fields unchecked: one without
// `limits` (smallest: { version: 1 }) was accepted, and every send() then threw a TypeError. Each field
// is checked now and a WELCOME that breaks one fails connect() with SC_ERR_MALFORMED_FRAME.
test('the client refuses a WELCOME without limits or functions, or with a field of the wrong kind', async () => {
  const broken: unknown[] = [
    { version: PROTOCOL_VERSION },
    { ...WELCOME, limits: undefined },
    { ...WELCOME, functions: 'a/b' },
    { ...WELCOME, keyGroups: 0 },
    { ...WELCOME, lastSeq: -1 },
    { ...WELCOME, limits: { ...WELCOME.limits, idBytesMax: '64' } },
    { ...WELCOME, durable: 1 },
    [1, 2, 3],
    null,
  ];
  for (const welcome of broken) {
    const node = await fakeNode(welcome);
    try {
      const connected = await attemptAsync(() => connect(node.url, { reconnect: false, connectTimeoutMs: 2000 }));
      if (connected.ok) await connected.value.close().catch(() => undefined);
      // connect() fails as it does for any node it cannot use (SC_ERR_CONNECT_FAILED), the WELCOME's fault as its cause.
      const cause = connected.ok ? undefined : (connected.error as Error).cause;
      assert.ok(!connected.ok && (connected.error as StatecraftError).code === 'SC_ERR_CONNECT_FAILED' && isContracted(cause, CONTRACT), `WELCOME ${JSON.stringify(welcome)}: ${connected.ok ? 'connected' : `${describeError(connected.error)} caused by ${describeError(cause)}`}`);
    } finally {
      await node.close();
    }
  }
  const node = await fakeNode(WELCOME);
  try {
    const client = await connect(node.url, { reconnect: false, connectTimeoutMs: 2000 });
    await client.close();
  } finally {
    await node.close();
  }
});

// A REJECTED entry's code went into the error send() rejects with unchecked, so a node's bytes decided
// `error.code` (the number 7 below). Callers branch on the code: an entry whose code is not one of
// lib/errors.ts is a malformed frame now, which ends the client with SC_ERR_MALFORMED_FRAME.
test('the client refuses a REJECTED entry whose code is not a Statecraft error code', async () => {
  const node = await fakeNode(WELCOME, (firstSeq) => [encodeControl(Frame.Rejected, { rejections: [[firstSeq, 7, 'm']] }), encodeAck(firstSeq)]);
  try {
    const client = await connect(node.url, { reconnect: false, connectTimeoutMs: 2000 });
    const sent = await attemptAsync(() => client.send({ typename: 'a/b', id: 'x' }, 1));
    await client.close().catch(() => undefined);
    assert.ok(!sent.ok && sent.error instanceof StatecraftError && sent.error.code === 'SC_ERR_MALFORMED_FRAME', sent.ok ? 'resolved' : `code ${JSON.stringify((sent.error as StatecraftError).code)}`);
  } finally {
    await node.close();
  }
  // A code of lib/errors.ts still reaches the caller as sent, and the client stays open.
  const valid = await fakeNode(WELCOME, (firstSeq) => [encodeControl(Frame.Rejected, { rejections: [[firstSeq, 'SC_ERR_INVALID_VALUE', 'm']] }), encodeAck(firstSeq)]);
  try {
    const client = await connect(valid.url, { reconnect: false, connectTimeoutMs: 2000 });
    const sent = await attemptAsync(() => client.send({ typename: 'a/b', id: 'x' }, 1));
    assert.ok(!sent.ok && sent.error instanceof StatecraftError && sent.error.code === 'SC_ERR_INVALID_VALUE', sent.ok ? 'resolved' : describeError(sent.error));
    assert.is(client.nodeId, 'n');
    await client.close();
  } finally {
    await valid.close();
  }
});

test.run();
