// The coordinator's shell (node/checkpoint/checkpoint-leader.ts) on its own, with two participants
// played by the test and a real FileBlobStore: its timer (the first start one interval after it is made,
// one checkpoint at a time), the manifest then the commit record of its term then the outcome, failed
// writes and acks, a view change, stop() waiting for a commit write in flight, a newer term sealed while
// that write is in flight (deposed: nothing announced, nothing more started), deletion of what no
// retained manifest needs and of older terms' records, and its figures.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KEY_GROUP_HASH } from '../../../lib/key-group.js';
import type { CheckpointManifest } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { manifestKey, readManifest } from '../../../node/checkpoint/checkpoint-format.js';
import { CheckpointLeader } from '../../../node/checkpoint/checkpoint-leader.js';
import { NO_COMMIT, baseKey, beginTerm, commitKey, readHead, sealKey, setBase, type CommitRecord } from '../../../node/checkpoint/terms.js';
import type { BlobStore } from '../../../node/storage/blob-store.js';
import { eventually, sleep, withTimeout } from '../../helpers.js';
import { GatedStore, TEST_TERM, commitManifest, manifest, tempStore, testRef } from './checkpointing-fakes.js';
import { ScriptedStore } from './scripted-store.js';

const INTERVAL_MS = 20;
const TIMEOUT_MS = 5000;

const cleanups: (() => Promise<void>)[] = [];

test.after.each(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await withTimeout(cleanup(), TIMEOUT_MS, 'cleanup');
});

interface Setup {
  intervalMs?: number;
  ackTimeoutMs?: number;
  retain?: number;
  committed?: CheckpointManifest[];
  lastCheckpoint?: number;
  gated?: boolean;
  /** Writes what earlier leaders left in the store, before the leader's term begins. */
  before?: (store: BlobStore) => Promise<void>;
}

async function setup(options: Setup = {}) {
  const temp = await tempStore();
  cleanups.push(temp.remove);
  await options.before?.(temp.store);
  // The leader's term, begun and based as Checkpointing.lead does it: on the last committed manifest.
  const last = options.committed?.at(-1);
  const base: CommitRecord = last === undefined ? NO_COMMIT : { checkpoint: last.checkpoint, term: last.term, retained: last.retained };
  const { term } = await beginTerm(temp.store, 'leader-test');
  await setBase(temp.store, term, base);
  const scripted = new ScriptedStore(temp.store);
  const gated = new GatedStore(scripted);
  const starts: { participant: string; checkpoint: number; atMs: number }[] = [];
  const outcomes: { participants: string[]; checkpoint: number; committed: boolean; putsSoFar: string[] }[] = [];
  const logs: string[] = [];
  const madeMs = performance.now();
  const leader = new CheckpointLeader({
    store: options.gated ? gated : scripted,
    keyGroups: 4,
    intervalMs: options.intervalMs ?? INTERVAL_MS,
    retain: options.retain ?? 3,
    ackTimeoutMs: options.ackTimeoutMs ?? TIMEOUT_MS,
    participants: ['b', 'a'],
    view: 'v1',
    term,
    committed: options.committed ?? [],
    lastCheckpoint: options.lastCheckpoint ?? 0,
    start: (participant, checkpoint) => starts.push({ participant, checkpoint, atMs: performance.now() - madeMs }),
    outcome: (participants, checkpoint, committed) => outcomes.push({ participants: [...participants], checkpoint, committed, putsSoFar: [...scripted.puts] }),
    log: (line) => logs.push(line),
  });
  cleanups.push(() => leader.stop('the test ends'));
  return { leader, term, base, store: scripted, gated, raw: temp.store, starts, outcomes, logs };
}

type World = Awaited<ReturnType<typeof setup>>;

async function started(world: World, checkpoint: number): Promise<void> {
  await eventually(
    () => world.starts.filter((start) => start.checkpoint === checkpoint).length === 2,
    `checkpoint ${checkpoint} started on both participants (starts: ${JSON.stringify(world.starts)})`,
    TIMEOUT_MS,
  );
}

async function decided(world: World, checkpoint: number): Promise<boolean> {
  await eventually(() => world.outcomes.some((outcome) => outcome.checkpoint === checkpoint), `the outcome of ${checkpoint}`, TIMEOUT_MS);
  return world.outcomes.find((outcome) => outcome.checkpoint === checkpoint)!.committed;
}

