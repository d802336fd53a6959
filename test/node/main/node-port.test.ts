// The node's cluster seam (NodePort) over a fake main thread: a fake pool answers like shards do and
// records what it is asked, with the routing table it saw at that moment. Covers handing key groups
// out and in (routing before and after, one request per shard, errors), and the delegating calls.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatecraftError } from '../../../lib/errors.js';
import type { CheckpointControl } from '../../../node/main/cluster-port.js';
import { NodePort, type PortHost } from '../../../node/main/node-port.js';
import { ShardPool, type ShardReply, type ShardRequest, type ShardRequests } from '../../../node/main/shard-pool.js';
import { MAIN_THREAD, leavingFrom, shardOfRoute } from '../../../node/rings/mailbox.js';
import type { MainToShard } from '../../../node/shard/shard-worker.js';
import { withTimeout } from '../../helpers.js';
import { termId } from '../../../node/checkpoint/terms.js';

const HEAD_TERM = termId(3, '00000001');

const KEY_GROUPS = 8;
const TIMEOUT_MS = 5000;

interface Asked {
  shard: number;
  message: ShardRequest;
  /** The routing table when the request went out. */
  routing: number[];
  answer(reply: ShardReply<'released' | 'adopted' | 'restored'>): void;
}

/** Two shards; `ask` waits for the test to answer (or answers itself when `answers` has a reply). */
class FakePool implements ShardRequests {
  readonly size = 2;
  private readonly real = new ShardPool(2, { log: () => undefined, onPart: () => undefined, onFatal: () => undefined });
  asked: Asked[] = [];
  posted: { shard: number; message: MainToShard; routing: number[] }[] = [];
  /** Answers given at once, by shard; without one the request waits for `asked[i].answer`. */
  answers = new Map<number, (message: ShardRequest) => ShardReply<'released' | 'adopted' | 'restored'>>();

  constructor(private readonly routing: Int32Array) {}

  shardOf(keyGroup: number): number {
    return this.real.shardOf(keyGroup);
  }

  byShard<T>(items: Iterable<T>, keyGroupOf: (item: T) => number): Map<number, T[]> {
    return this.real.byShard(items, keyGroupOf);
  }

  ask<Type extends 'released' | 'adopted' | 'restored'>(shard: number, message: ShardRequest): Promise<ShardReply<Type>> {
    return new Promise((resolve) => {
      const answer = (reply: ShardReply<'released' | 'adopted' | 'restored'>) => resolve(reply as ShardReply<Type>);
      this.asked.push({ shard, message, routing: [...this.routing], answer });
      const now = this.answers.get(shard);
      if (now !== undefined) answer(now(message));
    });
  }

  askAll<Type extends 'released' | 'adopted' | 'restored'>(message: ShardRequest): Promise<ShardReply<Type>[]> {
    return Promise.all([1, 2].map((shard) => this.ask<Type>(shard, message)));
  }

  post(shard: number, message: MainToShard): void {
    this.posted.push({ shard, message, routing: [...this.routing] });
  }

  postAll(message: MainToShard): void {
    for (const shard of [1, 2]) this.post(shard, message);
  }
}

/** Everything the port asked of the main thread, in order. */
class FakeHost implements PortHost {
  readonly nodeId = 'a';
  closedClients: string[] = [];
  closeClients(reason: string): void {
    this.closedClients.push(reason);
  }
  readonly routing = new Int32Array(new SharedArrayBuffer(4 * KEY_GROUPS));
  readonly pool = new FakePool(this.routing);
  checkpointing: PortHost['checkpointing'] = null;
  recovery: PortHost['recovery'] = null;
  calls: unknown[][] = [];

  constructor() {
    // Every key group owned, at its shard.
    for (let keyGroup = 0; keyGroup < KEY_GROUPS; keyGroup++) this.routing[keyGroup] = this.pool.shardOf(keyGroup);
  }
  setRouting(owned: (keyGroup: number) => boolean | null): void {
    this.calls.push(['setRouting', owned]);
  }
  deliverFromPeer(bytes: Uint8Array, offset: number, length: number, fromPeer: string | null): void {
    this.calls.push(['deliverFromPeer', bytes, offset, length, fromPeer]);
  }
  flush(): void {
    this.calls.push(['flush']);
  }
  wake(): void {
    this.calls.push(['wake']);
  }
  log(line: string): void {
    this.calls.push(['log', line]);
  }
}

const image = (keyGroup: number) => ({ keyGroup, bytes: Uint8Array.of(keyGroup, 0xee) });

async function rejection(promise: Promise<unknown>): Promise<StatecraftError> {
  try {
    await withTimeout(promise, TIMEOUT_MS, 'the call to fail');
  } catch (error) {
    assert.instance(error, StatecraftError);
    return error as StatecraftError;
  }
  assert.unreachable('the call succeeded');
  throw new Error('unreachable');
}

