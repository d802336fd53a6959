// The hand-over shell on the real view core and a fake node port (no threads, no sockets): messages
// that wait for a key group and the order they go in, images sent, adopted, passed on, kept and
// re-routed, and the failures on the way.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeKind, readKeyGroup } from '../../lib/envelope.js';
import { decodeFence, encodeFence } from '../../cluster/fence-envelope.js';
import { RouteFences } from '../../cluster/route-fences.js';
import { handoverEnvelope } from '../../node/keygroups/key-group-image.js';
import { computePlacement } from '../../cluster/placement.js';
import { image, invoke, settle } from './fake-port.js';
import { shells } from './shell-harness.js';

const KEY_GROUPS = 16;
const groupsOf = (id: string, ids: string[]) => {
  const placement = computePlacement(ids, KEY_GROUPS);
  return Array.from({ length: KEY_GROUPS }, (_, keyGroup) => keyGroup).filter((keyGroup) => placement.members[placement.owners[keyGroup]!] === id);
};
/** What was sent to peers: "to kind keyGroup tag". */
const kindOf = (bytes: Uint8Array) =>
  bytes[0] === EnvelopeKind.Handover ? 'image' : bytes[0] === EnvelopeKind.Fence ? (decodeFence(bytes, 0, bytes.length).answer ? 'answer' : 'fence') : 'invoke';