/** Participant a owns key groups 0 and 1, b owns 2 and 3; `null` reports a key group unchanged. */
function ackBoth(leader: CheckpointLeader, checkpoint: number, keys: { a?: [string | null, string | null]; b?: [string | null, string | null] } = {}): void {
  const a = keys.a ?? [`checkpoints/${checkpoint}/seg-a.bin#0+3`, `checkpoints/${checkpoint}/seg-a.bin#3+3`];
  const b = keys.b ?? [`checkpoints/${checkpoint}/seg-b.bin#0+3`, ''];
  leader.acknowledged('a', checkpoint, new Map([[0, a[0]], [1, a[1]]]), [`checkpoints/${checkpoint}/ch-a.bin`]);
  leader.acknowledged('b', checkpoint, new Map([[2, b[0]], [3, b[1]]]), []);
}

test('the first checkpoint starts one interval after the leader is made, numbered above lastCheckpoint and the committed ones, on every participant', async () => {
  const world = await setup({ intervalMs: 150, lastCheckpoint: 7, committed: [manifest(5, ['x', 'x', 'x', 'x'])] });
  assert.is(world.leader.lastCommitted, 5, 'the last committed manifest given');
  assert.is(world.leader.stats.lastCommitted, 5);
  await sleep(60);
  assert.equal(world.starts, [], 'nothing before the interval has passed');
  await started(world, 8);
  assert.equal(world.starts.map((start) => [start.participant, start.checkpoint]), [['a', 8], ['b', 8]], 'checkpoint 8 (above 7), participants sorted');
  assert.ok(world.starts[0]!.atMs >= 145, `started after ${world.starts[0]!.atMs} ms, not before the interval`);
});

test('one checkpoint at a time: none starts while acks are missing; the next one starts right after a late commit', async () => {
  const world = await setup({ intervalMs: 30 });
  await started(world, 1);
  await sleep(200);
  assert.equal(world.starts.map((start) => start.checkpoint), [1, 1], 'no second start past several intervals');
  const ackedMs = performance.now();
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), true);
  await started(world, 2);
  const waitedMs = performance.now() - ackedMs;
  assert.ok(waitedMs < 1000, `checkpoint 2 started ${Math.round(waitedMs)} ms after the acks: its time had passed`);
});

test('every ack in: the manifest is written, then the commit record of the term, then every participant hears the outcome; stats count it', async () => {
  const world = await setup();
  await started(world, 1);
  world.leader.acknowledged('a', 1, new Map([[0, 'checkpoints/1/seg-a.bin#0+3'], [1, 'checkpoints/1/seg-a.bin#3+3']]), ['checkpoints/1/ch-a.bin']);
  await sleep(50);
  assert.equal(world.store.puts, [], 'nothing is written before the last ack');
  assert.equal(world.outcomes, []);
  world.leader.acknowledged('b', 1, new Map([[2, 'checkpoints/1/seg-b.bin#0+3'], [3, '']]), []);
  assert.is(await decided(world, 1), true);
  const outcome = world.outcomes[0]!;
  assert.equal(outcome.putsSoFar, [`checkpoints/1/manifest-${world.term}.json`, `commits/${world.term}/0000000001.json`], 'the manifest first, the commit record second, the outcome after both');
  assert.equal([...outcome.participants].sort(), ['a', 'b']);
  assert.equal(await readHead(world.raw), { checkpoint: 1, term: world.term, retained: [] }, 'the head: checkpoint 1 of the leader\'s term');
  assert.equal(await readManifest(world.raw, { checkpoint: 1, term: world.term }), {
    version: 2,
    checkpoint: 1,
    term: world.term,
    view: 'v1',
    keyGroups: 4,
    hash: KEY_GROUP_HASH,
    objects: ['checkpoints/1/seg-a.bin#0+3', 'checkpoints/1/seg-a.bin#3+3', 'checkpoints/1/seg-b.bin#0+3', ''],
    channels: ['checkpoints/1/ch-a.bin'],
    retained: [],
  });
  assert.is(world.leader.lastCommitted, 1);
  assert.is(world.leader.stats.committed, 1);
  assert.is(world.leader.stats.failed, 0);
  assert.is(world.leader.stats.lastCommitted, 1);
  assert.is(world.leader.stats.lastFailure, null);
  assert.is(world.leader.stats.deposedBy, null);
  assert.ok(world.leader.stats.lastDurationMs >= 0 && world.leader.stats.lastDurationMs < TIMEOUT_MS, `duration ${world.leader.stats.lastDurationMs}`);
});

