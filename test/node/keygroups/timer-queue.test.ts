// The delayed-message queue, driven with explicit times.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { OWNERS_COUNTED_FROM, TimerQueue } from '../../../node/keygroups/timer-queue.js';

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

for (const background of [0, OWNERS_COUNTED_FROM]) {
  test(`with owners, each owner's pending entries are counted through schedule, cancel, fire and extract (${background} entries of another owner: ${background === 0 ? 'counted when asked' : 'counts kept'})`, () => {
    const queue = new TimerQueue<{ owner: string; n: number }>({ kind: () => 'test/t', id: (payload) => payload.owner });
    for (let index = 0; index < background; index++) queue.schedule(1000, { owner: 'z', n: -1 });
    queue.schedule(10, { owner: 'a', n: 1 }, 'ka');
    queue.schedule(20, { owner: 'a', n: 2 }, 'ka');
    queue.schedule(30, { owner: 'a', n: 3 });
    queue.schedule(15, { owner: 'b', n: 4 });
    assert.is(queue.ownersHeld, background === 0 ? 0 : 3);
    assert.equal([queue.pendingOf('test/t', 'a'), queue.pendingOf('test/t', 'b'), queue.pendingOf('test/t', 'c'), queue.pendingOf('test/u', 'a')], [3, 1, 0, 0]);
    assert.is(queue.pendingWithToken('ka'), 2);
    assert.equal(queue.popDue(10).map((payload) => payload.n), [1]);
    assert.is(queue.pendingOf('test/t', 'a'), 2, 'a fired entry is no longer pending');
    assert.is(queue.pendingWithToken('ka'), 1);
    assert.is(queue.cancel('ka'), 1);
    assert.is(queue.pendingOf('test/t', 'a'), 1);
    assert.is(queue.pendingWithToken('ka'), 0);
    assert.equal(queue.extract((payload) => payload.owner === 'b').length, 1);
    assert.is(queue.pendingOf('test/t', 'b'), 0, 'an extracted entry (a hand-over) is no longer pending here');
    assert.equal(queue.popDue(100).map((payload) => payload.n), [3]);
    assert.is(queue.pendingOf('test/t', 'a'), 0);
    assert.is(queue.pendingOf('test/t', 'z'), background);
    assert.is(queue.size, background);
  });
}

test('kept counts: owners with nothing pending are forgotten once they far outnumber the pending entries, and all counts go when the queue is down to half the threshold; counts stay right', () => {
  const queue = new TimerQueue<string>({ kind: () => 'test/t', id: (payload) => payload });
  for (let index = 0; index < 12_000; index++) queue.schedule(1000, `long${index}`);
  for (let index = 0; index < 60_000; index++) queue.schedule(10, `o${index}`);
  assert.is(queue.ownersHeld, 72_000);
  assert.is(queue.popDue(10).length, 60_000);
  assert.ok(queue.ownersHeld < 25_000, `${queue.ownersHeld} owners still held`);
  assert.is(queue.pendingOf('test/t', 'long7'), 1);
  assert.is(queue.pendingOf('test/t', 'o59999'), 0);
  queue.schedule(60, 'o1');
  queue.schedule(1500, 'long7');
  assert.equal([queue.pendingOf('test/t', 'o1'), queue.pendingOf('test/t', 'long7')], [1, 2]);
  assert.is(queue.popDue(100).length, 1);
  assert.is(queue.pendingOf('test/t', 'o1'), 0);
  // Firing the long ones brings the queue under half the threshold: counts are dropped, then counted when asked.
  assert.is(queue.popDue(1000).length, 12_000);
  assert.is(queue.ownersHeld, 0);
  assert.is(queue.pendingOf('test/t', 'long7'), 1);
  queue.schedule(2000, 'long7');
  assert.is(queue.pendingOf('test/t', 'long7'), 2);
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
