// Key groups arriving at and leaving a shard (node/shard/key-group-moves.ts), with real shards driven
// in this thread: two Shards on one mailbox layout (threads 1 and 2; thread 0 stands for the main
// thread, read with an Inbox), their turns run by hand. A hand-over waits for the invocation running
// in its key group, then carries state, delayed messages, producer marks and every waiting message (in
// order: behind the invocation, in the input rings, sent locally) to the other shard, which runs them;
// a recovery resets both phases; a restore loads an image, releases its committed egress at once and
// runs its queued messages only at resume. A held key group (its node has no majority) keeps what
// reaches it at its shard, in order, and runs it first when it runs again; a snapshot, a release and a
// reset treat those messages like the ones waiting for a busy instance.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeDecoder, EnvelopeKind, invokeLengthMax, writeInvoke } from '../../../lib/envelope.js';
import { defineFunction, Types } from '../../../lib/index.js';
import { keyGroupOf } from '../../../lib/key-group.js';
import { Message } from '../../../lib/message.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { decodeImage, encodeImage, IMAGE_VERSION } from '../../../node/keygroups/key-group-image.js';
import { Inbox, MAIN_THREAD, Outbox, createMailboxLayout, heldAt, leavingFrom } from '../../../node/rings/mailbox.js';
import { createMetricsBuffer } from '../../../node/rings/metrics.js';
import { Shard } from '../../../node/shard/shard.js';
import { withTimeout } from '../../helpers.js';

const KEY_GROUPS = 8;
const TIMEOUT_MS = 5000;

/** Gates the async handler: each message waits for the test to open its gate. */
const gates = new Map<string, () => void>();
const gate = (name: string) => new Promise<void>((resolve) => gates.set(name, resolve));
const open = (name: string) => {
  const resolve = gates.get(name);
  assert.ok(resolve, `gate ${name} is waiting`);
  gates.delete(name);
  resolve();
};

/** Appends each string to its list; "wait:<name>" first waits for that gate; "later" also schedules a delayed message. */
const list = defineFunction({
  typename: 'test/list',
  specs: [{ name: 'items', type: Types.json<string[]>('test/items') }],
  async fn(context, message) {
    const text = message.asString();
    if (text.startsWith('wait:')) await gate(text.slice(5));
    context.storage.items = [...(context.storage.items ?? []), text];
    if (text === 'later') context.sendAfter(60_000, { typename: 'test/list', id: context.self.id }, 'from the timer', 'token');
    context.egress('items', text);
  },
});

function pair(checkpoints = false) {
  const layout = createMailboxLayout(3, 64 * 1024);
  const routing = new SharedArrayBuffer(4 * KEY_GROUPS);
  new Int32Array(routing).fill(1); // shard 1 owns everything at first
  const metrics = createMetricsBuffer(3);
  const parts: unknown[] = [];
  const make = (thread: number) =>
    new Shard({
      thread,
      layout,
      routing,
      metrics,
      keyGroups: KEY_GROUPS,
      limits: { valueBytesMax: 1024 * 1024, idBytesMax: 1024 },
      definitions: [list],
      log: () => undefined,
      ...(checkpoints ? { onCheckpointPart: (part: unknown) => parts.push(part) } : {}),
    });
  const main: { kind: number; bytes: Uint8Array }[] = [];
  const mainInbox = new Inbox(layout, MAIN_THREAD, { visit: (data, offset, length) => main.push({ kind: data[offset]!, bytes: data.slice(offset, offset + length) }) });
  return { a: make(1), b: make(2), table: new Int32Array(routing), mainOutbox: new Outbox(layout, MAIN_THREAD), main, mainInbox, layout };
}

/** An id whose key group is `keyGroup` (ids hash to key groups). */
function idIn(keyGroup: number, prefix = 'x'): string {
  for (let index = 0; ; index++) if (keyGroupOf(`${prefix}${index}`, KEY_GROUPS) === keyGroup) return `${prefix}${index}`;
}

const message = (id: string, text: string, producer: { session: string; seq: number } | null = null) => {
  const value = toTypedValue(text);
  return new Message(keyGroupOf(id, KEY_GROUPS), 'test/list', id, null, null, value.typename, value.value, value.bytes, producer);
};

/** The instance's list, as its record holds it (a single JSON value: its bytes). */
const items = (shard: Shard, id: string): string[] | undefined => {
  const record = shard.groups.records.get(keyGroupOf(id, KEY_GROUPS), shard.groups.indexOf('test/list')!, id) as Uint8Array | undefined;
  return record === undefined ? undefined : (JSON.parse(new TextDecoder().decode(record)) as string[]);
};

