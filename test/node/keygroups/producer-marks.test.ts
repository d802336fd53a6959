// The producer-mark window: each sequence number of a session applied once, in any order within the window.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PRODUCER_WINDOW, ProducerMark } from '../../../node/keygroups/producer-marks.js';

test('in order, each once; a repeat is refused', () => {
  const mark = new ProducerMark(0);
  for (let seq = 1; seq <= 100; seq++) assert.ok(mark.accept(seq), `seq ${seq}`);
  for (let seq = 1; seq <= 100; seq++) assert.not.ok(mark.accept(seq), `repeat ${seq}`);
});

test('out of order within the window: every number accepted exactly once', () => {
  const mark = new ProducerMark(0);
  const order = Array.from({ length: 400 }, (_, index) => index + 1);
  // A deterministic shuffle, with swaps up to 300 apart.
  for (let index = order.length - 1; index > 0; index--) {
    const other = Math.max(0, index - ((index * 7919) % 300));
    [order[index], order[other]] = [order[other]!, order[index]!];
  }
  for (const seq of order) assert.ok(mark.accept(seq), `first ${seq}`);
  for (const seq of order) assert.not.ok(mark.accept(seq), `again ${seq}`);
});

test('older than the window is refused; a jump far ahead clears the window', () => {
  const mark = new ProducerMark(0);
  assert.ok(mark.accept(1));
  assert.ok(mark.accept(1 + PRODUCER_WINDOW + 10));
  assert.not.ok(mark.accept(2), 'too old to tell: refused');
  assert.ok(mark.accept(PRODUCER_WINDOW + 5), 'inside the window, unseen');
  assert.not.ok(mark.accept(PRODUCER_WINDOW + 5));
});

test('merging two copies keeps what either saw', () => {
  const a = new ProducerMark(0);
  const b = new ProducerMark(0);
  for (const seq of [1, 2, 3, 10]) a.accept(seq);
  for (const seq of [4, 5, 40]) b.accept(seq);
  a.merge(b);
  for (const seq of [1, 2, 3, 4, 5, 10, 40]) assert.not.ok(a.accept(seq), `seen ${seq}`);
  for (const seq of [6, 7, 39, 41]) assert.ok(a.accept(seq), `new ${seq}`);
});

test.run();
