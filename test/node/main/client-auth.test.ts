// Client and admin tokens end to end on a real node (issue 14, item 4): without a valid token connect()
// fails with SC_ERR_UNAUTHORIZED and nothing is admitted; a scoped token's events and subscriptions
// outside its scopes are refused with SC_ERR_UNAUTHORIZED; a well-behaved client's counts stay exact;
// admin endpoints but /health want the admin token.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type Client, type StatecraftError } from 'statecraft';
import { ClientTokens } from '../../../node/main/client-tokens.js';
import { WebSocket } from 'ws';
import { clientEnvelope, eventsFrame, fixture, startTestNode, subscribed, take, withTimeout, type TestNode } from '../../helpers.js';
import { counted } from '../../fixtures/functions.js';
import { CloseCode, Frame, PROTOCOL_VERSION, encodeControl } from '../../../lib/client-protocol.js';

const FULL = 'client-auth-full-token-0123456789';
const COUNTER_ONLY = 'client-auth-counter-token-01234';
const ADMIN = 'client-auth-admin-token-0123456789';
let node: TestNode;
const clients: Client[] = [];

test.before(async () => {
  node = await startTestNode({
    functions: [fixture('functions')],
    clientTokens: ClientTokens.parse(`${FULL}\n${COUNTER_ONLY} send=test/counter subscribe=counts\n`, 'test tokens'),
    adminToken: ADMIN,
  });
});

test.after(async () => {
  for (const client of clients) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  await node.close();
});

async function refusal(promise: Promise<unknown>): Promise<StatecraftError> {
  return promise.then(
    () => {
      throw new Error('expected a refusal');
    },
    (error: StatecraftError) => error,
  );
}

test('without a token, or with one the node does not take, connect() fails with SC_ERR_UNAUTHORIZED and says what to do', async () => {
  const none = await refusal(connect(node.url, { connectTimeoutMs: 3000 }));
  assert.is(none.code, 'SC_ERR_UNAUTHORIZED');
  assert.match(none.message, /this node takes only clients with a token: connect\(url, \{ token \}\)/);
  const wrong = await refusal(connect(node.url, { token: 'not-a-token-of-this-node-0000', connectTimeoutMs: 3000 }));
  assert.is(wrong.code, 'SC_ERR_UNAUTHORIZED');
  assert.match(wrong.message, /this client token is not one this node takes/);
  assert.is(node.metrics().clientsRefused, 2);
});

test('a raw connection that says HELLO without a token and sends events right after is closed with 4401, and nothing is admitted', async () => {
  const before = node.metrics().EventsAccepted;
  const socket = new WebSocket(node.url, { perMessageDeflate: false });
  const frames: Buffer[] = [];
  socket.on('message', (data: Buffer) => frames.push(data));
  const closed = new Promise<[number, string]>((resolve) => socket.once('close', (code, reason) => resolve([code, reason.toString()])));
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  socket.send(encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId: 'raw-no-token', client: 'test' }));
  socket.send(eventsFrame(1, [await clientEnvelope('test/counter', 'raw', 1)]));
  const [code, reason] = await withTimeout(closed, 5000, 'the node closes the connection');
  assert.is(code, CloseCode.Unauthorized);
  assert.match(reason, /token/);
  assert.equal(frames.map((frame) => frame[0]), [], 'no WELCOME, no ACK');
  assert.is(node.metrics().EventsAccepted, before);
});

test('a scoped token: its events and subscriptions outside the scopes are refused with SC_ERR_UNAUTHORIZED; the rest go through, counted once', async () => {
  const scoped = await connect(node.url, { token: COUNTER_ONLY });
  clients.push(scoped);
  const counts = scoped.subscribe('counts', { type: counted });
  await subscribed(counts);
  const outOfScope = await refusal(scoped.send({ typename: 'test/sink', id: 'x' }, 'not allowed'));
  assert.is(outOfScope.code, 'SC_ERR_UNAUTHORIZED');
  assert.match(outOfScope.message, /may not send to test\/sink \(it may: send=test\/counter subscribe=counts\)/);
  const sink = scoped.subscribe('sink');
  const refused = await refusal(sink.next());
  assert.is(refused.code, 'SC_ERR_UNAUTHORIZED');
  assert.match(refused.message, /may not subscribe to "sink"/);
  // The same client goes on within its scopes, and a full-access client alongside it.
  const full = await connect(node.url, { token: FULL });
  clients.push(full);
  for (const id of ['a', 'b', 'c']) await scoped.send({ typename: 'test/counter', id }, 1);
  for (const id of ['a', 'b', 'c']) await full.send({ typename: 'test/counter', id }, 1);
  const records = await take(counts, 6);
  const last = new Map(records.map((record) => [record.value.id, record.value.count]));
  assert.equal(Object.fromEntries(last), { a: 2, b: 2, c: 2 });
  assert.is(node.metrics().requestsOutOfScope, 2);
});

test('admin endpoints want the admin token (401 and how to give it otherwise); /health does not', async () => {
  const base = node.url.replace('ws://', 'http://').replace(/\/$/, '');
  const bare = await fetch(`${base}/metrics`);
  assert.is(bare.status, 401);
  assert.match(bare.headers.get('www-authenticate') ?? '', /^Bearer/);
  assert.match(((await bare.json()) as { error: string }).error, /Authorization: Bearer <token>/);
  assert.is((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer not-the-admin-token-000000' } })).status, 401);
  const good = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.is(good.status, 200);
  assert.match(await good.text(), /statecraft_admin_requests_refused_total 2/);
  const health = await fetch(`${base}/health`);
  assert.is(health.status, 200);
  assert.is(((await health.json()) as { nodeId: string }).nodeId, node.nodeId);
});

test.run();
