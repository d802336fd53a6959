// The recovery shell on the real view core and a fake node port (no threads, no sockets): control
// envelopes checked with typed errors, epoch fencing with envelopes that wait for their epoch, and a
// recovery run by a follower and by the leader (including a failed read of the checkpoint to restore).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeKind } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';
import type { CheckpointControl } from '../../node/index.js';
import { decodeControlEnvelope, encodeControlEnvelope, isRecoveryRequest, mayBeRollback } from '../../cluster/checkpoint-control.js';
import { invoke, ref, settle } from './fake-port.js';
import { shells } from './shell-harness.js';
import { eventually } from '../helpers.js';

const decode = (message: unknown) => {
  const envelope = encodeControlEnvelope(message as CheckpointControl);
  return decodeControlEnvelope(envelope, 0, envelope.length);
};
const malformed = (text: string) => (error: unknown) => error instanceof StatecraftError && error.code === 'SC_ERR_MALFORMED_FRAME' && error.message === text;

test('control envelopes: recovery messages carry epoch, checkpoint messages checkpoint; anything else is SC_ERR_MALFORMED_FRAME', () => {
  const envelope = encodeControlEnvelope({ type: 'rollback', epoch: 3, members: ['a', 'b'], restore: ref(7), claimant: 'a' });
  assert.is(envelope[0], EnvelopeKind.CheckpointControl);
  assert.equal(decodeControlEnvelope(envelope, 0, envelope.length), { type: 'rollback', epoch: 3, members: ['a', 'b'], restore: ref(7), claimant: 'a' });
  assert.equal(decode({ type: 'behind', epoch: 2 }), { type: 'behind', epoch: 2 });
  assert.equal(decode({ type: 'start', checkpoint: 4 }), { type: 'start', checkpoint: 4 });
  assert.throws(() => decode({ type: 'rollback', checkpoint: 3, members: [], restore: ref(0) }), malformed('malformed rollback message'), 'the old field name is not read');
  assert.throws(() => decode({ type: 'start', epoch: 4 }), malformed('malformed checkpoint control message'));
  assert.throws(() => decode(42), malformed('malformed checkpoint control message'));
  assert.throws(() => decode({ type: 'rollback', epoch: 3, members: ['a', 1], restore: ref(0) }), malformed('malformed rollback message'));
  assert.throws(() => decode({ type: 'rollback', epoch: 3, members: ['a'], restore: -1 }), malformed('malformed rollback message'));
  assert.throws(() => decode({ type: 'rollback', epoch: 3, members: ['a'], restore: ref(7) }), malformed('malformed rollback message'), 'an order names its claimant');
  assert.ok(mayBeRollback(envelope, 0, envelope.length));
  const start = encodeControlEnvelope({ type: 'start', checkpoint: 1 });
  assert.not.ok(mayBeRollback(start, 0, start.length));
  const garbage = new Uint8Array([EnvelopeKind.CheckpointControl, 0, 0, 0, 0, 0, 0, 0, 0x92]); // an array of two, cut short
  assert.ok(mayBeRollback(garbage, 0, garbage.length), 'malformed: let the usual path log it');
});

/** Node a in a view with b, checkpoints on. */
function member() {
  const node = shells('a', { checkpointing: true });
  node.view({ a: 'alive', b: 'alive' });
  return node;
}

