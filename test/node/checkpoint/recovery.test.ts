// Recovery on a node's main thread with a fake main thread and pool (shards answer 'reset' and
// 'restore' requests; every step recorded in one ordered log), a real Checkpointing and a real
// FileBlobStore holding committed checkpoints written by the test: restoring at start (and falling
// back) in a term based on what was restored, rolling back to a named checkpoint in the exact order of
// steps, discarding around the reset, one rollback at a time, a node owning no key group restoring
// nothing (not even reading the manifest), the errors that name what cannot be read, and prepare's term
// fencing off a leader elsewhere whose commit lands late.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readKeyGroup, writeInvoke } from '../../../lib/envelope.js';
import { StatecraftError } from '../../../lib/errors.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { encodeChannelObject, manifestKey, readManifest, writeManifest } from '../../../node/checkpoint/checkpoint-format.js';
import { Checkpointing } from '../../../node/checkpoint/checkpointing.js';
import { LEGACY_LATEST_KEY, NO_COMMIT, TERMS_PREFIX, baseKey, commitKey, parseTermKeys, readHead, writeCommit, type CommitRecord } from '../../../node/checkpoint/terms.js';
import { Recovery, type RecoveryHost } from '../../../node/checkpoint/recovery.js';
import { ShardPool, type ShardReply, type ShardRequest, type ShardRequests } from '../../../node/main/shard-pool.js';
import type { MainToShard } from '../../../node/shard/shard-worker.js';
import { BlobCorruptError, type BlobStore } from '../../../node/storage/blob-store.js';
import { eventually, sleep, withTimeout } from '../../helpers.js';
import { FakeCheckpointingHost, FakeCluster, GatedStore, KEY_GROUPS, TEST_TERM, commitManifest, manifest, playShards, tempStore, testRef } from './checkpointing-fakes.js';

const TIMEOUT_MS = 10_000;
const RECOVERING = 'the cluster is recovering from a failed node: reconnect and re-send what was not committed';

type Reply = ShardReply<'released' | 'adopted' | 'restored'>;
type Restore = Extract<MainToShard, { type: 'restore' }>;

/** Two shards answering like shard-worker.ts: reset at once, restore as `restoreAnswer` says. */
class FakePool implements ShardRequests {
  readonly size = 2;
  private readonly real = new ShardPool(2, { log: () => undefined, onPart: () => undefined, onFatal: () => undefined });
  asked: { shard: number; message: ShardRequest; discarding: boolean; restoring: boolean }[] = [];
  /** A shard's answer to a restore (default: 10 × shard + keys instances). */
  restoreAnswer: (shard: number, message: Restore) => Partial<Reply> = (shard, message) => ({ instances: 10 * shard + message.keys.length });
  /** Awaited before a request is answered (to hold a rollback in the middle). */
  gate: ((shard: number, message: ShardRequest) => Promise<void>) | null = null;
  recovery: Recovery | null = null;

  constructor(private readonly host: FakeRecoveryHost) {}

  shardOf(keyGroup: number): number {
    return this.real.shardOf(keyGroup);
  }
  byShard<T>(items: Iterable<T>, keyGroupOf: (item: T) => number): Map<number, T[]> {
    return this.real.byShard(items, keyGroupOf);
  }
  ask<Type extends 'released' | 'adopted' | 'restored'>(shard: number, message: ShardRequest): Promise<ShardReply<Type>> {
    this.asked.push({ shard, message, discarding: this.host.discarding, restoring: this.recovery?.restoring ?? false });
    if (message.type === 'reset') this.host.events.push(`reset ${message.phase} e${message.epoch} @${shard}`);
    else if (message.type === 'restore') {
      this.host.events.push(`restore ${message.checkpoint} @${shard} keys=[${message.keys}] clean=[${message.clean}]${message.fallback ? ' fallback' : ''}`);
    } else this.host.events.push(`ask ${message.type} @${shard}`);
    return (async () => {
      await this.gate?.(shard, message);
      const reply: Reply = message.type === 'restore' ? { type: 'restored', request: 0, instances: 0, ...this.restoreAnswer(shard, message) } as Reply : { type: 'restored', request: 0, instances: 0 };
      return reply as ShardReply<Type>;
    })();
  }
  askAll<Type extends 'released' | 'adopted' | 'restored'>(message: ShardRequest): Promise<ShardReply<Type>[]> {
    return Promise.all([1, 2].map((shard) => this.ask<Type>(shard, message)));
  }
  post(shard: number, message: MainToShard): void {
    this.host.events.push(`post ${message.type} @${shard}`);
  }
  postAll(message: MainToShard): void {
    this.host.events.push(`post-all ${message.type}`);
  }
}

