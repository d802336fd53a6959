// `node cluster/start.js` as users run it: real processes, real signals.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'statecraft';
import { fixture, killNodeProcesses, startNodeProcess, take, withTimeout } from '../helpers.js';

const start = fileURLToPath(new URL('../../cluster/start.js', import.meta.url));
const greeter = fileURLToPath(new URL('../../examples/greeter/functions.js', import.meta.url));

const dataDir = mkdtempSync(join(tmpdir(), 'statecraft-cli-'));
function run(args: string[]) {
  return spawnSync(process.execPath, [start, '--data-dir', dataDir, ...args], { encoding: 'utf8', timeout: 30_000 });
}

test.after.each(killNodeProcesses);
test.after(() => rmSync(dataDir, { recursive: true, force: true }));

test('--help lists every option and exits 0', () => {
  const result = run(['--help']);
  assert.is(result.status, 0);
  for (const option of ['--functions', '--port', '--host', '--shards', '--key-groups', '--help']) assert.ok(result.stdout.includes(option), option);
});

test('bad flags exit 2 with a message that says what to do', () => {
  const cases: [string[], RegExp][] = [
    [['--nope'], /Unknown option '--nope'/],
    [['--functions', greeter, '--shards', 'two'], /--shards must be a whole number, got "two"/],
    [['--port', '8080'], /--functions <module.js> is required/],
    [['--functions', '/no/such/module.js', '--port', '0'], /cannot load functions module .*no\/such\/module\.js/],
    [['--functions', greeter, '--port', '0', '--shards', '0'], /shards must be a whole number from 1 to 256/],
    [['--functions', fileURLToPath(new URL('../helpers.js', import.meta.url)), '--port', '0'], /exports no function definitions/],
    [['--functions', greeter, '--port', '0', '--stop-timeout', '0'], /--stop-timeout must be at least 1 ms/],
  ];
  for (const [args, message] of cases) {
    const result = run(args);
    assert.is(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.match(result.stderr, /--help/);
  }
});

test('starts, prints one ready line with its URL, serves, and stops cleanly on SIGTERM', async () => {
  const node = await startNodeProcess(['--functions', greeter, '--port', '0', '--shards', '2']);
  assert.match(node.output(), /statecraft node ready ws:\/\/127\.0\.0\.1:\d+ .*functions: example\/greeter/);
  const health = await fetch(`http://127.0.0.1:${node.port}/health`);
  assert.is(health.status, 200);
  const client = await connect(node.url, { reconnect: false });
  const greetings = client.subscribe('greetings');
  await client.send({ typename: 'example/greeter', id: 'Ada' }, 'Ada');
  const [record] = await take(greetings, 1);
  assert.is(record!.value, 'Hello, Ada!');
  node.kill('SIGTERM');
  assert.is(await withTimeout(node.exited, 15_000, 'exit after SIGTERM'), 0);
  assert.match(node.output(), /SIGTERM received, stopping[\s\S]*stopped/);
  await client.close();
});

test('a stop that takes longer than --stop-timeout says what it was still doing and exits', async () => {
  // 1 ms: no stop is that quick (the shards' threads end first), so the deadline always comes first.
  const node = await startNodeProcess(['--functions', greeter, '--port', '0', '--stop-timeout', '1']);
  node.kill('SIGTERM');
  assert.is(await withTimeout(node.exited, 15_000, 'exit after SIGTERM'), 0);
  assert.match(node.output(), /the stop took longer than --stop-timeout 1 ms \(still [^)]+\): exiting now; what was not committed is not durable, and clients re-send it/);
  assert.not.match(node.output(), /statecraft: stopped/);
});

test('SIGINT stops it too, and a client sees the connection closed as going away', async () => {
  const node = await startNodeProcess(['--functions', greeter, '--port', '0', '--shards', '1']);
  const client = await connect(node.url, { reconnect: false });
  const failure = client.send({ typename: 'example/greeter', id: 'x' }, 'x').then(() => 'accepted');
  assert.is(await failure, 'accepted');
  node.kill('SIGINT');
  assert.is(await withTimeout(node.exited, 15_000, 'exit after SIGINT'), 0);
  await client.close();
});

test('work accepted before SIGTERM is finished before the node exits', async () => {
  const node = await startNodeProcess(['--functions', fixture('functions'), '--port', '0', '--shards', '2']);
  const client = await connect(node.url, { reconnect: false });
  const slow = client.subscribe('slow');
  // 40 messages of 20 ms each on one address: 800 ms of work queued behind each other.
  await Promise.all(Array.from({ length: 40 }, () => client.send({ typename: 'test/slow', id: 'one' }, 20)));
  node.kill('SIGTERM');
  const records = await take(slow, 40, 15_000);
  assert.is((records.at(-1)!.value as { count: number }).count, 40);
  assert.is(await withTimeout(node.exited, 15_000, 'exit'), 0);
  await client.close();
});

test.run();
