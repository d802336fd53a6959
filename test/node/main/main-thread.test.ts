// The main thread's routing without shard threads: real rings (a mailbox layout for the main thread and
// two shards), a real routing table, EgressHub and FunctionTypes, and an unstarted ShardPool. What it
// writes to a shard is read back with an Inbox for that shard's thread; what a shard writes to it goes
// in through an Outbox for that shard's thread. Covers sendLocal, routing, peers' envelopes, what the
// shards send it, discarding, admission, recovery helpers and the checkpoint channels it records.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RECORDS_HEADER_BYTES } from '../../../lib/client-protocol.js';
import { EnvelopeDecoder, EnvelopeKind, readBarrier, writeBarrier, writeEgress, writeInvoke } from '../../../lib/envelope.js';
import { StatecraftError, ValidationError } from '../../../lib/errors.js';
import { keyGroupOf } from '../../../lib/key-group.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { decodeChannelObject } from '../../../node/checkpoint/checkpoint-format.js';
import { Checkpointing } from '../../../node/checkpoint/checkpointing.js';
import type { ClusterHooks } from '../../../node/main/cluster-port.js';
import { EgressHub, type EgressSink } from '../../../node/main/egress-hub.js';
import { FunctionTypes } from '../../../node/main/function-types.js';
import { MainThread } from '../../../node/main/main-thread.js';
import { MiB } from '../../../node/main/options.js';
import { ShardPool } from '../../../node/main/shard-pool.js';
import { Inbox, MAIN_THREAD, Outbox, Stat, ThreadStats, createMailboxLayout, heldAt, type MailboxLayout } from '../../../node/rings/mailbox.js';
import { createMetricsBuffer } from '../../../node/rings/metrics.js';
import { eventually, withTimeout } from '../../helpers.js';
import { FakeCheckpointingHost, tempStore } from '../checkpoint/checkpointing-fakes.js';

const KEY_GROUPS = 16;
const RING_BYTES = 64 * 1024;
const TYPE = 'test/echo';
const TIMEOUT_MS = 10_000;

/** Records a thread's inbox delivers, copied. */
class Collector {
  records: { source: number; bytes: Uint8Array }[] = [];
  visit(data: Uint8Array, offset: number, length: number, source: number): void {
    this.records.push({ source, bytes: data.slice(offset, offset + length) });
  }
}

class FakeCluster implements Partial<ClusterHooks> {
  closed = 0;
  async close(): Promise<void> {
    this.closed++;
  }
  forwarded: { keyGroup: number; bytes: Uint8Array }[] = [];
  egress: { egress: string; bytes: Uint8Array }[] = [];
  admitting = true;
  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    this.forwarded.push({ keyGroup, bytes: bytes.slice(offset, offset + length) });
  }
  onEgress(egress: string, bytes: Uint8Array, offset: number, length: number): void {
    this.egress.push({ egress, bytes: bytes.slice(offset, offset + length) });
  }
  admits(): boolean {
    return this.admitting;
  }
}

const closers: (() => Promise<void>)[] = [];
test.after.each(async () => {
  for (const close of closers.splice(0).reverse()) await withTimeout(close(), TIMEOUT_MS, 'cleanup');
});