test('a follower: the order fences frames at once, envelopes wait while it restores, then those of its epoch are delivered', async () => {
  const node = member();
  node.recovery.onControl('b', { type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(4), claimant: 'b' });
  await settle(); // the order's claim is checked in the store first
  assert.equal(node.port.orderChecks.map((order) => order.claimant), ['b']);
  assert.is(node.core.status, 'recovering');
  assert.equal(node.epochs, [1]);
  assert.ok(node.port.calls.includes('begin-recovery 1'));
  assert.equal(node.port.rollBacks.map((rollBack) => [rollBack.epoch, rollBack.checkpoint.checkpoint]), [[1, 4]]);
  assert.not.ok(node.recovery.accept(invoke(3, 1), 0, 9, 'b', 1), 'this epoch, but restoring: waits');
  assert.not.ok(node.recovery.accept(invoke(3, 2), 0, 9, 'b', 0), 'an older epoch: dropped');
  assert.not.ok(node.recovery.accept(invoke(3, 3), 0, 9, 'b', 2), 'a newer epoch: waits');
  const newer = encodeControlEnvelope({ type: 'rollback', epoch: 2, members: ['a', 'b'], restore: ref(4), claimant: 'b' });
  assert.ok(node.recovery.accept(newer, 0, newer.length, 'b', 2), 'a newer rollback order is taken at once');
  assert.is(node.recovery.stashedCount, 2);
  node.port.rollBacks[0]!.done.resolve({ checkpoint: 4, instances: 3 });
  await settle();
  assert.ok(node.logs.includes('cluster: recovery 1 done: restored checkpoint 4 (3 instances)'));
  assert.is(node.core.status, 'serving');
  assert.equal(node.redelivered.map((entry) => [entry.epoch, entry.bytes[8]]), [[1, 1]]);
  assert.is(node.recovery.stashedCount, 1, 'the newer one waits for its own recovery');
  assert.ok(node.port.flushes > 0 && node.port.calls.includes('recheck-admission'));
});

test('a newer recovery takes over: the older one finishing changes nothing, and what waits for older epochs is dropped', async () => {
  const node = member();
  node.recovery.onControl('b', { type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(4), claimant: 'b' });
  await settle();
  node.recovery.accept(invoke(3, 1), 0, 9, 'b', 1);
  node.recovery.onControl('b', { type: 'rollback', epoch: 2, members: ['a', 'b'], restore: ref(5), claimant: 'b' });
  await settle();
  assert.is(node.recovery.stashedCount, 0);
  node.port.rollBacks[0]!.done.resolve({ checkpoint: 4, instances: 0 });
  await settle();
  assert.is(node.core.status, 'recovering');
  assert.not.ok(node.logs.some((line) => line.startsWith('cluster: recovery 1 done')));
  node.port.rollBacks[1]!.done.reject(new Error('store unreachable'));
  await settle();
  assert.equal(node.logs.slice(-1), ['cluster: recovery 2 failed: store unreachable; this node does not serve until it restores: trying again in 20 ms']);
  assert.is(node.core.status, 'recovering');
  // Tried again, backing off, until the store answers.
  await eventually(() => node.port.rollBacks.length === 3, 'the restore tried again');
  assert.equal(node.port.rollBacks.map((rollBack) => [rollBack.epoch, rollBack.checkpoint.checkpoint]), [[1, 4], [2, 5], [2, 5]]);
  node.port.rollBacks[2]!.done.reject(new Error('store unreachable'));
  await settle();
  assert.equal(node.logs.slice(-1), ['cluster: recovery 2 failed: store unreachable; this node does not serve until it restores: trying again in 40 ms']);
  await eventually(() => node.port.rollBacks.length === 4, 'the restore tried a third time');
  node.port.rollBacks[3]!.done.resolve({ checkpoint: 5, instances: 2 });
  await settle();
  assert.is(node.core.status, 'serving');
  assert.ok(node.logs.includes('cluster: recovery 2 done: restored checkpoint 5 (2 instances)'));
});

test('the leader: reads the checkpoint to restore (again after a failure), orders every member, restores it too', async () => {
  const node = member();
  node.view({ a: 'alive', b: 'dead' });
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  node.view({ a: 'alive', b: 'alive', c: 'dead' });
  assert.is(node.core.status, 'recovering');
  assert.is(node.port.prepares.length, 1);
  node.port.prepares[0]!.reject(new Error('the head is unreadable'));
  await settle();
  assert.equal(node.logs.slice(-1), ['cluster: recovery 1 cannot read the last committed checkpoint (the head is unreadable); retrying in 1 s']);
  const awake = setTimeout(() => undefined, 2_000); // the retry timer does not keep the process alive
  await new Promise((resolve) => setTimeout(resolve, 1_050));
  clearTimeout(awake);
  assert.is(node.port.prepares.length, 2);
  node.port.prepares[1]!.resolve({ restore: ref(6), contendedBy: [] });
  await settle();
  assert.equal(node.controls, [{ to: 'b', message: { type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(6), claimant: 'a' } }]);
  assert.equal(node.port.rollBacks.map((rollBack) => [rollBack.epoch, rollBack.checkpoint.checkpoint]), [[1, 6]]);
});

