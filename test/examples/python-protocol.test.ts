// test-timeout-ms: 60000
// The Python example (examples/python/pong.py on statefun_lite.py) over real HTTP, spoken to with this
// runtime's own request-reply encoder and decoder: incomplete contexts, a batch's state and effects,
// existing state, and bad requests. Skipped (with a message) only where /usr/bin/python3 has no protobuf.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { repoRoot } from '../../scripts/repo-root.js';
import { probe, requireTool } from '../requirements.js';
import { Types } from '../../lib/index.js';
import { decodeFromFunction, encodeToFunction, type FunctionResponse, type InvocationBatch, type InvocationResult, type RemoteTypedValue } from '../../lib/statefun-protocol.js';

const PYTHON = '/usr/bin/python3';
const root = repoRoot;
const INT = 'io.statefun.types/int';
const STRING = 'io.statefun.types/string';
const REPORT = 'example/pong-report';

const available = probe(PYTHON, ['-c', 'import google.protobuf']);
// Without Python the file runs one test that says so (and fails under CI=true): uvu leaves skipped
// tests out of its Total, and scripts/run-tests.js counts a file that ran nothing as failed.
const it = available ? test : (_name: string, _body: () => Promise<void>) => undefined;
if (!available) test('the Python example tests need python3 with protobuf', () => void requireTool(false, `${PYTHON} with google.protobuf`, 'apt-get install python3-protobuf'));

/** Own helper rather than ../helpers.js: this test needs nothing of the runtime but its protocol codec. */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- the wrappers by hand: IntWrapper { sfixed32 value = 1 } is tag 0x0d and 4 little-endian bytes,
// LongWrapper { sfixed64 } tag 0x09 and 8, StringWrapper { string } tag 0x0a, a length and UTF-8 ----
function varint(value: number): number[] {
  const bytes: number[] = [];
  do {
    bytes.push((value % 128) | (value > 127 ? 0x80 : 0));
    value = Math.floor(value / 128);
  } while (value > 0);
  return bytes;
}
const littleEndian = (n: number, width: 4 | 8) => Array.from({ length: width }, (_, index) => Number((BigInt.asUintN(64, BigInt(n)) >> BigInt(8 * index)) & 0xffn));
const intValue = (n: number): RemoteTypedValue => ({ typename: INT, value: Uint8Array.from(n === 0 ? [] : [0x0d, ...littleEndian(n, 4)]) });
const stringValue = (text: string): RemoteTypedValue => {
  const utf8 = [...new TextEncoder().encode(text)];
  return { typename: STRING, value: Uint8Array.from([0x0a, ...varint(utf8.length), ...utf8]) };
};
function readInt(value: RemoteTypedValue | null): number {
  assert.ok(value !== null && value.value !== null, 'an int value');
  assert.is(value!.typename, INT);
  const bytes = value!.value!;
  assert.equal(bytes, Types.int.serialize(Types.int.deserialize(bytes)), 'the bytes this runtime writes for the same int');
  if (bytes.length === 0) return 0; // proto3 leaves out a zero
  assert.equal([bytes.length, bytes[0]], [5, 0x0d], 'IntWrapper: field 1, fixed32');
  return Buffer.from(bytes).readInt32LE(1);
}
function readString(value: RemoteTypedValue | null): string {
  assert.ok(value !== null && value.value !== null, 'a string value');
  assert.is(value!.typename, STRING);
  assert.is(value!.value![0], 0x0a, 'StringWrapper field 1, length-delimited');
  return new TextDecoder().decode(value!.value!.subarray(2)); // short strings: a one-byte length
}
const readJson = (value: RemoteTypedValue): unknown => JSON.parse(new TextDecoder().decode(value.value!));

// ---- the python process and HTTP to it ----
let python: ChildProcess | undefined;
let stderr = '';
let port = 0;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