function setup(options: { backlogMax?: number } = {}) {
  const layout: MailboxLayout = createMailboxLayout(3, RING_BYTES);
  const routing = new Int32Array(new SharedArrayBuffer(4 * KEY_GROUPS));
  const logs: string[] = [];
  const egress = new EgressHub({ recordsMax: 100, bytesMax: MiB });
  const pool = new ShardPool(2, { log: (line) => logs.push(line), onPart: () => undefined, onFatal: (error) => logs.push(`fatal ${error.message}`) });
  const main = new MainThread(
    {
      layout,
      routing,
      metricsBuffer: createMetricsBuffer(3),
      keyGroups: KEY_GROUPS,
      limits: { valueBytesMax: 1024, idBytesMax: 64, frameBytesMax: 16 * MiB },
      functions: new FunctionTypes(new Set([TYPE]), null),
      egress,
      backlogMax: options.backlogMax ?? 10,
      nodeId: 'n1',
      tokens: null,
      connectionsMax: 10_000,
      log: (line) => logs.push(line),
    },
    pool,
  );
  closers.push(() => main.close());
  main.setRouting(() => true);
  const cluster = new FakeCluster();
  const shards = [1, 2].map((thread) => {
    const collector = new Collector();
    return { thread, collector, inbox: new Inbox(layout, thread, collector), outbox: new Outbox(layout, thread) };
  });
  /** What shard `thread` can read now (published records), removed from its ring. */
  const read = (thread: number) => {
    const shard = shards[thread - 1]!;
    shard.collector.records = [];
    shard.inbox.poll(1 << 30);
    return shard.collector.records;
  };
  /** Shard `thread` writes `bytes` to the main thread and publishes. */
  const fromShard = (thread: number, bytes: Uint8Array) => {
    const outbox = shards[thread - 1]!.outbox;
    outbox.writeBytes(MAIN_THREAD, bytes, 0, bytes.length);
    outbox.flush();
  };
  return { layout, routing, logs, egress, pool, main, cluster, read, fromShard, stats: new ThreadStats(layout) };
}

/** An id whose key group shard `thread` owns (of 2), other than `not`. */
function idOn(thread: number, not: string[] = []): string {
  for (let index = 0; ; index++) {
    const id = `id-${index}`;
    if (!not.includes(id) && 1 + (keyGroupOf(id, KEY_GROUPS) % 2) === thread) return id;
  }
}

/** An invoke envelope for key group `keyGroup`, to an id there named after `name` (its value). */
function invoke(keyGroup: number, name: string, value: unknown = name): Uint8Array {
  const typed = toTypedValue(value);
  const bytes = new Uint8Array(512);
  return bytes.slice(0, writeInvoke(bytes, 0, keyGroup, TYPE, idInGroup(keyGroup, name), null, null, typed));
}

/** `name`, or `name-<n>`, whichever first hashes to `keyGroup` (any name past the last key group). */
function idInGroup(keyGroup: number, name: string): string {
  if (keyGroup >= KEY_GROUPS || keyGroupOf(name, KEY_GROUPS) === keyGroup) return name;
  for (let index = 0; ; index++) if (keyGroupOf(`${name}-${index}`, KEY_GROUPS) === keyGroup) return `${name}-${index}`;
}

function egressRecord(keyGroup: number, value: string, seq: number | null = null): Uint8Array {
  const bytes = new Uint8Array(512);
  return bytes.slice(0, writeEgress(bytes, 0, keyGroup, 'out', TYPE, 'a', toTypedValue(value), seq));
}

function barrier(checkpoint: number): Uint8Array {
  const bytes = new Uint8Array(8);
  writeBarrier(bytes, 0, checkpoint);
  return bytes;
}

function thrown(run: () => void): StatecraftError {
  try {
    run();
  } catch (error) {
    assert.instance(error, StatecraftError, String(error));
    return error as StatecraftError;
  }
  assert.unreachable('nothing thrown');
  throw new Error('unreachable');
}

test('setRouting: owned → its shard, not owned → the main thread, null → left as it is', () => {
  const { main, routing, pool } = setup();
  assert.equal([...routing], Array.from({ length: KEY_GROUPS }, (_, keyGroup) => pool.shardOf(keyGroup)));
  main.setRouting((keyGroup) => (keyGroup < 4 ? false : keyGroup < 8 ? null : true));
  main.setRouting((keyGroup) => (keyGroup === 5 ? false : null));
  assert.equal(
    [...routing],
    Array.from({ length: KEY_GROUPS }, (_, keyGroup) => (keyGroup < 4 || keyGroup === 5 ? MAIN_THREAD : pool.shardOf(keyGroup))),
  );
});

