// Key-group placement on the consistent-hash ring: deterministic, balanced enough, minimal movement.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { computePlacement, movedKeyGroups, ownedCounts } from '../../cluster/placement.js';

test('the same members in any order give the same table and view id', () => {
  const a = computePlacement(['node-c', 'node-a', 'node-b'], 1024);
  const b = computePlacement(['node-b', 'node-c', 'node-a', 'node-b'], 1024);
  assert.equal([...a.owners], [...b.owners]);
  assert.is(a.viewId, b.viewId);
  assert.is.not(a.viewId, computePlacement(['node-a', 'node-b'], 1024).viewId);
});

test('every key group has exactly one owner, and each of three members owns a fair share', () => {
  const placement = computePlacement(['n1', 'n2', 'n3'], 1024);
  const counts = ownedCounts(placement);
  assert.is(Object.values(counts).reduce((sum, count) => sum + count, 0), 1024);
  for (const [id, count] of Object.entries(counts)) assert.ok(count > 1024 / 3 / 2 && count < (1024 / 3) * 1.6, `${id} owns ${count}`);
});

test('a fourth member takes key groups only from the others, about a quarter of them', () => {
  const three = computePlacement(['n1', 'n2', 'n3'], 1024);
  const four = computePlacement(['n1', 'n2', 'n3', 'n4'], 1024);
  const moved = movedKeyGroups(three, four);
  for (const keyGroup of moved) assert.is(four.members[four.owners[keyGroup]!], 'n4', `key group ${keyGroup} moved between old members`);
  assert.ok(moved.length > 1024 * 0.12 && moved.length < 1024 * 0.4, `${moved.length} moved`);
});

test('a single member owns everything', () => {
  const placement = computePlacement(['solo'], 64);
  assert.equal(ownedCounts(placement), { solo: 64 });
});

test.run();