test("control messages: the recovery ones go to the core, the checkpoint ones to the node only from a member of the view; a start or outcome only from the view's leader", () => {
  const follower = shells('b', { checkpointing: true });
  follower.view({ a: 'alive', b: 'alive', c: 'alive' });
  follower.recovery.onControl('a', { type: 'start', checkpoint: 3 });
  follower.recovery.onControl('x', { type: 'start', checkpoint: 3 });
  follower.recovery.onControl('c', { type: 'start', checkpoint: 4 });
  follower.recovery.onControl('c', { type: 'outcome', checkpoint: 3, committed: true });
  follower.recovery.onControl('c', { type: 'ack', checkpoint: 3, objects: [], channels: [] });
  follower.recovery.onControl('a', { type: 'outcome', checkpoint: 3, committed: true });
  assert.equal(
    follower.port.controls.map(({ from, message }) => [from, message.type]),
    [
      ['a', 'start'],
      ['c', 'ack'],
      ['a', 'outcome'],
    ],
    'a leads; x is no member; c may answer a start but not make or decide one',
  );
  assert.equal(follower.controls, [{ to: 'c', message: { type: 'failed', checkpoint: 4, reason: 'b follows a' } }], 'told at once');
  assert.is(follower.recovery.refused, 2);
  assert.ok(follower.logs.includes("cluster: refused the outcome of checkpoint 3 from c: c does not lead this node's view (a does)"), follower.logs.join('\n'));

  const node = member();
  node.recovery.onControl('b', { type: 'restarted', epoch: 0, node: 'c' });
  assert.is(node.core.status, 'recovering', 'a is the leader: a restart report starts a recovery');
  assert.ok(node.logs.some((line) => line === `cluster: recovery 1 (c restarted or died (reported by b)): every node restores the last committed checkpoint; view ${node.core.placement.viewId}`));
});

test('a member behind asks from its older epoch: the fence lets the request through, and the leader re-sends the order it missed', async () => {
  const node = member();
  node.recovery.onControl('b', { type: 'restarted', epoch: 0, node: 'c' });
  node.port.prepares[0]!.resolve({ restore: ref(6), contendedBy: [] });
  await settle();
  node.port.rollBacks[0]!.done.resolve({ checkpoint: 6, instances: 0 });
  await settle();
  assert.is(node.core.epoch, 1);
  node.controls.length = 0;
  // b missed that order (it was left out, or came back between the start and the order): it asks from epoch 0.
  const asked = encodeControlEnvelope({ type: 'restarted', epoch: 0, node: 'a member' });
  assert.ok(isRecoveryRequest(asked, 0, asked.length));
  assert.ok(node.recovery.accept(asked, 0, asked.length, 'b', 0), 'a recovery request from an older epoch passes the fence');
  node.recovery.onControl('b', decodeControlEnvelope(asked, 0, asked.length));
  assert.equal(node.controls, [{ to: 'b', message: { type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(6), claimant: 'a' } }], 'the order it missed, not a new recovery');
  assert.is(node.core.epoch, 1);
  const behind = encodeControlEnvelope({ type: 'behind', epoch: 0 });
  assert.ok(node.recovery.accept(behind, 0, behind.length, 'b', 0));
  const start = encodeControlEnvelope({ type: 'start', checkpoint: 2 });
  assert.not.ok(isRecoveryRequest(start, 0, start.length));
  assert.not.ok(node.recovery.accept(start, 0, start.length, 'b', 0), 'anything else of an older epoch is dropped');
});