test('a key group reported unchanged keeps the entry of the committed manifest the leader was given', async () => {
  const earlier = manifest(4, ['checkpoints/4/seg-a.bin#0+1', 'checkpoints/4/seg-a.bin#1+1', 'checkpoints/4/seg-b.bin#0+1', 'checkpoints/4/seg-b.bin#1+1']);
  const world = await setup({ committed: [earlier] });
  await started(world, 5);
  ackBoth(world.leader, 5, { a: [null, 'checkpoints/5/seg-a.bin#0+2'], b: [null, null] });
  assert.is(await decided(world, 5), true);
  const written = await readManifest(world.raw, { checkpoint: 5, term: world.term });
  assert.equal(written!.objects, ['checkpoints/4/seg-a.bin#0+1', 'checkpoints/5/seg-a.bin#0+2', 'checkpoints/4/seg-b.bin#0+1', 'checkpoints/4/seg-b.bin#1+1']);
  assert.equal(written!.retained, [testRef(4)], 'checkpoint 4 retained under the term it was committed in');
  assert.equal(await readHead(world.raw), { checkpoint: 5, term: world.term, retained: [testRef(4)] });
});

test('a failed manifest write fails the checkpoint: no commit record, logged, counted, outcome false; the next one commits', async () => {
  const world = await setup();
  await started(world, 1);
  world.store.failNextPut(manifestKey(1, world.term), 'disk full');
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), false);
  assert.equal(world.store.puts, [manifestKey(1, world.term)], 'no commit record after a failed manifest');
  assert.is(await readHead(world.raw), NO_COMMIT, "the head is still the term's base: nothing");
  assert.is(world.leader.stats.failed, 1);
  assert.is(world.leader.stats.committed, 0);
  assert.is(world.leader.stats.lastFailure, 'checkpoint 1: manifest write failed: disk full');
  assert.ok(
    world.logs.some((line) => line === 'checkpoints: checkpoint 1 failed: manifest write failed: disk full; the next one is tried on schedule'),
    `logged: ${JSON.stringify(world.logs)}`,
  );
  await started(world, 2);
  ackBoth(world.leader, 2);
  assert.is(await decided(world, 2), true);
  assert.equal(await readHead(world.raw), { checkpoint: 2, term: world.term, retained: [] });
  assert.is(world.leader.stats.lastFailure, 'checkpoint 1: manifest write failed: disk full', 'the last failure stays shown after a commit');
});

test('a failed commit record write fails the checkpoint and the head stays on the last commit; the leader goes on', async () => {
  const world = await setup();
  await started(world, 1);
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), true);
  await started(world, 2);
  world.store.failNextPut(commitKey(world.term, 2), 'connection reset');
  ackBoth(world.leader, 2);
  assert.is(await decided(world, 2), false);
  assert.equal(await readHead(world.raw), { checkpoint: 1, term: world.term, retained: [] });
  assert.is(world.leader.lastCommitted, 1);
  assert.is(world.leader.stats.lastCommitted, 1);
  assert.is(world.leader.stats.lastFailure, 'checkpoint 2: commit write failed: connection reset');
  assert.is(world.leader.stats.deposedBy, null, 'a failed write is not a deposition');
  await started(world, 3);
  ackBoth(world.leader, 3);
  assert.is(await decided(world, 3), true);
  assert.equal(await readHead(world.raw), { checkpoint: 3, term: world.term, retained: [{ checkpoint: 1, term: world.term }] });
});

test('acks missing past ackTimeoutMs: the checkpoint fails naming who did not answer', async () => {
  const world = await setup({ ackTimeoutMs: 100 });
  await started(world, 1);
  world.leader.acknowledged('a', 1, new Map([[0, 'k0'], [1, 'k1']]), []);
  assert.is(await decided(world, 1), false);
  assert.match(world.leader.stats.lastFailure!, /^checkpoint 1: timed out after \d+ ms: no acknowledgement from b$/);
  assert.equal(world.store.puts, []);
});

