// An admin listener of its own (issue 14, item 4): with adminHost, /metrics and /cluster are served
// there only; the client port keeps clients and /health and says where the admin endpoints went.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from 'statecraft';
import { fixture, startTestNode, type TestNode } from '../../helpers.js';

let node: TestNode;

test.before(async () => {
  node = await startTestNode({ functions: [fixture('functions')], adminHost: '127.0.0.1', adminPort: 0 });
});

test.after(async () => {
  await node.close();
});

test('admin endpoints move to the admin listener; the client port keeps clients and /health', async () => {
  const clientPort = `http://127.0.0.1:${node.port}`;
  assert.is.not(node.adminUrl, clientPort);
  assert.match(node.adminUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  const moved = await fetch(`${clientPort}/metrics`);
  assert.is(moved.status, 404);
  assert.match(((await moved.json()) as { error: string }).error, new RegExp(`admin endpoints are served at ${node.adminUrl.replace(/[.:/]/g, '\\$&')}`));
  assert.is((await fetch(`${clientPort}/health`)).status, 200);
  const metrics = await fetch(`${node.adminUrl}/metrics`);
  assert.is(metrics.status, 200);
  assert.match(await metrics.text(), /statecraft_invocations /);
  assert.is((await fetch(`${node.adminUrl}/health`)).status, 200);
  // Clients still connect on the client port; the admin listener takes no WebSocket.
  const client = await connect(node.url);
  await client.send({ typename: 'test/counter', id: 'a' }, 1);
  await client.close();
  const refused = await connect(node.adminUrl.replace('http://', 'ws://'), { connectTimeoutMs: 2000 }).then(
    () => null,
    (error: Error) => error,
  );
  assert.ok(refused !== null && /404/.test(refused.message), String(refused?.message));
});

test.run();
