// The checkpoint cores (node/checkpoint/barrier-tracker.ts, node/checkpoint/checkpoint-coordinator.ts): their rules driven
// by hand, then a seeded simulation (test/node/checkpoint/checkpoint-sim-world.ts) that runs them with the real key-group
// state, cut, upload plan and restore over thousands of seeds, and negative controls showing that its checks catch a
// misuse of that code. Each run adds fresh seeds to the fixed ones (printed first). A failing seed is
// named in the assertion; replay it alone with:
//   CHECKPOINT_SEED=<seed> node dist/test/node/checkpoint/checkpoint-sim.test.js
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BarrierTracker, type BarrierAction } from '../../../node/checkpoint/barrier-tracker.js';
import { CHECKPOINT_DEFAULTS, CheckpointCoordinator, type CheckpointManifest, type CoordinatorAction } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { KEY_GROUP_HASH } from '../../../lib/key-group.js';
import { manifestKey } from '../../../node/checkpoint/checkpoint-format.js';
import { commitKey, termId } from '../../../node/checkpoint/terms.js';
import { CheckFailure, CheckpointWorld, type Breakage, type WorldOptions, type WorldStats } from './checkpoint-sim-world.js';
import { replayLine, seedsFor } from '../../sim/seeds.js';

const replaySeed = process.env.CHECKPOINT_SEED === undefined ? null : Number(process.env.CHECKPOINT_SEED);
/** CHECKPOINT_SEED_SCALE=10 runs ten times the seeds, for a soak run by hand. */
const seedScale = Number(process.env.CHECKPOINT_SEED_SCALE ?? 1);

// ---------------------------------------------------------------------------------------------------
// BarrierTracker rules

type Action = BarrierAction<string, string>;
const tracker = (inputs: string[], options: { source?: boolean; lastCheckpoint?: number } = {}) => new BarrierTracker<string, string>({ inputs, ...options });
const kinds = (actions: Action[]) => actions.map((action) => `${action.type} ${action.checkpoint}${action.type === 'aborted' ? ` ${action.reason}` : ''}`);
const completed = (actions: Action[]) => {
  const complete = actions.find((action) => action.type === 'complete');
  return complete?.type === 'complete' ? Object.fromEntries(complete.recorded) : undefined;
};

test('tracker: the first barrier snapshots and forwards; each channel records from the snapshot until its own barrier', () => {
  const t = tracker(['a', 'b', 'c']);
  assert.not.ok(t.onMessage('b', 'before'), 'nothing is recorded before the snapshot');
  assert.equal(kinds(t.onBarrier('a', 1)), ['snapshot 1', 'forward-barrier 1']);
  assert.is(t.openCheckpoint, 1);
  assert.not.ok(t.onMessage('a', 'a-after-barrier'), 'the channel the barrier came on records nothing');
  assert.ok(t.onMessage('b', 'b1'));
  assert.ok(t.onMessage('c', 'c1'));
  assert.ok(t.onMessage('b', 'b2'));
  assert.equal(t.onBarrier('b', 1), [], 'b aligned, c still open');
  assert.not.ok(t.onMessage('b', 'b-after-barrier'), 'b stops recording at its barrier');
  assert.ok(t.isRecording('c'));
  assert.ok(t.onMessage('c', 'c2'));
  const done = t.onBarrier('c', 1);
  assert.equal(kinds(done), ['complete 1']);
  assert.equal(completed(done), { b: ['b1', 'b2'], c: ['c1', 'c2'] }, 'recorded in arrival order per channel; channels with nothing are absent');
  assert.is(t.openCheckpoint, null);
  assert.not.ok(t.onMessage('c', 'after'), 'nothing is recorded once complete');
});

test('tracker: a process with one input completes at once; old and repeated barriers are ignored', () => {
  const single = tracker(['x']);
  assert.equal(kinds(single.onBarrier('x', 4)), ['snapshot 4', 'forward-barrier 4', 'complete 4']);
  assert.equal(single.onBarrier('x', 4), [], 'a repeated barrier of a completed checkpoint');
  assert.equal(single.onBarrier('x', 2), [], 'an older checkpoint');
  const t = tracker(['a', 'b'], { lastCheckpoint: 7 });
  assert.equal(t.onBarrier('a', 7), [], 'at or below lastCheckpoint (a previous epoch) is old');
  assert.equal(kinds(t.onBarrier('a', 8)), ['snapshot 8', 'forward-barrier 8']);
  assert.equal(t.onBarrier('a', 8), [], 'a repeated barrier on an aligned channel');
  assert.equal(t.onBarrier('b', 6), [], 'an old barrier during an open checkpoint changes nothing');
  assert.ok(t.isRecording('b'));
  assert.equal(kinds(t.onBarrier('b', 8)), ['complete 8']);
  assert.throws(() => t.onBarrier('b', 0), /integers >= 1/);
  assert.throws(() => t.onBarrier('zz', 9), /unknown input channel zz/);
  assert.throws(() => t.onMessage('zz', 'm'), /unknown input channel zz/);
});

