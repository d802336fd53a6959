// A shard's part in checkpoints, driven barrier by barrier through a fake shard (a real KeyGroupState;
// writes recorded): the snapshot at the cut, forwarded barriers, recorded channel state, the encoded
// part, held egress released by the outcome, and what a recovery leaves.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeDecoder, EnvelopeKind, invokeLengthMax, readBarrier, readKind, writeInvoke } from '../../../lib/envelope.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { ShardCut, type CheckpointPart, type CutHost } from '../../../node/checkpoint/shard-cut.js';
import { DelayedMessage } from '../../../node/keygroups/delayed-message.js';
import { decodeImage, type KeyGroupImage } from '../../../node/keygroups/key-group-image.js';
import { KeyGroupState } from '../../../node/keygroups/key-group-state.js';
import type { RecordLayout } from '../../../node/keygroups/state-store.js';
import { MAIN_THREAD } from '../../../node/rings/mailbox.js';
import { withTimeout } from '../../helpers.js';

const KEY_GROUPS = 8;
const plainLayout: RecordLayout = { hasExpiry: false, expire: (record) => record };
const TYPE = 'test/fn';

/** Shard 1 of threads 0..2 (0 is the main thread), owning key groups 0..3 of 8. */
class FakeShard implements CutHost {
  readonly thread = 1;
  readonly threads = 3;
  readonly groups = new KeyGroupState(KEY_GROUPS, true);
  epoch = 1;
  owned = new Set([0, 1, 2, 3]);
  /** Per key group: the invoke envelopes waiting for its instances (addWaiting hands them out). */
  waiting = new Map<number, Uint8Array[]>();
  writes: { thread: number; bytes: number[] }[] = [];
  flushes = 0;
  flushesScheduled = 0;
  addWaitingCalls = 0;

  constructor() {
    this.groups.addType(TYPE, plainLayout);
  }

  owns(keyGroup: number): boolean {
    return this.owned.has(keyGroup);
  }

  addWaiting(images: ReadonlyMap<number, KeyGroupImage>): void {
    this.addWaitingCalls++;
    for (const [keyGroup, image] of images) image.queued.push(...(this.waiting.get(keyGroup) ?? []));
  }

  write(thread: number, bytes: Uint8Array): void {
    this.writes.push({ thread, bytes: [...bytes] });
  }

  scheduleFlush(): void {
    this.flushesScheduled++;
  }

  flush(): void {
    this.flushes++;
  }

  /** Egress records written to the main thread, decoded: [keyGroup, seq, value]. */
  egressWritten(): [number, number | null, unknown][] {
    const decoder = new EnvelopeDecoder();
    return this.writes
      .filter((write) => write.thread === MAIN_THREAD && write.bytes[0] === EnvelopeKind.Egress)
      .map((write) => {
        const egress = decoder.decodeEgress(Uint8Array.from(write.bytes), 0, write.bytes.length);
        return [egress.keyGroup, egress.recordSeq, egress.decoded];
      });
  }

  barriersWritten(): [number, number][] {
    return this.writes.filter((write) => write.bytes[0] === EnvelopeKind.Barrier).map((write) => [write.thread, readBarrier(Uint8Array.from(write.bytes), 0)]);
  }
}

function setup(pause: (() => Promise<void>) | null = null) {
  const shard = new FakeShard();
  const parts: CheckpointPart[] = [];
  const cut = new ShardCut({ host: shard, onPart: (part) => parts.push(part), pause, now: () => 1234 });
  return { shard, parts, cut };
}

function invoke(id: string, value: unknown): Uint8Array {
  const typed = toTypedValue(value);
  const buffer = new Uint8Array(invokeLengthMax(TYPE, id, null, null, typed));
  return buffer.slice(0, writeInvoke(buffer, 0, 0, TYPE, id, null, null, typed));
}

function decodeInvokes(envelopes: Uint8Array[]): [string, unknown][] {
  const decoder = new EnvelopeDecoder();
  return envelopes.map((envelope) => {
    const message = decoder.decodeInvoke(envelope, 0, envelope.length);
    return [message.targetId, message.value];
  });
}

