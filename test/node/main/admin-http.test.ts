// Admin HTTP over a real server on 127.0.0.1 (port 0) with a fake AdminHost: /health, /metrics, the
// cluster layer's hooks answering first, 404s, WebSocket upgrades (clients on `/`, anything else to the
// cluster layer, refused while closing), and closing.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KEY_GROUP_HASH } from '../../../lib/key-group.js';
import { AdminHttp, type AdminHost } from '../../../node/main/admin-http.js';
import type { ClusterHooks } from '../../../node/main/cluster-port.js';
import type { NodeMetrics } from '../../../node/main/node-metrics.js';
import { Metric, type MetricName } from '../../../node/rings/metrics.js';
import { withTimeout } from '../../helpers.js';

const TIMEOUT_MS = 10_000;

/** Accepts an upgrade by hand: a 101 answer naming who took it, then the socket ends. */
function acceptUpgrade(socket: Duplex, by: string): void {
  socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Taken-By: ${by}\r\n\r\n`);
}

class FakeCluster implements Partial<ClusterHooks> {
  upgrades: string[] = [];
  requests: string[] = [];
  acceptUpgrades = true;
  /** Paths the cluster layer answers itself. */
  answers = new Map<string, { status: number; body: string }>();

  http(request: IncomingMessage, response: ServerResponse): boolean {
    this.requests.push(`${request.method} ${request.url}`);
    const answer = this.answers.get(request.url ?? '');
    if (answer === undefined) return false;
    response.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
    return true;
  }

  upgrade(request: IncomingMessage, socket: Duplex): boolean {
    this.upgrades.push(request.url ?? '');
    if (!this.acceptUpgrades) return false;
    acceptUpgrade(socket, 'cluster');
    return true;
  }

  metrics(): string[] {
    return ['statecraft_cluster_members 3', 'statecraft_cluster_view 7'];
  }

  /** Why clients should go elsewhere (no majority), or null. */
  refusal: string | null = null;
  refusesClients(): string | null {
    return this.refusal;
  }
}

class FakeHost implements AdminHost {
  closing = false;
  readonly nodeId = 'node-a';
  readonly keyGroups = 64;
  cluster: ClusterHooks | null = null;
  checkpointing: AdminHost['checkpointing'] = null;
  upgrades: string[] = [];
  readonly gateway = {
    handleUpgrade: (request: IncomingMessage, socket: Duplex) => {
      this.upgrades.push(request.url ?? '');
      acceptUpgrade(socket, 'gateway');
    },
  } as AdminHost['gateway'];

  problemsNow: string[] = [];

  metricsNow(): NodeMetrics {
    const metrics = {} as Record<MetricName, number>;
    for (const [name, index] of Object.entries(Metric)) metrics[name as MetricName] = 10 * index;
    return { ...metrics, connections: 3, overflowBytes: 4096, clientsRefused: 0, requestsOutOfScope: 0, clientLimitsReached: 0, shardsStalled: 0 };
  }

  problems(): string[] {
    return this.problemsNow;
  }
}

const opened: AdminHttp[] = [];
const sockets: Socket[] = [];

async function serve(host: AdminHost): Promise<{ admin: AdminHttp; base: string; port: number }> {
  const admin = new AdminHttp(host);
  opened.push(admin);
  await admin.listen(0, '127.0.0.1');
  const { port } = admin.address!;
  return { admin, base: `http://127.0.0.1:${port}`, port };
}

test.after.each(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const admin of opened.splice(0)) {
    admin.closeConnections();
    await withTimeout(admin.close(), TIMEOUT_MS, 'admin server to close');
  }
});

async function get(url: string, init?: RequestInit): Promise<{ status: number; type: string | null; body: string }> {
  const response = await withTimeout(fetch(url, { ...init, headers: { connection: 'close', ...init?.headers } }), TIMEOUT_MS, `GET ${url}`);
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
}

/** Sends a WebSocket upgrade request on a raw socket; resolves with the answer's status line and headers. */
async function upgrade(port: number, path: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
  const ended = new Promise<void>((resolve) => {
    socket.once('end', resolve);
    socket.once('close', resolve);
  });
  socket.on('error', () => undefined);
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  await withTimeout(ended, TIMEOUT_MS, `the answer to an upgrade on ${path}`);
  return answer;
}

test('listen on port 0: the address names the port the OS chose', async () => {
  const { admin, port } = await serve(new FakeHost());
  assert.equal(admin.address, { host: '127.0.0.1', port });
  assert.ok(port > 0);
});

test('listen on a port in use fails with the OS error', async () => {
  const { port } = await serve(new FakeHost());
  const second = new AdminHttp(new FakeHost());
  opened.push(second);
  try {
    await withTimeout(second.listen(port, '127.0.0.1'), TIMEOUT_MS, 'second listen');
    assert.unreachable('two servers on one port');
  } catch (error) {
    assert.is((error as NodeJS.ErrnoException).code, 'EADDRINUSE');
  }
  assert.is(second.address, null);
});