const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Writes a message for `id` into thread `to`'s ring from `outbox` and publishes it. */
function send(outbox: Outbox, to: number, id: string, text: string, producer: { session: string; seq: number } | null = null): void {
  const value = toTypedValue(text);
  const envelope = new Uint8Array(invokeLengthMax('test/list', id, null, null, value, producer));
  outbox.writeBytes(to, envelope, 0, writeInvoke(envelope, 0, keyGroupOf(id, KEY_GROUPS), 'test/list', id, null, null, value, producer));
  outbox.flush();
}

const texts = (envelopes: readonly Uint8Array[]) => envelopes.map((bytes) => new EnvelopeDecoder().decodeInvoke(bytes, 0, bytes.length).asString());

test('a held key group: what reaches it from the main thread, another shard and its own shard waits there in order, past the producer check; run again, it goes first', async () => {
  const { a, b, table, mainOutbox, main, mainInbox } = pair();
  const keyGroup = 3;
  const id = idIn(keyGroup);
  table[keyGroup] = heldAt(1);
  send(mainOutbox, 1, id, 'client', { session: 's1', seq: 1 });
  send(mainOutbox, 1, id, 'client again', { session: 's1', seq: 1 }); // a re-send of the same event
  a.turn();
  b.forward(message(id, 'from shard 2')); // routed by the table: to shard 1, where it waits
  b.flush();
  a.turn();
  a.forward(message(id, 'from itself'));
  a.turn();
  a.turn();
  await settle();
  assert.is(items(a, id), undefined, 'nothing of a held key group runs');
  assert.is(a.held.count, 3, 'the re-sent event was dropped on arrival');
  assert.ok(a.owns(keyGroup), 'still this shard’s (a snapshot takes it)');
  mainInbox.poll(100);
  assert.equal(main, [], 'nothing goes back to the main thread');
  table[keyGroup] = 1; // runs again; a newer message is in the ring already
  send(mainOutbox, 1, id, 'newer');
  a.turn();
  await settle();
  assert.equal(items(a, id), ['client', 'from shard 2', 'from itself', 'newer'], 'the held messages ran first, in order');
  assert.is(a.held.count, 0);
});

test('held messages belong to their key group: a snapshot lists them after those behind a busy instance, a release carries them ahead of the rings, a reset drops them', async () => {
  const { a, table, mainOutbox } = pair(true);
  const keyGroup = 3;
  const id = idIn(keyGroup);
  a.deliver(message(id, 'wait:busy')); // running, gated
  a.deliver(message(id, 'behind'));
  table[keyGroup] = heldAt(1);
  send(mainOutbox, 1, id, 'held', { session: 's1', seq: 7 });
  a.turn();
  assert.is(a.held.count, 1);
  const images = a.groups.peek([keyGroup], 0);
  a.addWaiting(images);
  assert.equal(texts(images.get(keyGroup)!.queued), ['wait:busy', 'behind', 'held'], 'the snapshot keeps them, in order');
  assert.is(a.held.count, 1, 'a snapshot only lists them');

  send(mainOutbox, 1, id, 'in ring');
  table[keyGroup] = MAIN_THREAD; // the main thread points the routing away, then asks for the release
  const released = a.moves.release([keyGroup]);
  open('busy');
  const [exported] = await withTimeout(released, TIMEOUT_MS, 'the release');
  const image = decodeImage(exported!.bytes);
  assert.equal(texts(image.queued), ['behind', 'held', 'in ring'], 'after what waited for the instance, before what was in the ring');
  assert.equal(image.marks?.map(([session]) => session), ['s1'], 'its producer mark goes with it');
  assert.is(a.held.count, 0);

  const other = idIn(5);
  table[5] = heldAt(1);
  send(mainOutbox, 1, other, 'dropped');
  a.turn();
  assert.is(a.held.count, 1);
  a.moves.reset(1);
  assert.is(a.held.count, 0, 'a recovery drops them');
  a.moves.reset(2);
  a.moves.resume();
  table[5] = 1;
  a.turn();
  await settle();
  assert.is(items(a, other), undefined);
});