test('tracker: a closed channel counts as aligned, keeps what it recorded, and is not waited for again', () => {
  const t = tracker(['a', 'b', 'c']);
  t.onBarrier('a', 1);
  assert.ok(t.onMessage('b', 'b1'));
  assert.equal(t.channelClosed('b'), [], 'c is still open');
  const done = t.onBarrier('c', 1);
  assert.equal(kinds(done), ['complete 1']);
  assert.equal(completed(done), { b: ['b1'] });
  assert.equal(t.channelClosed('b'), [], 'closing twice is harmless');
  assert.throws(() => t.onMessage('b', 'late'), /was closed/);
  assert.equal(t.openInputs, ['a', 'c']);
  // The next checkpoint waits for a and c only; closing the last one it waits for completes it.
  assert.equal(kinds(t.onBarrier('a', 2)), ['snapshot 2', 'forward-barrier 2']);
  assert.ok(t.onMessage('c', 'c1'));
  const closed = t.channelClosed('c');
  assert.equal(kinds(closed), ['complete 2']);
  assert.equal(completed(closed), { c: ['c1'] });
  // A source whose inputs are all closed completes on its start alone.
  const main = new BarrierTracker<string, string>({ inputs: ['s0'], source: true });
  main.channelClosed('s0');
  assert.equal(kinds(main.start(1)), ['snapshot 1', 'forward-barrier 1', 'complete 1']);
});

test('tracker: a newer barrier while c is open aborts c (superseded) and begins the newer one at once', () => {
  const t = tracker(['a', 'b']);
  t.onBarrier('a', 1);
  assert.ok(t.onMessage('b', 'for-1'));
  // Checkpoint 1 failed somewhere (b's barrier 1 is late); the coordinator started 2.
  assert.equal(kinds(t.onBarrier('a', 2)), ['aborted 1 superseded', 'snapshot 2', 'forward-barrier 2']);
  assert.ok(t.onMessage('b', 'for-2'), 'b now records for 2, from the new snapshot');
  assert.equal(t.onBarrier('b', 1), [], 'the late barrier 1 is old');
  assert.ok(t.onMessage('b', 'still-for-2'), 'and does not end the recording for 2');
  const done = t.onBarrier('b', 2);
  assert.equal(kinds(done), ['complete 2']);
  assert.equal(completed(done), { b: ['for-2', 'still-for-2'] }, 'nothing recorded for 1 leaks into 2');
  // A barrier newer than the open one on the very channel still waited for: that channel is aligned for
  // the new checkpoint (its barrier for it has arrived), the others record.
  const u = tracker(['a', 'b', 'c']);
  u.onBarrier('a', 5);
  assert.equal(kinds(u.onBarrier('b', 6)), ['aborted 5 superseded', 'snapshot 6', 'forward-barrier 6']);
  assert.not.ok(u.isRecording('b'));
  assert.ok(u.isRecording('a') && u.isRecording('c'));
});

test('tracker: a source begins on start or on the first barrier, whichever comes first; start is for sources only', () => {
  const main = tracker(['peer', 'shard'], { source: true });
  assert.equal(kinds(main.start(1)), ['snapshot 1', 'forward-barrier 1']);
  assert.ok(main.isRecording('peer') && main.isRecording('shard'), 'after a start every input records');
  assert.equal(main.start(1), [], 'a repeated start');
  main.onBarrier('peer', 1);
  assert.equal(kinds(main.onBarrier('shard', 1)), ['complete 1']);
  // A peer's barrier 2 arrives before our start 2: snapshot now, the start is then a no-op.
  assert.equal(kinds(main.onBarrier('peer', 2)), ['snapshot 2', 'forward-barrier 2']);
  assert.equal(main.start(2), []);
  assert.equal(main.start(1), [], 'an old start');
  assert.equal(kinds(main.onBarrier('shard', 2)), ['complete 2']);
  assert.equal(kinds(main.start(3)), ['snapshot 3', 'forward-barrier 3']);
  assert.equal(kinds(main.start(4)), ['aborted 3 superseded', 'snapshot 4', 'forward-barrier 4'], 'a newer start supersedes like a newer barrier');
  assert.throws(() => tracker(['a']).start(1), /for a source/);
});

