// A shard's phases in recoveries: the recovery sequence, a fallback that resets a frozen shard again,
// and a resume with nothing restored.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { InternalError } from '../../../lib/errors.js';
import { checkPhaseChange, type ShardPhase } from '../../../node/shard/shard-phase.js';

const allowed = (from: ShardPhase, to: ShardPhase) => {
  try {
    checkPhaseChange(from, to);
    return true;
  } catch (error) {
    assert.instance(error, InternalError);
    return false;
  }
};

test('a recovery: live → discarding → frozen → live; a restore at start: live → frozen → live', () => {
  for (const [from, to] of [['live', 'discarding'], ['discarding', 'frozen'], ['frozen', 'live'], ['live', 'frozen'], ['frozen', 'frozen'], ['frozen', 'discarding'], ['live', 'live']] as const) {
    assert.ok(allowed(from, to), `${from} → ${to}`);
  }
});

test('no skipping the reset: discarding never resumes, and is entered once per reset', () => {
  assert.not.ok(allowed('discarding', 'live'));
  assert.not.ok(allowed('discarding', 'discarding'));
});

test.run();
