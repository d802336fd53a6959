// A node's checkpoint roles (Checkpointing) with a fake main thread and a real FileBlobStore: a node
// alone leads itself and commits (manifest, then LATEST, then the outcome), failures fail one checkpoint
// only, control messages from peers (start, ack, failed, outcome) and where acks go, stopping and
// superseding the leader, its figures, and checkpoint numbers above anything restored or seen.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KEY_GROUP_HASH } from '../../../lib/key-group.js';
import { decodeChannelObject, readLatest, readManifest, writeLatest, writeManifest } from '../../../node/checkpoint/checkpoint-format.js';
import { Checkpointing } from '../../../node/checkpoint/checkpointing.js';
import { writeInvoke } from '../../../lib/envelope.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import type { BlobStore } from '../../../node/storage/blob-store.js';
import { eventually, sleep, withTimeout } from '../../helpers.js';
import { FakeCheckpointingHost, FakeCluster, GatedStore, manifest, playShards, tempStore } from './checkpointing-fakes.js';

const INTERVAL_MS = 20;
const TIMEOUT_MS = 10_000;
const SINGLE = { participants: ['n1'], view: 'single' } as const;

const cleanups: (() => Promise<void>)[] = [];

test.after.each(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await withTimeout(cleanup(), TIMEOUT_MS, 'cleanup');
});

async function setup(options: { nodeId?: string; ackTimeoutMs?: number; retain?: number; gated?: boolean } = {}) {
  const temp = await tempStore();
  cleanups.push(temp.remove);
  const store: BlobStore = options.gated ? new GatedStore(temp.store) : temp.store;
  const host = new FakeCheckpointingHost(options.nodeId ?? 'n1');
  const cluster = new FakeCluster();
  const checkpointing = new Checkpointing(host, { store, intervalMs: INTERVAL_MS, retain: options.retain ?? 3, ackTimeoutMs: options.ackTimeoutMs ?? TIMEOUT_MS }, `${host.nodeId}-test`);
  cleanups.push(() => checkpointing.lead(null));
  return { host, cluster, checkpointing, store, raw: temp.store };
}

/** Waits until the host has been asked to write barrier `checkpoint` into its shards. */
async function barrier(host: FakeCheckpointingHost, checkpoint: number): Promise<void> {
  await eventually(() => host.barriers.includes(checkpoint), `barrier ${checkpoint} (barriers so far: ${host.barriers})`, TIMEOUT_MS);
}

async function outcome(host: FakeCheckpointingHost, checkpoint: number): Promise<boolean> {
  await eventually(() => host.outcomes.some(([number]) => number === checkpoint), `the outcome of ${checkpoint} (so far: ${JSON.stringify(host.outcomes)})`, TIMEOUT_MS);
  return host.outcomes.find(([number]) => number === checkpoint)![1];
}

function invoke(keyGroup: number, id: string): Uint8Array {
  const value = toTypedValue(id);
  const bytes = new Uint8Array(256);
  return bytes.slice(0, writeInvoke(bytes, 0, keyGroup, 'test/fn', id, null, null, value));
}

test('a node alone leads itself: start → barrier into the shards → parts → manifest, LATEST, outcome', async () => {
  const { host, checkpointing, store } = await setup();
  assert.is(checkpointing.leaderStats, null, 'not leading yet');
  await checkpointing.lead(SINGLE);
  await barrier(host, 1);
  assert.equal(host.barriers, [1], 'checkpoint 1 first, into the shards once');
  assert.equal(host.marks, [1], 'client events accepted so far belong to 1');
  assert.equal(host.outcomes, [], 'nothing decided before the shards report');
  playShards(checkpointing, 1);
  assert.is(await outcome(host, 1), true);
  assert.is(await readLatest(store), 1);
  assert.equal(await readManifest(store, 1), {
    version: 1,
    checkpoint: 1,
    view: 'single',
    keyGroups: 4,
    hash: KEY_GROUP_HASH,
    objects: ['checkpoints/1/seg-s1.bin#0+10', 'checkpoints/1/seg-s2.bin#0+5', 'checkpoints/1/seg-s1.bin#10+20', ''],
    channels: ['checkpoints/1/ch-s1.bin'],
    retained: [],
  });
  const stats = checkpointing.leaderStats!;
  assert.is(stats.committed, 1);
  assert.is(stats.failed, 0);
  assert.is(stats.lastCommitted, 1);
  assert.is(stats.lastFailure, null);
  assert.ok(stats.lastDurationMs >= 0);
  stats.committed = 99;
  assert.is(checkpointing.leaderStats!.committed, 1, 'leaderStats is a copy');

  // The next one follows on schedule; key groups reported unchanged keep the previous objects.
  await barrier(host, 2);
  playShards(checkpointing, 2, { objects: { 1: [[0, null], [2, 'checkpoints/2/seg-s1.bin#0+7']], 2: [[1, null], [3, null]] }, channels: { 1: null, 2: null } });
  assert.is(await outcome(host, 2), true);
  assert.is(await readLatest(store), 2);
  const second = (await readManifest(store, 2))!;
  assert.equal(second.objects, ['checkpoints/1/seg-s1.bin#0+10', 'checkpoints/1/seg-s2.bin#0+5', 'checkpoints/2/seg-s1.bin#0+7', '']);
  assert.equal(second.channels, []);
  assert.equal(second.retained, [1]);
});