test('a hand-over waits for the running invocation, then carries state, timers, marks and every waiting message in order; the new owner runs them', async () => {
  const { a, b, table, mainOutbox } = pair();
  const keyGroup = 3;
  const id = idIn(keyGroup);
  a.deliver(message(id, 'later')); // state, a delayed message
  await settle();
  assert.ok(a.acceptEvent(message(id, 'event', { session: 's1', seq: 1 })), 'a client event, marked in its key group');
  a.deliver(message(id, 'wait:first')); // running, gated
  a.deliver(message(id, 'queued')); // waits behind it
  // One in the input ring, sent before the routing changed (from the main thread).
  const value = toTypedValue('in-ring');
  const envelope = new Uint8Array(invokeLengthMax('test/list', id, null, null, value));
  mainOutbox.writeBytes(1, envelope, 0, writeInvoke(envelope, 0, keyGroup, 'test/list', id, null, null, value));
  mainOutbox.flush();
  table[keyGroup] = MAIN_THREAD; // the main thread points the routing away first
  const released = a.moves.release([keyGroup]);
  let done = false;
  void released.then(() => (done = true));
  await settle();
  assert.not.ok(done, 'waits for the invocation running in the key group');
  open('first');
  const [exported] = await withTimeout(released, TIMEOUT_MS, 'the release');
  assert.is(exported!.keyGroup, keyGroup);
  const image = decodeImage(exported!.bytes);
  assert.equal(image.state.map(([typename, entries]) => [typename, entries.map(([entryId]) => entryId)]), [['test/list', [id]]]);
  assert.is(image.timers.length, 1, 'the delayed message goes with its sender');
  assert.equal(image.marks?.map(([session]) => session), ['s1']);
  const decoder = new EnvelopeDecoder();
  assert.equal(
    image.queued.map((bytes) => decoder.decodeInvoke(bytes, 0, bytes.length).asString()),
    ['queued', 'in-ring'],
    'what waited behind the invocation first, then what was in the ring',
  );
  assert.is(items(a, id), undefined, 'gone from the old owner');
  assert.is(a.groups.timers.size, 0);

  assert.is(b.moves.adopt([exported!.bytes]), 1, 'one instance came');
  assert.ok(b.owns(keyGroup), 'owned before the routing points at it');
  await settle();
  assert.equal(items(b, id), ['later', 'wait:first', 'queued', 'in-ring'], 'the queued messages ran on the new owner, in order');
  assert.is(b.groups.timers.size, 1);
  assert.not.ok(b.acceptEvent(message(id, 'event', { session: 's1', seq: 1 })), 'a repeat of the event is refused by the new owner');
  table[keyGroup] = 2;
  b.moves.settleAdopted([keyGroup]);
  assert.ok(b.owns(keyGroup));
});

test('a leaving key group: what its shard reads while the release waits for a running invocation (from the rings and sent locally) stays there and goes in the image, in order ahead of what the rings still hold; nothing goes to the main thread; once released, a late one does', async () => {
  const { a, table, mainOutbox, main, mainInbox } = pair();
  const keyGroup = 4;
  const id = idIn(keyGroup);
  const other = idIn(6, 'o');
  a.deliver(message(id, 'wait:slow')); // running: the release waits for it
  a.forward(message(id, 'local 1')); // sent from this shard before the routing changed: queued locally
  table[keyGroup] = leavingFrom(1); // the main thread points it away for the release
  const released = a.moves.release([keyGroup]);
  send(mainOutbox, 1, id, 'ring 1'); // read by the next turn while the release waits, then the local queue
  a.turn();
  a.turn();
  send(mainOutbox, 1, id, 'ring 2'); // still in the ring when the release drains it
  send(mainOutbox, 1, other, 'elsewhere'); // another key group: runs as usual
  open('slow');
  const [exported] = await withTimeout(released, TIMEOUT_MS, 'the release');
  assert.equal(texts(decodeImage(exported!.bytes).queued), ['ring 1', 'local 1', 'ring 2'], 'in the order read, then the rings');
  a.flush();
  mainInbox.poll(100);
  const invokes = () => main.filter((record) => record.kind === EnvelopeKind.Invoke).map((record) => record.bytes);
  assert.equal(invokes(), [], 'no message went to the main thread ahead of the image (only egress records)');
  // Released: the routing may still say leaving a moment; what comes now goes on to the main thread.
  send(mainOutbox, 1, id, 'late');
  a.turn();
  a.flush();
  mainInbox.poll(100);
  assert.equal(texts(invokes()), ['late']);
  await settle();
  assert.equal(items(a, other), ['elsewhere']);
});

test('a leaving key group routed back without a release (the move called off): what its shard kept runs first, in order', async () => {
  const { a, table, mainOutbox } = pair();
  const keyGroup = 2;
  const id = idIn(keyGroup);
  table[keyGroup] = leavingFrom(1);
  send(mainOutbox, 1, id, 'kept 1');
  send(mainOutbox, 1, id, 'kept 2');
  a.turn();
  assert.is(a.moves.leavingCount, 1);
  assert.is(items(a, id), undefined);
  table[keyGroup] = 1;
  send(mainOutbox, 1, id, 'newer');
  a.turn();
  await settle();
  await settle();
  assert.equal(items(a, id), ['kept 1', 'kept 2', 'newer']);
  assert.is(a.moves.leavingCount, 0);
});