async function startPython(): Promise<void> {
  const child = spawn(PYTHON, ['examples/python/pong.py', '--port', '0'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  python = child;
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const firstLine = new Promise<string>((resolve, reject) => {
    let stdout = '';
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
      if (stdout.includes('\n')) resolve(stdout.slice(0, stdout.indexOf('\n')));
    });
    child.on('exit', (code, signal) => reject(new Error(`pong.py exited (${signal ?? code}) before listening: ${stderr}`)));
  });
  const line = await withTimeout(firstLine, 15_000, 'pong.py to print its address');
  const match = /^listening on http:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line);
  assert.ok(match, `first line: ${line}`);
  port = Number(match![1]);
}

interface Reply {
  status: number;
  contentType: string;
  body: Buffer;
  reusedSocket: boolean;
}

function post(body: Uint8Array, path = '/pong'): Promise<Reply> {
  return withTimeout(
    new Promise<Reply>((resolve, reject) => {
      const outgoing = request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode!, contentType: String(response.headers['content-type']), body: Buffer.concat(chunks), reusedSocket: outgoing.reusedSocket }),
        );
        response.on('error', reject);
      });
      outgoing.on('error', reject);
      outgoing.end(body);
    }),
    10_000,
    `POST ${path}`,
  );
}

async function invoke(batch: InvocationBatch): Promise<FunctionResponse> {
  const reply = await post(encodeToFunction(batch));
  assert.is(reply.status, 200, `status 200, not ${reply.status}: ${reply.body.toString()}`);
  assert.is(reply.contentType, 'application/octet-stream');
  return decodeFromFunction(reply.body);
}

async function result(batch: InvocationBatch): Promise<InvocationResult> {
  const response = await invoke(batch);
  if (response.kind !== 'result') throw new Error(`expected a result, got ${JSON.stringify(response)}`);
  return response;
}

const target = (id: string) => ({ namespace: 'py', type: 'pong', id });
const ping = { namespace: 'ts', type: 'ping', id: 'a' };
const emptyState = [
  { name: 'hits', value: { typename: INT, value: null } },
  { name: 'last_caller', value: { typename: STRING, value: null } },
];

test.before(async () => {
  if (available) await startPython();
});
test.after(async () => {
  agent.destroy();
  if (python !== undefined && python.exitCode === null && python.signalCode === null) python.kill('SIGKILL');
});

it('the wrapper bytes this test builds by hand are the runtime\'s own', async () => {
  for (const n of [0, 1, 41, -2, 2 ** 31 - 1]) assert.equal(intValue(n).value, Types.int.serialize(n), `int ${n}`);
  assert.equal(longValue(2 ** 40).value, Types.long.serialize(2 ** 40));
  assert.equal(stringValue('ts/ping/z').value, Types.string.serialize('ts/ping/z'));
});

it('a batch without the declared state: an incomplete context naming both values, and nothing runs', async () => {
  const response = await invoke({ target: target('b'), state: [], invocations: [{ caller: ping, argument: intValue(3) }] });
  assert.equal(response, {
    kind: 'incomplete',
    missingValues: [
      { name: 'hits', typename: INT, expireMode: 'none', expireAfterMs: 0 },
      { name: 'last_caller', typename: STRING, expireMode: 'after-write', expireAfterMs: 60_000 },
    ],
  });
  const partly = await invoke({ target: target('b'), state: [emptyState[0]!], invocations: [{ caller: ping, argument: intValue(3) }] });
  assert.equal(partly, { kind: 'incomplete', missingValues: [{ name: 'last_caller', typename: STRING, expireMode: 'after-write', expireAfterMs: 60_000 }] });
});

