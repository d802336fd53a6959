// test-exclusive
// Peer authentication end to end (issue 14): real node processes, and a raw peer on /peer playing an
// intruder. Without the cluster secret it cannot join, gossip, feed envelopes or roll a node back —
// each attempt closes its connection with the reason, and a well-behaved client's counts stay exact.
// With the secret, a peer still cannot order a rollback its leader did not claim, nor misaddress a key group.
// A node with another secret is refused at join on both sides; a founding node without a secret
// writes one and says where; a joining node without one stops and says what to do.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Client } from 'statecraft';
import { PeerClose, PeerFrame, encodeControl } from '../../cluster/peer-protocol.js';
import { encodeControlEnvelope } from '../../cluster/checkpoint-control.js';
import { writeInvoke } from '../../lib/envelope.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { toTypedValue } from '../../lib/typed-value.js';
import { TEST_CLUSTER_SECRET, adminJson, clusterUntil, eventually, fixture, killNodeProcesses, startClusterProcesses, startNodeProcess, subscribed, take, withTimeout, type NodeProcess } from '../helpers.js';
import { counted } from '../fixtures/functions.js';
import { RawPeer, envelopesFrame } from './raw-peer.js';

const functions = fixture('functions');
const args = ['--functions', functions, '--port', '0', '--shards', '1', '--key-groups', '128', '--probe-interval', '100', '--probe-timeout', '40'];
const WRONG_SECRET = 'not-the-cluster-secret-0123456789';
let nodes: NodeProcess[] = [];
const clients: Client[] = [];
const dirs: string[] = [];

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  killNodeProcesses();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

interface Status {
  serving: boolean;
  view: string[];
  viewId: string;
  members: { id: string }[];
  refusals: string[];
  recovery: { epoch: number; recoveries: number } | null;
}

const converged = (of: NodeProcess[], count: number) =>
  clusterUntil<Status>(of, `views converge on ${count} members`, (last) => last.every((status) => status.serving && status.view.length === count && status.viewId === last[0]!.viewId), 20_000);

const closedWith = (peer: RawPeer, what: string) => withTimeout(peer.closed, 8000, what);

test('without the cluster secret a process cannot join, gossip, feed envelopes or roll a node back; a client counts every event once meanwhile', async () => {
  nodes = await startClusterProcesses(2, args);
  const [before] = await converged(nodes, 2);
  const client = await connect(nodes.map((node) => node.url));
  clients.push(client);
  const counts = client.subscribe('counts', { type: counted });
  await subscribed(counts);
  const ids = Array.from({ length: 10 }, (_, index) => `kept-${index}`);
  const sendRound = () => Promise.all(ids.map((id) => client.send({ typename: 'test/counter', id }, 1)));
  await sendRound();
  const target = nodes[0]!.port;
  const rollback = encodeControlEnvelope({ type: 'rollback', epoch: 99, members: ['n1'], restore: { checkpoint: 1, term: 'x' }, claimant: 'intruder' });
  const deadGossip = encodeControl(PeerFrame.Gossip, { type: 'ping', from: 'intruder', address: '127.0.0.1:1', incarnation: 1, seq: 1, target: 'n1', updates: [{ id: 'n2', address: '127.0.0.1:2', state: 'dead', incarnation: 99 }] });

  // 1. A proof made with another secret: refused, and the node proved the real secret (not the wrong one).
  const wrong = await RawPeer.open(target);
  wrong.sendHello();
  await wrong.until("the node's PROOF", () => wrong.frames.some((frame) => frame[0] === PeerFrame.Proof));
  assert.ok(wrong.nodeProved(TEST_CLUSTER_SECRET), 'the node proves the cluster secret');
  assert.not.ok(wrong.nodeProved(WRONG_SECRET));
  wrong.socket.send(wrong.proof(WRONG_SECRET));
  wrong.socket.send(envelopesFrame(1, [rollback]));
  const wrongClose = await closedWith(wrong, 'the node closes a connection with a bad proof');
  assert.is(wrongClose.code, PeerClose.Unauthorized, JSON.stringify(wrongClose));
  assert.not.ok(wrong.frames.some((frame) => frame[0] === PeerFrame.Resume), 'no RESUME for an unproved peer');

  // 2. No proof at all: gossip and a rollback order right after HELLO.
  const bare = await RawPeer.open(target);
  bare.sendHello();
  bare.socket.send(deadGossip);
  bare.socket.send(envelopesFrame(1, [rollback]));
  const bareClose = await closedWith(bare, 'the node closes a connection that skips PROOF');
  assert.is(bareClose.code, PeerClose.Malformed);
  assert.match(bareClose.reason, /PROOF/);

  // 3. No HELLO either.
  const silent = await RawPeer.open(target);
  silent.socket.send(envelopesFrame(1, [rollback]));
  assert.is((await closedWith(silent, 'the node closes a connection that skips HELLO')).code, PeerClose.Malformed);

  // 4. A replayed handshake: a good proof from one connection, with the same HELLO, on another.
  const honest = await RawPeer.open(target, 'replayed');
  honest.sendHello();
  const captured = honest.proof(TEST_CLUSTER_SECRET);
  honest.socket.terminate(); // before any RESUME: it never becomes a member
  const replay = await RawPeer.open(target, 'replayed');
  replay.socket.send(honest.hello);
  replay.socket.send(captured);
  replay.socket.send(envelopesFrame(1, [rollback]));
  assert.is((await closedWith(replay, 'the node closes a replayed proof')).code, PeerClose.Unauthorized);

  // 5. Claiming the node's own id: refused before the node proves anything (no proof to reflect).
  const mirror = await RawPeer.open(target, 'n1');
  mirror.sendHello();
  assert.is((await closedWith(mirror, 'the node refuses its own id')).code, PeerClose.Refused);
  assert.not.ok(mirror.frames.some((frame) => frame[0] === PeerFrame.Proof), 'no proof made for a peer claiming the node\'s id');

  // 6. HELLO and then nothing: closed when the handshake's time is up.
  const stalled = await RawPeer.open(target);
  stalled.sendHello();
  await closedWith(stalled, 'the node drops a handshake that never finishes');

  // The positive control: the same raw peer with the secret is taken (so the refusals above are the secret's).
  const member = await RawPeer.open(target, 'probe-with-secret');
  member.sendHello();
  await member.until("the node's PROOF", () => member.frames.some((frame) => frame[0] === PeerFrame.Proof));
  member.socket.send(member.proof(TEST_CLUSTER_SECRET));
  await member.until('RESUME after a good proof', () => member.frames.some((frame) => frame[0] === PeerFrame.Resume));
  // 7. Even with the secret, a peer cannot order a rollback the leader did not claim in the store (here
  // one in the leader's name, back to nothing), nor put a message into another key group than its
  // target's (the header is checked against the id's hash).
  const forged = encodeControlEnvelope({ type: 'rollback', epoch: 99, members: ['n1', 'n2'], restore: { checkpoint: 0, term: '' }, claimant: 'n1' });
  const realGroup = keyGroupOf('kept-0', 128);
  const lying = new Uint8Array(256);
  const lyingEnd = writeInvoke(lying, 0, (realGroup + 1) % 128, 'test/counter', 'kept-0', null, null, toTypedValue(1));
  member.socket.send(encodeControl(PeerFrame.Resume, { stream: 'probe-stream', receivedStream: '', received: 0 }));
  member.socket.send(envelopesFrame(1, [forged, lying.subarray(0, lyingEnd)]));
  await eventually(() => nodes[0]!.output().includes(`but its target id is in key group ${realGroup}`), 'the envelope with a wrong key group dropped', 8000);
  await eventually(() => /refused a rollback order of recovery 99 to checkpoint 0 from probe-with-secret: the store holds no claim of recovery 99 by n1/.test(nodes[0]!.output()), 'the forged order refused', 8000).catch((error: Error) => { throw new Error(`${error.message}: ${nodes[0]!.output().slice(-3000)}`); });
  const metrics = await (await fetch(`http://127.0.0.1:${target}/metrics`)).text();
  assert.match(metrics, /^statecraft_control_refused_total 1$/m);
  member.socket.terminate();

  // Nothing changed: the same two members, no recovery, and every event counted once.
  await sendRound();
  const records = await take(counts, ids.length * 2, 15_000);
  const last = new Map(records.map((record) => [record.value.id, record.value.count]));
  assert.equal([...last.values()], ids.map(() => 2), JSON.stringify(records.map((record) => record.value)));
  const after = (await adminJson<Status>(target)).body;
  assert.equal(after.view, ['n1', 'n2']);
  assert.not.ok(after.members.some((entry) => ['intruder', 'replayed'].includes(entry.id)), JSON.stringify(after.members));
  assert.is(after.recovery?.recoveries, before!.recovery?.recoveries, 'no recovery was started');
  assert.ok(after.refusals.some((line) => /intruder.*did not prove the cluster secret/.test(line)), JSON.stringify(after.refusals));
  assert.match(nodes[0]!.output(), /it did not prove the cluster secret/);
});

