// The main thread's egress logs and their subscribers (node/main/egress-hub.ts), with sinks that record
// the frames they are handed and can refuse more: consecutive ids per egress, where a subscription
// starts, retention by records and by bytes (whole 1 MiB chunks), gap notices to subscribers that lagged
// past retention, flow control (a blocked subscriber keeps its cursor and catches up), pausing, frame
// limits (1,024 records, about 1 MiB) and subscription ids.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Frame, RECORDS_HEADER_BYTES } from '../../../lib/client-protocol.js';
import { ProtocolError } from '../../../lib/errors.js';
import { EgressHub, type EgressSink } from '../../../node/main/egress-hub.js';
import { egressLengthMax, writeEgress } from '../../../lib/envelope.js';
import { toTypedValue } from '../../../lib/typed-value.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface RecordsFrame {
  subscription: number;
  firstId: number;
  records: Buffer[];
  bytes: number;
}

function decodeRecords(frame: Uint8Array): RecordsFrame {
  const view = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  assert.is(view[0], Frame.Records, 'a RECORDS frame');
  const count = view.readUInt32LE(13);
  const records: Buffer[] = [];
  let cursor = RECORDS_HEADER_BYTES;
  for (let index = 0; index < count; index++) {
    const length = view.readUInt32LE(cursor);
    records.push(Buffer.from(view.subarray(cursor + 4, cursor + 4 + length)));
    cursor += 4 + length;
  }
  assert.is(cursor, view.length, 'the frame holds exactly its records');
  return { subscription: view.readUInt32LE(1), firstId: view.readDoubleLE(5), records, bytes: view.length };
}

/** A sink that takes `room` frames (then reports itself not writable) and records what it got. */
class RecordingSink implements EgressSink {
  readonly frames: RecordsFrame[] = [];
  readonly gaps: [number, number, number][] = [];
  constructor(public room = Infinity) {}
  writable(): boolean {
    return this.room > 0;
  }
  sendRecords(frame: Uint8Array): void {
    assert.ok(this.room > 0, 'a frame was sent to a sink that said it was not writable');
    this.room--;
    this.frames.push(decodeRecords(frame));
  }
  sendGap(subscription: number, fromId: number, toId: number): void {
    this.gaps.push([subscription, fromId, toId]);
  }
  /** Record numbers received, in order (each record starts with its number). */
  get numbers(): number[] {
    return this.frames.flatMap((frame) => frame.records.map((record) => record.readUInt32LE(0)));
  }
  /** Ids the frames say they carry, in order. */
  get ids(): number[] {
    return this.frames.flatMap((frame) => frame.records.map((_, index) => frame.firstId + index));
  }
}

/** A record of `size` bytes starting with `number` (u32), the rest filled with number % 251. */
function record(number: number, size = 8): Buffer {
  const bytes = Buffer.alloc(size, number % 251);
  bytes.writeUInt32LE(number, 0);
  return bytes;
}

function appendRange(hub: EgressHub, egress: string, from: number, to: number, size = 8): void {
  for (let number = from; number <= to; number++) {
    const bytes = record(number, size);
    hub.append(egress, bytes, 0, bytes.length);
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, index) => from + index);

test('ids are consecutive per egress from 1; the bytes are copied out of the source; appended counts every record', () => {
  const hub = new EgressHub({ recordsMax: 100, bytesMax: 4 * MiB });
  const source = Buffer.concat([Buffer.from('xx'), record(1), Buffer.from('yy')]);
  hub.append('out', source, 2, 8);
  source.fill(0); // the log holds its own copy
  appendRange(hub, 'out', 2, 3);
  appendRange(hub, 'other', 10, 11);
  assert.equal(hub.describe(), { out: { firstId: 1, nextId: 4 }, other: { firstId: 1, nextId: 3 } });
  assert.is(hub.appended, 5);
  const sink = new RecordingSink();
  hub.subscribe(sink, 7, 'out', -1);
  hub.subscribe(sink, 8, 'other', -1);
  assert.is(hub.pump(), false, 'nobody lags');
  const out = sink.frames.filter((frame) => frame.subscription === 7);
  assert.equal(out.map((frame) => frame.firstId), [1]);
  assert.equal(out[0]!.records.map((bytes) => [...bytes]), [[...record(1)], [...record(2)], [...record(3)]]);
  assert.equal(sink.frames.filter((frame) => frame.subscription === 8).flatMap((frame) => frame.records.map((bytes) => bytes.readUInt32LE(0))), [10, 11]);
});

