// The membership core (SWIM + Lifeguard), driven directly and in a seeded simulation with a fake clock
// and a network that delays, loses, reorders and partitions. A failing seed is named in the assertion;
// replay it alone with: MEMBERSHIP_SEED=<seed> node dist/test/cluster/membership-sim.test.js (each run adds
// fresh seeds to the fixed ones, printed first; MEMBERSHIP_TRACE=1 prints a failing partition run's
// membership changes around the heal)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pack, unpack } from 'msgpackr';
import {
  MEMBERSHIP_DEFAULTS,
  MEMBERSHIP_PROTOCOL_VERSION,
  Membership,
  messageProblem,
  supersedes,
  suspicionMinMs,
  suspicionTimeoutMs,
  type Action,
  type MemberState,
  type MemberUpdate,
  type WireMessage,
} from '../../cluster/membership.js';
import { SimCluster, createRandom, type NetworkConditions } from './sim-network.js';
import { replayLine, seedsFor } from '../sim/seeds.js';

const replaySeed = process.env.MEMBERSHIP_SEED === undefined ? null : Number(process.env.MEMBERSHIP_SEED);
/** MEMBERSHIP_SEED_SCALE=10 runs ten times the seeds, for a soak run by hand. */
const seedScale = Number(process.env.MEMBERSHIP_SEED_SCALE ?? 1);
const CLEAN: NetworkConditions = { delayMinMs: 1, delayMaxMs: 20, lossRate: 0 };
const { probeIntervalMs, suspicionMultiplier, suspicionMaxMultiplier } = MEMBERSHIP_DEFAULTS;

/**
 * Runs `scenario` for `count` seeds from `first` (or only the replayed seed), failing on the first seed
 * whose scenario returns a problem. The message names the seed so it can be replayed.
 */
const REPLAY = 'MEMBERSHIP_SEED=<seed> node dist/test/cluster/membership-sim.test.js';

