// A node's part in checkpoints (node/checkpoint/checkpoint-participant.ts) on its own: a fake host
// records what the participant asks of the main thread, and a real FileBlobStore takes the main thread's
// channel object. Starts and barriers from shard threads and peers, recording until each input's
// barrier, the upload and the combined ack once every shard reported, failures (a shard's, the node
// blocked, the upload), outcomes, setPeers and reset.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeDecoder, invokeLengthMax, writeInvoke } from '../../../lib/envelope.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { channelObjectKey, decodeChannelObject } from '../../../node/checkpoint/checkpoint-format.js';
import { CheckpointParticipant, type ParticipantHost } from '../../../node/checkpoint/checkpoint-participant.js';
import { eventually, sleep, withTimeout } from '../../helpers.js';
import { GatedStore, tempStore } from './checkpointing-fakes.js';
import { ScriptedStore } from './scripted-store.js';

const TIMEOUT_MS = 5000;
const TAG = 'n1-abc';

class FakeParticipantHost implements ParticipantHost {
  readonly shards = 2;
  blockedReason: string | null = null;
  /** `mark c`, `shards c`, `peers c`, in the order asked. */
  readonly events: string[] = [];
  readonly acks: { checkpoint: number; objects: [number, string | null][]; channels: string[] }[] = [];
  readonly failures: [number, string][] = [];
  readonly logs: string[] = [];

  writeBarrierToShards(checkpoint: number): void {
    this.events.push(`shards ${checkpoint}`);
  }
  writeBarrierToPeers(checkpoint: number): void {
    this.events.push(`peers ${checkpoint}`);
  }
  blocked(): string | null {
    return this.blockedReason;
  }
  markEvents(checkpoint: number): void {
    this.events.push(`mark ${checkpoint}`);
  }
  acknowledge(checkpoint: number, objects: Map<number, string | null>, channels: string[]): void {
    this.acks.push({ checkpoint, objects: [...objects].sort((a, b) => a[0] - b[0]), channels });
  }
  failed(checkpoint: number, reason: string): void {
    this.failures.push([checkpoint, reason]);
  }
  log(line: string): void {
    this.logs.push(line);
  }
}

const cleanups: (() => Promise<void>)[] = [];

test.after.each(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await withTimeout(cleanup(), TIMEOUT_MS, 'cleanup');
});

async function setup(options: { lastCheckpoint?: number; gated?: boolean } = {}) {
  const temp = await tempStore();
  cleanups.push(temp.remove);
  const store = new ScriptedStore(temp.store);
  const gated = new GatedStore(store);
  const host = new FakeParticipantHost();
  const participant = new CheckpointParticipant(host, options.gated ? gated : store, TAG, options.lastCheckpoint ?? 0);
  return { host, participant, store, gated, raw: temp.store };
}

const bytes = (...values: number[]) => new Uint8Array(values);

/** Shard `thread`'s part: it owns key groups thread - 1 and thread + 1 (of 4). */
function shardPart(participant: CheckpointParticipant, thread: 1 | 2, checkpoint: number, options: { epoch?: number; channel?: string | null; error?: string | null } = {}): void {
  const objects: [number, string | null][] = [
    [thread - 1, `checkpoints/${checkpoint}/seg-s${thread}.bin#0+4`],
    [thread + 1, null],
  ];
  const channel = options.channel === undefined ? (thread === 1 ? `checkpoints/${checkpoint}/ch-s1.bin` : null) : options.channel;
  participant.onShardPart(thread, checkpoint, options.epoch ?? 0, objects, channel, options.error ?? null);
}

async function settled(host: FakeParticipantHost, count = 1): Promise<void> {
  await eventually(() => host.acks.length + host.failures.length >= count, `${count} ack(s) or failure(s) (acks ${JSON.stringify(host.acks)}, failures ${JSON.stringify(host.failures)})`, TIMEOUT_MS);
}

