// What a node says about its checkpoints (sans-I/O, explicit times): when it is unhealthy, and how
// often a failure that goes on is logged.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CheckpointHealth, FAILURES_UNHEALTHY } from '../../../node/checkpoint/checkpoint-health.js';

test(`healthy while commits come; unhealthy after ${FAILURES_UNHEALTHY} failed outcomes in a row, with the last reason; healthy again on a commit`, () => {
  const lines: string[] = [];
  const health = new CheckpointHealth(12_000, (line) => lines.push(line), 0);
  health.committed(1000);
  assert.is(health.problem(2000), null);
  health.ownFailure("n1's part of checkpoint 7: upload failed: ENOSPC: the disk is full; free space or lower --checkpoint-retain");
  for (let index = 0; index < FAILURES_UNHEALTHY - 1; index++) health.failed();
  assert.is(health.problem(3000), null, 'two failures are not yet a problem');
  health.failed();
  assert.match(health.problem(4000)!, /^the last 3 checkpoints failed \(last failure: n1's part of checkpoint 7: upload failed: ENOSPC: the disk is full; free space or lower --checkpoint-retain\): nothing is confirmed/);
  assert.is(health.consecutiveFailures, 3);
  health.committed(5000);
  assert.is(health.problem(5000), null);
  assert.is(health.consecutiveFailures, 0);
});

test('unhealthy when no commit was heard of for longer than the age limit (a stalled checkpoint fails nothing)', () => {
  const health = new CheckpointHealth(12_000, () => undefined, 0);
  assert.is(health.problem(11_000), null, 'a node just started has time for its first commit');
  assert.match(health.problem(13_000)!, /^no checkpoint has committed for 13 s: nothing is confirmed/);
  assert.is(health.ageMs(13_000), 13_000);
  health.committed(13_500);
  assert.is(health.problem(14_000), null);
});

test('a failure that goes on is logged once per kind, summed up every 30 s, and the commit that ends it is said', () => {
  const lines: string[] = [];
  const health = new CheckpointHealth(12_000, (line) => lines.push(line), 0);
  for (let second = 1; second <= 65; second++) health.failure(second * 1000, `upload by n2 failed: cannot write object "checkpoints/${second}/seg.bin" (ENOSPC)`, `checkpoint ${second} failed`);
  assert.equal(lines, [
    'checkpoint 1 failed',
    'checkpoints: still failing, 30 more times in the last 30 s: upload by n2 failed: cannot write object "checkpoints/31/seg.bin" (ENOSPC)',
    'checkpoints: still failing, 30 more times in the last 30 s: upload by n2 failed: cannot write object "checkpoints/61/seg.bin" (ENOSPC)',
  ]);
  health.failure(65_500, 'manifest write failed: cannot write object "checkpoints/66/manifest.json" (ENOSPC)', 'checkpoint 66 failed: manifest (ENOSPC)');
  assert.is(lines.length, 3, 'the same system error in another step is the same kind');
  health.failure(66_000, 'no acknowledgement from n3 within 10000 ms', 'checkpoint 66 failed: no acknowledgement');
  assert.is(lines.at(-1), 'checkpoint 66 failed: no acknowledgement', 'another kind is logged at once');
  health.committed(67_000);
  assert.is(lines.at(-1), 'checkpoints: committed again, after 67 failed');
  health.committed(68_000);
  assert.is(lines.length, 5, 'a commit after a commit says nothing');
});

test.run();