test("setRouting 'held': the key group's messages, from this process and from peers, go to its shard's ring to wait there; none to forward", () => {
  const { main, routing, cluster, read, pool } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  const id = idOn(2);
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  main.setRouting((group) => (group === keyGroup ? 'held' : null));
  assert.is(routing[keyGroup], heldAt(pool.shardOf(keyGroup)));
  assert.ok([...routing].every((entry, group) => group === keyGroup || entry === pool.shardOf(group)), 'the others are left as they were');
  main.sendLocal({ typename: TYPE, id }, 'from here');
  const fromPeer = invoke(keyGroup, id, 'from a peer');
  main.deliverFromPeer(fromPeer, 0, fromPeer.length, 'n2');
  main.flush();
  const decoder = new EnvelopeDecoder();
  assert.equal(read(2).map((record) => decoder.decodeInvoke(record.bytes, 0, record.bytes.length).decoded), ['from here', 'from a peer'], 'in order, at its shard');
  assert.equal(cluster.forwarded, [], 'nothing goes to the cluster layer');
  main.setRouting((group) => (group === keyGroup ? true : null));
  assert.is(routing[keyGroup], pool.shardOf(keyGroup));
});

test('deliverFromPeer refuses an invoke whose header names another key group than its target id hashes to, or that is cut short', () => {
  const { main, cluster, read } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  const id = idOn(1);
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  const wrong = (keyGroup + 2) % KEY_GROUPS; // shard 1's too: it would reach the same thread
  const lying = new Uint8Array(512);
  const end = writeInvoke(lying, 0, wrong, TYPE, id, null, null, toTypedValue('forged'));
  const error = thrown(() => main.deliverFromPeer(lying, 0, end, 'n2'));
  assert.is(error.code, 'SC_ERR_MALFORMED_FRAME');
  assert.is(error.message, `envelope for key group ${wrong}, but its target id is in key group ${keyGroup}`);
  const cut = invoke(keyGroup, id).subarray(0, 12);
  assert.throws(() => main.deliverFromPeer(cut, 0, cut.length, 'n2'), /cut short/);
  main.flush();
  assert.equal(read(1), []);
  assert.equal(cluster.forwarded, []);
});

test("sendLocal writes an invoke envelope into the owning shard's ring, and counts the event", () => {
  const { main, read } = setup();
  const one = idOn(1);
  const two = idOn(2);
  main.sendLocal({ typename: TYPE, id: one }, 'hello');
  main.sendLocal({ typename: TYPE, id: two }, 42);
  const decoder = new EnvelopeDecoder();
  const atOne = read(1);
  const atTwo = read(2);
  assert.is(atOne.length, 1);
  assert.is(atTwo.length, 1);
  assert.is(atOne[0]!.source, MAIN_THREAD);
  const first = decoder.decodeInvoke(atOne[0]!.bytes, 0, atOne[0]!.bytes.length);
  assert.is(first.keyGroup, keyGroupOf(one, KEY_GROUPS));
  assert.is(first.targetTypename, TYPE);
  assert.is(first.targetId, one);
  assert.is(first.decoded, 'hello');
  assert.is(first.callerTypename, null);
  assert.is(first.producer, null);
  const second = decoder.decodeInvoke(atTwo[0]!.bytes, 0, atTwo[0]!.bytes.length);
  assert.is(second.targetId, two);
  assert.is(second.decoded, 42);
  assert.is(main.metricsNow().EventsAccepted, 2);
});