test('a shard part with an error fails that checkpoint only; the next one is tried and commits', async () => {
  const { host, checkpointing, store } = await setup();
  await checkpointing.lead(SINGLE);
  await barrier(host, 1);
  playShards(checkpointing, 1, { errors: { 1: null, 2: 'disk full' } });
  assert.is(await outcome(host, 1), false);
  assert.is(await readManifest(store, 1), null, 'no manifest for a failed checkpoint');
  assert.is(await readLatest(store), 0, 'LATEST not written');
  const stats = checkpointing.leaderStats!;
  assert.is(stats.failed, 1);
  assert.is(stats.lastFailure, 'checkpoint 1: upload by n1 failed: shard 2: disk full');
  assert.ok(host.logs.includes('checkpoints: checkpoint 1 failed: upload by n1 failed: shard 2: disk full; the next one is tried on schedule'), host.logs.join('\n'));
  await barrier(host, 2);
  playShards(checkpointing, 2);
  assert.is(await outcome(host, 2), true);
  assert.is(await readLatest(store), 2);
  assert.is(checkpointing.leaderStats!.committed, 1);
});

test('a node that cannot take part (the cluster says blocked) fails the checkpoint with that reason', async () => {
  const { host, cluster, checkpointing } = await setup();
  host.cluster = cluster;
  cluster.blocked = 'key groups 3 are on the move';
  await checkpointing.lead(SINGLE);
  await barrier(host, 1);
  cluster.blocked = null; // asked at the snapshot, which is taken
  playShards(checkpointing, 1);
  assert.is(await outcome(host, 1), false);
  assert.is(checkpointing.leaderStats!.lastFailure, 'checkpoint 1: upload by n1 failed: key groups 3 are on the move');
  await barrier(host, 2);
  playShards(checkpointing, 2);
  assert.is(await outcome(host, 2), true);
});

test("a peer's 'start' while restoring is answered 'failed'; nothing begins", async () => {
  const { host, cluster, checkpointing } = await setup({ nodeId: 'n2' });
  host.cluster = cluster;
  host.restoring = true;
  checkpointing.onControl('n1', { type: 'start', checkpoint: 4 });
  assert.equal(cluster.sent, [['n1', { type: 'failed', checkpoint: 4, reason: 'n2 is restoring a checkpoint' }]]);
  assert.equal(host.barriers, []);
  assert.equal(host.marks, []);
});