test('tracker: abort drops the open checkpoint, or makes a future one old', () => {
  const t = tracker(['a', 'b']);
  t.onBarrier('a', 1);
  t.onMessage('b', 'm');
  assert.equal(t.abort(2), [{ type: 'aborted', checkpoint: 1, reason: 'superseded' }], 'aborting a newer one also drops an older open one');
  assert.equal(t.onBarrier('b', 1), []);
  assert.equal(t.onBarrier('a', 2), [], '2 was aborted before it reached us: its barriers are ignored');
  assert.equal(kinds(t.onBarrier('a', 3)), ['snapshot 3', 'forward-barrier 3']);
  assert.equal(t.abort(2), [], 'aborting an older one leaves the open one alone');
  assert.is(t.openCheckpoint, 3);
  assert.equal(kinds(t.abort(3)), ['aborted 3 failed']);
  assert.is(t.openCheckpoint, null);
  assert.not.ok(t.onMessage('b', 'after-abort'));
  assert.equal(t.onBarrier('b', 3), []);
  assert.is(t.newestCheckpoint, 3);
});

// ---------------------------------------------------------------------------------------------------
// CheckpointCoordinator rules

const only = <T extends CoordinatorAction['type']>(actions: CoordinatorAction[], type: T) =>
  actions.filter((action): action is Extract<CoordinatorAction, { type: T }> => action.type === type);
const ack = (entries: [number, string | null][]) => new Map(entries);

/** The coordinators' term in these tests, and its manifest and commit record keys. */
const TERM = termId(2, '0000abcd');
const OLD_TERM = termId(1, '00001234');
const mk = (checkpoint: number, term = TERM) => manifestKey(checkpoint, term);
const ck = (checkpoint: number, term = TERM) => commitKey(term, checkpoint);

/** Runs one checkpoint to its commit: start at the next deadline, acks, manifest, commit record. */
function commitOne(coordinator: CheckpointCoordinator, acks: Record<string, [number, string | null][]>): { checkpoint: number; actions: CoordinatorAction[]; now: number } {
  const now = coordinator.nextDeadline();
  const [start] = only(coordinator.tick(now), 'start');
  assert.ok(start !== undefined, `a checkpoint starts at ${now}`);
  const checkpoint = start.checkpoint;
  const actions: CoordinatorAction[] = [];
  for (const [process, objects] of Object.entries(acks)) actions.push(...coordinator.acknowledged(now + 1, process, checkpoint, ack(objects)));
  assert.equal(only(actions, 'write-manifest').length, 1, `manifest of ${checkpoint} requested`);
  assert.equal(kinds2(coordinator.manifestWritten(now + 2, checkpoint)), [`write-commit ${checkpoint}`]);
  actions.push(...coordinator.commitWritten(now + 3, checkpoint));
  return { checkpoint, actions, now };
}
const kinds2 = (actions: CoordinatorAction[]) => actions.map((action) => `${action.type}${'checkpoint' in action ? ` ${action.checkpoint}` : ''}`);

test('coordinator: on schedule, start → acks → manifest → commit record → committed; numbers increase', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 3, view: 'v1', term: TERM, intervalMs: 100 });
  assert.is(coordinator.nextDeadline(), 0, 'before the first tick: tick at once');
  assert.equal(coordinator.tick(1000), [], 'the first tick arms the schedule');
  assert.is(coordinator.nextDeadline(), 1100);
  assert.equal(coordinator.tick(1099), []);
  const started = coordinator.tick(1100);
  assert.equal(started, [{ type: 'start', checkpoint: 1, participants: ['a', 'b'] }]);
  assert.equal(coordinator.tick(1200), [], 'one at a time: the next waits for this one');
  assert.equal(coordinator.acknowledged(1210, 'a', 1, ack([[0, 'k/1/0'], [2, 'k/1/2']])), []);
  assert.equal(coordinator.acknowledged(1211, 'a', 1, ack([[0, 'k/1/0'], [2, 'k/1/2']])), [], 'a repeated ack changes nothing');
  const manifest: CheckpointManifest = { version: 2, checkpoint: 1, term: TERM, view: 'v1', keyGroups: 3, hash: KEY_GROUP_HASH, objects: ['k/1/0', 'k/1/1', 'k/1/2'], channels: [], retained: [] };
  assert.equal(coordinator.acknowledged(1220, 'b', 1, ack([[1, 'k/1/1']])), [{ type: 'write-manifest', checkpoint: 1, key: `checkpoints/1/manifest-${TERM}.json`, manifest }]);
  assert.equal(coordinator.inProgress, { checkpoint: 1, phase: 'manifest' });
  assert.equal(coordinator.commitWritten(1225, 1), [], 'the commit record is not written before the manifest');
  assert.equal(coordinator.manifestWritten(1230, 1), [{ type: 'write-commit', checkpoint: 1, record: { checkpoint: 1, term: TERM, retained: [] } }]);
  assert.is(coordinator.nextDeadline(), Infinity, 'no deadline while the commit write is in flight');
  assert.equal(coordinator.tick(99_999), [], 'not even the ack timeout fails a checkpoint whose commit write is in flight');
  assert.equal(coordinator.commitWritten(100_000, 1), [{ type: 'committed', checkpoint: 1, manifest }]);
  assert.is(coordinator.lastCommitted, 1);
  assert.is(coordinator.nextDeadline(), 1200, 'the next start was due long ago: at once');
  assert.equal(kinds2(coordinator.tick(100_001)), ['start 2']);
  assert.is(coordinator.nextDeadline(), 100_001 + CHECKPOINT_DEFAULTS.askAgainMs, 'the first ask-again comes before the ack timeout');
});