test('sendLocal refuses a bad address, an unknown type and a value over the limit, with typed errors and nothing written', () => {
  const { main, read } = setup();
  const cases: [() => void, string, RegExp][] = [
    [() => main.sendLocal(null as never, 1), 'SC_ERR_INVALID_TYPENAME', /an address must be an object/],
    [() => main.sendLocal({ typename: TYPE, id: '' }, 1), 'SC_ERR_INVALID_ID', /non-empty string/],
    [() => main.sendLocal({ typename: TYPE, id: 'x'.repeat(65) }, 1), 'SC_ERR_INVALID_ID', /the limit is 64 bytes/],
    [() => main.sendLocal({ typename: 'no-namespace', id: 'a' }, 1), 'SC_ERR_INVALID_TYPENAME', /./],
    [() => main.sendLocal({ typename: 'test/other', id: 'a' }, 1), 'SC_ERR_UNKNOWN_FUNCTION_TYPE', /^no function of type test\/other is loaded on this node\.$/],
    [() => main.sendLocal({ typename: TYPE, id: 'a' }, 'x'.repeat(2000)), 'SC_ERR_VALUE_TOO_LARGE', /exceeds the limit of 1024 bytes/],
  ];
  for (const [run, code, message] of cases) {
    const error = thrown(run);
    assert.instance(error, ValidationError);
    assert.is(error.code, code, error.message);
    assert.match(error.message, message);
  }
  assert.equal(read(1), []);
  assert.equal(read(2), []);
  assert.is(main.metricsNow().EventsAccepted, 0);
});

test('sendLocal for a key group routed to the main thread goes to cluster.forward, not to a ring', () => {
  const { main, cluster, read } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  const id = idOn(1);
  const keyGroup = keyGroupOf(id, KEY_GROUPS);
  main.setRouting((group) => group !== keyGroup);
  main.sendLocal({ typename: TYPE, id }, 'away');
  assert.is(cluster.forwarded.length, 1);
  assert.is(cluster.forwarded[0]!.keyGroup, keyGroup);
  const message = new EnvelopeDecoder().decodeInvoke(cluster.forwarded[0]!.bytes, 0, cluster.forwarded[0]!.bytes.length);
  assert.is(message.targetId, id);
  assert.is(message.decoded, 'away');
  assert.equal(read(1), []);
  assert.equal(read(2), []);
});

test("deliverFromPeer: invokes go to their shard's ring (published on flush) or to forward; egress to the hub and its subscribers", () => {
  const { main, cluster, read, egress } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  main.setRouting((keyGroup) => keyGroup !== 3);
  const toShard = invoke(4, 'four');
  main.deliverFromPeer(toShard, 0, toShard.length, 'n2');
  assert.equal(read(1), [], 'not published before flush');
  main.flush();
  assert.equal(read(1).map((record) => [...record.bytes]), [[...toShard]], 'key group 4 → shard 1');
  // At an offset inside a larger frame.
  const away = invoke(3, 'three');
  const frame = new Uint8Array(100 + away.length + 50);
  frame.set(away, 100);
  main.deliverFromPeer(frame, 100, away.length, 'n2');
  assert.equal(cluster.forwarded.map((record) => [record.keyGroup, [...record.bytes]]), [[3, [...away]]]);
  assert.equal(read(2), []);

  const records: Uint8Array[] = [];
  const sink: EgressSink = { writable: () => true, sendRecords: (bytes) => records.push(bytes.slice()), sendGap: () => undefined };
  egress.subscribe(sink, 1, 'out');
  const record = egressRecord(5, 'out-1', 1);
  main.deliverFromPeer(record, 0, record.length, 'n2');
  assert.equal(egress.describe(), { out: { firstId: 1, nextId: 2 } });
  assert.is(records.length, 1, 'pushed to the subscriber at once');
  const length = new DataView(records[0]!.buffer, records[0]!.byteOffset).getUint32(RECORDS_HEADER_BYTES, true);
  assert.equal([...records[0]!.subarray(RECORDS_HEADER_BYTES + 4, RECORDS_HEADER_BYTES + 4 + length)], [...record]);
  assert.equal(cluster.egress, [], "a peer's egress is not offered back to the cluster");
});