test('setOwnership hands the function to setRouting; deliver, flush, recheckAdmission and log delegate', () => {
  const host = new FakeHost();
  const port = new NodePort(host);
  const owned = (keyGroup: number) => (keyGroup === 3 ? null : keyGroup < 4);
  port.setOwnership(owned);
  const bytes = Uint8Array.of(1, 2, 3, 4);
  port.deliver(bytes, 1, 2, 'node-b');
  port.deliver(bytes, 0, 4);
  port.deliver(bytes, 0, 4, null);
  port.flush();
  port.recheckAdmission();
  port.log('hello');
  assert.equal(host.calls, [
    ['setRouting', owned],
    ['deliverFromPeer', bytes, 1, 2, 'node-b'],
    ['deliverFromPeer', bytes, 0, 4, null],
    ['deliverFromPeer', bytes, 0, 4, null],
    ['flush'],
    ['wake'],
    ['log', 'hello'],
  ]);
  assert.equal(host.pool.asked, []);
});

test('releaseKeyGroups: routing says leaving (its shard) before any shard is asked, the main thread once released; one request per shard, key groups in order', async () => {
  const host = new FakeHost();
  const port = new NodePort(host);
  const before = [...host.routing];
  const released = port.releaseKeyGroups([5, 2, 7, 4]);
  // Asked synchronously, before any answer.
  assert.equal(host.pool.asked.map(({ shard, message }) => [shard, message]), [
    [2, { type: 'release', request: 0, keyGroups: [5, 7] }],
    [1, { type: 'release', request: 0, keyGroups: [2, 4] }],
  ]);
  const leaving = before.map((shard, keyGroup) => ([5, 2, 7, 4].includes(keyGroup) ? leavingFrom(host.pool.shardOf(keyGroup)) : shard));
  for (const asked of host.pool.asked) assert.equal(asked.routing, leaving, `routing when shard ${asked.shard} was asked`);
  assert.equal([5, 2, 7, 4].map((keyGroup) => shardOfRoute(leaving[keyGroup]!)), [MAIN_THREAD, MAIN_THREAD, MAIN_THREAD, MAIN_THREAD], 'everyone else sends them to the main thread');
  const expectedRouting = before.map((shard, keyGroup) => ([5, 2, 7, 4].includes(keyGroup) ? MAIN_THREAD : shard));
  // Shard 1 answers first; the images come back in request order all the same.
  host.pool.asked[1]!.answer({ type: 'released', request: 0, exports: [image(2), image(4)] });
  host.pool.asked[0]!.answer({ type: 'released', request: 0, exports: [image(5), image(7)] });
  const images = await withTimeout(released, TIMEOUT_MS, 'release');
  assert.equal(images, [image(5), image(7), image(2), image(4)]);
  assert.equal([...host.routing], expectedRouting, 'released key groups stay routed to the main thread');
  assert.equal(host.pool.posted, [], 'nothing posted');
});

test('releaseKeyGroups of nothing asks nothing', async () => {
  const host = new FakeHost();
  assert.equal(await withTimeout(new NodePort(host).releaseKeyGroups([]), TIMEOUT_MS, 'release of nothing'), []);
  assert.equal(host.pool.asked, []);
});

test('releaseKeyGroups: a shard reporting an error fails the release with SC_ERR_INTERNAL naming it', async () => {
  const host = new FakeHost();
  host.pool.answers.set(1, () => ({ type: 'released', request: 0, exports: [image(2)] }));
  host.pool.answers.set(2, () => ({ type: 'released', request: 0, exports: [], error: 'key group 3 is busy' }));
  const error = await rejection(new NodePort(host).releaseKeyGroups([2, 3]));
  assert.is(error.code, 'SC_ERR_INTERNAL');
  assert.is(error.message, 'a shard could not export key groups: key group 3 is busy');
});

test('adoptKeyGroups: asks each shard once; routing points at the shards only after every answer; then adopt-settled per shard', async () => {
  const host = new FakeHost();
  const port = new NodePort(host);
  // Handed over elsewhere earlier: routed to the main thread.
  for (const keyGroup of [1, 2, 3, 6]) host.routing[keyGroup] = MAIN_THREAD;
  const before = [...host.routing];
  const adopted = port.adoptKeyGroups([image(3), image(2), image(1), image(6)]);
  assert.equal(host.pool.asked.map(({ shard, message }) => [shard, message]), [
    [2, { type: 'adopt', request: 0, bodies: [image(3).bytes, image(1).bytes] }],
    [1, { type: 'adopt', request: 0, bodies: [image(2).bytes, image(6).bytes] }],
  ]);
  host.pool.asked[0]!.answer({ type: 'adopted', request: 0, instances: 5 });
  // One shard answered: nothing is routed to it yet (the other may still fail).
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal([...host.routing], before, 'routing unchanged while a shard has not answered');
  assert.equal(host.pool.posted, []);
  host.pool.asked[1]!.answer({ type: 'adopted', request: 0, instances: 7 });
  assert.is(await withTimeout(adopted, TIMEOUT_MS, 'adopt'), 12, 'instances summed');
  const after = [...host.routing];
  for (const keyGroup of [1, 2, 3, 6]) assert.is(after[keyGroup], host.pool.shardOf(keyGroup), `key group ${keyGroup} routed to its shard`);
  assert.equal(host.pool.posted.map(({ shard, message }) => [shard, message]), [
    [2, { type: 'adopt-settled', keyGroups: [3, 1] }],
    [1, { type: 'adopt-settled', keyGroups: [2, 6] }],
  ]);
  for (const post of host.pool.posted) assert.equal(post.routing, after, 'settled only once routing points at the shards');
});