test('coordinator: participants that have not answered are asked again every askAgainMs until the ack timeout', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b', 'c'], keyGroups: 3, term: TERM, intervalMs: 10, ackTimeoutMs: 1000, askAgainMs: 300 });
  coordinator.tick(0);
  assert.equal(kinds2(coordinator.tick(10)), ['start 1']);
  assert.is(coordinator.nextDeadline(), 310);
  coordinator.acknowledged(100, 'a', 1, ack([[0, 'k/1/0']]));
  assert.equal(coordinator.tick(309), []);
  assert.equal(coordinator.tick(310), [{ type: 'ask-again', checkpoint: 1, participants: ['b', 'c'] }], 'only those that have not answered');
  assert.equal(coordinator.tick(311), [], 'once per interval');
  coordinator.acknowledged(400, 'c', 1, ack([[2, 'k/1/2']]));
  assert.equal(coordinator.tick(610), [{ type: 'ask-again', checkpoint: 1, participants: ['b'] }]);
  assert.equal(coordinator.tick(910), [{ type: 'ask-again', checkpoint: 1, participants: ['b'] }]);
  assert.is(coordinator.nextDeadline(), 1010, 'the ack timeout comes before the next ask');
  assert.equal(kinds2(coordinator.tick(1010)), ['failed 1', 'start 2'], 'failed at the ack timeout; the next one was due');
});

test('coordinator: a key group reported unchanged before anything committed fails the checkpoint', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 2, intervalMs: 10 });
  coordinator.tick(0);
  assert.equal(kinds2(coordinator.tick(10)), ['start 1']);
  coordinator.acknowledged(11, 'a', 1, ack([[0, null]]));
  const failed = coordinator.acknowledged(12, 'b', 1, ack([[1, 'k1-b']]));
  assert.equal(kinds2(failed), ['failed 1'], 'nothing committed yet, so "unchanged" has nothing to point at');
  assert.match(only(failed, 'failed')[0]!.reason, /key group 0 was reported unchanged, but no checkpoint has committed yet/);
});