/** The main thread as recovery sees it; `events` is the one ordered log of everything asked. */
class FakeRecoveryHost implements RecoveryHost {
  readonly keyGroups = KEY_GROUPS;
  events: string[] = [];
  readonly pool: FakePool = new FakePool(this);
  discarding = false;
  /** `discarding` at each event, by index in `events`. */
  discardingAt: boolean[] = [];
  /** Per key group: its shard, or 'M' (the main thread). */
  routing = 'MMMM';
  replayed: { keyGroup: number; bytes: number[] }[] = [];
  logs: string[] = [];

  private note(event: string): void {
    this.events.push(event);
    this.discardingAt[this.events.length - 1] = this.discarding;
  }
  dropUnpublished(): void {
    this.note('dropUnpublished');
  }
  drainInputs(): void {
    this.note('drain');
  }
  setRouting(owned: (keyGroup: number) => boolean): void {
    this.routing = Array.from({ length: KEY_GROUPS }, (_, keyGroup) => (owned(keyGroup) ? String(this.pool.shardOf(keyGroup)) : 'M')).join('');
    this.note(`routing ${this.routing}`);
  }
  async dropClients(reason: string): Promise<void> {
    this.note(`dropClients: ${reason}`);
  }
  replay(messages: readonly Uint8Array[]): void {
    for (const message of messages) this.replayed.push({ keyGroup: readKeyGroup(message, 0), bytes: [...message] });
    this.note(`replay ${messages.map((message) => readKeyGroup(message, 0)).join(',')}`);
  }
  log(line: string): void {
    this.logs.push(line);
  }
}

const cleanups: (() => Promise<void>)[] = [];
test.after.each(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await withTimeout(cleanup(), TIMEOUT_MS, 'cleanup');
});

async function setup() {
  const temp = await tempStore();
  cleanups.push(temp.remove);
  const store = temp.store;
  const host = new FakeRecoveryHost();
  const checkpointingHost = new FakeCheckpointingHost('n1');
  const cluster = new FakeCluster();
  checkpointingHost.cluster = cluster;
  const checkpointing = new Checkpointing(checkpointingHost, { store, intervalMs: 20, retain: 3, ackTimeoutMs: TIMEOUT_MS }, 'n1-test');
  cleanups.push(() => checkpointing.lead(null));
  // Every lead call shows in the log (stopForRecovery and prepare stop leading through it).
  const lead = checkpointing.lead.bind(checkpointing);
  checkpointing.lead = (how) => {
    host.events.push(`lead ${how === null ? 'null' : how.view}`);
    return lead(how);
  };
  const recovery = new Recovery(host, checkpointing);
  host.pool.recovery = recovery;
  return { store, host, checkpointing, checkpointingHost, cluster, recovery };
}

function invoke(keyGroup: number, id: string): Uint8Array {
  const bytes = new Uint8Array(256);
  return bytes.slice(0, writeInvoke(bytes, 0, keyGroup, 'test/fn', id, null, null, toTypedValue(id)));
}

/**
 * Checkpoint `checkpoint` committed in TEST_TERM (retaining `retained` of it): objects per key group,
 * two channel objects with messages for key groups 0, 3, 1 and 2. Returns its commit record.
 */
async function commit(store: BlobStore, checkpoint: number, retained: number[] = [], instances?: number[]): Promise<CommitRecord> {
  const channels = [`checkpoints/${checkpoint}/ch-a.bin`, `checkpoints/${checkpoint}/ch-b.bin`];
  await store.put(channels[0]!, encodeChannelObject(checkpoint, [invoke(0, 'a'), invoke(3, 'b'), invoke(1, 'c')]));
  await store.put(channels[1]!, encodeChannelObject(checkpoint, [invoke(2, 'd')]));
  const segment = (shard: number) => `checkpoints/${checkpoint}/seg-s${shard}.bin`;
  const written = manifest(checkpoint, [`${segment(1)}#0+10`, '', `${segment(1)}#10+4`, `${segment(2)}#0+8`], channels, retained.map(testRef));
  return commitManifest(store, instances === undefined ? written : { ...written, instances });
}