test('deliverFromPeer refuses an unknown kind or a key group out of range (SC_ERR_MALFORMED_FRAME); drops an oversize envelope with a log line', () => {
  const { main, cluster, read, logs } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  const handover = invoke(1, 'x');
  handover[0] = EnvelopeKind.Handover;
  const unknown = thrown(() => main.deliverFromPeer(handover, 0, handover.length, 'n2'));
  assert.is(unknown.code, 'SC_ERR_MALFORMED_FRAME');
  assert.is(unknown.message, 'envelope of unknown kind 3');
  const outOfRange = invoke(KEY_GROUPS, 'x');
  const range = thrown(() => main.deliverFromPeer(outOfRange, 0, outOfRange.length, 'n2'));
  assert.is(range.code, 'SC_ERR_MALFORMED_FRAME');
  assert.is(range.message, `envelope for key group ${KEY_GROUPS}, but the cluster has ${KEY_GROUPS}`);
  // Larger than a ring takes (64 KiB rings: records of up to 32 KiB - 8).
  const huge = new Uint8Array(40_000);
  huge.set(invoke(1, 'x'));
  main.deliverFromPeer(huge, 0, huge.length, 'n2');
  assert.equal(logs, ["main: dropped an envelope of 40000 bytes from a peer: larger than this node's rings take (32760)"]);
  main.flush();
  assert.equal(read(1), []);
  assert.equal(read(2), []);
  assert.equal(cluster.forwarded, []);
});

test("a shard's records reach visit(): egress appended and offered to the cluster, invokes routed on, unknown kinds logged", () => {
  const { main, cluster, read, fromShard, egress, logs } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  main.setRouting((keyGroup) => keyGroup !== 6);
  const record = egressRecord(2, 'from-shard', 7);
  fromShard(1, record);
  const away = invoke(6, 'six');
  fromShard(1, away);
  const moved = invoke(5, 'five'); // key group 5 is shard 2's: shard 1 sent it to the main thread
  fromShard(1, moved);
  const odd = invoke(2, 'odd');
  odd[0] = 9;
  fromShard(2, odd);
  main.drainInputs();
  assert.equal(egress.describe(), { out: { firstId: 1, nextId: 2 } });
  assert.equal(cluster.egress.map((entry) => [entry.egress, [...entry.bytes]]), [['out', [...record]]]);
  assert.equal(cluster.forwarded.map((entry) => [entry.keyGroup, [...entry.bytes]]), [[6, [...away]]]);
  main.flush();
  assert.equal(read(2).map((entry) => [entry.source, [...entry.bytes]]), [[MAIN_THREAD, [...moved]]]);
  assert.equal(logs, ['main: ignored an envelope of kind 9 from a shard']);
});

test('while discarding, what the shards send is dropped (and consumed)', () => {
  const { main, cluster, fromShard, egress, read } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  main.setRouting(() => false);
  main.discarding = true;
  fromShard(1, egressRecord(2, 'stale'));
  fromShard(2, invoke(3, 'stale'));
  main.drainInputs();
  main.discarding = false;
  main.drainInputs();
  main.flush();
  assert.equal(egress.describe(), {});
  assert.equal(cluster.egress, []);
  assert.equal(cluster.forwarded, []);
  assert.equal(read(1), []);
  assert.equal(read(2), []);
});

test('admits(): false when the cluster says no, at backlogMax (queued in shards or still in the rings), with overflow, and while closing', async () => {
  const { main, cluster, stats } = setup({ backlogMax: 10 });
  assert.is(main.admits(), true);
  main.cluster = cluster as unknown as ClusterHooks;
  cluster.admitting = false;
  assert.is(main.admits(), false, 'the cluster says no');
  cluster.admitting = true;
  assert.is(main.admits(), true);
  stats.set(1, Stat.Backlog, 6);
  stats.set(2, Stat.Backlog, 4);
  assert.is(main.admits(), false, 'shards hold 10 messages');
  stats.set(2, Stat.Backlog, 3);
  assert.is(main.admits(), true, '9 < 10');
  main.sendLocal({ typename: TYPE, id: idOn(1) }, 1);
  assert.is(main.admits(), false, 'one more in a ring counts');
  stats.set(1, Stat.IngressReceived, 1); // the shard took it from its ring
  assert.is(main.admits(), true);
  stats.set(1, Stat.OverflowBytes, 16 * MiB);
  assert.is(main.admits(), false, "a shard's overflow queues are full");
  stats.set(1, Stat.OverflowBytes, 0);
  assert.is(main.admits(), true);
  await withTimeout(main.close(), TIMEOUT_MS, 'close');
  assert.is(main.closing, true);
  assert.is(main.admits(), false, 'closing');
});