test('coordinator: reuse, timeouts, failures, late acks and retention', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 2, term: TERM, intervalMs: 10, ackTimeoutMs: 50, retain: 2 });
  coordinator.tick(0);
  const c1 = commitOne(coordinator, { a: [[0, 'o1-0']], b: [[1, 'o1-1']] });
  assert.equal(kinds2(c1.actions), ['write-manifest 1', 'committed 1']);
  const c2 = commitOne(coordinator, { a: [[0, null]], b: [[1, 'o2-1']] });
  assert.equal(only(c2.actions, 'committed')[0]!.manifest.objects, ['o1-0', 'o2-1'], 'key group 0 unchanged: the object of checkpoint 1');
  assert.equal(only(c2.actions, 'committed')[0]!.manifest.retained, [{ checkpoint: 1, term: TERM }]);
  // Checkpoint 3: b never acknowledges; a's object is garbage.
  const start3 = coordinator.nextDeadline();
  assert.equal(kinds2(coordinator.tick(start3)), ['start 3']);
  coordinator.acknowledged(start3 + 1, 'a', 3, ack([[0, 'o3-0']]));
  assert.is(coordinator.nextDeadline(), start3 + 50);
  const timedOut = coordinator.tick(start3 + 50);
  assert.equal(kinds2(timedOut), ['failed 3', 'start 4'], 'the timeout fails 3 only; 4 was due and starts at once');
  assert.match(only(timedOut, 'failed')[0]!.reason, /timed out after 50 ms: no acknowledgement from b/);
  // b's late ack for 3: its object is garbage too.
  assert.equal(coordinator.acknowledged(start3 + 60, 'b', 3, ack([[1, 'o3-1']])), []);
  // 4: b's upload fails.
  assert.equal(kinds2(coordinator.uploadFailed(start3 + 61, 'b', 4, 'disk full')), ['failed 4']);
  assert.equal(coordinator.uploadFailed(start3 + 61, 'b', 4, 'again'), [], 'a failed checkpoint fails once');
  // 5: the manifest write fails. 6: the commit write (or the check after it) fails.
  for (const [checkpoint, what] of [[5, 'manifest'], [6, 'commit']] as const) {
    const now = coordinator.nextDeadline();
    assert.equal(kinds2(coordinator.tick(now)), [`start ${checkpoint}`]);
    coordinator.acknowledged(now, 'a', checkpoint, ack([[0, `o${checkpoint}-0`]]));
    coordinator.acknowledged(now, 'b', checkpoint, ack([[1, null]]));
    if (what === 'commit') coordinator.manifestWritten(now, checkpoint);
    assert.equal(coordinator.writeFailed(now, checkpoint, what === 'manifest' ? 'commit' : 'manifest'), [], 'a failure of the other write is ignored');
    assert.equal(kinds2(coordinator.writeFailed(now, checkpoint, what)), [`failed ${checkpoint}`]);
  }
  // 7 commits, reusing 2's entries (o1-0, o2-1): 1 falls out of retention (retain 2), so its manifest and
  // o1-1 (replaced in 2) go, but not o1-0; the failed checkpoints' objects, manifests and (6) commit
  // record go too: a record that landed is passed by 7's.
  const c7 = commitOne(coordinator, { a: [[0, null]], b: [[1, null]] });
  assert.is(c7.checkpoint, 7);
  assert.equal(only(c7.actions, 'committed')[0]!.manifest.objects, ['o1-0', 'o2-1']);
  const [deleted] = only(c7.actions, 'delete');
  assert.equal(
    [...deleted!.keys].sort(),
    [mk(1), ck(1), mk(5), mk(6), ck(6), 'o1-1', 'o3-0', 'o3-1', 'o5-0', 'o6-0'].sort(),
    'never o1-0 or o2-1, which retained manifests reference',
  );
  // 8 rewrites key group 0: 2 falls out, but 7 still references o1-0; 9 drops 7, and o1-0 goes.
  const c8 = commitOne(coordinator, { a: [[0, 'o8-0']], b: [[1, null]] });
  assert.equal(only(c8.actions, 'delete')[0]!.keys, [mk(2), ck(2)]);
  assert.equal(coordinator.retained.map((manifest) => manifest.checkpoint), [7, 8]);
  const c9 = commitOne(coordinator, { a: [[0, null]], b: [[1, null]] });
  assert.equal(only(c9.actions, 'committed')[0]!.manifest.objects, ['o8-0', 'o2-1']);
  assert.equal([...only(c9.actions, 'delete')[0]!.keys].sort(), [mk(7), ck(7), 'o1-0'].sort());
});

test('coordinator: a view change fails the running checkpoint, except while its commit write is in flight', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 1, intervalMs: 10, view: 'v1' });
  coordinator.tick(0);
  coordinator.tick(10);
  assert.equal(coordinator.viewChanged(11, ['b', 'a'], 'v1'), [], 'the same view is no change');
  const failed = coordinator.viewChanged(12, ['a'], 'v2');
  assert.equal(kinds2(failed), ['failed 1']);
  assert.match(only(failed, 'failed')[0]!.reason, /view changed to v2/);
  assert.equal(coordinator.acknowledged(13, 'a', 1, ack([[0, 'x']])), [], 'a late ack of the failed checkpoint');
  assert.equal(kinds2(coordinator.tick(20)), ['start 2']);
  assert.equal(kinds2(coordinator.acknowledged(21, 'b', 2, ack([[0, 'y']]))), [], 'b is no participant any more');
  assert.equal(kinds2(coordinator.acknowledged(21, 'a', 2, ack([[0, 'z']]))), ['write-manifest 2']);
  coordinator.manifestWritten(22, 2);
  assert.equal(coordinator.viewChanged(23, ['a', 'b'], 'v3'), [], 'the commit write decides');
  const committed = coordinator.commitWritten(24, 2);
  assert.equal(kinds2(committed), ['committed 2', 'delete']);
  assert.equal(only(committed, 'committed')[0]!.manifest.view, 'v2', 'the manifest names the view it was taken in');
  assert.equal(only(committed, 'delete')[0]!.keys, ['x'], "the failed checkpoint's late object");
  assert.equal(kinds2(coordinator.tick(30)), ['start 3']);
  assert.equal(coordinator.inProgress?.checkpoint, 3);
  // No participants: nothing starts.
  coordinator.viewChanged(31, [], 'v4');
  assert.equal(coordinator.tick(1000), []);
  assert.is(coordinator.nextDeadline(), 1010);
});

