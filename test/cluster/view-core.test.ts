// The view core (status, view, majority, placement, recovery epoch) and its hand-over rules, driven by
// hand: each test feeds events and checks the actions it emits and the status it ends in. The seeded
// simulation of many nodes is in view-sim.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SANS_IO_CORES, coreViolations } from '../../scripts/check-layers.js';
import { InternalError } from '../../lib/errors.js';
import { CLAIMED_AFRESH_ADOPT_MS, HANDOVER_FROM_LEFT_WAIT_MS, HandoverTable, type PlacementFacts } from '../../cluster/handover-core.js';
import type { Member, MemberState } from '../../cluster/membership.js';
import { computePlacement } from '../../cluster/placement.js';
import { BEHIND_ASK_MS, ClusterView, ROLLBACK_ASK_MS, STATUS_EDGES, type ViewAction } from '../../cluster/view-core.js';
import { ref } from './fake-port.js';
import type { KeyGroupRoute } from '../../node/index.js';

const KEY_GROUPS = 64;

/** A core with its actions collected; `own` actions are applied to an ownership table at once, as the node would. */
function core(selfId: string, options: { joining?: boolean; checkpointing?: boolean } = {}) {
  const actions: ViewAction[] = [];
  const owned = new Array<KeyGroupRoute>(KEY_GROUPS).fill(true);
  const view = new ClusterView({
    selfId,
    keyGroups: KEY_GROUPS,
    seeds: options.joining ? ['seed:1'] : [],
    joining: options.joining ?? false,
    checkpointing: options.checkpointing ?? false,
    perform: (action) => {
      actions.push(action);
      if (action.type === 'own') {
        for (let keyGroup = 0; keyGroup < KEY_GROUPS; keyGroup++) {
          const own = action.owned(keyGroup);
          if (own !== null) owned[keyGroup] = own;
        }
      }
    },
  });
  view.start();
  /** The actions emitted since the last call. */
  const take = () => actions.splice(0);
  return { view, owned, take };
}

const member = (id: string, state: MemberState, incarnation = 0): Member => ({ id, address: `${id}:1`, incarnation, state });
const members = (states: Record<string, MemberState>): Member[] => Object.entries(states).map(([id, state]) => member(id, state));
const types = (actions: ViewAction[]) => actions.map((action) => action.type);
const logs = (actions: ViewAction[]) => actions.flatMap((action) => (action.type === 'log' ? [action.line] : []));
const controls = (actions: ViewAction[]) => actions.flatMap((action) => (action.type === 'control' ? [{ to: action.to, ...action.message }] : []));
const ownerIn = (ids: string[], keyGroup: number) => {
  const placement = computePlacement(ids, KEY_GROUPS);
  return placement.members[placement.owners[keyGroup]!]!;
};
const groupsOf = (id: string, ids: string[]) => Array.from({ length: KEY_GROUPS }, (_, keyGroup) => keyGroup).filter((keyGroup) => ownerIn(ids, keyGroup) === id);

/** Brings a seedless node `a` into a serving view of `ids` (all alive). */
function servingWith(ids: string[], options: { checkpointing?: boolean } = {}) {
  const node = core('a', options);
  for (const id of ids) if (id !== 'a') node.view.memberChanged(member(id, 'alive'));
  node.view.viewChanged(members(Object.fromEntries(ids.map((id) => [id, 'alive' as MemberState]))), 0);
  return node;
}

test('a cluster of one serves and owns every key group; a joining node owns none and says why', () => {
  const alone = core('a');
  assert.is(alone.view.status, 'serving');
  assert.ok(alone.view.admits() && alone.view.inMajority());
  assert.ok(alone.owned.every(Boolean));
  assert.equal(types(alone.take()), ['own']);
  const joiner = core('b', { joining: true });
  assert.is(joiner.view.status, 'joining');
  assert.not.ok(joiner.view.admits() || joiner.view.inMajority() || joiner.view.hasJoined());
  assert.ok(joiner.owned.every((own) => !own));
  assert.equal(logs(joiner.take()), ['cluster: not serving: joining: no seed has answered yet (seed:1)']);
  assert.is(joiner.view.checkpointBlocked(0), 'not serving: joining: no seed has answered yet (seed:1)');
});