const sentLines = (sent: { to: string; bytes: Uint8Array }[]) =>
  sent.map(({ to, bytes }) => `${to} ${kindOf(bytes)} ${readKeyGroup(bytes, 0)}${bytes[0] === EnvelopeKind.Invoke ? ` #${bytes[8]}` : ''}`);
/** Key groups (of `count`) owned by `id` in a view of `ids`. */
const groupsIn = (count: number, id: string, ids: string[]) => {
  const placement = computePlacement(ids, count);
  return Array.from({ length: count }, (_, keyGroup) => keyGroup).filter((keyGroup) => placement.members[placement.owners[keyGroup]!] === id);
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Node b joined a and awaits its key groups from a. */
function joiner() {
  const node = shells('b', { joining: true });
  node.view({ a: 'alive', b: 'alive' });
  return node;
}

test('a released key group: its image goes to the new owner first, and what waited for it follows on the same link', async () => {
  const node = shells('a');
  node.view({ a: 'alive', b: 'alive' });
  const [moving] = groupsOf('b', ['a', 'b']);
  assert.ok(node.port.releases.some((release) => release.keyGroups.includes(moving!)), 'one release per key group');
  node.handovers.forward(invoke(moving!, 1), 0, 9, moving!);
  node.handovers.forward(invoke(moving!, 2), 0, 9, moving!);
  assert.equal(node.sent, [], 'they wait for the hand-over');
  assert.is(node.handovers.heldCount, 2);
  assert.is(node.handovers.heldBytes, 18);
  assert.is(node.core.checkpointBlocked(node.handovers.heldCount), `${groupsOf('b', ['a', 'b']).length} key groups are on the move`);
  node.port.finishRelease(moving!);
  await settle();
  assert.equal(sentLines(node.sent), [`b image ${moving}`, `b invoke ${moving} #1`, `b invoke ${moving} #2`]);
  assert.is(node.handovers.heldCount, 0);
  assert.is(node.handovers.heldBytes, 0);
  assert.is(node.handovers.stats.released, 1);
  assert.not.ok(node.core.moves.isMoving(moving!));
});

test('an awaited image is adopted; what waited goes to the shard right after; the pause is measured', async () => {
  const node = joiner();
  const [mine] = groupsOf('b', ['a', 'b']);
  node.handovers.forward(invoke(mine!, 7), 0, 9, mine!);
  node.deliveringFrom = 'a';
  node.handovers.onHandover(handoverEnvelope(mine!, image(mine!, 40)));
  node.deliveringFrom = null;
  assert.is(node.core.moves.get(mine!)?.state, 'adopting');
  assert.is(node.port.adoptions.length, 1);
  node.port.adoptions[0]!.done.resolve(3);
  await settle();
  assert.equal(node.port.delivered, [[mine!, 7]]);
  assert.ok(node.port.owned[mine!]);
  assert.is(node.handovers.stats.adopted, 1);
  assert.is(node.handovers.stats.instances, 3);
  assert.ok(node.handovers.stats.lastPauseMs >= 40 && node.handovers.stats.maxPauseMs === node.handovers.stats.lastPauseMs);
  // The same key group again: owned and not awaited, so an older copy.
  node.handovers.onHandover(handoverEnvelope(mine!, image(mine!)));
  assert.equal(node.logs.slice(-1), [
    `cluster: ignored a hand-over of key group ${mine} from a re-route: this node owns it, was not waiting for it and holds its live state, so the image is an older copy (counted in statecraft_handovers_ignored)`,
  ]);
  assert.is(node.handovers.stats.ignored, 1);
});

test('malformed images: dropped with the reason (SC_ERR_MALFORMED_IMAGE for another key group\'s), the key group starts empty here', () => {
  const node = joiner();
  const [first, second] = groupsOf('b', ['a', 'b']);
  node.handovers.onHandover(handoverEnvelope(first!, new Uint8Array([0xc0]))); // msgpack nil
  node.handovers.onHandover(handoverEnvelope(second!, image(first!)));
  assert.equal(node.logs.slice(-2), [
    `cluster: a hand-over for key group ${first} is malformed (not a version 1 key-group image): dropped`,
    `cluster: a hand-over for key group ${second} is malformed (its body is for key group ${first}): dropped`,
  ]);
  assert.ok(node.port.owned[first!] && node.port.owned[second!]);
  assert.not.ok(node.core.moves.isMoving(first!) || node.core.moves.isMoving(second!));
  node.handovers.onHandover(handoverEnvelope(KEY_GROUPS, image(KEY_GROUPS)));
  assert.equal(node.logs.slice(-1), [`cluster: dropped a hand-over for key group ${KEY_GROUPS}: the cluster has ${KEY_GROUPS}`]);
});

test('an image that arrives while views disagree waits, and is adopted on the next view', async () => {
  const node = shells('c', { joining: true });
  const [mine] = groupsOf('c', ['a', 'b', 'c']);
  node.handovers.onHandover(handoverEnvelope(mine!, image(mine!)));
  assert.is(node.port.adoptions.length, 0, 'not in a majority yet: kept');
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  assert.equal(
    node.port.adoptions.map((adoption) => adoption.keyGroup),
    [mine!],
    'retried with the new view',
  );
  // An image for a key group another node owns, from a third node: passed on to its owner.
  const [theirs] = groupsOf('a', ['a', 'b', 'c']);
  node.deliveringFrom = 'b';
  node.handovers.onHandover(handoverEnvelope(theirs!, image(theirs!)));
  node.deliveringFrom = null;
  assert.equal(sentLines(node.sent), [`a image ${theirs}`]);
});

test('re-routing what a retired link held: our own image goes where the placement says now (or is adopted back), invokes are delivered, egress copies dropped', async () => {
  const node = shells('a');
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  node.view({ a: 'alive', b: 'alive', c: 'dead' });
  const [toB] = groupsOf('b', ['a', 'b']);
  node.handovers.reroute(handoverEnvelope(toB!, image(toB!)));
  assert.equal(sentLines(node.sent), [`b image ${toB}`]);
  const [back] = groupsOf('a', ['a', 'b', 'c']); // a has owned it all along
  node.handovers.reroute(handoverEnvelope(back!, image(back!)));
  assert.equal(node.port.adoptions.map((adoption) => adoption.keyGroup), [back!], 'the placement returned it here');
  node.handovers.reroute(invoke(back!, 9));
  const egress = new Uint8Array(8);
  egress[0] = EnvelopeKind.Egress;
  node.handovers.reroute(egress);
  assert.equal(node.port.delivered, [[back!, 9]]);
});

test('a release that fails keeps the key group here; an adoption that fails starts it afresh', async () => {
  const node = shells('a');
  node.view({ a: 'alive', b: 'alive' });
  const [moving] = groupsOf('b', ['a', 'b']);
  node.handovers.forward(invoke(moving!, 4), 0, 9, moving!);
  node.port.releases.find((release) => release.keyGroups.includes(moving!))!.done.reject(new Error('shard gone'));
  await settle();
  assert.equal(node.logs.slice(-1), [`cluster: releasing key group ${moving} failed (shard gone): it stays here`]);
  assert.not.ok(node.core.moves.isMoving(moving!));
  assert.equal(sentLines(node.sent), [`b invoke ${moving} #4`], 'what waited goes on by the placement');
  assert.is(node.handovers.releasesPending, groupsOf('b', ['a', 'b']).length - 1);

  const adopter = joiner();
  const [mine] = groupsOf('b', ['a', 'b']);
  adopter.handovers.onHandover(handoverEnvelope(mine!, image(mine!)));
  adopter.port.adoptions[0]!.done.reject(new Error('bad state'));
  await settle();
  assert.equal(adopter.logs.slice(-1), [`cluster: adopting key group ${mine} failed (bad state): it starts afresh here`]);
  assert.ok(adopter.port.owned[mine!]);
});

test('releasesFinished: true once none is under way, false at the deadline', async () => {
  const node = shells('a');
  assert.ok(await node.handovers.releasesFinished(performance.now()));
  node.view({ a: 'alive', b: 'alive' });
  const awake = setTimeout(() => undefined, 1_000); // the shell's deadline timer does not keep the process alive
  assert.not.ok(await node.handovers.releasesFinished(performance.now() + 20));
  clearTimeout(awake);
  const finished = node.handovers.releasesFinished(performance.now() + 5_000);
  for (const keyGroup of groupsOf('b', ['a', 'b'])) node.port.finishRelease(keyGroup);
  assert.ok(await finished);
});

test('without a majority messages are held briefly, again and again, and go once the majority is back', async () => {
  const node = shells('a');
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  for (const keyGroup of groupsOf('b', ['a', 'b', 'c'])) node.port.finishRelease(keyGroup);
  for (const keyGroup of groupsOf('c', ['a', 'b', 'c'])) node.port.finishRelease(keyGroup);
  await settle();
  node.sent.length = 0;
  node.view({ a: 'alive', b: 'suspect', c: 'suspect' });
  const [theirs] = groupsOf('b', ['a', 'b', 'c']);
  node.handovers.forward(invoke(theirs!, 5), 0, 9, theirs!);
  await sleep(60);
  assert.equal(node.sent, [], 'still held after a few rounds');
  assert.is(node.core.checkpointBlocked(node.handovers.heldCount), 'not serving: reaches 1 of the 3 members of the last agreed view, not a majority: waiting for them');
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  assert.equal(sentLines(node.sent), [`b invoke ${theirs} #5`]);
  assert.is(node.handovers.heldCount, 0);
  node.handovers.close();
});

test('a recovery drops what waited; shutdown says what it drops', async () => {
  const node = joiner();
  const [mine] = groupsOf('b', ['a', 'b']);
  node.handovers.forward(invoke(mine!, 1), 0, 9, mine!);
  node.handovers.close();
  assert.equal(node.logs.slice(-1), ['cluster: 1 messages still waiting for a key group were dropped at shutdown']);
  node.handovers.dropAll();
  assert.is(node.handovers.heldCount, 0);
  assert.is(node.handovers.heldBytes, 0);
});

// ---- route fences: a sender's messages to one address stay in order across a change of owner ----

test('route fence, third node: after the owner changes, what starts here waits for the marker sent behind the earlier messages to reach the new owner', async () => {
  const many = 64;
  const node = shells('c', { joining: true, keyGroups: many });
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  const moved = groupsIn(many, 'a', ['a', 'b', 'c']).find((keyGroup) => groupsIn(many, 'd', ['a', 'b', 'c', 'd']).includes(keyGroup))!;
  assert.ok(moved !== undefined, 'a key group that moves from a to d');
  node.sent.length = 0;
  node.handovers.forward(invoke(moved, 1), 0, 9, moved);
  node.view({ a: 'alive', b: 'alive', c: 'alive', d: 'alive' });
  node.handovers.forward(invoke(moved, 2), 0, 9, moved);
  const mine = node.sent.filter(({ bytes }) => readKeyGroup(bytes, 0) === moved);
  assert.equal(sentLines(mine), [`a invoke ${moved} #1`, `a fence ${moved}`], 'message 2 waits; the marker follows message 1 to a');
  assert.is(node.handovers.fences.count, 1, 'one fence: the only key group this node forwarded to a');
  assert.is(node.handovers.heldCount, 1);
  // A message passing through from a peer does not wait (it is that peer's to fence).
  node.deliveringFrom = 'b';
  node.handovers.forward(invoke(moved, 3), 0, 9, moved);
  node.deliveringFrom = null;
  const marker = decodeFence(mine[1]!.bytes, 0, mine[1]!.bytes.length);
  assert.is(marker.origin, 'c');
  // An answer to another fence changes nothing; d's answer to this one lets message 2 go, to d.
  node.deliveringFrom = 'd';
  node.handovers.onFence(encodeFence({ ...marker, id: marker.id + 1, answer: true }));
  assert.is(node.handovers.heldCount, 1);
  node.handovers.onFence(encodeFence({ ...marker, answer: true }));
  node.deliveringFrom = null;
  assert.equal(sentLines(node.sent.filter(({ bytes }) => readKeyGroup(bytes, 0) === moved)).slice(2), [`d invoke ${moved} #3`, `d invoke ${moved} #2`]);
  assert.is(node.handovers.heldCount, 0);
  assert.is(node.handovers.fences.count, 0);
});

test('route fence, new owner: the image waits for the answer, so what the old owner passed back goes to the shard before what started here', async () => {
  const many = 64;
  const node = shells('c', { keyGroups: many });
  node.view({ a: 'alive', c: 'alive', x: 'alive' });
  for (const keyGroup of [...groupsIn(many, 'a', ['a', 'c', 'x']), ...groupsIn(many, 'x', ['a', 'c', 'x'])]) node.port.finishRelease(keyGroup);
  await settle();
  const moved = groupsIn(many, 'x', ['a', 'c', 'x']).find((keyGroup) => groupsIn(many, 'c', ['a', 'c']).includes(keyGroup))!;
  assert.ok(moved !== undefined, 'a key group that moves from x to c');
  node.sent.length = 0;
  node.handovers.forward(invoke(moved, 1), 0, 9, moved);
  // x leaves gracefully: c takes the key group over from it.
  node.view({ a: 'alive', c: 'alive', x: 'left' });
  assert.is(node.core.moves.get(moved)?.state, 'awaiting');
  node.port.deliver(invoke(moved, 2), 0, 9); // starts here (a client's event)
  const toX = node.sent.filter(({ bytes }) => readKeyGroup(bytes, 0) === moved);
  assert.equal(sentLines(toX), [`x invoke ${moved} #1`, `x fence ${moved}`]);
  // x hands the key group over, then passes message 1 (which reached it late) back, then the marker.
  node.deliveringFrom = 'x';
  node.handovers.onHandover(handoverEnvelope(moved, image(moved)));
  assert.equal(node.port.adoptions.filter((adoption) => adoption.keyGroup === moved), [], 'the image waits for the answer');
  node.port.deliver(invoke(moved, 1), 0, 9, 'x');
  node.handovers.onFence(toX[1]!.bytes);
  node.deliveringFrom = null;
  const adoption = node.port.adoptions.find((entry) => entry.keyGroup === moved)!;
  assert.ok(adoption, 'adopted after the answer');
  adoption.done.resolve(0);
  await settle();
  assert.equal(node.port.delivered.filter(([keyGroup]) => keyGroup === moved), [[moved, 1], [moved, 2]], 'in send order');
  assert.is(node.handovers.fences.count, 0);
});

test('route fence markers on the way: the owner answers at once; a node handing the key group over sends it behind the image', async () => {
  const node = shells('a');
  node.view({ a: 'alive', b: 'alive', c: 'alive' });
  const [kept] = groupsOf('a', ['a', 'b', 'c']);
  const [leaving] = groupsOf('b', ['a', 'b', 'c']);
  node.sent.length = 0;
  node.deliveringFrom = 'c';
  node.handovers.onFence(encodeFence({ keyGroup: kept!, id: 7, origin: 'c', answer: false }));
  node.handovers.forward(invoke(leaving!, 1), 0, 9, leaving!);
  node.handovers.onFence(encodeFence({ keyGroup: leaving!, id: 8, origin: 'c', answer: false }));
  node.deliveringFrom = null;
  assert.equal(sentLines(node.sent), [`c answer ${kept}`]);
  node.port.finishRelease(leaving!);
  await settle();
  assert.equal(sentLines(node.sent).slice(1), [`b image ${leaving}`, `b invoke ${leaving} #1`, `b fence ${leaving}`]);
  // A marker queued for a peer that is gone goes on by the placement; an answer for one is dropped.
  node.sent.length = 0;
  node.handovers.reroute(encodeFence({ keyGroup: leaving!, id: 9, origin: 'c', answer: false }));
  node.handovers.reroute(encodeFence({ keyGroup: leaving!, id: 9, origin: 'c', answer: true }));
  assert.equal(sentLines(node.sent), [`b fence ${leaving}`]);
  assert.throws(() => node.handovers.onFence(encodeFence({ keyGroup: 99, id: 1, origin: 'c', answer: false })), /key group 99, but the cluster has 16/);
});

test('route fences: none toward a dead node; an unanswered one expires and says what it releases; a recovery drops them', () => {
  const sent: string[] = [];
  const fences = new RouteFences({ selfId: 'c', keyGroups: 4, send: (peer, bytes) => void sent.push(`${peer} ${readKeyGroup(bytes, 0)}`) });
  fences.sentTo(0, 'a');
  fences.sentTo(1, 'b');
  fences.sentTo(2, 'a');
  assert.is(fences.placementChanged((keyGroup) => (keyGroup === 3 ? 'a' : 'd'), (peer) => peer !== 'b', 1000), 2);
  assert.equal(sent, ['a 0', 'a 2']);
  fences.hold(0, new Uint8Array(5));
  assert.is(fences.nextExpiryMs(), 1000 + 5_000);
  assert.equal(fences.expired(5_999), []);
  const expired = fences.expired(6_000);
  assert.equal(expired.map((closed) => [closed.keyGroup, closed.held.length, closed.to]), [[0, 1, 'a'], [2, 0, 'a']]);
  assert.is(fences.heldCount, 0);
  fences.sentTo(3, 'x');
  fences.placementChanged(() => 'd', () => true, 7000);
  fences.hold(3, new Uint8Array(2));
  fences.dropAll();
  assert.is(fences.count, 0);
  assert.is(fences.heldBytes, 0);
});

test.run();
