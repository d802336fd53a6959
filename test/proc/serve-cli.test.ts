// test-timeout-ms: 90000
// `node cluster/serve.js` as users run it, and a node process pointed at it with a StateFun module.yaml.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'statecraft';
import { killNodeProcesses, startNodeProcess, take, withTimeout } from '../helpers.js';

const serveScript = fileURLToPath(new URL('../../cluster/serve.js', import.meta.url));
const greeter = fileURLToPath(new URL('../../examples/greeter/functions.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'statecraft-serve-'));
const hosts: ChildProcess[] = [];

test.after.each(() => {
  killNodeProcesses();
  for (const host of hosts.splice(0)) host.kill('SIGKILL');
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]) {
  return spawnSync(process.execPath, [serveScript, ...args], { encoding: 'utf8', timeout: 30_000 });
}

/** Starts a function host process; resolves with its URL once it prints its ready line. */
async function startHost(args: string[]): Promise<{ child: ChildProcess; url: string; output: () => string; exited: Promise<number | string> }> {
  const child = spawn(process.execPath, [serveScript, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  hosts.push(child);
  let output = '';
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const url = await withTimeout(
    new Promise<string>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        const match = /ready (\S+)/.exec(output);
        if (match) resolve(match[1]!);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      void exited.then((code) => reject(new Error(`the host exited (${code}) before ready:\n${output}`)));
    }),
    30_000,
    'the function host ready line',
  );
  return { child, url, output: () => output, exited };
}

test('--help documents every option and how to point a node at the host', () => {
  const result = run(['--help']);
  assert.is(result.status, 0);
  for (const option of ['--functions', '--port', '--host', '--unix-socket', '--threads', '--value-bytes-max', '--body-bytes-max', '--help', 'io.statefun.endpoints.v2/http', '--endpoint']) {
    assert.ok(result.stdout.includes(option), option);
  }
});

test('bad flags exit 2 with a message that says what to do', () => {
  const cases: [string[], RegExp][] = [
    [['--nope'], /Unknown option '--nope'/],
    [['--port', '8000'], /--functions <module.js> is required/],
    [['--functions', greeter, '--port', 'eighty'], /--port must be a whole number, got "eighty"/],
    [['--functions', '/no/such/module.js', '--port', '0'], /cannot load functions module .*no\/such\/module\.js/],
    [['--functions', greeter, '--port', '0', '--threads', '999'], /threads must be a whole number from 0 to 256/],
  ];
  for (const [args, message] of cases) {
    const result = run(args);
    assert.is(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.match(result.stderr, /--help/);
  }
});

test('a node started with a StateFun module.yaml invokes the functions a host process serves; SIGTERM stops the host', async () => {
  const host = await startHost(['--functions', greeter, '--port', '0', '--threads', '2']);
  assert.match(host.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.match(host.output(), /functions: example\/greeter/);
  const moduleYaml = join(dir, 'module.yaml');
  writeFileSync(
    moduleYaml,
    `kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: ${host.url}{function.name}
  maxNumBatchRequests: 100
  transport:
    timeouts:
      call: 30 sec
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: example/names
`,
  );
  const node = await startNodeProcess(['--module', moduleYaml, '--port', '0', '--shards', '1']);
  assert.match(node.output(), /ignored .*io\.statefun\.kafka\.v1\/ingress/);
  assert.match(node.output(), /functions: example\/\*/);
  const client = await connect(node.url, { reconnect: false });
  const greetings = client.subscribe<string>('greetings');
  await client.send({ typename: 'example/greeter', id: 'Ada' }, 'Ada');
  await client.send({ typename: 'example/greeter', id: 'Ada' }, 'Ada');
  assert.equal((await take(greetings, 2, 15_000)).map((record) => record.value), ['Hello, Ada!', 'Hello again, Ada (visit #2)']);
  await client.close();
  host.child.kill('SIGTERM');
  assert.is(await withTimeout(host.exited, 15_000, 'the host exits after SIGTERM'), 0);
});

test.run();