test("a recovery epoch claimed by another node too: this node orders nothing, takes the winner's order for that epoch, or claims the next one if none comes", async () => {
  // The winner's order comes.
  const node = member();
  node.recovery.onControl('b', { type: 'restarted', epoch: 0, node: 'c' });
  assert.equal(node.port.preparedEpochs, [1]);
  node.port.prepares[0]!.resolve({ restore: ref(6), contendedBy: ['x'] });
  await settle();
  assert.ok(node.logs.some((line) => line.startsWith('cluster: recovery 1 was claimed by x as well: this node waits for that order, or starts recovery 2 in ')), node.logs.join('\n'));
  assert.equal(node.controls, [], 'no order sent');
  assert.equal(node.port.rollBacks, [], 'nothing restored');
  assert.is(node.core.status, 'recovering');
  const order = encodeControlEnvelope({ type: 'rollback', epoch: 1, members: ['a', 'b', 'x'], restore: ref(6), claimant: 'x' });
  assert.ok(node.recovery.accept(order, 0, order.length, 'x', 1), "the winner's order of this very epoch passes the fence");
  node.recovery.onControl('x', decodeControlEnvelope(order, 0, order.length));
  await settle();
  assert.equal(node.port.rollBacks.map((rollBack) => [rollBack.epoch, rollBack.checkpoint.checkpoint]), [[1, 6]]);
  assert.is(node.core.epoch, 1);
  const again = encodeControlEnvelope({ type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(6), claimant: 'x' });
  assert.not.ok(node.recovery.accept(again, 0, again.length, 'y', 1), 'one order per epoch: another of the same epoch waits like any message of it');

  // No order comes: the next epoch is claimed, with the view as it is.
  const loser = member();
  loser.recovery.onControl('b', { type: 'restarted', epoch: 0, node: 'c' });
  loser.port.prepares[0]!.resolve({ restore: ref(6), contendedBy: ['x'] });
  await settle();
  loser.core.tick([{ id: 'a', address: 'a:1', incarnation: 0, state: 'alive' }, { id: 'b', address: 'b:1', incarnation: 0, state: 'alive' }], performance.now());
  assert.equal(loser.port.preparedEpochs, [1], 'not before its wait is over');
  loser.core.tick([{ id: 'a', address: 'a:1', incarnation: 0, state: 'alive' }, { id: 'b', address: 'b:1', incarnation: 0, state: 'alive' }], performance.now() + 3_000);
  assert.equal(loser.port.preparedEpochs, [1, 2]);
  assert.is(loser.core.epoch, 2);
  assert.ok(loser.logs.some((line) => line.startsWith('cluster: recovery 2 (no order came for the contended recovery 1)')), loser.logs.join('\n'));
  loser.port.prepares[1]!.resolve({ restore: ref(6), contendedBy: [] });
  await settle();
  assert.equal(loser.controls, [{ to: 'b', message: { type: 'rollback', epoch: 2, members: ['a', 'b'], restore: ref(6), claimant: 'a' } }], 'won: it orders epoch 2');
});

test('a rollback order without its claim in the store is refused and counted; nothing is dropped or restored', async () => {
  const node = member();
  node.port.orderRefusal = 'the store holds no claim of recovery 5 by b';
  node.recovery.onControl('b', { type: 'rollback', epoch: 5, members: ['a', 'b'], restore: ref(0), claimant: 'b' });
  await settle();
  assert.is(node.core.status, 'serving');
  assert.is(node.core.epoch, 0);
  assert.equal(node.port.rollBacks, []);
  assert.not.ok(node.port.calls.includes('begin-recovery 5'));
  assert.is(node.recovery.refused, 1);
  assert.ok(node.logs.includes('cluster: refused a rollback order of recovery 5 to checkpoint 0 from b: the store holds no claim of recovery 5 by b'), node.logs.join('\n'));
});

test.run();