test('coordinator: placement disagreements fail the checkpoint; a new coordinator starts above what it is told', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 2, intervalMs: 10 });
  coordinator.tick(0);
  coordinator.tick(10);
  coordinator.acknowledged(11, 'a', 1, ack([[0, 'a0'], [1, 'a1']]));
  assert.match(only(coordinator.acknowledged(12, 'b', 1, ack([[1, 'b1']])), 'failed')[0]!.reason, /key group 1 was acknowledged by two processes/);
  coordinator.tick(20);
  coordinator.acknowledged(21, 'a', 2, ack([[0, 'a0']]));
  assert.match(only(coordinator.acknowledged(22, 'b', 2, ack([])), 'failed')[0]!.reason, /key group 1 was acknowledged by no process/);
  coordinator.tick(30);
  assert.match(only(coordinator.acknowledged(31, 'a', 3, ack([[2, 'x']])), 'failed')[0]!.reason, /outside 0\.\.1/);

  // Committed by an earlier leader, in an older term.
  const manifest = (checkpoint: number, objects: string[], retained: number[]): CheckpointManifest => ({
    version: 2,
    checkpoint,
    term: OLD_TERM,
    view: 'v',
    keyGroups: 2,
    hash: KEY_GROUP_HASH,
    objects,
    channels: [],
    retained: retained.map((earlier) => ({ checkpoint: earlier, term: OLD_TERM })),
  });
  const m4 = manifest(4, ['p0', 'p1'], []);
  const m6 = manifest(6, ['p0', 'q1'], [4]);
  const successor = new CheckpointCoordinator({ participants: ['a', 'b'], keyGroups: 2, term: TERM, intervalMs: 10, retain: 2, committed: [m4, m6], lastCheckpoint: 9 });
  assert.is(successor.lastCommitted, 6);
  successor.tick(0);
  const next = commitOne(successor, { a: [[0, null]], b: [[1, 'r1']] });
  assert.is(next.checkpoint, 10, 'above lastCheckpoint');
  assert.equal(only(next.actions, 'committed')[0]!.manifest.objects, ['p0', 'r1'], "reuses the head's entries");
  assert.equal(only(next.actions, 'committed')[0]!.manifest.retained, [{ checkpoint: 6, term: OLD_TERM }], 'retains the earlier term’s checkpoint by its term');
  assert.equal(only(next.actions, 'delete')[0]!.keys, [mk(4, OLD_TERM), ck(4, OLD_TERM), 'p1']);
  const fresh = new CheckpointCoordinator({ participants: ['a'], keyGroups: 2, committed: [m4] });
  assert.is(fresh.lastStarted, 4, 'by default above the last committed');
  assert.throws(() => new CheckpointCoordinator({ participants: ['a'], keyGroups: 2, committed: [m6], lastCheckpoint: 5 }), /lastCheckpoint must be an integer >= 6/);
  assert.throws(() => new CheckpointCoordinator({ participants: ['a'], keyGroups: 3, committed: [m4] }), /K is 3/);
  assert.throws(() => new CheckpointCoordinator({ participants: ['a'], keyGroups: 2, committed: [m6, m4] }), /oldest first/);
  assert.throws(() => new CheckpointCoordinator({ participants: ['a'], keyGroups: 2, retain: 0 }), /retain must be an integer >= 1/);
});

test('coordinator: deposed while its commit is checked, it withholds the checkpoint, deletes nothing and stops for good', () => {
  const coordinator = new CheckpointCoordinator({ participants: ['a'], keyGroups: 1, term: TERM, intervalMs: 10, ackTimeoutMs: 50 });
  coordinator.tick(0);
  commitOne(coordinator, { a: [[0, 'o1']] });
  // 2 fails (its object is garbage, deleted at the next commit), 3 reaches its commit record.
  coordinator.tick(coordinator.nextDeadline());
  coordinator.acknowledged(21, 'a', 2, ack([[0, 'o2']]));
  assert.equal(kinds2(coordinator.manifestWritten(22, 2)), ['write-commit 2']);
  assert.equal(kinds2(coordinator.writeFailed(23, 2, 'commit', 'the list after the record failed')), ['failed 2']);
  assert.equal(kinds2(coordinator.tick(coordinator.nextDeadline())), ['start 3']);
  coordinator.acknowledged(31, 'a', 3, ack([[0, 'o3']]));
  coordinator.manifestWritten(32, 3);
  const newer = termId(3, '00000001');
  assert.equal(coordinator.commitWritten(33, 4), [], 'another checkpoint: ignored');
  assert.equal(coordinator.deposed(33, 3, newer), [{ type: 'deposed', checkpoint: 3, by: newer }], 'not committed, not failed: withheld');
  assert.is(coordinator.deposedBy, newer);
  assert.is(coordinator.lastCommitted, 1, 'the head it knows is still 1');
  assert.equal(coordinator.commitWritten(34, 3), [], 'decided already');
  assert.is(coordinator.nextDeadline(), Infinity);
  assert.equal(coordinator.tick(10_000), [], 'nothing starts any more');
  assert.equal(coordinator.acknowledged(10_001, 'a', 3, ack([[0, 'o3']])), []);
});

