// The delayed-message queue, driven with explicit times.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TimerQueue } from '../../../node/keygroups/timer-queue.js';

test('pops in due order; same millisecond in scheduling order', () => {
  const queue = new TimerQueue<string>();
  queue.schedule(30, 'c');
  queue.schedule(10, 'a1');
  queue.schedule(20, 'b');
  queue.schedule(10, 'a2');
  assert.is(queue.nextDueMs(), 10);
  assert.equal(queue.popDue(9), []);
  assert.equal(queue.popDue(20), ['a1', 'a2', 'b']);
  assert.is(queue.size, 1);
  assert.equal(queue.popDue(100), ['c']);
  assert.is(queue.nextDueMs(), Infinity);
});

test('cancel by token: every pending entry with it, none after it fired', () => {
  const queue = new TimerQueue<string>();
  queue.schedule(10, 'x', 'k');
  queue.schedule(20, 'y', 'k');
  queue.schedule(15, 'z', 'other');
  assert.is(queue.cancel('k'), 2);
  assert.is(queue.cancel('k'), 0);
  assert.equal(queue.popDue(100), ['z']);
  queue.schedule(110, 'w', 'late');
  assert.equal(queue.popDue(200), ['w']);
  assert.is(queue.cancel('late'), 0, 'a fired entry cannot be cancelled');
  assert.is(queue.size, 0);
});

test('a pop limit leaves the rest of a bucket for the next pop', () => {
  const queue = new TimerQueue<number>();
  for (let index = 0; index < 10; index++) queue.schedule(5, index);
  assert.equal(queue.popDue(5, 4), [0, 1, 2, 3]);
  assert.equal(queue.popDue(5, 100), [4, 5, 6, 7, 8, 9]);
});

test('holds a million entries and pops them all in order', () => {
  const queue = new TimerQueue<number>();
  const count = 1_000_000;
  for (let index = 0; index < count; index++) queue.schedule((index * 7919) % 100_003, index, index % 10 === 0 ? `t${index}` : null);
  assert.is(queue.size, count);
  let cancelled = 0;
  for (let index = 0; index < count; index += 20) cancelled += queue.cancel(`t${index}`);
  assert.is(cancelled, count / 20);
  let previous = -1;
  let popped = 0;
  for (let now = 0; now <= 100_003 + 997; now += 997) {
    for (const index of queue.popDue(now)) {
      const due = (index * 7919) % 100_003;
      assert.ok(due >= previous && due <= now);
      previous = due;
      popped++;
    }
  }
  assert.is(popped, count - count / 20);
  assert.is(queue.size, 0);
});

test.run();