it('a batch of three: each invocation sees the last one\'s writes; one MODIFY per value; effects in order', async () => {
  const response = await result({
    target: target('b'),
    state: emptyState,
    invocations: [2, 1, 0].map((n) => ({ caller: ping, argument: intValue(n) })),
  });
  const mutations = new Map(response.stateMutations.map((mutation) => [mutation.name, mutation.value]));
  assert.equal([...mutations.keys()].sort(), ['hits', 'last_caller']);
  assert.is(readInt(mutations.get('hits')!), 3);
  assert.is(readString(mutations.get('last_caller')!), 'ts/ping/a');
  assert.equal(
    response.outgoingEgresses.map((egress) => [egress.namespace, egress.type, egress.argument.typename]),
    Array(3).fill(['example', 'pongs', REPORT]),
  );
  assert.equal(response.outgoingEgresses.map((egress) => readJson(egress.argument)), [
    { id: 'b', hits: 1, n: 2 },
    { id: 'b', hits: 2, n: 1 },
    { id: 'b', hits: 3, n: 0 },
  ]);
  assert.equal(response.outgoingMessages.map((message) => message.target), [ping, ping], 'n = 0 is not answered');
  assert.equal(response.outgoingMessages.map((message) => readInt(message.argument)), [1, 0]);
  assert.equal(response.delayedInvocations, []);
});

it('existing state: hits 41 becomes 42; a message without a caller changes nothing else and sends nothing back', async () => {
  const response = await result({
    target: target('c'),
    state: [
      { name: 'hits', value: intValue(41) },
      { name: 'last_caller', value: stringValue('ts/ping/z') },
    ],
    invocations: [{ caller: null, argument: intValue(5) }],
  });
  assert.equal(response.stateMutations.map((mutation) => mutation.name), ['hits'], 'last_caller untouched');
  assert.is(readInt(response.stateMutations[0]!.value), 42);
  assert.equal(response.outgoingEgresses.map((egress) => readJson(egress.argument)), [{ id: 'c', hits: 42, n: 5 }]);
  assert.equal(response.outgoingMessages, []);
});

it('garbage is a 400 with a text body; the server answers good requests after it, on the same connection', async () => {
  const garbage = await post(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x13, 0x37]));
  assert.is(garbage.status, 400);
  assert.match(garbage.contentType, /^text\/plain/);
  assert.match(garbage.body.toString(), /ToFunction/);
  // Valid protobuf (an unknown field) that is no ToFunction is refused as well.
  const notARequest = await post(new TextEncoder().encode('xx'));
  assert.is(notARequest.status, 400);
  assert.match(notARequest.body.toString(), /no invocation batch/);
  const good = await result({ target: target('d'), state: emptyState, invocations: [{ caller: null, argument: intValue(7) }] });
  assert.is(readInt(good.stateMutations.find((mutation) => mutation.name === 'hits')!.value), 1);
  const again = await post(encodeToFunction({ target: target('d'), state: emptyState, invocations: [{ caller: null, argument: intValue(7) }] }));
  assert.is(again.status, 200);
  assert.ok(again.reusedSocket, 'keep-alive: the connection is reused');
});

it('a function that raises is a 500 naming the error; an unknown function is a 404', async () => {
  const failed = await post(encodeToFunction({ target: target('e'), state: emptyState, invocations: [{ caller: ping, argument: stringValue('not an int') }] }));
  assert.is(failed.status, 500);
  assert.match(failed.contentType, /^text\/plain/);
  assert.is(failed.body.toString(), `py/pong failed: TypeError: message is ${STRING}, not ${INT}`);
  const unknown = await post(encodeToFunction({ target: { namespace: 'py', type: 'nope', id: 'x' }, state: [], invocations: [{ caller: null, argument: intValue(1) }] }));
  assert.is(unknown.status, 404);
  assert.match(unknown.body.toString(), /py\/nope/);
});