function forSeeds(name: string, first: number, count: number, scenario: (seed: number) => string | null): void {
  const seeds = seedsFor({ name, first, count: Math.ceil(count * seedScale), replay: replaySeed, replayCommand: REPLAY });
  for (const seed of seeds) {
    let problem: string | null;
    try {
      problem = scenario(seed);
    } catch (error) {
      // An exception is a failure of this seed too: it gets its replay line.
      problem = `threw ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
    }
    if (problem !== null) assert.unreachable(`${name}, seed ${seed}: ${problem} (replay: ${replayLine({ replayCommand: REPLAY }, seed)})`);
  }
}

/** n0 starts alone; n1.. join through it at random moments in the first ~1.5 s. */
function buildCluster(seed: number, count: number, conditions: NetworkConditions = CLEAN): SimCluster {
  const cluster = new SimCluster(seed, conditions);
  cluster.addNode('n0', []);
  for (let index = 1; index < count; index++) {
    cluster.runUntil(cluster.nowMs + Math.floor(cluster.random() * 300));
    cluster.addNode(`n${index}`, ['n0']);
  }
  return cluster;
}

const ids = (count: number) => Array.from({ length: count }, (_, index) => `n${index}`);

/**
 * Every running node knows exactly the expected members in the expected states, and all running nodes
 * agree on each member's incarnation and address. Null when so, else what differs.
 */
function viewProblem(cluster: SimCluster, expected: Record<string, MemberState>): string | null {
  const wanted = Object.keys(expected).sort().join(',');
  const seen = new Map<string, Set<string>>();
  for (const node of cluster.running()) {
    const view = node.membership.members();
    const known = view.map((member) => member.id).join(',');
    if (known !== wanted) return `at ${cluster.nowMs} ms ${node.id} knows [${known}], expected [${wanted}]`;
    for (const member of view) {
      if (member.state !== expected[member.id]) return `at ${cluster.nowMs} ms ${node.id} sees ${member.id} ${member.state} (incarnation ${member.incarnation}), expected ${expected[member.id]}`;
      const versions = seen.get(member.id) ?? new Set<string>();
      versions.add(`incarnation ${member.incarnation} at ${member.address}`);
      seen.set(member.id, versions);
    }
  }
  for (const [id, versions] of seen) if (versions.size > 1) return `views disagree about ${id}: ${[...versions].join(' / ')}`;
  return null;
}

const allAlive = (members: string[]): Record<string, MemberState> => Object.fromEntries(members.map((id) => [id, 'alive' as MemberState]));

/** The Lifeguard maximum suspicion for n live members, with the default settings. */
const maxSuspicionMs = (members: number) => suspicionMinMs(suspicionMultiplier, members, probeIntervalMs) * suspicionMaxMultiplier;

/**
 * Detection bound for a crash, every survivor, default settings, clean network (local health stays 0):
 * a survivor probes each of its n − 1 peers once per shuffled round, so the crashed one comes up again
 * within 2(n − 1) − 1 periods, plus the period in progress; the failed probe ends one period later; its
 * own suspicion timer then runs at most the Lifeguard maximum; plus two network delays of slack.
 * For n ≤ 9: (2(n − 1) + 1) × 200 + 4800 + 40 ms, so 7440 ms for 7 nodes.
 */
const detectionBoundMs = (members: number) => (2 * (members - 1) + 1) * probeIntervalMs + maxSuspicionMs(members) + 2 * CLEAN.delayMaxMs;

// ---------------------------------------------------------------------------------------------------
// Rules, formulas, and the core driven by hand

test('precedence: higher incarnation wins; at equal incarnation alive < suspect < dead < left', () => {
  const claim = (state: MemberState, incarnation: number) => ({ state, incarnation });
  assert.ok(supersedes(claim('alive', 2), claim('suspect', 1)), 'alive with a higher incarnation overrides suspect');
  assert.ok(supersedes(claim('alive', 2), claim('dead', 1)), 'a dead member comes back with a higher incarnation');
  assert.not.ok(supersedes(claim('alive', 1), claim('suspect', 1)), 'alive does not override suspect of the same incarnation');
  assert.ok(supersedes(claim('suspect', 1), claim('alive', 1)), 'suspect overrides alive of the same incarnation');
  assert.not.ok(supersedes(claim('suspect', 0), claim('alive', 1)), 'stale suspicion is ignored');
  assert.ok(supersedes(claim('dead', 1), claim('suspect', 1)));
  assert.ok(supersedes(claim('dead', 1), claim('alive', 1)));
  assert.not.ok(supersedes(claim('alive', 1), claim('dead', 1)), 'stale alive does not resurrect');
  assert.ok(supersedes(claim('left', 1), claim('dead', 1)), 'a leave outranks a concurrent death verdict');
  assert.not.ok(supersedes(claim('dead', 1), claim('left', 1)));
  assert.not.ok(supersedes(claim('suspect', 1), claim('suspect', 1)), 'a repeat is a confirmation, not an override');
});

test('Lifeguard suspicion timeout: max with no confirmation, min at K, logarithmic in between', () => {
  assert.is(suspicionMinMs(4, 5, 200), 800, 'max(1, log10(n)) keeps small clusters at alpha × interval');
  assert.is(suspicionMinMs(4, 100, 200), 1600);
  assert.is(maxSuspicionMs(7), 4800);
  assert.is(suspicionTimeoutMs(800, 4800, 0, 3), 4800);
  assert.is(suspicionTimeoutMs(800, 4800, 1, 3), 2800, 'log(2) / log(4) = 1/2 of the way');
  assert.is(suspicionTimeoutMs(800, 4800, 2, 3), Math.floor(4800 - (4000 * Math.log(3)) / Math.log(4)));
  assert.is(suspicionTimeoutMs(800, 4800, 3, 3), 800);
  assert.is(suspicionTimeoutMs(800, 4800, 9, 3), 800, 'never below min');
  assert.is(suspicionTimeoutMs(800, 4800, 0, 0), 800, 'nobody can confirm: min');
});

test('config errors name the option and the accepted range', () => {
  const base = { selfId: 'a', selfAddress: 'a:1', keyGroups: 1024, random: Math.random };
  assert.throws(
    () => new Membership({ ...base, probeTimeoutMs: 300 }),
    (error: Error) => error.message === 'membership: probeTimeoutMs must be below probeIntervalMs, to leave time for indirect probes (got probeTimeoutMs 300, probeIntervalMs 200)',
  );
  assert.throws(() => new Membership({ ...base, keyGroups: 0 }), /keyGroups must be an integer >= 1 \(got 0\)/);
  assert.throws(() => new Membership({ ...base, indirectProbes: 1.5 }), /indirectProbes must be an integer >= 0/);
});

/** A node driven by hand, with the messages it sends collected. */
function handNode(id: string, overrides: Partial<ConstructorParameters<typeof Membership>[0]> = {}) {
  const membership = new Membership({ selfId: id, selfAddress: `${id}:1`, keyGroups: 1024, random: createRandom(7), ...overrides });
  return membership;
}
const sends = (actions: Action[]) => actions.flatMap((action) => (action.type === 'send' ? [action] : []));
const changes = (actions: Action[]) => actions.flatMap((action) => (action.type === 'changed' ? [action] : []));
const ping = (from: string, incarnation: number, target: string, updates: MemberUpdate[] = []): WireMessage => ({
  type: 'ping',
  from,
  address: `${from}:1`,
  incarnation,
  seq: 1,
  target,
  updates,
});

test('a node that hears itself suspected refutes with a higher incarnation, in its very ack', () => {
  const node = handNode('a');
  node.start(0, []);
  const actions = node.receive(10, 'b:1', ping('b', 0, 'a', [{ id: 'a', address: 'a:1', incarnation: 0, state: 'suspect', from: 'b' }]));
  assert.is(node.incarnation, 1);
  assert.is(node.localHealth, 1, 'having to refute counts against local health');
  const [ack] = sends(actions);
  assert.is(ack?.message.type, 'ack');
  assert.ok(ack?.message.type === 'ack' && ack.message.incarnation === 1);
  assert.ok(ack?.message.type === 'ack' && ack.message.updates.some((update) => update.id === 'a' && update.state === 'alive' && update.incarnation === 1));
  // Declared dead at an older incarnation: already refuted, nothing to do.
  node.receive(20, 'b:1', ping('b', 0, 'a', [{ id: 'a', address: 'a:1', incarnation: 0, state: 'dead' }]));
  assert.is(node.incarnation, 1);
  node.receive(30, 'b:1', ping('b', 0, 'a', [{ id: 'a', address: 'a:1', incarnation: 1, state: 'dead' }]));
  assert.is(node.incarnation, 2);
});

test('applied through messages: suspect, dead, stale alive, rejoin at a higher incarnation with a new address', () => {
  const node = handNode('a');
  node.start(0, []);
  const seen: Action[] = [];
  seen.push(...node.receive(1, 'b:1', ping('b', 0, 'a')));
  assert.equal(node.member('b'), { id: 'b', address: 'b:1', incarnation: 0, state: 'alive' }, 'a sender is alive by its own word');
  seen.push(...node.receive(2, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:1', incarnation: 0, state: 'suspect', from: 'c' }])));
  assert.is(node.member('b')?.state, 'suspect');
  seen.push(...node.receive(3, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:1', incarnation: 0, state: 'alive' }])));
  assert.is(node.member('b')?.state, 'suspect', 'alive of the same incarnation does not clear a suspicion');
  seen.push(...node.receive(4, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:1', incarnation: 0, state: 'dead' }])));
  assert.is(node.member('b')?.state, 'suspect', "another node's death verdict is a suspicion here: only our own timer kills");
  seen.push(...node.tick(node.suspicionDeadline('b')!));
  assert.is(node.member('b')?.state, 'dead');
  // Stale gossip and even b's own old messages cannot bring it back at the dead incarnation.
  const reply = node.receive(20_001, 'b:1', ping('b', 0, 'a'));
  assert.is(node.member('b')?.state, 'dead');
  const [ack] = sends(reply);
  assert.ok(ack?.message.type === 'ack' && ack.message.updates[0]?.id === 'b' && ack.message.updates[0]?.state === 'dead', 'the reply tells b it is dead, first');
  // b restarted somewhere else and refuted above its tombstone.
  seen.push(...node.receive(20_002, 'b:2', { ...ping('b', 1, 'a'), address: 'b:2' }));
  assert.equal(node.member('b'), { id: 'b', address: 'b:2', incarnation: 1, state: 'alive' });
  assert.equal(
    changes(seen).filter((change) => change.member.id === 'b').map((change) => `${change.previous}->${change.member.state}`),
    ['null->alive', 'alive->suspect', 'suspect->dead', 'dead->alive'],
  );
  // A leave outranks a death verdict of the same incarnation, never the other way round.
  node.receive(20_003, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:2', incarnation: 1, state: 'left' }]));
  node.receive(20_004, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:2', incarnation: 1, state: 'dead' }]));
  assert.is(node.member('b')?.state, 'left');
});

test("a death verdict heard from a peer about a live member: suspected only, asked at once, and its refutation clears it", () => {
  const node = handNode('a');
  node.start(0, []);
  node.receive(1, 'b:1', ping('b', 0, 'a'));
  node.receive(2, 'c:1', ping('c', 0, 'a'));
  // c comes back from the other side of a healed partition, where b was declared dead.
  const heard = node.receive(3, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:1', incarnation: 0, state: 'dead', from: 'c' }]));
  assert.is(node.member('b')?.state, 'suspect');
  const deadline = node.suspicionDeadline('b')!;
  assert.ok(deadline - 3 >= suspicionMinMs(suspicionMultiplier, 3, probeIntervalMs), 'at least the minimum suspicion: time for b to refute');
  const [check] = sends(heard).filter((send) => send.to === 'b:1');
  assert.ok(check?.message.type === 'ping' && check.message.target === 'b', 'b is pinged at once');
  assert.ok(
    check?.message.type === 'ping' && check.message.updates[0]?.id === 'b' && check.message.updates[0]?.state === 'suspect',
    'the ping tells b it is suspect, first, so it refutes in its ack',
  );
  // b refutes in its ack: alive again, no death.
  const seq = check!.message.type === 'ping' ? check!.message.seq : 0;
  node.receive(10, 'b:1', { type: 'ack', seq, from: 'b', address: 'b:1', incarnation: 1, updates: [] });
  assert.is(node.member('b')?.state, 'alive');
  node.tick(deadline + 1);
  assert.is(node.member('b')?.state, 'alive', 'the old timer does not fire');
  // A second verdict of the old incarnation is stale now.
  node.receive(deadline + 2, 'c:1', ping('c', 0, 'a', [{ id: 'b', address: 'b:1', incarnation: 0, state: 'dead', from: 'c' }]));
  assert.is(node.member('b')?.state, 'alive');
});

test('a failed probe makes the target suspect; the next ping to it carries the suspicion (buddy system)', () => {
  const node = handNode('a');
  node.start(0, []);
  node.receive(0, 'b:1', ping('b', 0, 'a'));
  const pinged: WireMessage[] = [];
  let health = 0;
  for (let now = 0; now <= 2000; now = Math.max(now + 1, Math.min(node.nextDeadline(), 2000 + 1))) {
    for (const send of sends(node.tick(now))) pinged.push(send.message);
    health = Math.max(health, node.localHealth);
    if (node.member('b')?.state === 'suspect' && pinged.filter((message) => message.type === 'ping').length >= 2) break;
  }
  assert.is(node.member('b')?.state, 'suspect');
  assert.ok(health >= 1, 'a failed probe with nobody to relay counts against local health');
  const second = pinged.filter((message) => message.type === 'ping')[1];
  assert.ok(second?.type === 'ping' && second.updates[0]?.id === 'b' && second.updates[0]?.state === 'suspect' && second.updates[0]?.from === 'a');
  // b's ack with a refutation clears it; an ack on time also brings local health down.
  const suspicion = node.suspicionDeadline('b');
  assert.ok(suspicion !== null && suspicion > 0);
  const healthBefore = node.localHealth;
  node.receive(2001, 'b:1', { type: 'ack', from: 'b', address: 'b:1', incarnation: 1, seq: second.seq, updates: [] });
  assert.is(node.member('b')?.state, 'alive');
  assert.is(node.suspicionDeadline('b'), null);
  assert.is(node.localHealth, healthBefore - 1, 'an ack on time brings local health back down');
});

/** Node a knows b and c, probes one of them, which never answers; the other is asked to help. */
function failedProbeWithHelper(answerNack: boolean) {
  const node = handNode('a');
  node.start(0, []);
  node.receive(0, 'b:1', ping('b', 0, 'a'));
  node.receive(0, 'c:1', ping('c', 0, 'a'));
  let now = 0;
  let request: WireMessage | undefined;
  let pingMs = -1;
  while (request === undefined) {
    now = node.nextDeadline();
    for (const send of sends(node.tick(now))) {
      if (send.message.type === 'ping' && pingMs < 0) pingMs = now;
      if (send.message.type === 'ping-req') request = send.message;
    }
  }
  assert.is(now - pingMs, MEMBERSHIP_DEFAULTS.probeTimeoutMs, 'indirect probes go out after the probe timeout');
  assert.ok(request.type === 'ping-req');
  const target = request.target;
  const helper = target === 'b' ? 'c' : 'b';
  assert.is(request.timeoutMs, (probeIntervalMs - MEMBERSHIP_DEFAULTS.probeTimeoutMs) / 2, 'the helper nacks halfway through what is left');
  if (answerNack) node.receive(now + 60, `${helper}:1`, { type: 'nack', from: helper, address: `${helper}:1`, incarnation: 0, seq: request.seq, updates: [] });
  const endMs = pingMs + probeIntervalMs;
  const next = sends(node.tick(endMs));
  assert.ok(next.some((send) => send.message.type === 'ping'), 'the next period starts at once');
  return { node, target, endMs };
}

test('Lifeguard nacks: a failed probe whose helpers nacked does not count against local health', () => {
  const nacked = failedProbeWithHelper(true);
  assert.is(nacked.node.member(nacked.target)?.state, 'suspect');
  assert.is(nacked.node.localHealth, 0);
  const silent = failedProbeWithHelper(false);
  assert.is(silent.node.member(silent.target)?.state, 'suspect');
  assert.is(silent.node.localHealth, 1, 'a missing nack hints that we are the slow one');
  // Local health stretches the next probe: its indirect phase starts after 2 × 100 ms, not 100.
  assert.is(silent.node.nextDeadline() - silent.endMs, 2 * MEMBERSHIP_DEFAULTS.probeTimeoutMs);
  assert.is(nacked.node.nextDeadline() - nacked.endMs, MEMBERSHIP_DEFAULTS.probeTimeoutMs);
});

test('helping with an indirect probe: relay the ack with the origin\'s seq, or nack at the timeout', () => {
  const node = handNode('h');
  node.start(0, []);
  const request = (seq: number, target = 't'): WireMessage => ({ type: 'ping-req', from: 'a', address: 'a:1', incarnation: 0, seq, target, targetAddress: `${target}:1`, timeoutMs: 50, updates: [] });
  // A ping-req for an id this node does not know is nacked: it dials no address a peer names at will.
  const unknown = sends(node.receive(5, 'a:1', request(40, 'stranger')));
  assert.equal(unknown.map((send) => [send.to, send.message.type]), [['a:1', 'nack']]);
  sends(node.receive(6, 't:1', ping('t', 0, 'h')));
  const [probe] = sends(node.receive(10, 'a:1', request(41)));
  assert.ok(probe?.to === 't:1' && probe.message.type === 'ping' && probe.message.target === 't');
  const relayed = sends(node.receive(20, 't:1', { type: 'ack', from: 't', address: 't:1', incarnation: 0, seq: probe.message.type === 'ping' ? probe.message.seq : -1, updates: [] }));
  assert.equal(relayed.map((send) => [send.to, send.message.type, 'seq' in send.message ? send.message.seq : null]), [['a:1', 'ack', 41]]);
  sends(node.receive(30, 'a:1', request(42)));
  assert.is(node.nextDeadline() <= 80, true);
  const nacked = sends(node.tick(80)).filter((send) => send.message.type === 'nack');
  assert.equal(nacked.map((send) => [send.to, 'seq' in send.message ? send.message.seq : null]), [['a:1', 42]]);
});

test('join is retried until a seed answers', () => {
  const cluster = new SimCluster(5, CLEAN);
  const joiner = cluster.addNode('x', ['s']);
  cluster.runUntil(2500);
  assert.not.ok(joiner.membership.joined);
  cluster.addNode('s', []);
  cluster.runUntil(2500 + MEMBERSHIP_DEFAULTS.joinRetryMs + 100);
  assert.ok(joiner.membership.joined);
  assert.is(viewProblem(cluster, allAlive(['s', 'x'])), null);
});

test('tick is idempotent and nextDeadline moves on', () => {
  const node = handNode('a');
  node.start(0, []);
  node.receive(0, 'b:1', ping('b', 0, 'a'));
  const deadline = node.nextDeadline();
  assert.ok(Number.isFinite(deadline));
  const first = node.tick(deadline);
  assert.ok(sends(first).length === 1, 'one ping');
  assert.equal(node.tick(deadline), [], 'a second tick at the same time does nothing');
  assert.ok(node.nextDeadline() > deadline);
});

test('after leave: self is left, peers are told directly, probing stops, and nothing stays due', () => {
  const node = handNode('a', { tombstoneMs: 1000 });
  node.start(0, []);
  for (const peer of ['b', 'c']) node.receive(0, `${peer}:1`, ping(peer, 0, 'a'));
  node.receive(1, 'c:1', ping('c', 0, 'a', [{ id: 'd', address: 'd:1', incarnation: 0, state: 'dead' }]));
  const actions = node.leave(5);
  assert.equal(changes(actions).map((change) => [change.member.id, change.member.state]), [['a', 'left']]);
  const told = sends(actions);
  assert.equal(told.map((send) => send.to).sort(), ['b:1', 'c:1']);
  assert.ok(told.every((send) => send.message.type === 'leave' && send.message.updates[0]?.id === 'a' && send.message.updates[0]?.state === 'left'));
  // Only d's tombstone is due (at 1 ms + 1000); once it is gone, nothing is.
  assert.is(node.nextDeadline(), 1001);
  assert.equal(sends(node.tick(1001)), []);
  assert.is(node.member('d'), undefined, 'the tombstone expired');
  assert.is(node.nextDeadline(), Infinity);
  const [ack] = sends(node.receive(2000, 'b:1', ping('b', 0, 'a')));
  assert.ok(ack?.message.type === 'ack' && ack.message.updates[0]?.id === 'a' && ack.message.updates[0]?.state === 'left', 'pings are still answered, with the leave first');
});

test('malformed messages are reported and dropped, never thrown', () => {
  const node = handNode('a');
  node.start(0, []);
  for (const bad of [null, 42, {}, { type: 'ping', from: 'b', address: 'b:1', incarnation: 0, seq: 1, target: 'a', updates: [{ id: 'x' }] }, { type: 'bogus', from: 'b', address: 'b:1', incarnation: 0 }]) {
    const actions = node.receive(1, 'b:1', bad as never);
    assert.is(actions.length, 1);
    assert.is(actions[0]?.type, 'malformed');
  }
  assert.is(node.members().length, 1);
});

test('every message a simulated cluster sends survives a msgpackr round trip and the shape check', () => {
  const cluster = new SimCluster(11, CLEAN);
  const types = new Set<string>();
  cluster.transcode = (message) => {
    const copy = unpack(pack(message)) as WireMessage;
    assert.equal(copy, message);
    assert.is(messageProblem(copy), null);
    types.add(message.type);
    return copy;
  };
  cluster.addNode('n0', []);
  for (const id of ['n1', 'n2', 'n3']) cluster.addNode(id, ['n0']);
  cluster.runUntil(3000);
  cluster.leaveAndStop('n3');
  cluster.crash('n2');
  cluster.runUntil(12000);
  assert.equal([...types].sort(), ['ack', 'join', 'join-ack', 'leave', 'nack', 'ping', 'ping-req']);
});

// ---------------------------------------------------------------------------------------------------
// Join refused

for (const mismatch of ['keyGroups', 'protocolVersion'] as const) {
  test(`a joiner with another ${mismatch} is refused: both sides report it, no view changes`, () => {
    forSeeds(`refused ${mismatch}`, 90_000, 20, (seed) => {
      const cluster = buildCluster(seed, 3);
      cluster.runUntil(3000);
      const before = cluster.node('n0').membership.members();
      const overrides = mismatch === 'keyGroups' ? { keyGroups: 512 } : { protocolVersion: MEMBERSHIP_PROTOCOL_VERSION + 1 };
      const joiner = cluster.addNode('x', ['n0'], overrides);
      cluster.runUntil(8000);
      const seedNode = cluster.node('n0');
      if (joiner.refused.length !== 1) return `the joiner reported ${joiner.refused.length} refusals`;
      if (seedNode.refusedPeers.length < 1) return 'the seed did not report the refusal';
      const [reason] = joiner.refused;
      const values = mismatch === 'keyGroups' ? ['512 key groups', 'use 1024', '--key-groups 1024'] : [`version ${MEMBERSHIP_PROTOCOL_VERSION + 1}`, `version ${MEMBERSHIP_PROTOCOL_VERSION}`];
      for (const value of values) if (!reason!.includes(value)) return `the reason does not say "${value}": ${reason}`;
      if (seedNode.refusedPeers[0] !== reason) return 'the seed logs another text than the joiner got';
      if (joiner.membership.refusedReason !== reason) return 'the joiner core does not keep the reason';
      if (joiner.membership.nextDeadline() !== Infinity) return 'a refused joiner keeps working';
      if (joiner.membership.members().length !== 1) return 'the refused joiner learnt a view';
      assert.equal(seedNode.membership.members(), before);
      joiner.running = false;
      return viewProblem(cluster, allAlive(ids(3)));
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Simulated scenarios

test('clean network: joins converge to all alive; nobody is ever suspected or declared dead', () => {
  let worstConvergedMs = 0;
  forSeeds('clean', 1, 1200, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    const joinedMs = cluster.nowMs;
    let convergedMs: number | null = null;
    for (let now = joinedMs; now <= 15_000; now += 100) {
      cluster.runUntil(now);
      if (convergedMs === null && viewProblem(cluster, allAlive(ids(count))) === null) convergedMs = now;
    }
    const bad = cluster.changes.find((change) => change.member.state !== 'alive');
    if (bad !== undefined) return `at ${bad.timeMs} ms ${bad.observer} saw ${bad.member.id} ${bad.member.state}`;
    if (convergedMs === null) return viewProblem(cluster, allAlive(ids(count)));
    worstConvergedMs = Math.max(worstConvergedMs, convergedMs - joinedMs);
    return viewProblem(cluster, allAlive(ids(count)));
  });
  console.log(`  clean: all views complete at most ${worstConvergedMs} ms after the last join`);
});

test('crash: every survivor declares the crashed node dead within the bound, and the views agree', () => {
  let worstMs = 0;
  forSeeds('crash', 10_000, 800, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const joined = viewProblem(cluster, allAlive(ids(count)));
    if (joined !== null) return `before the crash: ${joined}`;
    const crashed = `n${Math.floor(cluster.random() * count)}`;
    cluster.runUntil(4000 + Math.floor(cluster.random() * probeIntervalMs));
    const crashMs = cluster.nowMs;
    cluster.crash(crashed);
    const boundMs = detectionBoundMs(count);
    cluster.runUntil(crashMs + boundMs + 2000);
    for (const survivor of cluster.running()) {
      const dead = cluster.changes.find((change) => change.observer === survivor.id && change.member.id === crashed && change.member.state === 'dead');
      if (dead === undefined) return `${survivor.id} never declared ${crashed} dead`;
      const tookMs = dead.timeMs - crashMs;
      if (tookMs > boundMs) return `${survivor.id} declared ${crashed} dead after ${tookMs} ms, bound ${boundMs} ms`;
      worstMs = Math.max(worstMs, tookMs);
    }
    const wrong = cluster.changes.find((change) => change.member.id !== crashed && change.member.state === 'dead');
    if (wrong !== undefined) return `at ${wrong.timeMs} ms ${wrong.observer} declared the live ${wrong.member.id} dead`;
    return viewProblem(cluster, { ...allAlive(ids(count)), [crashed]: 'dead' });
  });
  console.log(`  crash: slowest detection ${worstMs} ms (bound ${detectionBoundMs(3)}..${detectionBoundMs(7)} ms for 3..7 nodes)`);
});

test('lossy, reordering network, then healed: views converge with every node alive', () => {
  let falseDeaths = 0;
  forSeeds('lossy', 20_000, 300, (seed) => {
    const count = 4 + (seed % 4);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(3000);
    // 10–20% loss; delays up to 80 ms reorder messages and often outlast the 100 ms probe timeout.
    cluster.conditions = { delayMinMs: 1, delayMaxMs: 80, lossRate: 0.1 + cluster.random() * 0.1 };
    cluster.runUntil(13_000);
    falseDeaths += cluster.changes.filter((change) => change.member.state === 'dead').length;
    cluster.conditions = { ...CLEAN };
    cluster.runUntil(43_000);
    return viewProblem(cluster, allAlive(ids(count)));
  });
  console.log(`  lossy: ${falseDeaths} false death verdicts during the lossy phases, all healed`);
});

test('partition, then heal: each side declares the other dead; at the heal nobody declares a member of its own side dead; then everyone is alive again', () => {
  forSeeds('partition', 30_000, 250, (seed) => {
    const count = 4 + (seed % 4);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const shuffled = ids(count);
    for (let index = shuffled.length - 1; index > 0; index--) {
      const other = Math.floor(cluster.random() * (index + 1));
      [shuffled[index], shuffled[other]] = [shuffled[other]!, shuffled[index]!];
    }
    const cut = 1 + Math.floor(cluster.random() * (count - 1));
    const sides = [shuffled.slice(0, cut), shuffled.slice(cut)];
    cluster.partition(sides);
    cluster.runUntil(24_000);
    for (const [side, other] of [[sides[0]!, sides[1]!], [sides[1]!, sides[0]!]]) {
      for (const id of side) {
        for (const away of other) {
          const state = cluster.node(id).membership.member(away)?.state;
          if (state !== 'dead') return `during the partition ${sides.map((ids) => ids.join('+')).join(' | ')}, ${id} still sees ${away} ${state}`;
        }
      }
    }
    const healedAt = cluster.nowMs;
    cluster.heal();
    cluster.runUntil(64_000);
    const sideOf = new Map(sides.flatMap((side, index) => side.map((id) => [id, index] as const)));
    const wrong = cluster.changes.find((change) => change.timeMs >= healedAt && change.member.state === 'dead' && sideOf.get(change.observer) === sideOf.get(change.member.id));
    if (wrong !== undefined && process.env.MEMBERSHIP_TRACE) for (const change of cluster.changes.filter((c) => c.timeMs >= healedAt - 6000)) console.log(change.timeMs, change.observer, change.member.id, change.previous, '->', change.member.state, change.member.incarnation, JSON.stringify(sides));
    if (wrong !== undefined) return `at the heal (${healedAt} ms), ${wrong.observer} declared ${wrong.member.id} dead at ${wrong.timeMs} ms, though both were on the same side all along`;
    return viewProblem(cluster, allAlive(ids(count)));
  });
});

test('duplicated messages: views converge with every node alive, and nobody is declared dead', () => {
  forSeeds('duplicates', 60_000, 200, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count, { ...CLEAN, duplicateRate: 0.3 });
    cluster.runUntil(15_000);
    const dead = cluster.changes.find((change) => change.member.state === 'dead');
    if (dead !== undefined) return `at ${dead.timeMs} ms ${dead.observer} declared ${dead.member.id} dead`;
    return viewProblem(cluster, allAlive(ids(count)));
  });
});

test('a one-way cut between two nodes: indirect probes keep both alive in every view', () => {
  forSeeds('one-way pair', 70_000, 200, (seed) => {
    const count = 4 + (seed % 4); // enough members to probe through
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const [from, to] = [Math.floor(cluster.random() * count), Math.floor(cluster.random() * (count - 1))].map((value, index, [first]) => (index === 1 && value >= first! ? value + 1 : value));
    cluster.cutOneWay(`n${from}`, `n${to}`);
    cluster.runUntil(24_000);
    const dead = cluster.changes.find((change) => change.member.state === 'dead');
    if (dead !== undefined) return `with n${from}→n${to} cut, at ${dead.timeMs} ms ${dead.observer} declared ${dead.member.id} dead`;
    cluster.heal();
    cluster.runUntil(30_000);
    return viewProblem(cluster, allAlive(ids(count)));
  });
});

test('a node that hears nothing (every message to it cut, it still sends): after healing everyone is alive again', () => {
  forSeeds('one-way deaf', 80_000, 150, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const deaf = `n${Math.floor(cluster.random() * count)}`;
    for (const other of ids(count)) if (other !== deaf) cluster.cutOneWay(other, deaf);
    cluster.runUntil(4000 + detectionBoundMs(count) + 5000);
    cluster.heal();
    cluster.runUntil(cluster.nowMs + 40_000);
    return viewProblem(cluster, allAlive(ids(count)));
  });
});

test('a paused node (SIGSTOP): a short pause costs no death verdict; a long one is declared dead and comes back alive on resume', () => {
  forSeeds('pause', 90_000, 200, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const paused = `n${Math.floor(cluster.random() * count)}`;
    const long = seed % 2 === 0;
    const pauseMs = long ? detectionBoundMs(count) + 2000 : probeIntervalMs;
    cluster.pause(paused, 4000 + pauseMs);
    cluster.runUntil(4000 + pauseMs);
    const dead = cluster.changes.filter((change) => change.member.id === paused && change.member.state === 'dead');
    if (!long && dead.length > 0) return `a pause of ${pauseMs} ms got ${paused} declared dead by ${dead[0]!.observer}`;
    if (long) {
      const verdicts = new Set(dead.map((change) => change.observer));
      const others = ids(count).filter((id) => id !== paused);
      if (!others.every((id) => verdicts.has(id))) return `after a pause of ${pauseMs} ms only ${[...verdicts].join(', ') || 'nobody'} declared ${paused} dead`;
    }
    cluster.runUntil(cluster.nowMs + 30_000);
    return viewProblem(cluster, allAlive(ids(count)));
  });
});

test('graceful leave: the others see "left" quickly and never "dead"', () => {
  let worstMs = 0;
  forSeeds('leave', 40_000, 500, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000 + Math.floor(cluster.random() * probeIntervalMs));
    const leaver = `n${Math.floor(cluster.random() * count)}`;
    const leftMs = cluster.nowMs;
    cluster.leaveAndStop(leaver);
    cluster.runUntil(leftMs + 10_000);
    for (const node of cluster.running()) {
      const left = cluster.changes.find((change) => change.observer === node.id && change.member.id === leaver && change.member.state === 'left');
      if (left === undefined) return `${node.id} never saw ${leaver} leave`;
      worstMs = Math.max(worstMs, left.timeMs - leftMs);
      if (left.timeMs - leftMs > 1000) return `${node.id} saw ${leaver} leave only after ${left.timeMs - leftMs} ms`;
    }
    const dead = cluster.changes.find((change) => change.member.state === 'dead');
    if (dead !== undefined) return `at ${dead.timeMs} ms ${dead.observer} declared ${dead.member.id} dead`;
    return viewProblem(cluster, { ...allAlive(ids(count)), [leaver]: 'left' });
  });
  console.log(`  leave: everyone saw the leave within ${worstMs} ms`);
});

test('a crashed node restarts at a new address (same id), before or after it is declared dead: it comes back above its old incarnation, at its new address', () => {
  forSeeds('restart', 50_000, 300, (seed) => {
    const count = 3 + (seed % 5);
    const cluster = buildCluster(seed, count);
    cluster.runUntil(4000);
    const crashed = `n${1 + Math.floor(cluster.random() * (count - 1))}`;
    const oldIncarnation = cluster.node('n0').membership.member(crashed)!.incarnation;
    cluster.crash(crashed);
    // Odd seeds restart at once, while the others still hold it alive; even seeds once it is dead.
    const quick = seed % 2 === 1;
    cluster.runUntil(4000 + (quick ? 100 : detectionBoundMs(count) + 1000));
    if (!quick) {
      const deadView = viewProblem(cluster, { ...allAlive(ids(count)), [crashed]: 'dead' });
      if (deadView !== null) return `before the restart: ${deadView}`;
    }
    // Seeds: any other node, not always the first one.
    const via = ids(count).filter((id) => id !== crashed)[Math.floor(cluster.random() * (count - 1))]!;
    cluster.addNode(crashed, [via], {}, `${crashed}-restarted:7001`);
    cluster.runUntil(cluster.nowMs + 10_000);
    const problem = viewProblem(cluster, allAlive(ids(count)));
    if (problem !== null) return problem;
    const member = cluster.node('n0').membership.member(crashed)!;
    if (member.incarnation <= oldIncarnation) return `came back at incarnation ${member.incarnation}, not above ${oldIncarnation}`;
    if (member.address !== `${crashed}-restarted:7001`) return `the view keeps the old address ${member.address}`;
    return null;
  });
});

test.run();