/** The terms in the store, oldest first, each with its base (null: sealed only). */
async function termsOf(store: BlobStore): Promise<{ term: string; base: CommitRecord | null }[]> {
  const { terms, based } = parseTermKeys(await store.list(TERMS_PREFIX));
  const read = async (term: string) => JSON.parse(new TextDecoder().decode((await store.get(baseKey(term)))!)) as CommitRecord;
  return Promise.all(terms.map(async (term) => ({ term, base: based.has(term) ? await read(term) : null })));
}

async function failure(promise: Promise<unknown>): Promise<StatecraftError> {
  try {
    await withTimeout(promise, TIMEOUT_MS, 'the call to fail');
  } catch (error) {
    assert.instance(error, StatecraftError, String(error));
    return error as StatecraftError;
  }
  assert.unreachable('the call succeeded');
  throw new Error('unreachable');
}

test('restoreAtStart: every shard restores the head (its refs, its empty key groups as clean), then resume, then the recorded messages of owned key groups; a term based on it', async () => {
  const { store, host, checkpointing, recovery } = await setup();
  const head = await commit(store, 2);
  const result = await withTimeout(recovery.restoreAtStart((keyGroup) => keyGroup !== 3), TIMEOUT_MS, 'restoreAtStart');
  assert.equal(host.events, [
    'restore 2 @1 keys=[checkpoints/2/seg-s1.bin#0+10,checkpoints/2/seg-s1.bin#10+4] clean=[]',
    'restore 2 @2 keys=[] clean=[1]',
    'post-all resume',
    'replay 0,1,2',
  ]);
  // In the order recorded: channel a (key groups 0, 3 left out, 1), then channel b (2).
  assert.equal(host.replayed.map(({ keyGroup, bytes }) => [keyGroup, bytes]), [
    [0, [...invoke(0, 'a')]],
    [1, [...invoke(1, 'c')]],
    [2, [...invoke(2, 'd')]],
  ]);
  assert.equal(result, { checkpoint: 2, instances: 10 + 2 + 20 });
  assert.is(checkpointing.restoredCheckpoint, 2);
  assert.is(host.discarding, false);
  assert.equal(host.logs, []);
  const terms = await termsOf(store);
  assert.is(terms.length, 2, 'the start began a term');
  assert.equal(terms[1]!.base, head, 'based on the checkpoint restored');
  assert.equal(await readHead(store), head);
});