test('/health: 200 ok while serving, 503 stopping while closing, with the node id', async () => {
  const host = new FakeHost();
  const { base } = await serve(host);
  const ok = await get(`${base}/health`);
  assert.is(ok.status, 200);
  assert.is(ok.type, 'application/json');
  assert.equal(JSON.parse(ok.body), { status: 'ok', nodeId: 'node-a' });
  assert.equal(JSON.parse((await get(`${base}/health?verbose=1`)).body), { status: 'ok', nodeId: 'node-a' }, 'the query is ignored');
  host.problemsNow = ['shard 1 has not answered for 12 s'];
  const unhealthy = await get(`${base}/health`);
  assert.is(unhealthy.status, 503);
  assert.equal(JSON.parse(unhealthy.body), { status: 'unhealthy', nodeId: 'node-a', problems: ['shard 1 has not answered for 12 s'] });
  host.problemsNow = [];
  host.closing = true;
  const stopping = await get(`${base}/health`);
  assert.is(stopping.status, 503);
  assert.equal(JSON.parse(stopping.body), { status: 'stopping', nodeId: 'node-a' });
});

test('/metrics: one snake_case line per metric, key groups and the hash, without a cluster', async () => {
  const { base } = await serve(new FakeHost());
  const metrics = await get(`${base}/metrics`);
  assert.is(metrics.status, 200);
  assert.is(metrics.type, 'text/plain; version=0.0.4');
  assert.ok(metrics.body.endsWith('\n'));
  const lines = metrics.body.trimEnd().split('\n');
  const expected = [
    'statecraft_invocations 0',
    'statecraft_failures 10',
    'statecraft_dead_letters 20',
    'statecraft_delayed_scheduled 30',
    'statecraft_delayed_fired 40',
    'statecraft_delayed_cancelled 50',
    'statecraft_delayed_pending 60',
    'statecraft_egress_records 70',
    'statecraft_instances 80',
    'statecraft_messages_in 90',
    'statecraft_backlog 100',
    'statecraft_events_accepted 110',
    'statecraft_events_rejected 120',
    'statecraft_duplicates_dropped 130',
    'statecraft_remote_requests 140',
    'statecraft_remote_backlog 150',
    'statecraft_held_messages 160',
    'statecraft_handler_timeouts 170',
    'statecraft_connections 3',
    'statecraft_overflow_bytes 4096',
    'statecraft_clients_refused 0',
    'statecraft_requests_out_of_scope 0',
    'statecraft_client_limits_reached 0',
    'statecraft_shards_stalled 0',
    'statecraft_key_groups 64',
    'statecraft_admin_requests_refused_total 0',
    `# key group hash: ${KEY_GROUP_HASH}`,
  ];
  assert.equal(lines, expected);
});

test('/metrics with checkpoints on: committed, failed and dropped checkpoints this node coordinated', async () => {
  const host = new FakeHost();
  host.checkpointing = { totals: { committed: 7, failed: 3, dropped: 2 }, figures: { ageSeconds: 1.25, consecutiveFailures: 0 } };
  const { base } = await serve(host);
  const lines = (await get(`${base}/metrics`)).body.trimEnd().split('\n');
  assert.equal(lines.slice(-5), [
    'statecraft_checkpoints_committed_total 7',
    'statecraft_checkpoints_failed_total 3',
    'statecraft_checkpoints_dropped_total 2',
    'statecraft_checkpoint_age_seconds 1.25',
    'statecraft_checkpoint_failures_consecutive 0',
  ]);
});

test('/metrics with a cluster: its lines come last', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  host.cluster = cluster as unknown as ClusterHooks;
  const { base } = await serve(host);
  const lines = (await get(`${base}/metrics`)).body.trimEnd().split('\n');
  assert.equal(lines.slice(-3), [`# key group hash: ${KEY_GROUP_HASH}`, 'statecraft_cluster_members 3', 'statecraft_cluster_view 7']);
  assert.equal(cluster.requests, ['GET /metrics'], 'the cluster layer was offered the request first and declined');
});

test('the cluster layer answers first: /cluster, and a 503 /health while the node is not serving', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  cluster.answers.set('/cluster', { status: 200, body: '{"members":["node-a"]}' });
  cluster.answers.set('/health', { status: 503, body: '{"status":"joining"}' });
  host.cluster = cluster as unknown as ClusterHooks;
  const { base } = await serve(host);
  const view = await get(`${base}/cluster`);
  assert.is(view.status, 200);
  assert.equal(JSON.parse(view.body), { members: ['node-a'] });
  const health = await get(`${base}/health`);
  assert.is(health.status, 503);
  assert.equal(JSON.parse(health.body), { status: 'joining' }, "the cluster's answer, not the node's");
  assert.equal(cluster.requests, ['GET /cluster', 'GET /health']);
});

