// Limits on the client port before trust (issue 14, item 5): a cap on connections (HTTP 503 before the
// upgrade, so a client goes to another node), small frames until HELLO is taken, and a cap on
// subscriptions per connection; each refusal counted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { connect, type Client, type StatecraftError } from 'statecraft';
import { HELLO_PAYLOAD_MAX, SUBSCRIPTIONS_PER_CONNECTION_MAX } from '../../../node/main/gateway.js';
import { fixture, startTestNode, subscribed, take, withTimeout, type TestNode } from '../../helpers.js';
import { counted } from '../../fixtures/functions.js';

let node: TestNode;
const clients: Client[] = [];

test.before(async () => {
  node = await startTestNode({ functions: [fixture('functions')], clientConnectionsMax: 3 });
});

test.after(async () => {
  for (const client of clients) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  await node.close();
});

test('past --client-connections-max a client is refused with 503 and the reason; one that leaves makes room', async () => {
  for (let index = 0; index < 3; index++) clients.push(await connect(node.url));
  const refused = await connect(node.url, { connectTimeoutMs: 600 }).then(
    () => null,
    (error: StatecraftError) => error,
  );
  assert.ok(refused, 'the fourth client is refused');
  assert.is(refused!.code, 'SC_ERR_CONNECT_FAILED');
  assert.match(refused!.message, /HTTP 503: this node has 3 client connections, its most \(--client-connections-max\): try another node/);
  assert.ok(node.metrics().clientLimitsReached >= 1);
  await clients.pop()!.close();
  clients.push(await connect(node.url));
});

test('until its HELLO is taken a client may send only small frames: a large first frame closes it (1009)', async () => {
  await clients.pop()!.close(); // room for the raw socket
  const socket = new WebSocket(node.url, { perMessageDeflate: false });
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('open', resolve));
  socket.send(Buffer.alloc(HELLO_PAYLOAD_MAX + 1, 2));
  const code = await withTimeout(new Promise<number>((resolve) => socket.once('close', (closeCode) => resolve(closeCode))), 5000, 'the node closes the socket');
  assert.is(code, 1009);
});

test(`a connection holds at most ${SUBSCRIPTIONS_PER_CONNECTION_MAX} subscriptions: the next is refused with SC_ERR_LIMIT_REACHED, the others keep working`, async () => {
  for (const client of clients.splice(0)) await client.close();
  const client = await connect(node.url);
  clients.push(client);
  const first = client.subscribe('counts', { type: counted });
  for (let index = 1; index < SUBSCRIPTIONS_PER_CONNECTION_MAX; index++) client.subscribe(`filler-${index}`);
  await subscribed(first);
  const extra = client.subscribe('one-too-many');
  const refusal = await withTimeout(extra.next().then(() => null, (error: StatecraftError) => error), 10_000, 'the extra subscription is refused');
  assert.is(refusal?.code, 'SC_ERR_LIMIT_REACHED');
  assert.match(refusal!.message, /holds 1000 subscriptions/);
  await client.send({ typename: 'test/counter', id: 'still-works' }, 1);
  assert.is((await take(first, 1))[0]!.value.count, 1);
});

test.run();