test('adoptKeyGroups: an error → SC_ERR_MALFORMED_IMAGE; routing untouched, nothing settled', async () => {
  const host = new FakeHost();
  for (const keyGroup of [0, 1]) host.routing[keyGroup] = MAIN_THREAD;
  const before = [...host.routing];
  host.pool.answers.set(1, () => ({ type: 'adopted', request: 0, instances: 1 }));
  host.pool.answers.set(2, () => ({ type: 'adopted', request: 0, instances: 0, error: 'not a key-group image' }));
  const error = await rejection(new NodePort(host).adoptKeyGroups([image(0), image(1)]));
  assert.is(error.code, 'SC_ERR_MALFORMED_IMAGE');
  assert.is(error.message, 'a hand-over could not be imported: not a key-group image');
  assert.equal([...host.routing], before);
  assert.equal(host.pool.posted, []);
});

test('checkpoint and recovery calls delegate to checkpointing and recovery', async () => {
  const host = new FakeHost();
  const calls: unknown[][] = [];
  host.checkpointing = {
    setPeers: (peers: readonly string[]) => void calls.push(['setPeers', peers]),
    lead: async (lead) => void calls.push(['lead', lead]),
    onControl: (from, message) => void calls.push(['onControl', from, message]),
    stoppingTogether: () => void calls.push(['stoppingTogether']),
  };
  host.recovery = {
    begin: (epoch) => void calls.push(['begin', epoch]),
    prepare: async (epoch, nodeId, members) => (calls.push(['prepare', epoch, nodeId, members]), { head: { checkpoint: 41, term: HEAD_TERM, retained: [{ checkpoint: 40, term: HEAD_TERM }] }, contendedBy: ['b'] }),
    rollBack: async (owned, epoch, checkpoint) => (calls.push(['rollBack', owned, epoch, checkpoint]), { checkpoint: checkpoint.checkpoint, instances: 9 }),
    checkOrder: async (order) => (calls.push(['checkOrder', order.claimant]), null),
  };
  const port = new NodePort(host);
  assert.is(port.checkpointing, true);
  port.setCheckpointPeers(['b', 'c']);
  port.leadCheckpoints({ participants: ['a', 'b'], view: 'v1' });
  port.leadCheckpoints(null);
  const control: CheckpointControl = { type: 'start', checkpoint: 3 };
  port.onCheckpointControl('b', control);
  port.beginRecovery(2);
  // The recovery's order names the checkpoint and its term, not what is retained with it.
  assert.equal(await withTimeout(port.prepareRollBack(2, ['a', 'b']), TIMEOUT_MS, 'prepareRollBack'), { restore: { checkpoint: 41, term: HEAD_TERM }, contendedBy: ['b'] });
  const owned = (keyGroup: number) => keyGroup > 3;
  assert.equal(await withTimeout(port.rollBack(owned, 2, { checkpoint: 41, term: HEAD_TERM }), TIMEOUT_MS, 'rollBack'), { checkpoint: 41, instances: 9 });
  port.stoppingTogether();
  assert.equal(calls, [
    ['setPeers', ['b', 'c']],
    ['lead', { participants: ['a', 'b'], view: 'v1' }],
    ['lead', null],
    ['onControl', 'b', control],
    ['begin', 2],
    ['prepare', 2, 'a', ['a', 'b']],
    ['rollBack', owned, 2, { checkpoint: 41, term: HEAD_TERM }],
    ['stoppingTogether'],
  ]);
});

test('checkpoints off: checkpointing is false and the checkpoint calls do nothing', () => {
  const host = new FakeHost();
  const port = new NodePort(host);
  assert.is(port.checkpointing, false);
  port.setCheckpointPeers(['b']);
  port.leadCheckpoints({ participants: ['a'], view: 'single' });
  port.leadCheckpoints(null);
  port.onCheckpointControl('b', { type: 'start', checkpoint: 1 });
  port.beginRecovery(1);
  assert.equal(host.calls, []);
  assert.equal(host.pool.asked, []);
  assert.equal(host.pool.posted, []);
});

test.run();