test('what waits behind an invocation whose key group moved meanwhile goes on to the new owner', async () => {
  const { a, b, table } = pair();
  const keyGroup = 5;
  const id = idIn(keyGroup);
  a.deliver(message(id, 'wait:moving'));
  a.deliver(message(id, 'behind'));
  table[keyGroup] = 2; // moved to shard 2 without a release here
  open('moving');
  await settle();
  await settle();
  assert.equal(items(a, id), ['wait:moving'], 'the running one finished here');
  assert.is(a.embedded.waiting, 0, 'the waiting one left');
  a.flush();
  b.turn();
  await settle();
  assert.equal(items(b, id), ['behind'], 'and ran on the new owner');
});

test('a recovery resets in two phases: everything forgotten, input dropped, nothing runs until resume', async () => {
  const { a, mainOutbox } = pair();
  const id = idIn(2);
  a.deliver(message(id, 'later'));
  a.deliver(message(id, 'wait:forever'));
  await settle();
  a.moves.reset(1);
  assert.is(a.phase, 'discarding');
  assert.is(a.groups.records.size, 0);
  assert.is(a.groups.timers.size, 0);
  assert.is(a.embedded.waiting + a.embedded.running, 0);
  const value = toTypedValue('dropped');
  const envelope = new Uint8Array(invokeLengthMax('test/list', id, null, null, value));
  mainOutbox.writeBytes(1, envelope, 0, writeInvoke(envelope, 0, 2, 'test/list', id, null, null, value));
  mainOutbox.flush();
  a.moves.reset(2);
  assert.is(a.phase, 'frozen');
  assert.is(a.turn(), 0, 'frozen: no turn runs');
  open('forever'); // the invocation from before the reset finishes into nothing
  await settle();
  assert.is(items(a, id), undefined, 'neither the old invocation nor the dropped message applied');
  a.moves.resume();
  assert.is(a.phase, 'live');
});

test('a restore loads an image as unchanged, releases its committed egress at once, and runs its queued messages at resume', async () => {
  const { a, b, main, mainInbox } = pair(true);
  const keyGroup = 4;
  const id = idIn(keyGroup);
  b.deliver(message(id, 'before'));
  await settle();
  const image = b.groups.peek([keyGroup], 0).get(keyGroup)!; // a real record, and its held egress
  assert.is(image.egress?.length, 1);
  const value = toTypedValue('restored-queued');
  const queued = new Uint8Array(invokeLengthMax('test/list', id, null, null, value));
  image.queued.push(queued.subarray(0, writeInvoke(queued, 0, keyGroup, 'test/list', id, null, null, value)));
  a.moves.reset(1);
  a.moves.reset(2);
  assert.equal(a.moves.restore(9, [encodeImage(image)], [1], false), { instances: 1, dropped: 0 });
  assert.is(a.groups.changed[keyGroup], 0, 'unchanged since checkpoint 9');
  assert.is(a.groups.changed[1], 0, 'a key group the checkpoint had nothing for is unchanged too');
  assert.is(a.groups.changed[2], 1);
  a.flush();
  mainInbox.poll(100);
  assert.equal(main.map((record) => record.kind), [EnvelopeKind.Egress], 'the committed egress went out at once');
  assert.is(a.groups.heldEgress, 0);
  assert.equal(items(a, id), ['before']);
  assert.is(a.turn(), 0, 'frozen until every shard has loaded');
  a.moves.resume();
  await settle();
  assert.equal(items(a, id), ['before', 'restored-queued'], 'the queued message ran at resume');
  assert.is(a.counters.deadLetters, 0);
});

test('a restore fails whole on an image whose queued message cannot be read', () => {
  const { a, table } = pair(true);
  const keyGroup = 6;
  table[keyGroup] = 2; // so that only an adoption would make it this shard's
  const image = encodeImage({ v: IMAGE_VERSION, keyGroup, frozenAt: 0, state: [['test/list', [[idIn(keyGroup), { items: ['x'] }]]]], timers: [], queued: [new Uint8Array([1, 2, 3])] });
  a.moves.reset(1);
  a.moves.reset(2);
  assert.throws(() => a.moves.restore(3, [image], [], false));
  assert.is(a.groups.records.size, 0, 'nothing of it applied');
  assert.not.ok(a.owns(keyGroup), 'not taken as adopted');
});

test.run();
