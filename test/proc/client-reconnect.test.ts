// The client against node processes that die (SIGKILL) and come back, and against several seed URLs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type Client } from 'statecraft';
import { eventually, sleep, killNodeProcesses, startNodeProcess, withTimeout } from '../helpers.js';
import { fileURLToPath } from 'node:url';

const greeter = fileURLToPath(new URL('../../examples/greeter/functions.js', import.meta.url));

test.after.each(killNodeProcesses);

test('SIGKILL of the node: the client reconnects when it is back, re-sends, and every send resolves', async () => {
  const first = await startNodeProcess(['--functions', greeter, '--port', '0', '--shards', '1']);
  const port = first.port;
  const client: Client = await connect(first.url, { reconnect: { delayMs: 50, delayMaxMs: 200 } });
  const firstNode = client.nodeId;
  const sends: Promise<void>[] = [];
  for (let index = 0; index < 200; index++) sends.push(client.send({ typename: 'example/greeter', id: `before-${index}` }, `p${index}`));
  first.kill('SIGKILL');
  await first.exited;
  // Sent while no node is up: they wait in the client.
  for (let index = 0; index < 50; index++) sends.push(client.send({ typename: 'example/greeter', id: `during-${index}` }, `d${index}`));
  await sleep(300);
  assert.is(client.nodeId, null, 'disconnected');
  const second = await startNodeProcess(['--functions', greeter, '--port', String(port), '--shards', '1']);
  await withTimeout(Promise.all(sends), 20_000, 'every send to resolve after the reconnect');
  assert.ok(client.nodeId !== null && client.nodeId !== firstNode, 'connected to the new node');
  const greetings = client.subscribe('greetings', { from: 'earliest' });
  const during = new Set<string>();
  await withTimeout(
    (async () => {
      for await (const record of greetings) {
        if (record.source.id.startsWith('during-')) during.add(record.source.id);
        if (during.size === 50) break;
      }
    })(),
    10_000,
    'every event sent while the node was down to be processed after the reconnect',
  );
  await client.close();
  second.kill('SIGTERM');
  assert.is(await second.exited, 0);
});

test('several URLs: connect skips a dead one, and a client fails over when its node stops', async () => {
  const a = await startNodeProcess(['--functions', greeter, '--port', '0', '--shards', '1']);
  const b = await startNodeProcess(['--functions', greeter, '--port', '0', '--shards', '1']);
  const dead = 'ws://127.0.0.1:1';
  const client = await connect([dead, a.url, b.url], { reconnect: { delayMs: 20, delayMaxMs: 100 } });
  const onA = client.nodeId;
  await client.send({ typename: 'example/greeter', id: 'x' }, 'x');
  a.kill('SIGTERM');
  await a.exited;
  await eventually(() => client.nodeId !== null && client.nodeId !== onA, 'failover to the other node', 10_000);
  await client.send({ typename: 'example/greeter', id: 'y' }, 'y');
  await client.close();
  b.kill('SIGTERM');
  await b.exited;
});

test('connect fails with a clear error when no node answers', async () => {
  try {
    await connect(['ws://127.0.0.1:1', 'ws://127.0.0.1:2'], { connectTimeoutMs: 2000 });
    assert.unreachable();
  } catch (error) {
    assert.is((error as { code: string }).code, 'SC_ERR_CONNECT_FAILED');
    assert.match((error as Error).message, /check that a node is running/);
  }
});

test.run();