test("a peer's 'start': barriers to shards and peers, recording until each barrier, the ack (with the main thread's recording) to that peer", async () => {
  const { host, cluster, checkpointing, store } = await setup({ nodeId: 'n2' });
  host.cluster = cluster;
  const participant = checkpointing.participant;
  participant.setPeers(['n1']);
  checkpointing.onControl('n1', { type: 'start', checkpoint: 4 });
  assert.equal(host.barriers, [4]);
  assert.equal(cluster.peerBarriers, [4]);
  assert.equal(host.marks, [4]);
  // In flight on the link from n1 before its barrier: recorded. After it: not.
  assert.ok(participant.recording('peer:n1'));
  const early = invoke(2, 'early');
  participant.record('peer:n1', early, 0, early.length);
  participant.onBarrier('peer:n1', 4);
  assert.not.ok(participant.recording('peer:n1'));
  playShards(checkpointing, 4);
  await eventually(() => cluster.sent.length > 0, 'the ack', TIMEOUT_MS);
  assert.is(cluster.sent.length, 1);
  const [to, ack] = cluster.sent[0]!;
  assert.is(to, 'n1');
  assert.is(ack.type, 'ack');
  if (ack.type !== 'ack') return;
  assert.is(ack.checkpoint, 4);
  assert.equal(new Map(ack.objects), new Map<number, string | null>([[0, 'checkpoints/4/seg-s1.bin#0+10'], [2, 'checkpoints/4/seg-s1.bin#10+20'], [1, 'checkpoints/4/seg-s2.bin#0+5'], [3, '']]));
  assert.is(ack.channels.length, 2);
  assert.equal(ack.channels[1], 'checkpoints/4/ch-s1.bin');
  assert.match(ack.channels[0]!, /^checkpoints\/4\/ch-n2-test-t0-g0\.bin$/, "the main thread's own channel object");
  const recorded = decodeChannelObject((await store.get(ack.channels[0]!))!);
  assert.equal(recorded.map((message) => [...message]), [[...early]]);

  // A 'start' for a number already seen or older: ignored.
  checkpointing.onControl('n1', { type: 'start', checkpoint: 3 });
  checkpointing.onControl('n1', { type: 'start', checkpoint: 4 });
  assert.equal(host.barriers, [4]);
  assert.is(cluster.sent.length, 1);
  // The leader's outcome reaches the host.
  checkpointing.onControl('n1', { type: 'outcome', checkpoint: 4, committed: true });
  assert.equal(host.outcomes, [[4, true]]);

  // While a recovery discards shard output, barriers go to the shards but not to peers.
  host.discarding = true;
  checkpointing.onControl('n1', { type: 'start', checkpoint: 5 });
  assert.equal(host.barriers, [4, 5]);
  assert.equal(cluster.peerBarriers, [4]);
});

test("a checkpoint begun on a peer's barrier acks to the leader whose 'start' arrives after it", async () => {
  const { host, cluster, checkpointing } = await setup({ nodeId: 'n2' });
  host.cluster = cluster;
  checkpointing.participant.setPeers(['n1', 'n3']);
  checkpointing.participant.onBarrier('peer:n3', 6);
  assert.equal(host.barriers, [6], 'the snapshot is taken at the first barrier');
  checkpointing.onControl('n1', { type: 'start', checkpoint: 6 });
  assert.equal(host.barriers, [6], 'not taken twice');
  checkpointing.participant.onBarrier('peer:n1', 6);
  playShards(checkpointing, 6);
  await eventually(() => cluster.sent.length > 0, 'the ack', TIMEOUT_MS);
  assert.equal(cluster.sent.map(([to, message]) => [to, message.type, 'checkpoint' in message ? message.checkpoint : null]), [['n1', 'ack', 6]]);
});

test("the leader's failed outcome drops an open part: late shard parts send no ack", async () => {
  const { host, cluster, checkpointing } = await setup({ nodeId: 'n2' });
  host.cluster = cluster;
  checkpointing.onControl('n1', { type: 'start', checkpoint: 2 });
  checkpointing.onControl('n1', { type: 'outcome', checkpoint: 2, committed: false });
  assert.equal(host.outcomes, [[2, false]]);
  playShards(checkpointing, 2);
  await sleep(50);
  assert.equal(cluster.sent, []);
  // Parts of another recovery epoch are dropped too.
  checkpointing.onControl('n1', { type: 'start', checkpoint: 3 });
  playShards(checkpointing, 3, { epoch: 7 });
  await sleep(50);
  assert.equal(cluster.sent, [], 'a part of epoch 7 does not complete a checkpoint of epoch 0');
});