test('restoreAtStart: a shard error on the head falls back to the one before, resetting the shards in between; the term continues from the one restored', async () => {
  const { store, host, checkpointing, checkpointingHost, recovery } = await setup();
  await commit(store, 1);
  await commit(store, 2, [1]);
  host.pool.restoreAnswer = (shard, message) =>
    message.checkpoint === 2 && shard === 2 ? { error: 'object checkpoints/2/seg-s2.bin is corrupt', code: 'SC_ERR_STORE_CORRUPT' } : { instances: shard };
  const result = await withTimeout(recovery.restoreAtStart(() => true), TIMEOUT_MS, 'restoreAtStart');
  assert.equal(host.events, [
    'restore 2 @1 keys=[checkpoints/2/seg-s1.bin#0+10,checkpoints/2/seg-s1.bin#10+4] clean=[]',
    'restore 2 @2 keys=[checkpoints/2/seg-s2.bin#0+8] clean=[1]',
    'dropUnpublished',
    'reset 1 e0 @1',
    'reset 1 e0 @2',
    'drain',
    'reset 2 e0 @1',
    'reset 2 e0 @2',
    'drain',
    'restore 1 @1 keys=[checkpoints/1/seg-s1.bin#0+10,checkpoints/1/seg-s1.bin#10+4] clean=[] fallback',
    'restore 1 @2 keys=[checkpoints/1/seg-s2.bin#0+8] clean=[1] fallback',
    'post-all resume',
    'replay 0,3,1,2',
  ]);
  assert.equal(result, { checkpoint: 1, instances: 3 });
  assert.is(checkpointing.restoredCheckpoint, 1);
  for (const asked of host.pool.asked) {
    if (asked.message.type === 'reset') assert.ok(asked.discarding, 'shard output is discarded while shards reset');
  }
  assert.is(host.discarding, false, 'not discarding once the reset is done');
  assert.equal(host.logs, [
    'checkpoints: cannot restore checkpoint 2 (object checkpoints/2/seg-s2.bin is corrupt); trying the one before',
    'checkpoints: restored checkpoint 1, older than the last committed one (see above)',
  ]);
  // The start's term continues from checkpoint 1: 2 is out of the history, not merely skipped.
  assert.equal((await termsOf(store)).at(-1)!.base, { checkpoint: 1, term: TEST_TERM, retained: [] });
  assert.equal(await readHead(store), { checkpoint: 1, term: TEST_TERM, retained: [] });
  // The next leader numbers above the head (1) and builds on checkpoint 1: key groups reported unchanged
  // keep checkpoint 1's objects, and 1 is all it retains.
  await checkpointing.lead({ participants: ['n1'], view: 'single' });
  await eventually(() => checkpointingHost.barriers.length > 0, 'the first checkpoint after the restore', TIMEOUT_MS);
  assert.equal(checkpointingHost.barriers, [2]);
  playShards(checkpointing, 2, { objects: { 1: [[0, null], [2, null]], 2: [[1, null], [3, null]] }, channels: { 1: null, 2: null } });
  await eventually(() => checkpointingHost.outcomes.length > 0, 'the outcome of 2', TIMEOUT_MS);
  assert.equal(checkpointingHost.outcomes, [[2, true]]);
  const head = await readHead(store);
  assert.equal(head.retained, [testRef(1)]);
  const second = (await readManifest(store, head))!;
  assert.equal(second.objects, ['checkpoints/1/seg-s1.bin#0+10', '', 'checkpoints/1/seg-s1.bin#10+4', 'checkpoints/1/seg-s2.bin#0+8']);
});

test('restoreAtStart: a channel object that is not one fails its checkpoint before any shard is asked', async () => {
  const { store, host, recovery } = await setup();
  await commit(store, 1);
  await commit(store, 2, [1]);
  // Intact for the store (checksum fine), but a msgpack 42 rather than a channel object.
  await store.put('checkpoints/2/ch-b.bin', Uint8Array.of(42));
  const result = await withTimeout(recovery.restoreAtStart(() => true), TIMEOUT_MS, 'restoreAtStart');
  assert.is(result.checkpoint, 1);
  assert.ok(!host.events.some((event) => event.startsWith('restore 2')), host.events.join('\n'));
  assert.is(host.logs[0], 'checkpoints: cannot restore checkpoint 2 (not a version 1 channel object); trying the one before');
});

// Bytes that are not msgpack at all once escaped as msgpackr's own Error ("Data read, but end of
// buffer not reached 110"), without a code and without saying a channel object is damaged.
test('rollBack: a channel object that is not msgpack fails with SC_ERR_STORE_CORRUPT saying so', async () => {
  const { store, recovery } = await setup();
  await commit(store, 2);
  await store.put('checkpoints/2/ch-b.bin', new TextEncoder().encode('not a channel object'));
  const error = await failure(recovery.rollBack(() => true, 1, testRef(2)));
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  assert.match(error.message, /channel object/);
});

test("restoreAtStart: nothing restorable → BlobCorruptError naming the head's manifest, the store and every reason; no resume; the head stays", async () => {
  const { store, host, recovery } = await setup();
  await commit(store, 1);
  const head = await commit(store, 2, [1]);
  host.pool.restoreAnswer = (shard, message) => (shard === 1 ? { error: `segment of ${message.checkpoint} truncated` } : { instances: 1 });
  const error = await failure(recovery.restoreAtStart(() => true));
  assert.instance(error, BlobCorruptError);
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  const key = manifestKey(2, TEST_TERM);
  assert.is((error as BlobCorruptError).key, key);
  assert.is(
    error.message,
    `object "${key}" in ${store.describe()} is corrupt: no committed checkpoint can be restored ` +
      '(checkpoint 2: segment of 2 truncated; checkpoint 1: segment of 1 truncated). ' +
      'Restore the store from a backup, or point --checkpoint-store elsewhere.',
  );
  assert.not.ok(host.events.includes('post-all resume'), 'shards stay frozen');
  assert.is(host.events.filter((event) => event === 'dropUnpublished').length, 2, 'reset after each failed checkpoint');
  assert.is((await termsOf(store)).at(-1)!.base, null, 'the term the start began has no base');
  assert.equal(await readHead(store), head, 'the head is still checkpoint 2');
});