test("the coordinator's start: client events marked, barriers to shards and peers, every shard's ring recorded; a repeated or old start is refused", async () => {
  const { host, participant } = await setup({ lastCheckpoint: 4 });
  assert.is(participant.recording(1), false, 'nothing recorded before a checkpoint');
  assert.is(participant.start(4), false, 'numbers up to lastCheckpoint are old');
  assert.equal(host.events, []);
  assert.is(participant.start(5), true);
  assert.equal(host.events, ['mark 5', 'shards 5', 'peers 5'], 'events marked first, then the barriers');
  assert.is(participant.recording(1), true);
  assert.is(participant.recording(2), true);
  assert.is(participant.start(5), false, 'started already');
  assert.is(participant.newestCheckpoint, 5);
  assert.is(participant.highestCheckpoint, 5);
  participant.onBarrier(1, 5);
  assert.is(participant.recording(1), false, "shard 1's barrier ends its recording");
  assert.is(participant.recording(2), true);
  assert.equal(host.events, ['mark 5', 'shards 5', 'peers 5'], 'barriers are written once');
});

/** An invoke envelope carrying `value` (what channels record), and the value back out of one. */
function envelope(value: number): Uint8Array {
  const typed = toTypedValue(value);
  const buffer = new Uint8Array(invokeLengthMax('test/sink', `id-${value}`, null, null, typed));
  return buffer.subarray(0, writeInvoke(buffer, 0, 0, 'test/sink', `id-${value}`, null, null, typed));
}
const decoder = new EnvelopeDecoder();
const valuesOf = (messages: Uint8Array[]) => messages.map((message) => decoder.decodeInvoke(message, 0, message.length).asInt());

test("messages in flight are copied into the main thread's channel object; the ack combines it with every shard's part", async () => {
  const { host, participant, raw, store } = await setup();
  participant.start(1);
  const first = envelope(123);
  const source = new Uint8Array(first.length + 2).fill(9);
  source.set(first, 1);
  participant.record(2, source, 1, first.length);
  source.fill(0); // the participant copied the slice
  participant.record(1, envelope(45), 0, envelope(45).length);
  participant.record(2, envelope(6), 0, envelope(6).length);
  participant.onBarrier(1, 1);
  participant.record(1, envelope(7), 0, envelope(7).length); // after shard 1's barrier: belongs to checkpoint 2, not recorded
  shardPart(participant, 1, 1);
  participant.onBarrier(2, 1);
  await sleep(50);
  assert.equal(host.acks, [], 'no ack before every shard reported');
  shardPart(participant, 2, 1);
  await settled(host);
  const channel = channelObjectKey(1, `${TAG}-t0-g0`);
  assert.is(channel, 'checkpoints/1/ch-n1-abc-t0-g0.bin');
  assert.equal(host.acks, [
    {
      checkpoint: 1,
      objects: [
        [0, 'checkpoints/1/seg-s1.bin#0+4'],
        [1, 'checkpoints/1/seg-s2.bin#0+4'],
        [2, null],
        [3, null],
      ],
      channels: [channel, 'checkpoints/1/ch-s1.bin'],
    },
  ]);
  assert.equal(host.failures, []);
  assert.equal(store.puts, [channel]);
  const recorded = valuesOf(decodeChannelObject((await raw.get(channel))!));
  assert.equal(recorded, [123, 6, 45], "each channel's messages in arrival order, channel by channel");
});

test('nothing recorded: no channel object is written, and the ack lists only the shards\' channels', async () => {
  const { host, participant, store } = await setup();
  participant.start(1);
  shardPart(participant, 2, 1); // a shard part may arrive before the main thread's barriers
  participant.onBarrier(2, 1);
  participant.onBarrier(1, 1);
  shardPart(participant, 1, 1);
  await settled(host);
  assert.equal(store.puts, []);
  assert.equal(host.acks[0]!.channels, ['checkpoints/1/ch-s1.bin']);
});