/** The part's images by key group (bytes decoded; '' and null as they are). */
function imagesOf(part: CheckpointPart): Map<number, KeyGroupImage | '' | null> {
  return new Map(part.keyGroups.map(([keyGroup, bytes]) => [keyGroup, bytes instanceof Uint8Array ? decodeImage(bytes) : bytes]));
}

// ---- the cut ----

test('barrier from input 0: snapshot of owned, changed key groups; barrier forwarded; input 2 recorded until its barrier', () => {
  const { shard, parts, cut } = setup();
  const groups = shard.groups;
  groups.changed.fill(0);
  groups.records.set(1, 0, 'a', 'state of a');
  groups.changed[1] = 1;
  groups.changed[2] = 1; // changed, but holds nothing now
  groups.records.set(5, 0, 'not-ours', 'x');
  groups.changed[5] = 1; // not owned: no image

  assert.not.ok(cut.isRecording(0));
  assert.not.ok(cut.isRecording(2));
  cut.onBarrier(0, 1);
  assert.equal(shard.barriersWritten(), [[0, 1], [2, 1]], 'barrier 1 forwarded to every other thread');
  assert.ok(shard.writes.every((write) => write.bytes.length === 8 && readKind(Uint8Array.from(write.bytes), 0) === EnvelopeKind.Barrier));
  assert.is(shard.flushesScheduled, 1);
  assert.equal([...groups.changed], [0, 0, 0, 0, 0, 1, 0, 0], 'the snapshot took key groups 1 and 2; 5 is not owned');
  assert.is(parts.length, 0, 'input 2 is not aligned yet');

  // In flight at the cut: what input 2 sends before its barrier. Input 0 is aligned.
  assert.ok(cut.isRecording(2));
  assert.not.ok(cut.isRecording(0), 'input 0 sent its barrier: what follows belongs to the next checkpoint');
  cut.record(2, invoke('from-2-first', 1));
  cut.record(0, invoke('from-0-after-barrier', 2)); // a shell that recorded it anyway: not kept
  cut.record(2, invoke('from-2-second', 3));
  cut.onBarrier(2, 1);
  assert.not.ok(cut.isRecording(2));
  assert.is(parts.length, 1);
  const part = parts[0]!;
  assert.is(part.checkpoint, 1);
  assert.is(part.epoch, 1);
  assert.is(part.error, null);
  assert.equal(decodeInvokes(part.channel!), [['from-2-first', 1], ['from-2-second', 3]]);
  assert.equal(part.keyGroups.map(([keyGroup, bytes]) => [keyGroup, bytes instanceof Uint8Array ? 'image' : bytes]), [
    [0, null],
    [1, 'image'],
    [2, ''],
    [3, null],
  ]);
  const image = imagesOf(part).get(1) as KeyGroupImage;
  assert.is(image.keyGroup, 1);
  assert.is(image.frozenAt, 1234);
  assert.equal(image.state, [[TYPE, [['a', 'state of a']]]]);
});

test('the part holds the state at the cut, whatever changes before the inputs align', () => {
  const { shard, parts, cut } = setup();
  const groups = shard.groups;
  groups.records.set(3, 0, 'k', 'before');
  groups.acceptEvent(3, { session: 's', seq: 5 });
  groups.timers.schedule(100, new DelayedMessage(TYPE, 'k', TYPE, 'k', toTypedValue('tick'), 3));
  cut.holdEgress(3, 'out', TYPE, 'k', toTypedValue('held before'));
  cut.onBarrier(2, 1);
  // Everything changes after the snapshot, before input 0's barrier.
  groups.records.set(3, 0, 'k', 'after');
  groups.records.set(3, 0, 'new', 'after');
  groups.acceptEvent(3, { session: 's', seq: 6 });
  groups.timers.schedule(200, new DelayedMessage(TYPE, 'k', TYPE, 'k', toTypedValue('tock'), 3));
  cut.holdEgress(3, 'out', TYPE, 'k', toTypedValue('held after'));
  cut.onBarrier(0, 1);
  const image = imagesOf(parts[0]!).get(3) as KeyGroupImage;
  assert.equal(image.state, [[TYPE, [['k', 'before']]]]);
  assert.equal(image.timers.map((timer) => timer[0]), [100]);
  assert.equal(image.marks!.map(([session, highest]) => [session, highest]), [['s', 5]]);
  assert.is(image.egress!.length, 1);
  assert.is(image.egressSeq, 1);
  assert.equal(parts[0]!.channel, null, 'nothing was recorded');
  // The image restores to exactly that state.
  const restored = new KeyGroupState(KEY_GROUPS, true);
  restored.addType(TYPE, plainLayout);
  restored.put(image, 1);
  assert.is(restored.records.get(3, 0, 'k'), 'before');
  assert.is(restored.records.get(3, 0, 'new'), undefined);
  assert.ok(restored.acceptEvent(3, { session: 's', seq: 6 }), 'seq 6 came after the cut');
});