test('restoreAtStart: the head names a checkpoint whose manifest is gone, or one taken with another K', async () => {
  {
    const { store, recovery } = await setup();
    await commitManifest(store, manifest(2, ['', '', '', '']));
    await writeCommit(store, { checkpoint: 3, term: TEST_TERM, retained: [] });
    const error = await failure(recovery.restoreAtStart(() => true));
    assert.instance(error, BlobCorruptError);
    assert.is((error as BlobCorruptError).key, manifestKey(3, TEST_TERM));
    const expected = `is corrupt: no committed checkpoint can be restored (checkpoint 3: its manifest ${manifestKey(3, TEST_TERM)} is missing).`;
    assert.ok(error.message.includes(expected), error.message);
  }
  {
    const { store, recovery } = await setup();
    await commitManifest(store, manifest(4, Array.from({ length: 8 }, () => ''), [], [], 8));
    const error = await failure(recovery.restoreAtStart(() => true));
    assert.match(error.message, /\(checkpoint 4: it was taken with 8 key groups, this node has 4\)/);
  }
});

test('restoreAtStart on a store of the format before terms (LATEST only): SC_ERR_STORE_CORRUPT saying so, nothing restored', async () => {
  const { store, host, recovery } = await setup();
  await store.put(LEGACY_LATEST_KEY, new TextEncoder().encode(JSON.stringify({ checkpoint: 3 })));
  await writeManifest(store, manifest(3, ['', '', '', '']));
  const error = await failure(recovery.restoreAtStart(() => true));
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  assert.match(error.message, /holds checkpoints of an older Statecraft format \(LATEST, no terms\/\)/);
  assert.equal(host.events, [], 'no shard asked, none resumed');
});

test('restoreAtStart on an empty store: checkpoint 0, shards resume, nothing restored; a term based on nothing', async () => {
  const { store, host, checkpointing, recovery } = await setup();
  checkpointing.restoredCheckpoint = 5;
  assert.equal(await withTimeout(recovery.restoreAtStart(() => true), TIMEOUT_MS, 'restoreAtStart'), { checkpoint: 0, instances: 0 });
  assert.equal(host.events, ['post-all resume']);
  assert.is(checkpointing.restoredCheckpoint, 0);
  const terms = await termsOf(store);
  assert.is(terms.length, 1);
  assert.equal(terms[0]!.base, NO_COMMIT);
});

test('rollBack: stop leading, routing to main, clients dropped, reset, restore c, resume, replay, routing to owned — discarding until the reset', async () => {
  const { store, host, checkpointing, checkpointingHost, cluster, recovery } = await setup();
  await commit(store, 2);
  await checkpointing.lead({ participants: ['n1'], view: 'single' });
  host.events = [];
  const owned = (keyGroup: number) => keyGroup % 2 === 0;
  const rolling = recovery.rollBack(owned, 3, testRef(2));
  assert.is(host.discarding, true, 'discarding from the start');
  const result = await withTimeout(rolling, TIMEOUT_MS, 'rollBack');
  assert.equal(host.events, [
    'lead null',
    'routing MMMM',
    `dropClients: ${RECOVERING}`,
    'dropUnpublished',
    'reset 1 e3 @1',
    'reset 1 e3 @2',
    'drain',
    'reset 2 e3 @1',
    'reset 2 e3 @2',
    'drain',
    'restore 2 @1 keys=[checkpoints/2/seg-s1.bin#0+10,checkpoints/2/seg-s1.bin#10+4] clean=[]',
    'restore 2 @2 keys=[] clean=[]',
    'post-all resume',
    'replay 0,2',
    'routing 1M1M',
  ]);
  assert.equal(result, { checkpoint: 2, instances: 12 + 20 });
  assert.is(checkpointing.leaderStats, null, 'no longer leading');
  for (const asked of host.pool.asked) {
    assert.ok(asked.restoring, 'restoring throughout');
    assert.is(asked.discarding, asked.message.type === 'reset', `discarding at ${asked.message.type}`);
  }
  assert.is(host.discardingAt[host.events.indexOf('routing MMMM')], true);
  assert.is(host.discarding, false);
  assert.is(recovery.restoring, false);
  assert.is(recovery.epoch, 3);
  assert.is(checkpointing.restoredCheckpoint, 2);
  // The participant starts over above checkpoint 2, in epoch 3: a part of epoch 3 completes a checkpoint.
  checkpointing.onControl('n0', { type: 'start', checkpoint: 2 });
  assert.equal(checkpointingHost.barriers, [], 'checkpoint 2 is the restored one');
  assert.equal(cluster.sent.map(([to, message]) => [to, message.type, 'seen' in message ? message.seen : null]), [['n0', 'failed', 2]], 'an old number: said at once, with the number seen');
  checkpointing.onControl('n0', { type: 'start', checkpoint: 3 });
  assert.equal(checkpointingHost.barriers, [3]);
  playShards(checkpointing, 3, { epoch: 3 });
  await eventually(() => cluster.sent.length > 1, 'the ack of checkpoint 3', TIMEOUT_MS);
  assert.equal(cluster.sent.slice(1).map(([to, message]) => [to, message.type, 'checkpoint' in message ? message.checkpoint : null]), [['n0', 'ack', 3]]);
});