// ---------------------------------------------------------------------------------------------------
// The simulation

/** Sums over runs: the world's stats (less its size) and the number of seeds. */
type Totals = Omit<WorldStats, 'processes' | 'keyGroups'> & { seeds: number; crashesAsked: number };

const REPLAY = 'CHECKPOINT_SEED=<seed> node dist/test/node/checkpoint/checkpoint-sim.test.js';

function forSeeds(name: string, first: number, count: number, options: (seed: number) => WorldOptions): Totals {
  const seeds = seedsFor({ name, first, count: Math.ceil(count * seedScale), replay: replaySeed, replayCommand: REPLAY });
  const totals: Totals = {
    seeds: 0,
    started: 0,
    askedAgain: 0,
    committed: 0,
    failed: 0,
    superseded: 0,
    recordedMessages: 0,
    queuedMessages: 0,
    reusedObjects: 0,
    recoveries: 0,
    coordinators: 0,
    messages: 0,
    egressReleased: 0,
    egressRepeats: 0,
    deletedKeys: 0,
    crashes: 0,
    crashesSkipped: 0,
    terms: 0,
    deposed: 0,
    adopted: 0,
    crashesAsked: 0,
  };
  const started = Date.now();
  for (const seed of seeds) {
    let stats: WorldStats;
    const worldOptions = options(seed);
    totals.crashesAsked += worldOptions.crashes;
    try {
      stats = new CheckpointWorld(worldOptions).run();
    } catch (error) {
      const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
      assert.unreachable(`${name}, seed ${seed}: ${text} (replay: ${replayLine({ replayCommand: REPLAY }, seed)})`);
      return totals;
    }
    totals.seeds++;
    for (const key of Object.keys(totals) as (keyof Totals)[]) if (key !== 'seeds' && key !== 'crashesAsked') totals[key] += stats[key];
  }
  console.log(
    `  ${name}: ${totals.seeds} seeds in ${Date.now() - started} ms; checkpoints ${totals.started} started, ${totals.committed} committed, ${totals.failed} failed, ` +
      `${totals.superseded} superseded, ${totals.askedAgain} asks again; ${totals.messages} messages, ${totals.recordedMessages} recorded, ${totals.queuedMessages} queued in committed images; ` +
      `${totals.reusedObjects} unchanged key groups reused; ${totals.egressReleased} egress records released (${totals.egressRepeats} repeats dropped); ` +
      `${totals.crashes} crashes (${totals.crashesSkipped} asked for found no time left), ${totals.recoveries} recoveries, ${totals.coordinators} coordinators, ` +
      `${totals.terms} terms, ${totals.deposed} commits withheld by deposed coordinators, ${totals.adopted} unannounced heads restored; ` +
      `${totals.deletedKeys} keys deleted`,
  );
  return totals;
}

test('simulation, main threads and shards: every commit restores to the consistent cut despite failed uploads, writes and stalls', () => {
  const totals = forSeeds('nodes', 1, 800, (seed) => ({ seed, topology: 'nodes', durationMs: 1500, crashes: 0, coordinatorFailover: false, faults: true }));
  if (replaySeed === null) {
    assert.ok(totals.failed > 0 && totals.superseded > 0 && totals.recordedMessages > 0 && totals.reusedObjects > 0, 'the faults and paths under test did occur');
    assert.ok(totals.queuedMessages > 0 && totals.egressReleased > 0, 'images carried queued messages, and egress was released');
  }
});

test('simulation, random graphs with several sources: consistent cuts', () => {
  const totals = forSeeds('mesh', 100_001, 600, (seed) => ({ seed, topology: 'mesh', durationMs: 1500, crashes: 0, coordinatorFailover: false, faults: seed % 4 !== 0 }));
  if (replaySeed === null) assert.ok(totals.committed > totals.seeds * 5);
});