test('addWaiting output lands in the images\' queued, in order; an image with only waiting messages is not empty', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[0] = 1;
  shard.groups.changed[2] = 1;
  shard.groups.records.set(0, 0, 'busy', 1);
  shard.waiting.set(0, [invoke('busy', 'running now'), invoke('busy', 'next')]);
  shard.waiting.set(2, [invoke('other', 'waits')]);
  shard.waiting.set(3, [invoke('unchanged', 'not in this snapshot')]);
  cut.onBarrier(0, 1);
  assert.is(shard.addWaitingCalls, 1);
  shard.waiting.get(0)!.push(invoke('busy', 'arrived after the cut'));
  cut.onBarrier(2, 1);
  const images = imagesOf(parts[0]!);
  assert.equal(decodeInvokes((images.get(0) as KeyGroupImage).queued), [['busy', 'running now'], ['busy', 'next']]);
  assert.equal(decodeInvokes((images.get(2) as KeyGroupImage).queued), [['other', 'waits']]);
  assert.is(images.get(3), null);
});

test('no changed key group: no image and no addWaiting call, every owned key group null', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  cut.onBarrier(2, 4);
  cut.onBarrier(0, 4);
  assert.is(shard.addWaitingCalls, 0);
  assert.equal(parts[0]!.keyGroups, [[0, null], [1, null], [2, null], [3, null]]);
});

// ---- outcomes and held egress ----

test('holdEgress: seqs per key group, the next checkpoint\'s number, the key group changed', () => {
  const { shard, cut } = setup();
  shard.groups.changed.fill(0);
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('a0'));
  cut.holdEgress(2, 'out', TYPE, 'b', toTypedValue('b0'));
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('a1'));
  assert.equal([...shard.groups.changed], [0, 1, 1, 0, 0, 0, 0, 0]);
  assert.is(shard.groups.heldEgress, 3);
  assert.is(cut.heldCheckpoint(null), 1, 'nothing snapshotted yet: held for checkpoint 1');
  cut.onBarrier(0, 3);
  assert.is(cut.heldCheckpoint(null), 4, 'after snapshot 3 new egress belongs to 4');
  assert.is(cut.heldCheckpoint(2), 2, 'a restore of committed checkpoint 2 holds for 2 itself');
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('a2'));
  cut.release(3);
  assert.equal(shard.egressWritten(), [
    [1, 0, 'a0'],
    [1, 1, 'a1'],
    [2, 0, 'b0'],
  ]);
  shard.writes.length = 0;
  cut.release(4);
  assert.equal(shard.egressWritten(), [[1, 2, 'a2']]);
});

test('outcome committed: held egress of checkpoints up to c goes to the main thread in order, later egress stays', () => {
  const { shard, parts, cut } = setup();
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('for 1 (a)'));
  cut.holdEgress(2, 'out', TYPE, 'b', toTypedValue('for 1 (b)'));
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('for 1 (a again)'));
  cut.onBarrier(0, 1);
  cut.holdEgress(1, 'out', TYPE, 'a', toTypedValue('for 2'));
  cut.onBarrier(2, 1);
  assert.is(parts.length, 1);
  shard.writes.length = 0;
  shard.groups.changed.fill(0);
  cut.outcome(1, true);
  assert.equal(shard.egressWritten(), [
    [1, 0, 'for 1 (a)'],
    [1, 1, 'for 1 (a again)'],
    [2, 0, 'for 1 (b)'],
  ]);
  assert.ok(shard.writes.every((write) => write.thread === MAIN_THREAD));
  assert.is(shard.flushes, 1, 'flushed after releasing');
  assert.is(shard.groups.heldEgress, 1);
  assert.equal([...shard.groups.changed], new Array(KEY_GROUPS).fill(0), 'a commit marks nothing changed');
  // Checkpoint 2 commits: the rest goes.
  shard.writes.length = 0;
  cut.onBarrier(0, 2);
  cut.onBarrier(2, 2);
  cut.outcome(2, true);
  assert.equal(shard.egressWritten(), [[1, 2, 'for 2']]);
  assert.is(shard.groups.heldEgress, 0);
});