test('joining: a seed answers, the node serves and awaits its key groups from their owners without it', () => {
  const node = core('b', { joining: true });
  node.take();
  node.view.memberChanged(member('a', 'alive'));
  assert.is(node.view.status, 'no-majority', 'joined; the majority is counted at the view update');
  node.view.viewChanged(members({ a: 'alive', b: 'alive' }), 100);
  assert.is(node.view.status, 'serving');
  assert.is(node.view.viewVersion, 2);
  const actions = node.take();
  assert.equal(logs(actions).slice(0, 2), ['cluster: serving', `cluster: view version 2, view ${computePlacement(['a', 'b'], KEY_GROUPS).viewId}: a (${groupsOf('a', ['a', 'b']).length} key groups), b (${groupsOf('b', ['a', 'b']).length} key groups)`]);
  assert.ok(types(actions).includes('majority') && types(actions).includes('view'));
  const mine = groupsOf('b', ['a', 'b']);
  assert.ok(mine.length > 0);
  assert.equal(mine.filter((keyGroup) => node.view.moves.get(keyGroup)?.state === 'awaiting'), mine, 'every key group it gains is awaited from a');
  assert.ok(node.owned.every((own) => !own), 'nothing is owned before its hand-over lands');
  assert.not.ok(types(actions).includes('release'));
});