test("a shard's failure fails the node's part once every shard reported, naming the first shard that failed", async () => {
  const { host, participant } = await setup();
  participant.start(1);
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 2, 1, { error: 'key group 3 was handed over' });
  shardPart(participant, 1, 1, { error: 'out of memory' });
  await settled(host);
  await sleep(30);
  assert.equal(host.failures, [[1, 'shard 2: key group 3 was handed over']]);
  assert.equal(host.acks, []);
});

test('a node that is blocked at the snapshot still writes its barriers, then fails its part with the reason once the shards reported', async () => {
  const { host, participant } = await setup();
  host.blockedReason = 'key groups 3, 7 are on the move';
  participant.start(1);
  assert.equal(host.events, ['mark 1', 'shards 1', 'peers 1'], 'the barriers go out so the shards can finish the cut');
  host.blockedReason = null; // the reason counts as of the snapshot
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1);
  await sleep(30);
  assert.equal(host.failures, [], 'not before every shard reported');
  shardPart(participant, 2, 1);
  await settled(host);
  assert.equal(host.failures, [[1, 'key groups 3, 7 are on the move']]);
  assert.equal(host.acks, []);
});

test("a failed upload of the main thread's channel object fails the part with the store's error", async () => {
  const { host, participant, store } = await setup();
  participant.start(1);
  participant.record(1, bytes(1), 0, 1);
  store.failNextPut(channelObjectKey(1, `${TAG}-t0-g0`), 'EACCES: permission denied');
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await settled(host);
  assert.equal(host.failures, [[1, 'upload failed: EACCES: permission denied']]);
  assert.equal(host.acks, []);
});

test('shard parts of another recovery epoch, or of a checkpoint not open here, are ignored', async () => {
  const { host, participant } = await setup();
  shardPart(participant, 1, 1); // before any start
  participant.start(1);
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1, { epoch: 3 });
  shardPart(participant, 2, 1, { epoch: 3 });
  await sleep(50);
  assert.equal(host.acks, [], 'parts of epoch 3 do not count in epoch 0');
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await settled(host);
  assert.is(host.acks.length, 1);
});

test("peers' links are inputs too: recorded until each peer's barrier; a barrier from a peer outside the view is ignored", async () => {
  const { host, participant, raw } = await setup();
  participant.setPeers(['n2', 'n3']);
  participant.start(1);
  assert.is(participant.recording('peer:n2'), true);
  assert.is(participant.recording('peer:n3'), true);
  participant.record('peer:n3', envelope(3), 0, envelope(3).length);
  participant.onBarrier('peer:n9', 1); // not in the view
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  participant.onBarrier('peer:n2', 1);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await sleep(50);
  assert.equal(host.acks, [], "waits for n3's barrier");
  participant.record('peer:n3', envelope(33), 0, envelope(33).length);
  participant.onBarrier('peer:n3', 1);
  await settled(host);
  const channel = host.acks[0]!.channels[0]!;
  assert.equal(valuesOf(decodeChannelObject((await raw.get(channel))!)), [3, 33]);
});

test("a peer's barrier before the coordinator's start begins the checkpoint; that link records nothing, and the start is then refused", async () => {
  const { host, participant } = await setup();
  participant.setPeers(['n2']);
  participant.onBarrier('peer:n2', 1);
  assert.equal(host.events, ['mark 1', 'shards 1', 'peers 1']);
  assert.is(participant.recording('peer:n2'), false, 'what follows the barrier on that link belongs to checkpoint 2');
  assert.is(participant.recording(1), true);
  assert.is(participant.start(1), false);
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await settled(host);
  assert.is(host.acks[0]!.checkpoint, 1);
});

test('a failed outcome stops the recording and drops the part: late shard parts send nothing; a later barrier of that number begins nothing', async () => {
  const { host, participant } = await setup();
  participant.start(1);
  participant.onBarrier(1, 1);
  participant.outcome(1, false);
  assert.is(participant.recording(2), false);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  participant.onBarrier(2, 1);
  await sleep(50);
  assert.equal(host.acks, []);
  assert.equal(host.failures, []);
  // A checkpoint failed before it began here: its barriers arriving later are old.
  participant.outcome(2, false);
  participant.onBarrier(1, 2);
  assert.equal(host.events, ['mark 1', 'shards 1', 'peers 1']);
  assert.is(participant.start(3), true);
});

