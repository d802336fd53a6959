// The shard pool seen without starting threads: which shard owns a key group (round-robin over 1..size,
// thread 0 being the main thread), grouping items by shard in order, and a pool that never started.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ShardPool, type ShardPoolEvents } from '../../../node/main/shard-pool.js';
import { withTimeout } from '../../helpers.js';

function pool(size: number): { pool: ShardPool; events: string[] } {
  const events: string[] = [];
  const listener: ShardPoolEvents = {
    log: (line) => events.push(`log ${line}`),
    onPart: (thread) => events.push(`part ${thread}`),
    onFatal: (error) => events.push(`fatal ${error.message}`),
  };
  return { pool: new ShardPool(size, listener), events };
}

test('shardOf: key groups go round-robin to shards 1..size, never to thread 0', () => {
  const { pool: three } = pool(3);
  assert.equal(
    Array.from({ length: 8 }, (_, keyGroup) => three.shardOf(keyGroup)),
    [1, 2, 3, 1, 2, 3, 1, 2],
  );
  const { pool: one } = pool(1);
  for (const keyGroup of [0, 1, 2, 1023, 65535]) assert.is(one.shardOf(keyGroup), 1);
  const { pool: four } = pool(4);
  const counts = new Map<number, number>();
  for (let keyGroup = 0; keyGroup < 1024; keyGroup++) counts.set(four.shardOf(keyGroup), (counts.get(four.shardOf(keyGroup)) ?? 0) + 1);
  assert.equal([...counts].sort(([a], [b]) => a - b), [[1, 256], [2, 256], [3, 256], [4, 256]], 'every shard gets an equal share');
});

test('byShard: groups by the owning shard, keeping the order of items within a shard and of first appearance', () => {
  const { pool: two } = pool(2);
  const items = [7, 2, 4, 5, 0, 3, 6].map((keyGroup) => ({ keyGroup, name: `kg${keyGroup}` }));
  const groups = two.byShard(items, (item) => item.keyGroup);
  assert.equal([...groups.keys()], [2, 1], 'shard 2 first: key group 7 came first');
  assert.equal(groups.get(2)!.map((item) => item.name), ['kg7', 'kg5', 'kg3']);
  assert.equal(groups.get(1)!.map((item) => item.name), ['kg2', 'kg4', 'kg0', 'kg6']);
  assert.is(groups.get(2)![0], items[0], 'the items themselves, not copies');
  assert.is(two.byShard([], (item: number) => item).size, 0, 'nothing in, nothing out');
  // Any iterable, read once.
  function* generated() {
    yield 9;
    yield 8;
  }
  assert.equal([...two.byShard(generated(), (keyGroup) => keyGroup)], [[2, [9]], [1, [8]]]);
});

test('a pool never started: not started, nothing to ask, stop() resolves at once, no events', async () => {
  const { pool: idle, events } = pool(2);
  assert.is(idle.size, 2);
  assert.is(idle.started, false);
  assert.equal(await withTimeout(idle.askAll({ type: 'reset', request: 0, phase: 1, epoch: 0 }), 1000, 'askAll on an idle pool'), []);
  idle.postAll({ type: 'resume' });
  assert.equal(await withTimeout(idle.heapBytes(), 1000, 'heapBytes on an idle pool'), []);
  idle.beginStop();
  await withTimeout(idle.stop(), 1000, 'stop on an idle pool');
  assert.equal(events, []);
});

test.run();
