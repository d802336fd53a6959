// The cluster node's wiring, without worker threads: two ClusterNodes on fake nodes (FakePort) talk over
// real sockets (peer links and gossip), form one view, hand key groups over, forward messages, drop a
// malformed control envelope with its reason, and hand everything over on a graceful leave.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ClusterNode } from '../../cluster/cluster-node.js';
import { computePlacement } from '../../cluster/placement.js';
import type { CheckpointControl } from '../../node/index.js';
import { TEST_CLUSTER_SECRET, eventually, withTimeout } from '../helpers.js';
import { FakePort, invoke } from './fake-port.js';

const KEY_GROUPS = 16;
const tuning = { probeIntervalMs: 100, probeTimeoutMs: 40, joinRetryMs: 200 };

interface Member {
  id: string;
  cluster: ClusterNode;
  port: FakePort;
  server: Server;
  address: string;
  logs: string[];
}

const started: Member[] = [];

async function member(id: string, seeds: string[]): Promise<Member> {
  let cluster: ClusterNode | null = null;
  const server = createServer((request, response) => cluster?.http(request, response) || response.writeHead(404).end());
  server.on('upgrade', (request, socket, head) => cluster?.upgrade(request, socket, head) || socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const port = new FakePort(KEY_GROUPS, false, true);
  const logs: string[] = [];
  cluster = new ClusterNode({
    node: {
      keyGroups: KEY_GROUPS,
      limits: { valueBytesMax: 1024 * 1024, idBytesMax: 256 },
      attachCluster: (hooks) => {
        port.hooks = hooks;
        return port;
      },
      checkpointStatus: () => null,
    },
    nodeId: id,
    address,
    seeds,
    secret: Buffer.from(TEST_CLUSTER_SECRET),
    tuning,
    log: (line) => logs.push(line),
    onRefused: (reason) => logs.push(`refused: ${reason}`),
  });
  const created = { id, cluster, port, server, address, logs };
  started.push(created);
  return created;
}

async function stop(node: Member): Promise<void> {
  await node.cluster.close();
  node.server.closeAllConnections();
  await new Promise((resolve) => node.server.close(resolve));
}

const groupsOf = (id: string, ids: string[]) => {
  const placement = computePlacement(ids, KEY_GROUPS);
  return Array.from({ length: KEY_GROUPS }, (_, keyGroup) => keyGroup).filter((keyGroup) => placement.members[placement.owners[keyGroup]!] === id);
};

/** n1 alone, then n2 through it; resolves once both serve one view with nothing on the move. */
async function pair(): Promise<[Member, Member]> {
  const first = await member('n1', []);
  await withTimeout(first.cluster.whenServing(), 1_000, 'a cluster of one serves at once');
  const second = await member('n2', [first.address]);
  await withTimeout(second.cluster.whenServing(), 10_000, 'n2 serves');
  await eventually(
    () => [first, second].every((node) => node.cluster.status().view.length === 2 && node.cluster.status().handovers.keyGroupsMoving === 0),
    'one view of two, nothing on the move',
  );
  return [first, second];
}

test.after.each(async () => {
  for (const node of started.splice(0)) await stop(node);
});

test('a joiner serves once the seed answers; the seed hands the joiner its key groups', async () => {
  const [first, second] = await pair();
  const mine = groupsOf('n2', ['n1', 'n2']);
  assert.equal(
    first.port.owned.flatMap((owned, keyGroup) => (owned ? [] : [keyGroup])),
    mine,
  );
  assert.equal(
    second.port.owned.flatMap((owned, keyGroup) => (owned ? [keyGroup] : [])),
    mine,
  );
  assert.is(first.cluster.status().handovers.released, mine.length);
  assert.is(second.cluster.status().handovers.adopted, mine.length);
  assert.ok(second.logs.includes(`cluster: not serving: joining: no seed has answered yet (${first.address})`));
  assert.ok(second.logs.some((line) => /^cluster: view version 2, view [0-9a-f]{16}: n1 \(\d+ key groups\), n2 \(\d+ key groups\)$/.test(line)));
  const report = (await (await fetch(`http://${second.address}/cluster`)).json()) as { viewVersion: number; view: string[]; recovery: { epoch: number } };
  assert.is(report.viewVersion, 2);
  assert.equal(report.view, ['n1', 'n2']);
  assert.is(report.recovery.epoch, 0);
  assert.ok(second.cluster.metrics().includes('statecraft_cluster_view_version 2'));
  assert.ok(second.cluster.admits());
});

test('a message for a key group the other node owns goes to it over the peer link', async () => {
  const [first, second] = await pair();
  const [theirs] = groupsOf('n2', ['n1', 'n2']);
  first.cluster.forward(invoke(theirs!, 42), 0, 9, theirs!);
  await eventually(() => second.port.delivered.some(([keyGroup, tag]) => keyGroup === theirs && tag === 42), 'the message reaches n2');
});

test('a malformed control envelope is dropped, with its reason in the log', async () => {
  const [first, second] = await pair();
  // Drops are logged at most every 5 s, counting from the process's start.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 5_100 - performance.now())));
  first.cluster.sendCheckpointControl('n2', { type: 'rollback', epoch: 1, members: [7], restore: 0 } as unknown as CheckpointControl);
  await eventually(() => second.logs.includes('cluster: dropped 1 malformed envelope(s) from n1: malformed rollback message'), 'the drop is logged');
  assert.is(second.cluster.status().recovery.recoveries, 0);
});

test('a graceful leave hands every key group to the node that stays', async () => {
  const [first, second] = await pair();
  await withTimeout(second.cluster.leave(), 10_000, 'n2 leaves');
  await eventually(() => first.port.owned.every(Boolean) && first.cluster.status().view.length === 1, 'n1 owns every key group again');
  assert.ok(second.logs.includes(`cluster: handed ${groupsOf('n2', ['n1', 'n2']).length} key groups over to n1`), second.logs.join('\n'));
});

test.run();