test('simulation, crashes at random points: the running checkpoint fails, recovery restores the head, later checkpoints commit', () => {
  const totals = forSeeds('crashes', 200_001, 800, (seed) => ({
    seed,
    topology: seed % 2 === 0 ? 'nodes' : 'mesh',
    // About a second of faulty time per crash: each needs detection, recovery and the ack timeout.
    durationMs: 1200 + 900 * (1 + (seed % 3)),
    crashes: 1 + (seed % 3),
    coordinatorFailover: seed % 3 !== 0,
    faults: seed % 5 !== 0,
  }));
  if (replaySeed === null) {
    assert.ok(totals.recoveries > totals.seeds && totals.coordinators > totals.seeds, 'crashes, recoveries and new coordinators did occur');
    const asked = totals.crashesAsked;
    assert.is(totals.crashes + totals.crashesSkipped, asked, 'every crash asked for happened or was counted as skipped');
    assert.ok(totals.crashesSkipped <= asked / 50, `${totals.crashesSkipped} of ${asked} crashes found no time left`);
    assert.is(totals.recoveries, totals.crashes, 'each crash was recovered');
    assert.ok(totals.egressRepeats > 0, 'restores released egress again (dropped as repeats)');
  }
});

// A deposed coordinator's manifest, commit record and check may land after a new coordinator took over
// and committed (a leader paused by SIGSTOP, or cut off, cannot be waited for), with checkpoint numbers
// the new term reuses. Terms fence them (node/checkpoint/terms.ts): the head never goes back, a deposed
// coordinator announces nothing, and a record that landed before the recovery read the head is restored.
// Before terms about 1 seed in 3 failed here (e.g. seed 400001: "checkpoint 16 failed, but the pointer names it").
test('simulation, a deposed coordinator whose writes land late: the head never goes back, nothing it withholds is announced', () => {
  const totals =   forSeeds('zombie writes', 400_001, 300, (seed) => ({
    seed,
    topology: seed % 2 === 0 ? 'nodes' : 'mesh',
    durationMs: 1200 + 900 * (1 + (seed % 3)),
    crashes: 1 + (seed % 3),
    coordinatorFailover: true,
    faults: seed % 5 !== 0,
    zombieWrites: true,
  }));
  if (replaySeed === null) {
    assert.ok(totals.deposed > 0, 'deposed coordinators did withhold commits');
    assert.ok(totals.adopted > 0, 'recoveries did restore commits nobody announced');
    assert.is(totals.recoveries, totals.crashes, 'each pause was recovered from');
  }
});

/**
 * Runs seeds with a breakage until `wanted` of them fail with a CheckFailure matching `expected`; any other
 * failure fails the test. Returns how many were caught, and the first message.
 */
function caughtBy(breakage: Breakage, expected: RegExp, first: number, count: number, wanted: number, more: Partial<WorldOptions> = {}): { caught: number; seeds: number; example: string } {
  let caught = 0;
  let seeds = 0;
  let example = '';
  for (let seed = first; seed < first + count && caught < wanted; seed++) {
    seeds++;
    const topology = seed % 2 === 0 ? 'nodes' : 'mesh';
    try {
      new CheckpointWorld({ seed, topology, durationMs: 1500, crashes: seed % 3 === 0 ? 1 : 0, coordinatorFailover: true, faults: seed % 4 !== 0, breakage, ...more }).run();
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      if (!(error instanceof CheckFailure) || !expected.test(text)) assert.unreachable(`breakage ${breakage}, seed ${seed}: expected a CheckFailure matching ${expected}, got: ${text}`);
      if (caught === 0) example = `seed ${seed}: ${text}`;
      caught++;
    }
  }
  return { caught, seeds, example };
}

test('negative controls: a misused cut, a key group not marked changed, egress released on a failure and an unfenced leader are caught', () => {
  if (replaySeed !== null) {
    console.log('  negative controls: skipped under CHECKPOINT_SEED (they run seeds of their own)');
    return;
  }
  const controls: [Breakage, RegExp, Partial<WorldOptions>?][] = [
    // One message in flight at a shard's cut is not recorded: the checkpoint misses it.
    ['drop-recording', /misses message \d+: originated before the cut, neither applied, queued nor recorded/],
    // One delivered message does not mark its key group changed: the manifest reuses an object without it.
    ['skip-changed', /misses message \d+: originated before the cut, neither applied, queued nor recorded/],
    // A failed checkpoint releases the egress it held: a record of a message no commit covers goes out.
    ['release-on-failure', /egress record \d+:\d+ of message \d+ was released, but no committed checkpoint covers that message/],
    // A paused leader's commit lands after a recovery read the head, and it does not check for a newer term: it announces a commit the cluster rolled back past.
    ['unfenced-commit', /coordinator \d+, deposed by \d+, acted: committed/, { zombieWrites: true, crashes: 2, durationMs: 3000 }],
  ];
  for (const [breakage, expected, more] of controls) {
    const { caught, seeds, example } = caughtBy(breakage, expected, 300_001, 200, 5, more);
    console.log(`  ${breakage}: ${caught} of ${seeds} seeds caught; first, ${example}`);
    assert.ok(caught >= 5, `breakage ${breakage} was caught by ${caught} of ${seeds} seeds`);
  }
});

test.run();