test("a participant's upload failure fails the checkpoint with its reason; one from outside the view is ignored", async () => {
  const world = await setup();
  await started(world, 1);
  world.leader.uploadFailed('z', 1, 'not a participant');
  await sleep(50);
  assert.equal(world.outcomes, [], 'ignored');
  world.leader.uploadFailed('b', 1, 'shard 2: out of memory');
  assert.is(await decided(world, 1), false);
  assert.is(world.leader.stats.lastFailure, 'checkpoint 1: upload by b failed: shard 2: out of memory');
  assert.equal(world.store.puts, []);
});

test('a view change fails the open checkpoint; the next one goes to the new participants and names the new view', async () => {
  const world = await setup();
  await started(world, 1);
  world.leader.viewChanged(['a'], 'v2');
  assert.is(await decided(world, 1), false);
  assert.is(world.leader.stats.lastFailure, 'checkpoint 1: the view changed to v2');
  assert.equal(world.outcomes[0]!.participants, ['a'], 'the outcome goes to the new participants');
  await eventually(() => world.starts.some((start) => start.checkpoint === 2), 'checkpoint 2', TIMEOUT_MS);
  await sleep(30);
  assert.equal(world.starts.filter((start) => start.checkpoint === 2).map((start) => start.participant), ['a']);
  world.leader.acknowledged('a', 2, new Map([[0, 'k0'], [1, 'k1'], [2, 'k2'], [3, 'k3']]), []);
  assert.is(await decided(world, 2), true);
  assert.is((await readManifest(world.raw, { checkpoint: 2, term: world.term }))!.view, 'v2');
});

test('stop() resolves only when a commit write in flight has landed; then no outcome is sent and nothing starts', async () => {
  const world = await setup({ gated: true });
  await started(world, 1);
  world.gated.hold(commitKey(world.term, 1));
  ackBoth(world.leader, 1);
  await eventually(() => world.gated.waiting === 1, 'the commit record write held at the gate', TIMEOUT_MS);
  let stopped = false;
  const stopping = world.leader.stop('the test stops it').then(() => (stopped = true));
  await sleep(100);
  assert.is(stopped, false, 'stop() waits for the write in flight');
  world.gated.release();
  await withTimeout(stopping, TIMEOUT_MS, 'stop()');
  assert.equal(await readHead(world.raw), { checkpoint: 1, term: world.term, retained: [] }, 'the write landed before stop() resolved');
  assert.equal(world.outcomes, [], 'a stopped leader reports nothing: the next leader reads the head');
  await sleep(5 * INTERVAL_MS);
  assert.equal(world.starts.map((start) => start.checkpoint), [1, 1], 'no checkpoint starts after stop()');
});

test('a newer term sealed while the commit record is in flight deposes the leader: no committed outcome, nothing more starts, the head is the newer term\'s', async () => {
  const world = await setup({ gated: true });
  await started(world, 1);
  world.gated.hold(commitKey(world.term, 1));
  ackBoth(world.leader, 1);
  await eventually(() => world.gated.waiting === 1, 'the commit record write held at the gate', TIMEOUT_MS);
  // Another node begins a term meanwhile (a recovery, or the leader of a view this one has not seen):
  // it reads the head before the record lands and continues from what it read.
  const newer = await beginTerm(world.raw, 'other-node');
  assert.ok(newer.term > world.term, `${newer.term} is newer than ${world.term}`);
  assert.is(newer.head, NO_COMMIT, 'the newer term read the head before the record landed');
  await setBase(world.raw, newer.term, newer.head);
  world.gated.release();
  assert.is(await decided(world, 1), false, 'checkpoint 1 is not announced as committed');
  assert.ok(await world.raw.exists(commitKey(world.term, 1)), 'its record did land: the fence kept it back, not a failed write');
  assert.equal(world.outcomes.map((outcome) => [outcome.checkpoint, outcome.committed]), [[1, false]]);
  const stats = world.leader.stats;
  assert.is(stats.deposedBy, newer.term);
  assert.equal({ committed: stats.committed, failed: stats.failed, lastCommitted: stats.lastCommitted }, { committed: 0, failed: 1, lastCommitted: 0 });
  assert.is(stats.lastFailure, `checkpoint 1: term ${newer.term} began before its commit was confirmed`);
  assert.is(world.leader.lastCommitted, 0);
  assert.ok(
    world.logs.includes(
      `checkpoints: term ${newer.term} began after this leader's term ${world.term} (another node leads, or a recovery ran while this one was paused or cut off): checkpoint 1 is not announced and this leader stops`,
    ),
    world.logs.join('\n'),
  );
  assert.is(await readHead(world.raw), NO_COMMIT, "the head is the newer term's base, not the deposed checkpoint");
  // Late acks change nothing; the timer starts nothing more; nothing is deleted.
  world.leader.acknowledged('a', 1, new Map([[0, 'late']]), []);
  await sleep(10 * INTERVAL_MS);
  assert.equal(world.starts.map((start) => start.checkpoint), [1, 1], 'a deposed leader starts no further checkpoint');
  assert.is(world.outcomes.length, 1);
  assert.equal(world.store.calls.filter((call) => call.startsWith('delete ')), [], 'neither garbage nor older terms are removed by a deposed leader');
  assert.ok(await world.raw.exists(baseKey(newer.term)));
});