test('after a committed outcome a repeated shard part sends no second ack', async () => {
  const { host, participant } = await setup();
  participant.start(1);
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await settled(host);
  participant.outcome(1, true);
  shardPart(participant, 2, 1);
  await sleep(30);
  assert.is(host.acks.length, 1);
});

test('a part dropped while its channel object uploads reports nothing when the upload lands', async () => {
  const { host, participant, gated } = await setup({ gated: true });
  const channel = channelObjectKey(1, `${TAG}-t0-g0`);
  gated.hold(channel);
  participant.start(1);
  participant.record(1, bytes(1), 0, 1);
  participant.onBarrier(1, 1);
  participant.onBarrier(2, 1);
  shardPart(participant, 1, 1);
  shardPart(participant, 2, 1);
  await eventually(() => gated.waiting === 1, 'the upload held', TIMEOUT_MS);
  participant.outcome(1, false);
  gated.release();
  await eventually(async () => await gated.exists(channel), 'the upload landed', TIMEOUT_MS);
  await sleep(30);
  assert.equal(host.acks, []);
  assert.equal(host.failures, []);
});

test('reset: the open part is dropped silently, uploads get the new epoch in their name, numbers restart above the restored one', async () => {
  const { host, participant, store } = await setup();
  participant.start(6);
  participant.record(1, bytes(1), 0, 1);
  participant.reset(4, 3);
  assert.is(participant.recording(1), false);
  assert.is(participant.newestCheckpoint, 4);
  assert.is(participant.highestCheckpoint, 6, 'the highest number seen survives the reset');
  assert.is(participant.start(4), false, 'the restored checkpoint is old');
  assert.is(participant.start(5), true, 'numbers above the restored one may be reused by the new coordinator');
  participant.record(2, bytes(2), 0, 1);
  participant.onBarrier(1, 5);
  participant.onBarrier(2, 5);
  shardPart(participant, 1, 5); // epoch 0: from before the recovery
  shardPart(participant, 2, 5);
  await sleep(50);
  assert.equal(host.acks, []);
  shardPart(participant, 1, 5, { epoch: 3 });
  shardPart(participant, 2, 5, { epoch: 3 });
  await settled(host);
  assert.equal(host.failures, []);
  assert.equal(store.puts, ['checkpoints/5/ch-n1-abc-t0-g3.bin']);
  assert.is(host.acks[0]!.channels[0], 'checkpoints/5/ch-n1-abc-t0-g3.bin');
});

test('setPeers with the same peers keeps the open checkpoint; new peers drop it but keep its number used', async () => {
  const { host, participant } = await setup();
  participant.setPeers(['n2', 'n3']);
  participant.start(1);
  participant.setPeers(['n3', 'n2']);
  assert.is(participant.recording('peer:n2'), true, 'same peers in another order: nothing changes');
  participant.setPeers(['n2']);
  assert.is(participant.recording(1), false, 'the open checkpoint is dropped (the view change fails it)');
  assert.is(participant.start(1), false, 'its number stays used');
  assert.is(participant.start(2), true);
  assert.is(participant.recording('peer:n2'), true);
  assert.throws(() => participant.recording('peer:n3') || participant.record('peer:n3', bytes(1), 0, 1), /unknown input channel peer:n3/);
  participant.onBarrier(1, 2);
  participant.onBarrier(2, 2);
  participant.onBarrier('peer:n2', 2);
  shardPart(participant, 1, 2);
  shardPart(participant, 2, 2);
  await settled(host);
  assert.is(host.acks[0]!.checkpoint, 2);
  assert.equal(host.failures, [], 'a dropped checkpoint is not reported failed by the participant');
});

test('a barrier on a shard thread the node does not have is a bug and throws', async () => {
  const { participant } = await setup();
  assert.throws(() => participant.onBarrier(3, 1), /unknown input channel 3/);
});

test.run();