test('where a subscription starts: new records only, the oldest retained, or after a given id (at most the next one)', () => {
  const hub = new EgressHub({ recordsMax: 100, bytesMax: 4 * MiB });
  appendRange(hub, 'out', 1, 5);
  const fresh = new RecordingSink();
  const oldest = new RecordingSink();
  const resumed = new RecordingSink();
  const ahead = new RecordingSink();
  assert.is(hub.subscribe(fresh, 1, 'out'), 5, 'undefined: starts after the last record');
  assert.is(hub.subscribe(oldest, 1, 'out', -1), 0);
  assert.is(hub.subscribe(resumed, 1, 'out', 3), 3);
  assert.is(hub.subscribe(ahead, 1, 'out', 99), 5, 'an id never given out: clamped to the next one');
  hub.pump();
  assert.equal(fresh.numbers, []);
  assert.equal(oldest.numbers, [1, 2, 3, 4, 5]);
  assert.equal(resumed.numbers, [4, 5]);
  assert.equal(ahead.numbers, []);
  appendRange(hub, 'out', 6, 6);
  hub.pump();
  for (const sink of [fresh, oldest, resumed, ahead]) assert.equal(sink.numbers.at(-1), 6);
  assert.equal(ahead.ids, [6]);
  assert.equal(hub.subscribe(new RecordingSink(), 1, 'unused'), 0, 'a new egress starts empty');
});

test("marks: per source key group, the highest record seq appended (what a subscriber from 'latest' must not be given again elsewhere)", () => {
  const hub = new EgressHub({ recordsMax: 2, bytesMax: 4 * MiB });
  const append = (keyGroup: number, seq: number | null) => {
    const value = toTypedValue(seq ?? 0);
    const bytes = new Uint8Array(egressLengthMax('counts', 'test/counter', 'x', value));
    const length = writeEgress(bytes, 0, keyGroup, 'counts', 'test/counter', 'x', value, seq);
    hub.append('counts', bytes, 0, length);
  };
  append(3, 7);
  append(3, 5); // a repeat released again after a recovery: lower, the mark stays
  append(9, 0);
  append(4, null); // checkpoints off: no stable id, no mark
  append(9, 2);
  assert.equal(hub.marks('counts').sort((a, b) => a[0] - b[0]), [[3, 7], [9, 2]], 'retention (2 records here) does not lower them');
  assert.equal(hub.marks('other'), []);
});

test('subscription ids must fit the u32 of a RECORDS frame', () => {
  const hub = new EgressHub({ recordsMax: 10, bytesMax: MiB });
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN]) {
    try {
      hub.subscribe(new RecordingSink(), bad, 'out');
      assert.unreachable(`subscription id ${bad} was taken`);
    } catch (error) {
      assert.instance(error, ProtocolError);
      assert.is((error as ProtocolError).code, 'SC_ERR_MALFORMED_FRAME');
      assert.match((error as Error).message, 'is not an integer from 0 to 4294967295');
    }
  }
  const sink = new RecordingSink();
  hub.subscribe(sink, 0, 'out');
  hub.subscribe(sink, 2 ** 32 - 1, 'out');
  appendRange(hub, 'out', 1, 1);
  hub.pump();
  assert.equal(sink.frames.map((frame) => frame.subscription).sort(), [0, 2 ** 32 - 1]);
});