test('a node with another secret is refused at join, with a clear error on both sides', async () => {
  nodes = await startClusterProcesses(1, args);
  const error = await startNodeProcess([...args, '--node-id', 'other', '--join', `127.0.0.1:${nodes[0]!.port}`], 15_000, { STATECRAFT_CLUSTER_SECRET: WRONG_SECRET }).then(
    () => null,
    (failure: Error) => failure,
  );
  assert.ok(error, 'the node with another secret never became ready');
  assert.match(error!.message, /cluster secret.*every node of a cluster needs the same secret/, error!.message);
  assert.match(nodes[0]!.output(), /"other" from .*did not prove the cluster secret/);
  const [status] = await converged(nodes, 1);
  assert.equal(status!.view, ['n1']);
});

test('a founding node without a secret writes one (0600) and says where; a node joining without one stops and says what to do; with a copy it joins', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'statecraft-secret-'));
  dirs.push(dir);
  const store = ['--checkpoint-store', `file://${join(dir, 'store')}`];
  const noSecret = { STATECRAFT_CLUSTER_SECRET: undefined };
  const founder = await startNodeProcess([...args, ...store, '--node-id', 'n1', '--data-dir', join(dir, 'n1')], 30_000, noSecret);
  nodes = [founder];
  const secretFile = join(dir, 'n1', 'cluster-secret');
  assert.match(founder.output(), new RegExp(`generated one in ${secretFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
  assert.is(statSync(secretFile).mode & 0o777, 0o600);

  const error = await startNodeProcess([...args, ...store, '--node-id', 'n2', '--data-dir', join(dir, 'n2'), '--join', `127.0.0.1:${founder.port}`], 15_000, noSecret).then(
    () => null,
    (failure: Error) => failure,
  );
  assert.ok(error, 'a node joining without a secret does not start');
  assert.match(error!.message, /joining a cluster needs its secret: give --cluster-secret-file/);

  const joiner = await startNodeProcess([...args, ...store, '--node-id', 'n2', '--data-dir', join(dir, 'n2'), '--cluster-secret-file', secretFile, '--join', `127.0.0.1:${founder.port}`], 30_000, noSecret);
  nodes.push(joiner);
  await converged(nodes, 2);
});

test.run();