test("leading a peer: 'start' sent to it, its 'ack' completes the checkpoint, its 'failed' fails the next; outcomes sent to it", async () => {
  const { host, cluster, checkpointing, store } = await setup();
  host.cluster = cluster;
  await checkpointing.lead({ participants: ['n1', 'n2'], view: 'v7' });
  await barrier(host, 1);
  assert.equal(cluster.sent, [['n2', { type: 'start', checkpoint: 1 }]]);
  // This node owns key groups 0 and 2 (both on shard 1), n2 owns 1 and 3.
  playShards(checkpointing, 1, { objects: { 1: [[0, 'own-0'], [2, 'own-2']], 2: [] }, channels: { 1: null, 2: null } });
  await sleep(30);
  assert.equal(host.outcomes, [], 'waiting for n2');
  checkpointing.onControl('n9', { type: 'ack', checkpoint: 1, objects: [[1, 'stranger']], channels: [] });
  checkpointing.onControl('n2', { type: 'ack', checkpoint: 1, objects: [[1, 'n2-1'], [3, 'n2-3']], channels: ['checkpoints/1/ch-n2.bin'] });
  assert.is(await outcome(host, 1), true);
  assert.equal(cluster.sent[1], ['n2', { type: 'outcome', checkpoint: 1, committed: true }], 'the outcome right after the start');
  const committed = (await readManifest(store, 1))!;
  assert.equal(committed.objects, ['own-0', 'n2-1', 'own-2', 'n2-3'], 'the ack of n9, not a participant, was ignored');
  assert.equal(committed.channels, ['checkpoints/1/ch-n2.bin']);
  assert.is(committed.view, 'v7');

  await barrier(host, 2);
  checkpointing.onControl('n2', { type: 'failed', checkpoint: 2, reason: 'out of space' });
  assert.is(await outcome(host, 2), false);
  await eventually(() => cluster.sent.some(([, message]) => message.type === 'outcome' && message.checkpoint === 2), 'the outcome of 2 sent to n2', TIMEOUT_MS);
  assert.equal(cluster.sent.find(([, message]) => message.type === 'outcome' && message.checkpoint === 2), ['n2', { type: 'outcome', checkpoint: 2, committed: false }]);
  assert.is(checkpointing.leaderStats!.lastFailure, 'checkpoint 2: upload by n2 failed: out of space');
  assert.is(await readLatest(store), 1);
});

test('a peer that never acknowledges: the checkpoint fails after ackTimeoutMs', async () => {
  const { host, cluster, checkpointing } = await setup({ ackTimeoutMs: 150 });
  host.cluster = cluster;
  await checkpointing.lead({ participants: ['n1', 'n2'], view: 'v1' });
  await barrier(host, 1);
  playShards(checkpointing, 1);
  assert.is(await outcome(host, 1), false);
  const failure = checkpointing.leaderStats!.lastFailure!;
  // The waited time is printed as the clock gives it (see the skipped test below).
  assert.match(failure, /^checkpoint 1: timed out after [\d.]+ ms: no acknowledgement from n2$/, failure);
  const waitedMs = Number(/after ([\d.]+) ms/.exec(failure)![1]);
  assert.ok(waitedMs >= 150 && waitedMs < 5000, `waited ${waitedMs} ms`);
});

// The leader feeds performance.now() to the coordinator: its timeout reason once read "timed out after
// 150.47174699999994 ms" in logs and /cluster.
test('the ack timeout reason gives the waited time in whole milliseconds', async () => {
  const { host, cluster, checkpointing } = await setup({ ackTimeoutMs: 150 });
  host.cluster = cluster;
  await checkpointing.lead({ participants: ['n1', 'n2'], view: 'v1' });
  await barrier(host, 1);
  playShards(checkpointing, 1);
  assert.is(await outcome(host, 1), false);
  const failure = checkpointing.leaderStats!.lastFailure!;
  assert.match(failure, /^checkpoint 1: timed out after \d+ ms: no acknowledgement from n2$/, failure);
});

test('lead(null) stops the leader and waits for a LATEST write in flight; nothing starts afterwards', async () => {
  const { host, checkpointing, store, raw } = await setup({ gated: true });
  const gated = store as GatedStore;
  gated.hold('LATEST');
  await checkpointing.lead(SINGLE);
  await barrier(host, 1);
  playShards(checkpointing, 1);
  await eventually(() => gated.waiting === 1, 'the LATEST write to wait at the gate', TIMEOUT_MS);
  let stopped = false;
  const stopping = checkpointing.lead(null).then(() => (stopped = true));
  await sleep(50);
  assert.is(stopped, false, 'lead(null) waits for the write in flight');
  assert.is(checkpointing.leaderStats, null, 'no leader any more');
  gated.release();
  await withTimeout(stopping, TIMEOUT_MS, 'lead(null)');
  assert.is(await readLatest(raw), 1, 'the write in flight landed before lead(null) resolved');
  await sleep(5 * INTERVAL_MS);
  assert.equal(host.barriers, [1], 'no checkpoint after the leader stopped');
});

test('a lead call superseded while it reads the store gives way to the later one', async () => {
  const { host, cluster, checkpointing, store } = await setup();
  host.cluster = cluster;
  const first = checkpointing.lead({ participants: ['n1', 'n9'], view: 'first' });
  const second = checkpointing.lead({ participants: ['n1'], view: 'second' });
  await withTimeout(Promise.all([first, second]), TIMEOUT_MS, 'both lead calls');
  await barrier(host, 1);
  assert.equal(cluster.sent, [], 'no start sent to n9: the first call gave way');
  playShards(checkpointing, 1);
  assert.is(await outcome(host, 1), true);
  assert.is((await readManifest(store, 1))!.view, 'second');
});