test('a member joins a serving node: the key groups it gains are released to it, one request each', () => {
  const node = core('a');
  node.take();
  node.view.memberChanged(member('b', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive' }), 0);
  const actions = node.take();
  const released = actions.flatMap((action) => (action.type === 'release' ? [action.keyGroup] : []));
  assert.equal(released, groupsOf('b', ['a', 'b']));
  assert.ok(released.every((keyGroup) => node.view.moves.get(keyGroup)?.state === 'releasing' && !node.owned[keyGroup]));
  assert.ok(groupsOf('a', ['a', 'b']).every((keyGroup) => node.owned[keyGroup]));
  assert.is(node.view.checkpointBlocked(0), `${released.length} key groups are on the move`);
  // The image is ready: it goes to b, and what waited for it follows.
  assert.is(node.view.moves.imageReady(released[0]!), 'b');
  assert.not.ok(node.view.moves.isMoving(released[0]!));
});

test('losing the majority: nothing runs (its own key groups are held), the dead stay in the view, newcomers wait; back: serving again', () => {
  const node = servingWith(['a', 'b', 'c']);
  node.take();
  node.view.viewChanged(members({ a: 'alive', b: 'dead', c: 'suspect' }), 10);
  assert.is(node.view.status, 'no-majority');
  assert.equal(node.view.viewMembers(), ['a', 'b', 'c'], 'a member declared dead leaves the view only with a majority');
  const mine = groupsOf('a', ['a', 'b', 'c']);
  assert.ok(mine.length > 0 && mine.every((keyGroup) => node.owned[keyGroup] === 'held'), 'its own key groups are held at their shards');
  assert.ok(node.owned.every((own, keyGroup) => mine.includes(keyGroup) || own === false), "the others' go to the cluster layer");
  assert.equal(logs(node.take()), ['cluster: not serving: reaches 1 of the 3 members of the last agreed view, not a majority: waiting for them']);
  assert.is(node.view.forwardTo(0, null), null, 'messages wait');
  assert.not.ok(node.view.mayClaim());
  // A newcomer does not join the view of a node without a majority (it could vote itself one).
  node.view.viewChanged(members({ a: 'alive', b: 'dead', c: 'suspect', d: 'alive' }), 20);
  assert.equal(node.view.viewMembers(), ['a', 'b', 'c']);
  assert.is(node.view.status, 'no-majority');
  // c is back: a majority of {a, b, c}; b leaves the view, d joins it.
  node.view.viewChanged(members({ a: 'alive', b: 'dead', c: 'alive', d: 'alive' }), 30);
  assert.is(node.view.status, 'serving');
  assert.equal(node.view.viewMembers(), ['a', 'c', 'd']);
  assert.ok(logs(node.take()).includes('cluster: serving'));
  assert.ok(node.owned.every((own) => own !== 'held'), 'nothing is held any more');
});

test('checkpoints on, a member dies: the leader starts a recovery; another member awaits its order and asks for it', () => {
  const leader = servingWith(['a', 'b', 'c'], { checkpointing: true });
  leader.take();
  leader.view.viewChanged(members({ a: 'alive', b: 'alive', c: 'dead' }), 10);
  assert.is(leader.view.status, 'recovering');
  assert.is(leader.view.epoch, 1);
  const actions = leader.take();
  assert.equal(
    types(actions).filter((type) => type !== 'log' && type !== 'status'),
    ['recovery-begin', 'own', 'rollback-prepare', 'view', 'release-held', 'retry-handovers', 'keep-link', 'retire'],
  );
  assert.ok(leader.owned.every((own) => !own));
  const prepare = actions.find((action) => action.type === 'rollback-prepare');
  assert.ok(prepare?.type === 'rollback-prepare');
  leader.view.rollbackPrepared(prepare.plan, ref(7));
  assert.equal(
    controls(leader.take()).map((message) => message.to),
    ['b'],
    'the order goes to every other member of the recovery',
  );
  assert.is(leader.view.checkpointBlocked(0), 'this node is recovering');
  assert.is(leader.view.fence(1, 'b', 0), 'stash', 'while restoring, envelopes of the epoch wait');
  leader.view.rollbackDone(1, members({ a: 'alive', b: 'alive', c: 'dead' }), 20);
  assert.is(leader.view.status, 'serving');
  const after = leader.take();
  assert.ok(after.some((action) => action.type === 'lead-checkpoints' && action.lead?.view.endsWith('/1')), 'leads checkpoints again, fenced by the epoch');

  const follower = core('b', { checkpointing: true });
  follower.view.memberChanged(member('a', 'alive'));
  follower.view.memberChanged(member('c', 'alive'));
  follower.view.viewChanged(members({ a: 'alive', b: 'alive', c: 'alive' }), 0);
  follower.take();
  follower.view.viewChanged(members({ a: 'alive', b: 'alive', c: 'dead' }), 5_000);
  assert.is(follower.view.status, 'awaiting-rollback');
  assert.is(follower.view.awaitingReason, 'c died: waiting for the leader a to start the recovery');
  assert.ok(follower.owned.every((own) => !own));
  assert.not.ok(follower.view.admits());
  assert.equal(controls(follower.take()), [{ to: 'a', type: 'restarted', epoch: 0, node: 'a member' }], 'asks the leader at once');
  follower.view.tick(members({ a: 'alive', b: 'alive', c: 'dead' }), 5_000 + ROLLBACK_ASK_MS);
  assert.equal(controls(follower.take()), [], 'not again before ROLLBACK_ASK_MS');
  follower.view.tick(members({ a: 'alive', b: 'alive', c: 'dead' }), 5_001 + ROLLBACK_ASK_MS);
  assert.equal(controls(follower.take()).length, 1);
  follower.view.rollbackOrdered('a', { epoch: 1, members: ['a', 'b'], restore: ref(7), claimant: 'a' });
  assert.is(follower.view.status, 'recovering');
  assert.ok(follower.take().some((action) => action.type === 'rollback-run' && action.restore.checkpoint === 7 && action.plan.epoch === 1));
});

test('a recovery that ends without a majority ends in no-majority; an older order is ignored', () => {
  const node = servingWith(['a', 'b', 'c'], { checkpointing: true });
  node.view.rollbackOrdered('b', { epoch: 3, members: ['a', 'b', 'c'], restore: ref(0), claimant: 'b' });
  assert.is(node.view.status, 'recovering');
  node.view.viewChanged(members({ a: 'alive', b: 'suspect', c: 'suspect' }), 10);
  assert.is(node.view.status, 'recovering', 'losing the majority does not end a recovery');
  assert.not.ok(node.view.inMajority());
  node.view.rollbackOrdered('b', { epoch: 2, members: ['a', 'b'], restore: ref(0), claimant: 'b' });
  assert.is(node.view.epoch, 3);
  node.view.rollbackDone(3, members({ a: 'alive', b: 'suspect', c: 'suspect' }), 20);
  assert.is(node.view.status, 'no-majority');
});

test('epoch fencing: older envelopes are dropped, newer ones wait, and a node left behind asks for its order', () => {
  const node = servingWith(['a', 'b'], { checkpointing: true });
  node.view.rollbackOrdered('b', { epoch: 2, members: ['a', 'b'], restore: ref(0), claimant: 'b' });
  node.view.rollbackDone(2, members({ a: 'alive', b: 'alive' }), 0);
  node.take();
  assert.is(node.view.fence(1, 'b', 100), 'drop');
  assert.is(node.view.fence(2, 'b', 100), 'deliver');
  assert.is(node.view.fence(3, 'b', 100), 'stash');
  assert.is(node.view.fence(3, 'b', 100 + BEHIND_ASK_MS), 'stash');
  assert.equal(controls(node.take()), []);
  node.view.fence(3, 'b', 101 + BEHIND_ASK_MS);
  assert.equal(controls(node.take()), [{ to: 'b', type: 'behind', epoch: 2 }]);
  // The peer answers a "behind" with its last order.
  const peer = servingWith(['a', 'b'], { checkpointing: true });
  peer.view.rollbackOrdered('b', { epoch: 3, members: ['a', 'b'], restore: ref(5), claimant: 'b' });
  peer.take();
  peer.view.behindReported('x', 3);
  assert.equal(controls(peer.take()), []);
  peer.view.behindReported('x', 2);
  assert.equal(controls(peer.take()), [{ to: 'x', type: 'rollback', epoch: 3, members: ['a', 'b'], restore: ref(5), claimant: 'b' }], 'the order as its claimant made it');
});

test('peer HELLO: a joining node takes the cluster epoch; a restarted member makes the leader recover', () => {
  const joiner = core('b', { joining: true, checkpointing: true });
  joiner.take();
  joiner.view.peerHello('a', 'one', 4);
  assert.is(joiner.view.epoch, 4);
  assert.equal(joiner.take(), [{ type: 'fence', epoch: 4 }]);
  const leader = servingWith(['a', 'b', 'c'], { checkpointing: true });
  leader.view.peerHello('b', 'one', 0);
  leader.view.peerHello('b', 'one', 0);
  assert.is(leader.view.status, 'serving');
  leader.view.peerHello('b', 'two', 0);
  assert.is(leader.view.status, 'recovering');
  assert.ok(logs(leader.take()).some((line) => line.startsWith('cluster: recovery 1 (b restarted)')));
  // Not the leader: it reports to the leader, with epoch 0 (any).
  const follower = core('b', { checkpointing: true });
  follower.view.memberChanged(member('a', 'alive'));
  follower.view.viewChanged(members({ a: 'alive', b: 'alive' }), 0);
  follower.take();
  follower.view.peerHello('a', 'one', 0);
  follower.view.peerHello('a', 'two', 0);
  assert.equal(controls(follower.take()), [{ to: 'a', type: 'restarted', epoch: 0, node: 'a' }]);
  // The leader takes a report of its current epoch only.
  const reported = servingWith(['a', 'b'], { checkpointing: true });
  reported.view.rollbackOrdered('b', { epoch: 2, members: ['a', 'b'], restore: ref(0), claimant: 'b' });
  reported.view.rollbackDone(2, members({ a: 'alive', b: 'alive' }), 0);
  reported.view.restartReported('b', 'c', 1);
  assert.is(reported.view.status, 'serving', 'a report made before the last recovery was answered by it');
  reported.view.restartReported('b', 'c', 2);
  assert.is(reported.view.status, 'recovering');
  assert.is(reported.view.epoch, 3);
});

test('a member back after missing a recovery gets the order again from the leader', () => {
  const leader = servingWith(['a', 'b'], { checkpointing: true });
  leader.view.rollbackOrdered('a', { epoch: 1, members: ['a', 'b'], restore: ref(3), claimant: 'a' });
  leader.take();
  leader.view.memberChanged(member('c', 'alive'));
  assert.equal(controls(leader.take()), [{ to: 'c', type: 'rollback', epoch: 1, members: ['a', 'b'], restore: ref(3), claimant: 'a' }]);
  leader.view.memberChanged(member('b', 'alive'));
  assert.equal(controls(leader.take()), [], 'b took part');
});

test('hand-over decisions: adopt what is awaited, keep it while views disagree, pass it on, ignore a late one', () => {
  const node = core('b', { joining: true });
  node.view.memberChanged(member('a', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive' }), 0);
  const [mine] = groupsOf('b', ['a', 'b']);
  const [theirs] = groupsOf('a', ['a', 'b']);
  assert.equal(node.view.moves.handoverArrived(theirs!, 'a', 0), { action: 'pend' }, 'a sent it and a owns it by our view: views differ');
  assert.equal(node.view.moves.handoverArrived(theirs!, 'c', 0), { action: 'pass', to: 'a' });
  assert.equal(node.view.moves.handoverArrived(mine!, 'a', 0), { action: 'adopt' });
  node.view.moves.adoptStarted(mine!, 0);
  assert.equal(node.view.moves.handoverArrived(mine!, 'a', 0), { action: 'pend' }, 'busy with it');
  node.take();
  node.view.moves.adopted(mine!, 10);
  assert.equal(types(node.take()), ['flush-held']);
  assert.not.ok(node.view.moves.isMoving(mine!));
  assert.equal(node.view.moves.handoverArrived(mine!, 'a', 20), { action: 'ignore' }, 'owned and not awaited: an older copy');
});

test('a hand-over of a key group this node handed away, back while it owns it and did not wait for it: adopted (its only copy), never ignored', () => {
  const owners = new Map<number, string>([[2, 'a']]);
  const facts: PlacementFacts = { selfId: 'b', keyGroups: 4, ownerOf: (keyGroup) => owners.get(keyGroup) ?? 'b', inMajority: () => true, hasJoined: () => true };
  const table = new HandoverTable(facts, () => undefined);
  assert.equal(table.handoverArrived(2, 'a', 0), { action: 'pend' }, 'a owns it here');
  // b released key group 2 to a; its image left.
  assert.is(table.imageReady(2), 'a');
  // The views flipped back without b waiting for it (e.g. the image bounced): b owns it and holds nothing of it.
  owners.set(2, 'b');
  assert.equal(table.handoverArrived(2, 'a', 10), { action: 'adopt' }, 'the only copy');
  table.adoptStarted(2, 10);
  table.adopted(2, 20);
  assert.equal(table.handoverArrived(2, 'a', 30), { action: 'ignore' }, 'now it holds the live state: a second copy is older');
  // A recovery reloads everything: nothing is away any more.
  owners.set(2, 'a');
  assert.is(table.imageReady(2), 'a');
  table.clear();
  owners.set(2, 'b');
  assert.equal(table.handoverArrived(2, 'a', 40), { action: 'ignore' }, 'after a recovery the key group was loaded from the checkpoint');
});

test('adoption outcomes: malformed (owned empty), failed (afresh if ours), placement moved on (released again)', () => {
  const node = core('b', { joining: true });
  node.view.memberChanged(member('a', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive' }), 0);
  const [first, second] = groupsOf('b', ['a', 'b']);
  node.take();
  node.view.moves.adoptStarted(first!, 0);
  node.view.moves.adoptDropped(first!);
  assert.ok(node.owned[first!]);
  assert.equal(types(node.take()), ['own', 'flush-held']);
  node.view.moves.adoptStarted(second!, 0);
  node.view.moves.adoptFailed(second!);
  assert.ok(node.owned[second!], 'still ours: it starts afresh here');
  // A third member takes some of b's key groups while b adopts one of them.
  const moved = groupsOf('b', ['a', 'b']).find((keyGroup) => ownerIn(['a', 'b', 'c'], keyGroup) === 'c')!;
  node.view.moves.adoptStarted(moved, 0);
  node.view.memberChanged(member('c', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive', c: 'alive' }), 5);
  node.take();
  node.view.moves.adopted(moved, 10);
  assert.equal(
    node.take().map((action) => (action.type === 'release' || action.type === 'flush-held' ? `${action.type} ${action.keyGroup}` : action.type)),
    [`release ${moved}`, `flush-held ${moved}`],
  );
  assert.is(node.view.moves.get(moved)?.state, 'releasing');
});

test('key groups awaited from a member that died start afresh; from one that left, after a while', () => {
  const node = core('b', { joining: true });
  node.view.memberChanged(member('a', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive' }), 0);
  const mine = groupsOf('b', ['a', 'b']);
  node.take();
  node.view.tick(members({ a: 'left', b: 'alive' }), HANDOVER_FROM_LEFT_WAIT_MS);
  assert.ok(mine.every((keyGroup) => node.view.moves.get(keyGroup)?.state === 'awaiting'), 'a member that left may still hand them over');
  node.view.tick(members({ a: 'left', b: 'alive' }), HANDOVER_FROM_LEFT_WAIT_MS + 1);
  assert.ok(mine.every((keyGroup) => !node.view.moves.isMoving(keyGroup) && node.owned[keyGroup]));
  const actions = node.take();
  assert.equal(logs(actions), [`cluster: ${mine.length} key groups were not handed over (their owner is gone): they start afresh here`]);
  assert.is(actions.filter((action) => action.type === 'flush-held').length, mine.length);
  // A hand-over that turns up a moment later is still adopted; later than that, ignored.
  assert.equal(node.view.moves.handoverArrived(mine[0]!, 'c', HANDOVER_FROM_LEFT_WAIT_MS + CLAIMED_AFRESH_ADOPT_MS), { action: 'adopt' });
  assert.equal(node.view.moves.handoverArrived(mine[1]!, 'c', HANDOVER_FROM_LEFT_WAIT_MS + 1 + CLAIMED_AFRESH_ADOPT_MS), { action: 'ignore' });
});

test('a node without a majority claims nothing, even for key groups awaited from a dead member', () => {
  const node = core('b', { joining: true });
  node.view.memberChanged(member('a', 'alive'));
  node.view.memberChanged(member('c', 'alive'));
  node.view.viewChanged(members({ a: 'alive', b: 'alive', c: 'alive' }), 0);
  node.take();
  node.view.viewChanged(members({ a: 'dead', b: 'alive', c: 'suspect' }), 10);
  assert.is(node.view.status, 'no-majority');
  node.view.tick(members({ a: 'dead', b: 'alive', c: 'suspect' }), 1_000_000);
  assert.not.ok(node.take().some((action) => action.type === 'own' && Array.from({ length: KEY_GROUPS }, (_, keyGroup) => action.owned(keyGroup)).includes(true)));
  assert.ok(node.owned.every((own) => !own));
});

test('leaving: the status is left for good, answers stay those of the status it left from, every key group is released', () => {
  const node = servingWith(['a', 'b']);
  node.take();
  assert.ok(node.view.leave());
  assert.not.ok(node.view.leave(), 'once');
  assert.is(node.view.status, 'left');
  assert.ok(node.view.admits() && node.view.hasJoined() && node.view.hasLeft());
  assert.equal(node.view.leavingTo(members({ a: 'left', b: 'alive' })), ['b']);
  node.view.handOverTo(['b'], members({ a: 'left', b: 'alive' }), 0);
  const released = node.take().flatMap((action) => (action.type === 'release' ? [action.keyGroup] : []));
  assert.equal(released, groupsOf('a', ['a', 'b']));
  assert.ok(node.owned.every((own) => !own));
  node.view.rollbackOrdered('b', { epoch: 5, members: ['b'], restore: ref(0), claimant: 'b' });
  assert.is(node.view.status, 'left', 'a node that left follows no recovery');
  assert.throws(() => node.view.viewChanged(members({ a: 'left', b: 'alive' }), 0), (error: Error) => error instanceof InternalError);
});

test('status edges: every status is reachable only along the table; left is terminal', () => {
  assert.equal(STATUS_EDGES.left, []);
  for (const [from, targets] of Object.entries(STATUS_EDGES)) {
    for (const target of targets) assert.ok(target in STATUS_EDGES, `${from} -> ${target}`);
    if (from !== 'left') assert.ok(targets.includes('left'), `${from} may leave`);
  }
  // A recovery finishing when none runs breaks a rule: an InternalError, not a quiet state change.
  const node = servingWith(['a', 'b'], { checkpointing: true });
  assert.throws(() => node.view.rollbackDone(0, members({ a: 'alive', b: 'alive' }), 0), (error: Error) => error instanceof InternalError && /recovering/.test(error.message));
});

test('the cores are checked as sans-I/O cores: no socket, timer, clock or randomness', () => {
  const cores = ['cluster/view-core.ts', 'cluster/handover-core.ts', 'cluster/view-status.ts', 'cluster/view-actions.ts'];
  for (const core of cores) assert.ok(SANS_IO_CORES.includes(core), core);
  assert.equal(coreViolations(cores), []);
});

test.run();