test('rollBack to checkpoint 0: nothing restored, shards resume, routing to owned', async () => {
  const { host, checkpointing, recovery } = await setup();
  checkpointing.restoredCheckpoint = 4;
  const result = await withTimeout(recovery.rollBack(() => true, 1, NO_COMMIT), TIMEOUT_MS, 'rollBack');
  assert.equal(result, { checkpoint: 0, instances: 0 });
  assert.equal(host.events.slice(-2), ['post-all resume', 'routing 1212']);
  assert.ok(!host.events.some((event) => event.startsWith('restore')));
  assert.is(checkpointing.restoredCheckpoint, 0);
});

test('discarding stays on after a rollback when a newer epoch began meanwhile, until that one resets', async () => {
  const { host, recovery } = await setup();
  let open: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (open = resolve));
  host.pool.gate = async (_shard, message) => {
    if (message.type === 'reset' && message.epoch === 1 && message.phase === 1) await held;
  };
  const first = recovery.rollBack(() => true, 1, NO_COMMIT);
  await eventually(() => host.events.includes('reset 1 e1 @2'), 'epoch 1 to reach its reset', TIMEOUT_MS);
  recovery.begin(2);
  recovery.begin(1); // older: ignored
  open();
  await withTimeout(first, TIMEOUT_MS, 'rollBack 1');
  assert.is(host.discarding, true, 'epoch 2 began and has not reset yet');
  await withTimeout(recovery.rollBack(() => true, 2, NO_COMMIT), TIMEOUT_MS, 'rollBack 2');
  assert.is(host.discarding, false);
});

// A member left out of a recovery (declared dead meanwhile) has the recovery's order re-sent when it
// is back, maybe long after: retention may have deleted the checkpoint it names. Owning no key group in
// the recovery's placement, the node loads nothing, so it needs nothing of that checkpoint.
test('rollBack on a node that owns no key group: no manifest read (it may be long deleted), nothing restored, shards resume at that checkpoint', async () => {
  const gone = { checkpoint: 9, term: TEST_TERM };
  {
    const { store, host, checkpointing, checkpointingHost, recovery } = await setup();
    await commit(store, 12); // 9 was deleted by retention long ago
    assert.is(await readManifest(store, gone), null);
    const reads: string[] = [];
    const get = store.get.bind(store);
    store.get = (key) => {
      reads.push(key);
      return get(key);
    };
    checkpointing.restoredCheckpoint = 4;
    const result = await withTimeout(recovery.rollBack(() => false, 5, gone), TIMEOUT_MS, 'rollBack');
    assert.equal(result, { checkpoint: 9, instances: 0 });
    assert.equal(reads, [], 'nothing read from the store');
    assert.ok(!host.events.some((event) => event.startsWith('restore')), host.events.join('\n'));
    assert.equal(host.events.slice(-2), ['post-all resume', 'routing MMMM'], 'resumed; every key group routed to the main thread');
    assert.is(checkpointing.restoredCheckpoint, 9);
    assert.is(recovery.epoch, 5);
    assert.is(recovery.restoring, false);
    assert.is(host.discarding, false);
    // The participant starts over above 9: the numbers the cluster goes on with.
    checkpointing.onControl('n0', { type: 'start', checkpoint: 9 });
    assert.equal(checkpointingHost.barriers, [], 'checkpoint 9 is the restored one');
    checkpointing.onControl('n0', { type: 'start', checkpoint: 10 });
    assert.equal(checkpointingHost.barriers, [10]);
  }
  {
    // Owning a key group, the node needs the manifest: the same order fails the recovery.
    const { store, host, checkpointing, recovery } = await setup();
    await commit(store, 12);
    checkpointing.restoredCheckpoint = 4;
    const error = await failure(recovery.rollBack((keyGroup) => keyGroup === 1, 5, gone));
    assert.instance(error, BlobCorruptError);
    assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
    assert.is((error as BlobCorruptError).key, manifestKey(9, TEST_TERM));
    assert.match(error.message, /the manifest of checkpoint 9, which the recovery restores, is missing/);
    assert.ok(!host.events.includes('post-all resume'), 'shards stay frozen');
    assert.is(host.routing, 'MMMM');
    assert.is(checkpointing.restoredCheckpoint, 4, 'nothing restored');
  }
});

