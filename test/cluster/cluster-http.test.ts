// GET /cluster, /health and the cluster's metric lines, from the real view core and hand-over shell
// (no threads): the field and metric names, and the 503 while this node is not in a majority.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ClusterHttp } from '../../cluster/cluster-http.js';
import { member, shells } from './shell-harness.js';

function reporter(reason: { text: string | null } = { text: null }) {
  const node = shells('a');
  const members = [member('a', 'alive'), member('b', 'alive')];
  node.view({ a: 'alive', b: 'alive' });
  const http = new ClusterHttp({
    nodeId: 'a',
    address: 'a:1',
    core: node.core,
    membership: { members: () => members },
    network: { connectedPeers: () => ['b'], linkStats: () => [], refusals: [], queuedBytes: 12, authFailures: 2, handshakesRefused: 0 },
    handovers: node.handovers,
    controlRefused: () => 3,
    checkpointStatus: () => null,
    reason: () => reason.text,
    links: () => ({ down: [], leftOut: [] }),
  });
  return { node, http };
}

test('the report names the view counter viewVersion and the recovery epoch recovery.epoch', () => {
  const { http } = reporter();
  const report = http.report();
  assert.equal(Object.keys(report), ['nodeId', 'address', 'serving', 'reason', 'viewVersion', 'viewId', 'keyGroups', 'view', 'members', 'peers', 'refusals', 'handovers', 'recovery', 'checkpoints', 'links']);
  assert.is(report.viewVersion, 2);
  assert.is(report.serving, true);
  assert.equal(report.view, ['a', 'b']);
  assert.equal(report.recovery, { epoch: 0, recovering: false, awaiting: null, recoveries: 0 });
  assert.equal(report.links, { down: [], leftOut: [] });
  assert.equal(
    report.members.map((entry) => [entry.id, entry.inView, entry.connected, entry.keyGroups > 0]),
    [
      ['a', true, true, true],
      ['b', true, true, true],
    ],
  );
  assert.ok(report.handovers.keyGroupsMoving > 0, 'b takes its key groups over');
});

test('metric lines: statecraft_cluster_view_version counts views', () => {
  const { http } = reporter();
  const lines = http.metrics();
  assert.ok(lines.includes('statecraft_cluster_view_version 2'));
  assert.ok(lines.includes('statecraft_cluster_serving 1'));
  assert.ok(lines.includes('statecraft_peer_queued_bytes 12'));
  assert.ok(lines.includes('statecraft_peer_auth_failures_total 2'));
  assert.ok(lines.includes('statecraft_peer_handshakes_refused_total 0'));
  assert.ok(lines.includes('statecraft_control_refused_total 3'));
  assert.not.ok(lines.some((line) => line.startsWith('statecraft_cluster_epoch')));
});

test('over HTTP: /cluster always, /health only while not in a majority (503 and why; a node left out for cut links says so)', async () => {
  const reason = { text: null as string | null };
  const { node, http } = reporter(reason);
  const server = createServer((request, response) => http.serve(request, response) || response.writeHead(404).end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const cluster = await fetch(`${url}/cluster`);
    assert.is(cluster.status, 200);
    assert.equal(await cluster.json(), JSON.parse(JSON.stringify(http.report())));
    assert.is((await fetch(`${url}/health`)).status, 404, 'in a majority: the node answers /health');
    node.view({ a: 'alive', b: 'suspect' });
    const health = await fetch(`${url}/health`);
    assert.is(health.status, 503);
    assert.equal(await health.json(), { status: 'not-serving', nodeId: 'a', reason: 'reaches 1 of the 2 members of the last agreed view, not a majority: waiting for them' });
    reason.text = 'left out of the view: this node cannot reach b directly while the others reach each other; it serves again once its links are back';
    assert.equal(((await (await fetch(`${url}/health`)).json()) as { reason: string }).reason, reason.text);
    assert.is(http.report().reason, reason.text);
  } finally {
    server.close();
  }
});

test.run();