test('retention by records: past recordsMax the oldest go; a blocked subscriber that needed them gets gap notices, then the rest', () => {
  const hub = new EgressHub({ recordsMax: 3, bytesMax: 4 * MiB });
  const slow = new RecordingSink(0);
  const fast = new RecordingSink();
  hub.subscribe(slow, 4, 'out', -1);
  hub.subscribe(fast, 5, 'out', -1);
  for (let number = 1; number <= 5; number++) {
    appendRange(hub, 'out', number, number);
    hub.pump();
  }
  assert.equal(hub.describe().out, { firstId: 3, nextId: 6 });
  assert.equal(fast.numbers, [1, 2, 3, 4, 5], 'a subscriber that keeps up loses nothing');
  assert.equal(fast.gaps, []);
  assert.equal(slow.gaps, [[4, 1, 1], [4, 2, 2]], 'records 1 and 2 are gone: each pump tells what went since the last one');
  assert.equal(slow.frames, []);
  slow.room = Infinity;
  assert.is(hub.pump(), false);
  assert.equal(slow.ids, [3, 4, 5]);
  assert.equal(slow.numbers, [3, 4, 5]);
  assert.equal(slow.gaps, [[4, 1, 1], [4, 2, 2]], 'no further notice');
});

test('resuming after an id no longer retained: a gap notice up to the oldest retained, then records from there', () => {
  const hub = new EgressHub({ recordsMax: 4, bytesMax: 4 * MiB });
  appendRange(hub, 'out', 1, 10);
  const sink = new RecordingSink();
  assert.is(hub.subscribe(sink, 1, 'out', 2), 2);
  hub.pump();
  assert.equal(sink.gaps, [[1, 3, 6]]);
  assert.equal(sink.ids, [7, 8, 9, 10]);
});

test('retention by bytes drops whole chunks: a 1 MiB chunk holds three 300 KiB records, and 2 MiB keeps two chunks', () => {
  const size = 300 * KiB;
  const hub = new EgressHub({ recordsMax: 1000, bytesMax: 2 * MiB });
  appendRange(hub, 'out', 1, 6, size);
  assert.equal(hub.describe().out, { firstId: 1, nextId: 7 }, 'two full chunks: within 2 MiB');
  appendRange(hub, 'out', 7, 7, size);
  assert.equal(hub.describe().out, { firstId: 4, nextId: 8 }, 'a third chunk: the first goes with all three of its records');
  appendRange(hub, 'out', 8, 10, size);
  assert.equal(hub.describe().out, { firstId: 7, nextId: 11 });
  const sink = new RecordingSink();
  hub.subscribe(sink, 1, 'out', -1);
  hub.pump();
  assert.equal(sink.numbers, [7, 8, 9, 10]);
  for (const frame of sink.frames) for (const bytes of frame.records) assert.ok(bytes.equals(record(bytes.readUInt32LE(0), size)), 'the bytes survive chunks being dropped in front of them');
});

test('a record larger than a chunk gets a chunk of its own and is delivered whole, alone in its frame', () => {
  const hub = new EgressHub({ recordsMax: 1000, bytesMax: 8 * MiB });
  const sink = new RecordingSink();
  hub.subscribe(sink, 1, 'out');
  appendRange(hub, 'out', 1, 1, 100);
  appendRange(hub, 'out', 2, 2, MiB + 100 * KiB);
  appendRange(hub, 'out', 3, 4, 100);
  hub.pump();
  assert.equal(sink.frames.map((frame) => frame.records.length), [1, 1, 2], 'the big record does not share a frame');
  assert.equal(sink.numbers, [1, 2, 3, 4]);
  assert.ok(sink.frames[1]!.records[0]!.equals(record(2, MiB + 100 * KiB)));
});