test("admits() is false while the main thread's own ring to a shard overflows", () => {
  const { main, read } = setup({ backlogMax: 1_000_000 });
  const id = idOn(1);
  let sent = 0;
  // 64 KiB ring, values of 1000 bytes: it fills after about 60.
  while (main.admits()) {
    main.sendLocal({ typename: TYPE, id }, 'v'.repeat(1000));
    sent++;
    assert.ok(sent < 1000, 'the ring never filled');
  }
  const first = read(1).length;
  assert.ok(first > 0 && first < sent, `${first} of ${sent} in the ring, the rest waiting`);
  main.flush(); // the waiting records move into the ring now that it has room
  assert.is(main.admits(), true);
  assert.is(first + read(1).length, sent, 'nothing lost');
});

test('writeBarrierToShards writes the barrier into every shard ring and publishes; replay writes recorded messages to their shards', () => {
  const { main, read } = setup();
  main.writeBarrierToShards(7);
  for (const thread of [1, 2]) {
    const records = read(thread);
    assert.is(records.length, 1);
    assert.is(records[0]!.bytes[0], EnvelopeKind.Barrier);
    assert.is(readBarrier(records[0]!.bytes, 0), 7);
  }
  const messages = [invoke(0, 'a'), invoke(1, 'b'), invoke(2, 'c')];
  main.replay(messages);
  assert.equal(read(1).map((record) => [...record.bytes]), [[...messages[0]!], [...messages[2]!]]);
  assert.equal(read(2).map((record) => [...record.bytes]), [[...messages[1]!]]);
});

test("while a checkpoint is open, the main thread records invokes on each input channel until that channel's barrier", async () => {
  const temp = await tempStore();
  closers.push(temp.remove);
  const { main, cluster, fromShard } = setup();
  main.cluster = cluster as unknown as ClusterHooks;
  main.setRouting((keyGroup) => keyGroup !== 6);
  const host = new FakeCheckpointingHost('n1');
  host.writeBarrierToShards = (checkpoint) => main.writeBarrierToShards(checkpoint);
  const checkpointing = new Checkpointing(host, { store: temp.store, intervalMs: 1000, retain: 3, ackTimeoutMs: 1000 }, 'n1-main');
  main.checkpointing = checkpointing;
  checkpointing.participant.setPeers(['n2']);
  assert.ok(checkpointing.participant.start(1));
  const fromPeer = invoke(4, 'peer-before');
  main.deliverFromPeer(fromPeer, 0, fromPeer.length, 'n2');
  const held = invoke(4, 'held'); // delivered later by the cluster layer: not a channel
  main.deliverFromPeer(held, 0, held.length, null);
  const fromOne = invoke(6, 'shard-1-before');
  fromShard(1, fromOne);
  fromShard(1, barrier(1));
  fromShard(1, invoke(6, 'shard-1-after'));
  main.drainInputs();
  main.deliverFromPeer(barrier(1), 0, 8, 'n2');
  main.deliverFromPeer(invoke(4, 'peer-after'), 0, invoke(4, 'peer-after').length, 'n2');
  assert.equal(await temp.store.list('checkpoints/'), [], 'not complete: shard 2 has not sent its barrier');
  fromShard(2, barrier(1));
  main.drainInputs();
  await eventually(async () => (await temp.store.list('checkpoints/1/')).length === 1, "the main thread's channel object", TIMEOUT_MS);
  const [key] = await temp.store.list('checkpoints/1/');
  assert.match(key!, /^checkpoints\/1\/ch-n1-main-t0-g0\.bin$/);
  const recorded = decodeChannelObject((await temp.store.get(key!))!).map((message) => new EnvelopeDecoder().decodeInvoke(message, 0, message.length).decoded as string);
  assert.equal(recorded.sort(), ['peer-before', 'shard-1-before']);
  assert.is(cluster.forwarded.length, 2, 'recorded messages are routed as usual');
});

test.run();