test('rollbacks run one at a time, in order; a failed one does not stop the next', async () => {
  const { store, host, recovery } = await setup();
  await commit(store, 2);
  const owned = () => true;
  const first = recovery.rollBack(owned, 1, testRef(9)); // no such checkpoint
  const second = recovery.rollBack(owned, 2, testRef(2));
  const third = recovery.rollBack(owned, 3, testRef(2));
  const error = await failure(first);
  assert.instance(error, BlobCorruptError);
  const key = manifestKey(9, TEST_TERM);
  assert.is((error as BlobCorruptError).key, key);
  assert.is(
    error.message,
    `object "${key}" in ${store.describe()} is corrupt: the manifest of checkpoint 9, which the recovery restores, is missing. ` +
      'Do not use it: restore from an older checkpoint, and check the storage for damage.',
  );
  assert.equal((await withTimeout(second, TIMEOUT_MS, 'rollBack 2')).checkpoint, 2);
  assert.equal((await withTimeout(third, TIMEOUT_MS, 'rollBack 3')).checkpoint, 2);
  // Each rollback's steps are contiguous: each begins with 'lead null' after the previous one ended.
  const starts = host.events.flatMap((event, index) => (event === 'lead null' ? [index] : []));
  assert.is(starts.length, 3);
  const epochs = (from: number, to: number) => new Set(host.events.slice(from, to).flatMap((event) => /^reset \d e(\d+)/.exec(event)?.[1] ?? []));
  assert.equal([...epochs(starts[0]!, starts[1]!)], ['1']);
  assert.equal([...epochs(starts[1]!, starts[2]!)], ['2']);
  assert.equal([...epochs(starts[2]!, host.events.length)], ['3']);
  assert.is(host.events[starts[1]! - 1], 'drain', 'the failed rollback ended after its reset (no restore, no routing to owned)');
  assert.is(host.events[starts[2]! - 1], 'routing 1212', 'the second ended with routing before the third began');
  assert.is(recovery.epoch, 3);
});

test('rollBack: a shard that cannot restore fails the recovery with its code; no fall-back, routing left at main', async () => {
  const { store, host, recovery } = await setup();
  await commit(store, 1);
  await commit(store, 2, [1]);
  host.pool.restoreAnswer = (shard) => (shard === 2 ? { error: 'object checkpoints/2/seg-s2.bin is corrupt', code: 'SC_ERR_STORE_CORRUPT' } : { instances: 1 });
  const error = await failure(recovery.rollBack(() => true, 1, testRef(2)));
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  assert.is(error.message, 'object checkpoints/2/seg-s2.bin is corrupt');
  assert.ok(!host.events.some((event) => event.startsWith('restore 1')), 'no other checkpoint tried');
  assert.is(host.routing, 'MMMM');
  assert.is(recovery.restoring, false);
});