// The rest of statefun_lite, without HTTP: Functions.handle reads a ToFunction on stdin and writes the
// FromFunction to stdout.
const allEffects = `
import sys
sys.path.insert(0, 'examples/python')
from statefun_lite import (BoolType, DoubleType, Functions, LongType, StringType, ValueSpec,
                           json_type)
functions = Functions()
Doc = json_type('py/doc')

@functions.bind(typename='py/all', specs=[ValueSpec('gone', LongType, expire_after_call_ms=5000),
                                          ValueSpec('doc', Doc)])
def all_effects(context, message):
    assert context.storage.gone == 2 ** 40, context.storage.gone
    del context.storage.gone
    context.storage.doc = {'long': message.as_long(), 'from': str(context.caller)}
    context.send_after(1500, 'ts/timer', 'x', 'later', StringType, cancellation_token='t1')
    context.cancel_delayed_message('t0')
    context.send('ts/ping', 'b', True, BoolType)
    context.send_egress('example/doubles', 2.5, DoubleType)

sys.stdout.buffer.write(functions.handle(sys.stdin.buffer.read()))
`;
function handleInPython(batch: InvocationBatch): FunctionResponse {
  const run = spawnSync(PYTHON, ['-c', allEffects], { cwd: root, input: encodeToFunction(batch), timeout: 15_000 });
  assert.is(run.status, 0, run.stderr.toString());
  return decodeFromFunction(run.stdout);
}
const longValue = (n: number): RemoteTypedValue => ({ typename: 'io.statefun.types/long', value: Uint8Array.from([0x09, ...littleEndian(n, 8)]) });

it('the rest of the library: delete, JSON state, delayed and cancelled messages, long/bool/double, after-call expiry', async () => {
  const target = { namespace: 'py', type: 'all', id: 'z' };
  const invocations = [{ caller: ping, argument: longValue(2 ** 40 + 1) }];
  assert.equal(handleInPython({ target, state: [], invocations }), {
    kind: 'incomplete',
    missingValues: [
      { name: 'gone', typename: 'io.statefun.types/long', expireMode: 'after-invoke', expireAfterMs: 5000 },
      { name: 'doc', typename: 'py/doc', expireMode: 'none', expireAfterMs: 0 },
    ],
  });
  const response = handleInPython({ target, state: [{ name: 'gone', value: longValue(2 ** 40) }, { name: 'doc', value: { typename: 'py/doc', value: null } }], invocations });
  if (response.kind !== 'result') throw new Error(JSON.stringify(response));
  assert.equal(response.stateMutations.map((mutation) => [mutation.name, mutation.value?.typename ?? null]), [
    ['gone', null],
    ['doc', 'py/doc'],
  ]);
  assert.equal(readJson(response.stateMutations[1]!.value!), { long: 2 ** 40 + 1, from: 'ts/ping/a' });
  assert.equal(response.delayedInvocations, [
    { cancel: false, delayMs: 1500, target: { namespace: 'ts', type: 'timer', id: 'x' }, argument: stringValue('later'), cancellationToken: 't1' },
    { cancel: true, cancellationToken: 't0' },
  ]);
  assert.equal(response.outgoingMessages, [{ target: { namespace: 'ts', type: 'ping', id: 'b' }, argument: { typename: 'io.statefun.types/bool', value: Uint8Array.from([0x08, 0x01]) } }]);
  assert.equal(response.outgoingMessages[0]!.argument.value, Types.bool.serialize(true));
  const double = response.outgoingEgresses[0]!;
  assert.equal([double.namespace, double.type, double.argument.typename], ['example', 'doubles', 'io.statefun.types/double']);
  assert.equal([...double.argument.value!], [0x09, ...new Uint8Array(new Float64Array([2.5]).buffer)], 'DoubleWrapper: field 1, fixed64');
  assert.equal(double.argument.value, Types.double.serialize(2.5));
});

it('SIGTERM: the process exits cleanly (status 0)', async () => {
  const child = python!;
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code!)));
  child.kill('SIGTERM');
  assert.is(await withTimeout(exited, 10_000, 'pong.py to exit on SIGTERM'), 0, stderr);
  assert.not.match(stderr.replace(/Traceback[\s\S]*?TypeError: message is[^\n]*\n/, ''), /Traceback/, 'no traceback but the expected one');
});

test.run();