test('anything else: 404 listing the paths (also a POST to /health)', async () => {
  const host = new FakeHost();
  const { base } = await serve(host);
  const paths = ['/health', '/metrics', '/cluster', 'ws:// (clients)'];
  for (const [path, init] of [['/nowhere', undefined], ['/', undefined], ['/health', { method: 'POST', body: 'x' }]] as const) {
    const answer = await get(`${base}${path}`, init);
    assert.is(answer.status, 404, path);
    assert.is(answer.type, 'application/json');
    assert.equal(JSON.parse(answer.body), { error: 'not found', paths }, path);
  }
  // Without a cluster layer /cluster is not found either.
  assert.is((await get(`${base}/cluster`)).status, 404);
});

test('WebSocket upgrade on / (with or without a query) goes to the gateway; the cluster layer never sees it', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  host.cluster = cluster as unknown as ClusterHooks;
  const { port } = await serve(host);
  for (const path of ['/', '/?producer=1']) {
    const answer = await upgrade(port, path);
    assert.match(answer, /^HTTP\/1\.1 101 Switching Protocols\r\n/, path);
    assert.match(answer, /X-Taken-By: gateway/);
  }
  assert.equal(host.upgrades, ['/', '/?producer=1']);
  assert.equal(cluster.upgrades, []);
});

test('WebSocket upgrade on another path goes to the cluster layer; refused with 404 when it declines or is absent', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  host.cluster = cluster as unknown as ClusterHooks;
  const { port } = await serve(host);
  const taken = await upgrade(port, '/peer?from=node-b');
  assert.match(taken, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(taken, /X-Taken-By: cluster/);
  cluster.acceptUpgrades = false;
  assert.match(await upgrade(port, '/other'), /^HTTP\/1\.1 404 Not Found\r\n/);
  assert.equal(cluster.upgrades, ['/peer?from=node-b', '/other']);
  host.cluster = null;
  assert.match(await upgrade(port, '/peer'), /^HTTP\/1\.1 404 Not Found\r\n/);
  assert.equal(host.upgrades, [], 'the gateway saw none of them');
});

test('a client upgrade while the cluster layer says clients belong elsewhere (no majority): 503 with the reason; peers still get through', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  host.cluster = cluster as unknown as ClusterHooks;
  cluster.refusal = 'node-a reaches 1 of the 3 members of the last agreed view, not a majority: waiting for them: connect to another node';
  const { port } = await serve(host);
  const refused = await upgrade(port, '/');
  assert.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.ok(refused.includes(JSON.stringify({ error: cluster.refusal, nodeId: 'node-a' })), refused);
  assert.match(await upgrade(port, '/peer?from=node-b'), /X-Taken-By: cluster/, 'the peer port is not the clients\'');
  cluster.refusal = null;
  assert.match(await upgrade(port, '/'), /X-Taken-By: gateway/, 'the majority is back: clients are taken again');
  assert.equal(host.upgrades, ['/']);
});

test('WebSocket upgrades while closing: 503, neither gateway nor cluster called', async () => {
  const host = new FakeHost();
  const cluster = new FakeCluster();
  host.cluster = cluster as unknown as ClusterHooks;
  host.closing = true;
  const { port } = await serve(host);
  assert.match(await upgrade(port, '/'), /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.match(await upgrade(port, '/peer'), /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.equal(host.upgrades, []);
  assert.equal(cluster.upgrades, []);
});

test('close(): refuses new connections at once, resolves only after closeConnections ends a request in progress', async () => {
  const { admin, port } = await serve(new FakeHost());
  // A connection in the middle of a request (headers not finished): close() alone waits for it.
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => undefined);
  await withTimeout(new Promise((resolve) => socket.once('connect', resolve)), TIMEOUT_MS, 'connect');
  const socketClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  await new Promise((resolve) => setTimeout(resolve, 20));
  let closed = false;
  const closing = admin.close().then(() => (closed = true));
  const refused = await withTimeout(
    new Promise<string>((resolve) => {
      const late = connect(port, '127.0.0.1');
      sockets.push(late);
      late.once('connect', () => resolve('connected'));
      late.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    }),
    TIMEOUT_MS,
    'a connection after close()',
  );
  assert.is(refused, 'ECONNREFUSED');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.is(closed, false, 'close() waits for the open connection');
  admin.closeConnections();
  await withTimeout(closing, TIMEOUT_MS, 'close() after closeConnections()');
  await withTimeout(socketClosed, TIMEOUT_MS, 'the connection to end');
  // Closing again, or a server that never listened: resolves at once.
  await withTimeout(admin.close(), 1000, 'a second close()');
  await withTimeout(new AdminHttp(new FakeHost()).close(), 1000, 'close() of a server never started');
});

test.run();