test('outcome failed: the snapshot\'s key groups count as changed again, held egress stays', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[1] = 1;
  cut.holdEgress(2, 'out', TYPE, 'b', toTypedValue('waits'));
  cut.onBarrier(0, 1);
  cut.onBarrier(2, 1);
  assert.is(parts.length, 1);
  assert.equal([...shard.groups.changed], new Array(KEY_GROUPS).fill(0));
  shard.writes.length = 0;
  cut.outcome(1, false);
  assert.equal([...shard.groups.changed], [0, 1, 1, 0, 0, 0, 0, 0]);
  assert.equal(shard.egressWritten(), [], 'a failed checkpoint releases nothing');
  assert.is(shard.groups.heldEgress, 1);
  // The next checkpoint writes them again and, committed, releases the egress.
  cut.onBarrier(0, 2);
  cut.onBarrier(2, 2);
  assert.equal(parts[1]!.keyGroups.filter(([, bytes]) => bytes !== null).map(([keyGroup]) => keyGroup), [1, 2]);
  cut.outcome(2, true);
  assert.equal(shard.egressWritten(), [[2, 0, 'waits']]);
});

test('outcome failed while the snapshot is open: recording stops, no part, key groups changed again', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[3] = 1;
  cut.onBarrier(0, 1);
  assert.ok(cut.isRecording(2));
  cut.outcome(1, false);
  assert.not.ok(cut.isRecording(2));
  cut.onBarrier(2, 1); // late barrier of the failed checkpoint
  assert.is(parts.length, 0);
  assert.is(shard.groups.changed[3], 1);
});

test('a checkpoint whose outcome never came counts as failed when the next one snapshots', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[0] = 1;
  cut.onBarrier(0, 1);
  cut.onBarrier(2, 1);
  shard.groups.changed[3] = 1;
  cut.onBarrier(2, 2);
  cut.onBarrier(0, 2);
  assert.equal(parts.map((part) => part.keyGroups.filter(([, bytes]) => bytes !== null).map(([keyGroup]) => keyGroup)), [[0], [0, 3]]);
});

test('a newer barrier while one is open supersedes it: one part, for the newer checkpoint', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[1] = 1;
  cut.onBarrier(0, 1);
  cut.record(2, invoke('in flight for 1', 1));
  shard.groups.changed[2] = 1;
  cut.onBarrier(2, 2);
  assert.equal(shard.barriersWritten(), [[0, 1], [2, 1], [0, 2], [2, 2]]);
  cut.onBarrier(0, 2);
  assert.equal(parts.map((part) => part.checkpoint), [2]);
  assert.equal(parts[0]!.keyGroups.filter(([, bytes]) => bytes !== null).map(([keyGroup]) => keyGroup), [1, 2], '1\'s key groups were not committed: written again');
  assert.is(parts[0]!.channel, null, 'what was recorded for 1 is not in 2');
});

test('breakOpen during an open snapshot: the part carries the error; outside a snapshot it does nothing', () => {
  const { parts, cut } = setup();
  cut.breakOpen('nothing open');
  cut.onBarrier(0, 1);
  cut.record(2, invoke('x', 1));
  cut.breakOpen('key group 2 was handed over during the checkpoint');
  cut.onBarrier(2, 1);
  assert.equal(parts, [{ checkpoint: 1, epoch: 1, keyGroups: [], channel: null, error: 'key group 2 was handed over during the checkpoint' }]);
  cut.onBarrier(0, 2);
  cut.onBarrier(2, 2);
  assert.is(parts[1]!.error, null, 'the next checkpoint is whole again');
});