test('lead then lead(null) at once: nobody leads', async () => {
  const { host, checkpointing } = await setup();
  const first = checkpointing.lead(SINGLE);
  const stop = checkpointing.lead(null);
  await withTimeout(Promise.all([first, stop]), TIMEOUT_MS, 'lead and stop');
  await sleep(5 * INTERVAL_MS);
  assert.equal(host.barriers, []);
  assert.is(checkpointing.leaderStats, null);
});

test('no leader while the node closes, or when LATEST cannot be read (logged)', async () => {
  const { host, checkpointing, raw } = await setup();
  host.closing = true;
  await checkpointing.lead(SINGLE);
  assert.is(checkpointing.leaderStats, null, 'closing');
  host.closing = false;
  await raw.put('LATEST', new TextEncoder().encode('not json'));
  await checkpointing.lead(SINGLE);
  assert.is(checkpointing.leaderStats, null, 'LATEST unreadable');
  assert.ok(
    host.logs.some((line) => /^checkpoints: cannot read the last committed checkpoint \(.+\); this node does not coordinate checkpoints until the next view$/.test(line)),
    host.logs.join('\n'),
  );
  await sleep(5 * INTERVAL_MS);
  assert.equal(host.barriers, []);
});

test('numbers start above LATEST, above the restored checkpoint, and above any number this node has seen', async () => {
  {
    const { host, checkpointing, store } = await setup();
    await writeManifest(store, manifest(5, ['a', 'b', 'c', 'd']));
    await writeLatest(store, 5);
    await checkpointing.lead(SINGLE);
    await barrier(host, 6);
    assert.equal(host.barriers, [6], 'above LATEST');
    assert.is(checkpointing.leaderStats!.lastCommitted, 5);
  }
  {
    const { host, checkpointing } = await setup();
    checkpointing.restored(7, false);
    assert.is(checkpointing.restoredCheckpoint, 7);
    await checkpointing.lead(SINGLE);
    await barrier(host, 8);
    assert.equal(host.barriers, [8], 'above the restored checkpoint');
  }
  {
    const { host, cluster, checkpointing } = await setup();
    host.cluster = cluster;
    checkpointing.onControl('n0', { type: 'start', checkpoint: 9 }); // an earlier leader's
    await checkpointing.lead(SINGLE);
    await barrier(host, 10);
    assert.equal(host.barriers, [9, 10], 'above the number a previous leader used');
  }
});

test('after a fall-back restore, key groups reported unchanged refer to the restored checkpoint, not LATEST', async () => {
  const { host, checkpointing, store } = await setup();
  await writeManifest(store, manifest(3, ['three-0', 'three-1', 'three-2', '']));
  await writeManifest(store, manifest(5, ['five-0', 'five-1', 'five-2', 'five-3'], [], [3]));
  await writeLatest(store, 5);
  checkpointing.restored(3, true);
  await checkpointing.lead(SINGLE);
  await barrier(host, 6);
  const unchanged = { objects: { 1: [[0, null], [2, null]], 2: [[1, null], [3, null]] } as Record<1 | 2, [number, string | null][]>, channels: { 1: null, 2: null } };
  playShards(checkpointing, 6, unchanged);
  assert.is(await outcome(host, 6), true);
  assert.equal((await readManifest(store, 6))!.objects, ['three-0', 'three-1', 'three-2', '']);
  // Once a checkpoint committed, the base is the newest again.
  await barrier(host, 7);
  playShards(checkpointing, 7, { objects: { 1: [[0, 'seven-0'], [2, null]], 2: [[1, null], [3, null]] }, channels: { 1: null, 2: null } });
  assert.is(await outcome(host, 7), true);
  assert.equal((await readManifest(store, 7))!.objects, ['seven-0', 'three-1', 'three-2', '']);
});

test('stopForRecovery stops leading and forgets which peer started an open checkpoint', async () => {
  const { host, cluster, checkpointing } = await setup({ nodeId: 'n2' });
  host.cluster = cluster;
  await checkpointing.lead({ participants: ['n2'], view: 'v' });
  checkpointing.onControl('n1', { type: 'start', checkpoint: 100 });
  await withTimeout(checkpointing.stopForRecovery(), TIMEOUT_MS, 'stopForRecovery');
  assert.is(checkpointing.leaderStats, null);
  playShards(checkpointing, 100);
  await sleep(50);
  assert.equal(cluster.sent, [], 'no ack to n1: its start was forgotten (and no leader here takes it)');
});

test.run();