test('a newer term sealed before the check but read after the record landed: it continues from the checkpoint, which is still not announced here', async () => {
  const world = await setup({ gated: true });
  await started(world, 1);
  world.gated.hold(commitKey(world.term, 1));
  ackBoth(world.leader, 1);
  await eventually(() => world.gated.waiting === 1, 'the commit record write held at the gate', TIMEOUT_MS);
  // The newer term's seal lands first; its writer reads the head only after the record (beginTerm's two
  // steps pulled apart).
  const sealed = await beginTerm(world.raw, 'other-node');
  world.gated.release();
  assert.is(await decided(world, 1), false, 'deposed: the leader cannot know the newer term saw its record');
  assert.is(world.leader.stats.deposedBy, sealed.term);
  const head = await readHead(world.raw);
  assert.equal(head, { checkpoint: 1, term: world.term, retained: [] }, 'the newer term, not yet based, does not change the head');
  await setBase(world.raw, sealed.term, head);
  assert.equal(await readHead(world.raw), head, 'based on checkpoint 1: it is in the history');
});

test("after its term's first commit the leader deletes older terms' seals, bases and commit records, once; the manifests it retains stay", async () => {
  const earlier = manifest(4, ['checkpoints/4/seg-a.bin#0+1', 'checkpoints/4/seg-a.bin#1+1', 'checkpoints/4/seg-b.bin#0+1', '']);
  const world = await setup({ committed: [earlier], before: (store) => commitManifest(store, earlier).then(() => undefined) });
  assert.ok(world.term > TEST_TERM, `the leader's term ${world.term} is newer than ${TEST_TERM}`);
  await started(world, 5);
  assert.ok(await world.raw.exists(sealKey(TEST_TERM)), 'nothing of the older term is removed before this term commits');
  ackBoth(world.leader, 5);
  assert.is(await decided(world, 5), true);
  const older = `delete ${[baseKey(TEST_TERM), commitKey(TEST_TERM, 4), sealKey(TEST_TERM)].sort().join(',')}`;
  await eventually(() => world.store.calls.includes(older), `${older} (calls: ${world.store.calls.join('; ')})`, TIMEOUT_MS);
  for (const key of [sealKey(TEST_TERM), baseKey(TEST_TERM), commitKey(TEST_TERM, 4)]) assert.not.ok(await world.raw.exists(key), `${key} deleted`);
  assert.ok(await world.raw.exists(manifestKey(4, TEST_TERM)), 'the manifest of 4 stays: 5 retains it');
  assert.ok(await world.raw.exists(sealKey(world.term)));
  assert.equal(await readHead(world.raw), { checkpoint: 5, term: world.term, retained: [testRef(4)] });
  await started(world, 6);
  ackBoth(world.leader, 6);
  assert.is(await decided(world, 6), true);
  await sleep(50);
  assert.equal(world.store.calls.filter((call) => call.startsWith('delete ')), [older], 'only once, after the first commit');
});

test('stop() with nothing in flight resolves at once and the timer starts nothing more', async () => {
  const world = await setup();
  await started(world, 1);
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), true);
  await withTimeout(world.leader.stop('the test stops it'), 200, 'stop() with nothing in flight');
  const count = world.starts.length;
  await sleep(5 * INTERVAL_MS);
  assert.is(world.starts.length, count);
});