test('a restore that loads another number of instances than the manifest counts fails (SC_ERR_STORE_CORRUPT); instances of types not run here count as read', async () => {
  const { store, host, recovery } = await setup();
  // Shard 1 holds key groups 0 and 2 (7 and 5 instances), shard 2 holds 1 (empty) and 3 (4).
  await commit(store, 1, [], [7, 0, 5, 4]);
  await commit(store, 2, [1], [7, 0, 5, 4]);
  host.pool.restoreAnswer = (shard) => ({ instances: shard === 1 ? 12 : 0 }); // shard 2's four instances are gone
  const error = await failure(recovery.rollBack(() => true, 1, testRef(2)));
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  assert.is(error.message, 'checkpoint 2 holds 16 instances in the key groups this node restores, but 12 were read; the store was damaged or written by something else');
  // Only the key groups this node restores count; dropped instances (a function type not run here) were read.
  host.pool.restoreAnswer = (shard) => (shard === 1 ? { instances: 10, dropped: 2 } : { instances: 0 });
  assert.equal(await withTimeout(recovery.rollBack((keyGroup) => keyGroup !== 3, 2, testRef(2)), TIMEOUT_MS, 'rollBack'), { checkpoint: 2, instances: 10 });
  // At start, such a checkpoint is passed over for the one before, like any unreadable one.
  host.pool.restoreAnswer = (shard, message) => ({ instances: message.checkpoint === 2 ? 0 : shard === 1 ? 12 : 4 });
  const result = await withTimeout(recovery.restoreAtStart(() => true), TIMEOUT_MS, 'restoreAtStart');
  assert.equal(result, { checkpoint: 1, instances: 16 });
});

test('prepare: stops leading (a write in flight settles first), begins a term based on the head and resolves with it', async () => {
  const { store, host, checkpointing, recovery } = await setup();
  const head = await commit(store, 6);
  await checkpointing.lead({ participants: ['n1'], view: 'single' });
  assert.ok(checkpointing.leaderStats !== null);
  assert.equal(await withTimeout(recovery.prepare(1, 'n1', ['n1']), TIMEOUT_MS, 'prepare'), { head, contendedBy: [] });
  assert.is(checkpointing.leaderStats, null);
  assert.equal(host.events, ['lead single', 'lead null']);
  const terms = await termsOf(store);
  assert.is(terms.length, 3, "the test's term, the leader's, the recovery's");
  assert.equal(terms[2]!.base, head, "the recovery's term, the newest, is based on the head");
  const seal = JSON.parse(new TextDecoder().decode((await store.get(`terms/${terms[2]!.term}/seal.json`))!)) as { writer: string };
  assert.is(seal.writer, 'n1');
  await sleep(50);
});

test("prepare fences off a leader elsewhere: its commit record landing after prepare read the head is not announced, and the head stays prepare's", async () => {
  const { store, recovery } = await setup();
  const head = await commit(store, 6);
  // Node n2 leads over the same store (cut off from this node, or paused): its commit record is held.
  const gated = new GatedStore(store);
  const elsewhereHost = new FakeCheckpointingHost('n2');
  const elsewhere = new Checkpointing(elsewhereHost, { store: gated, intervalMs: 20, retain: 3, ackTimeoutMs: TIMEOUT_MS }, 'n2-test');
  cleanups.push(() => elsewhere.lead(null));
  gated.hold(/^commits\//);
  await elsewhere.lead({ participants: ['n2'], view: 'elsewhere' });
  await eventually(() => elsewhereHost.barriers.includes(7), 'checkpoint 7 on n2', TIMEOUT_MS);
  playShards(elsewhere, 7);
  await eventually(() => gated.waiting === 1, "n2's commit record of 7 held", TIMEOUT_MS);
  // The recovery here: its term is sealed before it reads, so it restores 6 and 7 must never be announced.
  assert.equal(await withTimeout(recovery.prepare(1, 'n1', ['n1']), TIMEOUT_MS, 'prepare'), { head, contendedBy: [] });
  const recoveryTerm = (await termsOf(store)).at(-1)!.term;
  gated.release();
  await eventually(() => elsewhereHost.outcomes.length > 0, "n2's outcome of 7", TIMEOUT_MS);
  assert.equal(elsewhereHost.outcomes, [[7, false]], 'not announced');
  assert.is(elsewhere.leaderStats!.deposedBy, recoveryTerm);
  const leaderTerm = (await termsOf(store)).at(-2)!.term;
  assert.ok(await store.exists(commitKey(leaderTerm, 7)), "n2's record landed, late");
  assert.equal(await readHead(store), head, 'the head is still 6');
});

test.run();
