// test-timeout-ms: 60000
// Any language: the TypeScript function ts/ping runs embedded, the Python function py/pong runs in
// examples/python/pong.py (python3 + Debian's python3-protobuf, no SDK), and they rally, each keeping state.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../../scripts/repo-root.js';
import { probe, requireTool } from '../requirements.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, Types, type Client } from '../../lib/index.js';
import { ENDPOINT_DEFAULTS } from '../../node/remote/remote-endpoints.js';
import { pingReport } from '../../examples/ping-pong/functions.js';
import { startTestNode, take, withTimeout, type TestNode } from '../helpers.js';

const PYTHON = '/usr/bin/python3';
const root = repoRoot;
const pongScript = join(repoRoot, 'examples/python/pong.py');
const pingModule = fileURLToPath(new URL('../../examples/ping-pong/functions.js', import.meta.url));
const pongReport = Types.json<{ id: string; hits: number; n: number }>('example/pong-report');

let python: ChildProcess | null = null;
let node: TestNode | null = null;
let client: Client | null = null;

test.after(async () => {
  await client?.close({ timeoutMs: 500 }).catch(() => undefined);
  await node?.close().catch(() => undefined);
  python?.kill('SIGKILL');
});

const available = probe(PYTHON, ['-c', 'import google.protobuf']);

test('a TypeScript function and a Python function message each other, and both keep state', async () => {
  if (!requireTool(available, `${PYTHON} with google.protobuf`, 'apt-get install python3-protobuf')) return;
  python = spawn(PYTHON, [pongScript, '--port', '0'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await withTimeout(
    new Promise<string>((resolve, reject) => {
      python!.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const match = /listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(output);
        if (match) resolve(match[1]!);
      });
      python!.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      python!.once('exit', (code) => reject(new Error(`pong.py exited (${code}):\n${output}`)));
    }),
    20_000,
    'pong.py listening',
  );
  node = await startTestNode({ functions: [pingModule], endpoints: [{ ...ENDPOINT_DEFAULTS, functions: 'py/*', urlPathTemplate: `${url}{function.name}` }] });
  client = await connect(node.url);
  const pings = client.subscribe('example/pings', { type: pingReport });
  const pongs = client.subscribe('example/pongs', { type: pongReport });

  await client.send({ typename: 'ts/ping', id: 'rally' }, 4, Types.int);
  const first = (await take(pings, 4, 15_000)).map((record) => record.value);
  assert.equal(first.map((report) => [report.volleys, report.n]), [[1, 3], [2, 2], [3, 1], [4, 0]]);
  const firstPongs = (await take(pongs, 4, 15_000)).map((record) => record.value);
  assert.equal(firstPongs.map((report) => [report.id, report.hits, report.n]), [['rally', 1, 4], ['rally', 2, 3], ['rally', 3, 2], ['rally', 4, 1]]);

  // A second rally on the same address: both sides go on from the state they kept.
  await client.send({ typename: 'ts/ping', id: 'rally' }, 2, Types.int);
  assert.equal((await take(pings, 2, 15_000)).map((record) => record.value.volleys), [5, 6]);
  assert.equal((await take(pongs, 2, 15_000)).map((record) => record.value.hits), [5, 6]);
  // Another address starts from nothing on both sides.
  await client.send({ typename: 'ts/ping', id: 'other' }, 1, Types.int);
  assert.equal((await take(pings, 1, 15_000)).map((record) => [record.value.id, record.value.volleys]), [['other', 1]]);
  assert.equal((await take(pongs, 1, 15_000)).map((record) => [record.value.id, record.value.hits]), [['other', 1]]);
});

test.run();