test('a part finished after the epoch changed is dropped', () => {
  const { shard, parts, cut } = setup();
  shard.groups.records.set(1, 0, 'a', 1);
  cut.onBarrier(0, 1);
  shard.epoch = 2;
  cut.onBarrier(2, 1);
  assert.equal(parts, []);
  cut.onBarrier(0, 2);
  cut.onBarrier(2, 2);
  assert.equal(parts.map((part) => [part.checkpoint, part.epoch]), [[2, 2]]);
});

test('a large snapshot encodes in chunks, yielding to pause; an epoch change during a pause drops the part', async () => {
  const big = 'x'.repeat(200 * 1024);
  let pauses = 0;
  let bumpEpoch: (() => void) | null = null;
  const { shard, parts, cut } = setup(async () => {
    pauses++;
    bumpEpoch?.();
    await new Promise((resolve) => setImmediate(resolve));
  });
  for (const keyGroup of [0, 1, 2, 3]) shard.groups.records.set(keyGroup, 0, 'big', big);
  cut.onBarrier(0, 1);
  cut.onBarrier(2, 1);
  assert.is(parts.length, 0, 'the part comes after the pauses');
  await withTimeout((async () => { while (parts.length === 0) await new Promise((resolve) => setImmediate(resolve)); })(), 5000, 'the part of checkpoint 1');
  assert.ok(pauses >= 1, `paused ${pauses} times`);
  assert.equal(parts[0]!.keyGroups.map(([keyGroup, bytes]) => [keyGroup, (bytes as Uint8Array).length > 200 * 1024]), [[0, true], [1, true], [2, true], [3, true]]);

  // Again, with a recovery during the first pause.
  shard.groups.changed.fill(1);
  bumpEpoch = () => (shard.epoch = 7);
  const pausesBefore = pauses;
  cut.onBarrier(0, 2);
  cut.onBarrier(2, 2);
  await withTimeout((async () => { while (pauses === pausesBefore) await new Promise((resolve) => setImmediate(resolve)); })(), 5000, 'a pause');
  for (let turn = 0; turn < 20; turn++) await new Promise((resolve) => setImmediate(resolve));
  assert.is(parts.length, 1, 'the part of checkpoint 2 was dropped');
  assert.is(pauses, pausesBefore + 1, 'encoding stopped at the pause');
});

// ---- recovery ----

test('reset drops the open snapshot and what waits for an outcome; egress is held for checkpoint 1 again', () => {
  const { shard, parts, cut } = setup();
  shard.groups.changed.fill(0);
  shard.groups.changed[1] = 1;
  cut.onBarrier(0, 5);
  cut.onBarrier(2, 5);
  cut.onBarrier(0, 6);
  assert.is(cut.heldCheckpoint(null), 7);
  cut.reset();
  assert.not.ok(cut.isRecording(2), 'the open snapshot is gone');
  assert.is(cut.heldCheckpoint(null), 1);
  shard.groups.changed.fill(0);
  cut.outcome(5, false);
  assert.equal([...shard.groups.changed], new Array(KEY_GROUPS).fill(0), 'a forgotten checkpoint\'s failure marks nothing');
  cut.onBarrier(2, 6); // the old open checkpoint's barrier: begins anew after a reset
  cut.onBarrier(0, 6);
  assert.equal(parts.map((part) => part.checkpoint), [5, 6]);
});

test('restored(c): held egress belongs to c + 1, and the outcome of c + 1 releases it', () => {
  const { shard, cut } = setup();
  cut.reset();
  cut.restored(4);
  assert.is(cut.heldCheckpoint(null), 5);
  assert.is(cut.heldCheckpoint(4), 4);
  cut.holdEgress(2, 'out', TYPE, 'b', toTypedValue('after restore'));
  cut.release(4);
  assert.equal(shard.egressWritten(), [], 'not covered by the restored checkpoint');
  cut.onBarrier(0, 5);
  cut.onBarrier(2, 5);
  cut.outcome(5, true);
  assert.equal(shard.egressWritten(), [[2, 0, 'after restore']]);
  cut.restored(2);
  assert.is(cut.heldCheckpoint(null), 6, 'restored never moves the numbering back');
});

test.run();
