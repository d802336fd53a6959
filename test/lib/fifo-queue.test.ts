// The project's one FIFO queue, checked against a plain array as the model.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FifoQueue } from '../../lib/fifo-queue.js';

function queueOf<T>(items: T[]): FifoQueue<T> {
  const queue = new FifoQueue<T>();
  for (const item of items) queue.push(item);
  return queue;
}

/** mulberry32: a small seeded generator, so a failing run can be replayed from its seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

test('push and shift keep arrival order; length and isEmpty follow', () => {
  const queue = new FifoQueue<string>();
  assert.ok(queue.isEmpty);
  assert.is(queue.length, 0);
  queue.push('a');
  queue.push('b');
  queue.push('c');
  assert.not.ok(queue.isEmpty);
  assert.is(queue.length, 3);
  assert.is(queue.shift(), 'a');
  assert.is(queue.length, 2);
  queue.push('d');
  assert.equal([queue.shift(), queue.shift(), queue.shift()], ['b', 'c', 'd']);
  assert.ok(queue.isEmpty);
  assert.is(queue.length, 0);
});

test('peek and at look without removing; out of range is undefined', () => {
  const queue = new FifoQueue<number>();
  assert.is(queue.peek(), undefined);
  assert.is(queue.at(0), undefined);
  for (const item of [10, 20, 30, 40]) queue.push(item);
  queue.shift();
  assert.is(queue.peek(), 20);
  assert.is(queue.at(0), 20);
  assert.is(queue.at(2), 40);
  assert.is(queue.at(3), undefined, 'past the end');
  assert.is(queue.at(-1), undefined, 'a negative index does not reach the taken front');
  assert.is(queue.length, 3, 'peek and at removed nothing');
  assert.is(queue.shift(), 20);
});

test('take returns up to count oldest items and leaves the rest', () => {
  const queue = queueOf([1, 2, 3, 4, 5]);
  assert.equal(queue.take(2), [1, 2]);
  assert.is(queue.length, 3);
  assert.equal(queue.take(0), []);
  assert.equal(queue.take(10), [3, 4, 5], 'more than queued takes what there is');
  assert.ok(queue.isEmpty);
  assert.equal(queue.take(3), []);
  queue.push(6);
  assert.equal(queue.toArray(), [6], 'usable after being emptied by take');
});

test('unshiftAll puts items back in front, in their order', () => {
  const queue = queueOf(['a', 'b', 'c', 'd']);
  const taken = queue.take(2);
  queue.push('e');
  queue.unshiftAll(taken);
  assert.equal(queue.toArray(), ['a', 'b', 'c', 'd', 'e']);
  queue.unshiftAll(['x', 'y']);
  assert.equal([queue.shift(), queue.shift(), queue.shift()], ['x', 'y', 'a']);
  queue.unshiftAll([]);
  assert.equal(queue.toArray(), ['b', 'c', 'd', 'e']);
  const empty = new FifoQueue<string>();
  empty.unshiftAll(['only']);
  assert.is(empty.length, 1);
  assert.is(empty.shift(), 'only');
});

test('extract takes the matching items and keeps the others, both in order', () => {
  const queue = queueOf([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  queue.shift(); // a taken front must not leak into either side
  const even = queue.extract((item) => item % 2 === 0);
  assert.equal(even, [2, 4, 6, 8]);
  assert.equal(queue.toArray(), [3, 5, 7, 9]);
  assert.is(queue.length, 4);
  assert.equal(queue.extract(() => false), []);
  assert.equal(queue.extract(() => true), [3, 5, 7, 9]);
  assert.ok(queue.isEmpty);
  queue.push(10);
  assert.is(queue.shift(), 10);
});

test('drain returns everything in order and empties the queue; toArray is a copy', () => {
  const queue = queueOf(['a', 'b', 'c']);
  const copy = queue.toArray();
  copy.push('not in the queue');
  assert.is(queue.length, 3, 'changing the copy changes nothing');
  assert.equal(queue.drain(), ['a', 'b', 'c'], 'drain with nothing taken');
  assert.ok(queue.isEmpty);
  for (const item of ['d', 'e', 'f']) queue.push(item);
  queue.shift();
  const drained = queue.drain();
  assert.equal(drained, ['e', 'f'], 'drain after a shift holds no taken slot');
  queue.push('g');
  assert.equal(drained, ['e', 'f'], 'a drained array is not the queue\'s storage');
  assert.equal(queue.toArray(), ['g']);
});

test('clear forgets everything', () => {
  const queue = queueOf([1, 2, 3]);
  queue.shift();
  queue.clear();
  assert.ok(queue.isEmpty);
  assert.is(queue.peek(), undefined);
  queue.push(4);
  assert.equal(queue.toArray(), [4]);
});

test('iteration yields the queued items oldest first, nothing taken', () => {
  const queue = queueOf(['a', 'b', 'c', 'd']);
  queue.shift();
  queue.take(1);
  assert.equal([...queue], ['c', 'd']);
  const seen: string[] = [];
  for (const item of queue) seen.push(item);
  assert.equal(seen, ['c', 'd']);
  assert.is(queue.length, 2, 'iterating removed nothing');
});

test('shift drops its reference (the taken item can be collected)', () => {
  const queue = new FifoQueue<object>();
  const items = Array.from({ length: 4 }, (_, index) => ({ index }));
  for (const item of items) queue.push(item);
  queue.shift();
  queue.take(1);
  // The queue's backing array no longer holds the taken items.
  const backing = (queue as unknown as { items: unknown[] }).items;
  assert.not.ok(backing.includes(items[0]));
  assert.not.ok(backing.includes(items[1]));
});

test('compaction: long runs of push and shift keep the storage bounded', () => {
  const queue = new FifoQueue<number>();
  for (let index = 0; index < 200_000; index++) {
    queue.push(index);
    queue.push(index);
    queue.shift();
  }
  assert.is(queue.length, 200_000);
  for (let index = 0; index < 199_990; index++) queue.shift();
  const backing = (queue as unknown as { items: unknown[] }).items;
  assert.ok(backing.length < 4096, `the taken front is cut off (backing array has ${backing.length} slots for 10 items)`);
  assert.equal(queue.toArray(), [199_995, 199_995, 199_996, 199_996, 199_997, 199_997, 199_998, 199_998, 199_999, 199_999]);
});

test('100k random operations agree with an array model, across compactions (seeded)', () => {
  for (const seed of [1, 42, 20240601]) {
    const random = seededRandom(seed);
    const queue = new FifoQueue<number>();
    const internals = queue as unknown as { head: number };
    let model: number[] = [];
    let next = 0;
    let compactions = 0;
    const rare = { unshiftAll: 0, extract: 0, drain: 0 };
    for (let step = 0; step < 100_000; step++) {
      // Phases of growth and of shrinking, so the taken front passes the compaction threshold often.
      const growing = Math.floor(step / 4000) % 2 === 0;
      const roll = random();
      const where = `seed ${seed}, step ${step}`;
      const headBefore = internals.head;
      let reordering = false;
      if (roll < (growing ? 0.5 : 0.1)) {
        const count = 1 + Math.floor(random() * 4);
        for (let index = 0; index < count; index++) {
          queue.push(next);
          model.push(next++);
        }
      } else if (roll < 0.85) {
        if (model.length === 0) continue;
        assert.is(queue.shift(), model.shift(), where);
      } else if (roll < 0.94) {
        const count = Math.floor(random() * 6);
        assert.equal(queue.take(count), model.splice(0, count), where);
      } else if (roll < 0.9403) {
        reordering = true;
        rare.unshiftAll++;
        const count = Math.min(model.length, Math.floor(random() * 5));
        queue.unshiftAll(queue.take(count));
      } else if (roll < 0.9404) {
        reordering = true;
        rare.extract++;
        const modulus = 2 + Math.floor(random() * 5);
        const expectedTaken = model.filter((item) => item % modulus === 0);
        model = model.filter((item) => item % modulus !== 0);
        assert.equal(queue.extract((item) => item % modulus === 0), expectedTaken, where);
      } else if (roll < 0.94042) {
        reordering = true;
        rare.drain++;
        assert.equal(queue.drain(), model, where);
        model = [];
      } else {
        const index = Math.floor(random() * (model.length + 2)) - 1;
        assert.is(queue.at(index), index >= 0 ? model[index] : undefined, where);
        assert.is(queue.peek(), model[0], where);
      }
      if (!reordering && headBefore >= 1024 && internals.head < headBefore && model.length > 0) compactions++;
      assert.is(queue.length, model.length, where);
      assert.is(queue.isEmpty, model.length === 0, where);
      if (step % 997 === 0) assert.equal(queue.toArray(), model, `${where}: contents`);
    }
    assert.ok(compactions > 0, `seed ${seed}: the run went through compactions (${compactions})`);
    assert.ok(rare.unshiftAll > 0 && rare.extract > 0, `seed ${seed}: the rare operations ran (${JSON.stringify(rare)})`);
    assert.equal([...queue], model, `seed ${seed}: final contents`);
    assert.equal(queue.toArray(), model, `seed ${seed}: final contents by toArray`);
  }
});

test.run();