test('retain 1: a commit deletes the older manifest and every object only it referenced, keeping shared ones', async () => {
  const world = await setup({ retain: 1 });
  const bytes = new Uint8Array([1, 2, 3, 4, 5, 6]);
  for (const key of ['checkpoints/1/seg-a.bin', 'checkpoints/1/seg-b.bin', 'checkpoints/1/ch-a.bin']) await world.raw.put(key, bytes);
  await started(world, 1);
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), true);
  await started(world, 2);
  for (const key of ['checkpoints/2/seg-b.bin', 'checkpoints/2/ch-a.bin']) await world.raw.put(key, bytes);
  // a's key groups did not change: manifest 2 keeps pointing into checkpoint 1's segment of a.
  ackBoth(world.leader, 2, { a: [null, null] });
  assert.is(await decided(world, 2), true);
  const term = world.term;
  const expected = ['checkpoints/1/seg-a.bin', 'checkpoints/2/ch-a.bin', manifestKey(2, term), 'checkpoints/2/seg-b.bin', commitKey(term, 2), baseKey(term), sealKey(term)].sort();
  await eventually(async () => JSON.stringify((await world.raw.list()).sort()) === JSON.stringify(expected), `the store holds ${expected}`, TIMEOUT_MS);
  assert.equal(
    world.store.calls.filter((call) => call.startsWith('delete ')),
    [`delete checkpoints/1/ch-a.bin,${manifestKey(1, term)},checkpoints/1/seg-b.bin,${commitKey(term, 1)}`],
    'deleted whole objects and the commit record of 1, only those no retained manifest references',
  );
  assert.equal(await readHead(world.raw), { checkpoint: 2, term, retained: [] });
});

test("a failed checkpoint's objects are deleted only after a later commit", async () => {
  const world = await setup();
  const bytes = new Uint8Array([7]);
  await started(world, 1);
  await world.raw.put('checkpoints/1/seg-a.bin', bytes);
  world.leader.acknowledged('a', 1, new Map([[0, 'checkpoints/1/seg-a.bin#0+1'], [1, '']]), []);
  world.leader.uploadFailed('b', 1, 'boom');
  assert.is(await decided(world, 1), false);
  await sleep(50);
  assert.ok(await world.raw.exists('checkpoints/1/seg-a.bin'), 'kept while the head may not have moved past it');
  await started(world, 2);
  ackBoth(world.leader, 2);
  assert.is(await decided(world, 2), true);
  await eventually(async () => !(await world.raw.exists('checkpoints/1/seg-a.bin')), 'the failed upload deleted after commit 2', TIMEOUT_MS);
});

test('a failed deletion is logged; the commit stands and the next checkpoint runs', async () => {
  const world = await setup({ retain: 1 });
  world.store.deleteFailure = 'permission denied';
  await started(world, 1);
  ackBoth(world.leader, 1);
  assert.is(await decided(world, 1), true);
  await started(world, 2);
  ackBoth(world.leader, 2);
  assert.is(await decided(world, 2), true);
  await eventually(() => world.logs.some((line) => /^checkpoints: deleting \d+ old objects failed: permission denied$/.test(line)), 'the deletion failure logged', TIMEOUT_MS);
  assert.is((await readHead(world.raw)).checkpoint, 2);
  assert.is(world.leader.stats.committed, 2);
  assert.is(world.leader.stats.failed, 0);
  await started(world, 3);
});

test('stats count commits and failures across checkpoints', async () => {
  const world = await setup();
  await started(world, 1);
  ackBoth(world.leader, 1);
  await decided(world, 1);
  await started(world, 2);
  world.leader.uploadFailed('a', 2, 'x');
  await decided(world, 2);
  await started(world, 3);
  ackBoth(world.leader, 3);
  await decided(world, 3);
  const stats = world.leader.stats;
  assert.equal({ committed: stats.committed, failed: stats.failed, lastCommitted: stats.lastCommitted, lastFailure: stats.lastFailure, deposedBy: stats.deposedBy }, {
    committed: 2,
    failed: 1,
    lastCommitted: 3,
    lastFailure: 'checkpoint 2: upload by a failed: x',
    deposedBy: null,
  });
});

test.run();