test('frames carry at most 1,024 records, and no more than about 1 MiB', () => {
  const hub = new EgressHub({ recordsMax: 10_000, bytesMax: 16 * MiB });
  const small = new RecordingSink();
  hub.subscribe(small, 1, 'small');
  appendRange(hub, 'small', 1, 2500);
  const large = new RecordingSink();
  hub.subscribe(large, 2, 'large');
  appendRange(hub, 'large', 1, 7, 300 * KiB);
  hub.pump();
  assert.equal(small.frames.map((frame) => [frame.firstId, frame.records.length]), [[1, 1024], [1025, 1024], [2049, 452]]);
  assert.equal(small.numbers, range(1, 2500));
  assert.equal(large.frames.map((frame) => [frame.firstId, frame.records.length]), [[1, 3], [4, 3], [7, 1]]);
  for (const frame of large.frames) assert.ok(frame.bytes <= MiB, `a frame of ${frame.bytes} bytes`);
});

test('flow control: a subscriber that cannot take more keeps its cursor, the pump reports the lag, and it catches up without loss or repeats', () => {
  const hub = new EgressHub({ recordsMax: 10_000, bytesMax: 16 * MiB });
  const sink = new RecordingSink(1);
  hub.subscribe(sink, 3, 'out');
  appendRange(hub, 'out', 1, 3000);
  assert.is(hub.pump(), true, 'lagging behind a full connection');
  assert.equal(sink.ids, range(1, 1024), 'one frame, then it waited');
  assert.is(hub.pump(), true, 'still blocked: nothing sent, nothing skipped');
  assert.is(sink.frames.length, 1);
  appendRange(hub, 'out', 3001, 3100);
  sink.room = 1;
  assert.is(hub.pump(), true);
  sink.room = Infinity;
  assert.is(hub.pump(), false);
  assert.equal(sink.ids, range(1, 3100));
  assert.equal(sink.numbers, range(1, 3100));
  assert.equal(sink.gaps, []);
});

test('a paused subscription gets nothing and does not count as lagging; resumed, it catches up', () => {
  const hub = new EgressHub({ recordsMax: 100, bytesMax: MiB });
  const sink = new RecordingSink();
  hub.subscribe(sink, 1, 'out');
  hub.setPaused(sink, 1, true);
  appendRange(hub, 'out', 1, 5);
  assert.is(hub.pump(), false);
  assert.equal(sink.frames, []);
  hub.setPaused(sink, 1, false);
  hub.pump();
  assert.equal(sink.numbers, [1, 2, 3, 4, 5]);
  hub.setPaused(sink, 99, true); // unknown subscription: nothing happens
});

test('unsubscribe and removeSink stop delivery; the same id subscribed again replaces the earlier subscription', () => {
  const hub = new EgressHub({ recordsMax: 100, bytesMax: MiB });
  const sink = new RecordingSink();
  const other = new RecordingSink();
  hub.subscribe(sink, 1, 'a');
  hub.subscribe(sink, 2, 'b');
  hub.subscribe(other, 1, 'a');
  hub.subscribe(sink, 1, 'b'); // replaces subscription 1 on 'a'
  appendRange(hub, 'a', 1, 2);
  appendRange(hub, 'b', 101, 102);
  hub.pump();
  assert.equal(sink.frames.map((frame) => [frame.subscription, frame.records.map((bytes) => bytes.readUInt32LE(0))]).sort(), [[1, [101, 102]], [2, [101, 102]]]);
  assert.equal(other.numbers, [1, 2]);
  hub.unsubscribe(sink, 2);
  hub.unsubscribe(sink, 42); // unknown: nothing happens
  appendRange(hub, 'b', 103, 103);
  hub.pump();
  assert.equal(sink.frames.filter((frame) => frame.subscription === 2).length, 1, 'subscription 2 got nothing more');
  assert.equal(sink.frames.filter((frame) => frame.subscription === 1).at(-1)!.records[0]!.readUInt32LE(0), 103);
  hub.removeSink(other);
  hub.removeSink(other); // twice: nothing happens
  appendRange(hub, 'a', 3, 3);
  hub.pump();
  assert.equal(other.numbers, [1, 2]);
});

test.run();
