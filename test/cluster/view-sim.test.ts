// The view core in a seeded simulation (view-sim-world.ts): several nodes, each with the real
// membership and view cores, join, crash, leave and get partitioned on a fake clock. Checked on every
// event: two live nodes never both own a key group while both serve; a node without a majority never
// claims a key group; the status only moves along STATUS_EDGES. Checked at the end: every node serves
// the same view, no key group is still moving, and each is owned by its placement owner alone.
//
// Known gaps: two rules of the view core (unchanged when it was split out of cluster-node.ts) let
// a run end unsettled or overlap; a problem is excused only when it matches one of them exactly, it is
// counted, and any other problem fails the run:
// - A, awaited from a member that does not have it: a node awaits a key group from the owner it had
//   without this node (or before the view moved), but that live member never got it (it lost it to a
//   death it has not seen yet, or was itself still waiting for it); the wait ends only if it dies.
// - B, taken into a recovery while joining: the leader re-sends its last rollback order to every member
//   it did not include, newcomers too; if it arrives before the join answer, the newcomer restores
//   nothing and then counts a majority of a view of one: it serves every key group until its view grows.
// Fixed in issue 13, no longer excused: C, a view that moved during a restore was recorded but never
// applied (now the node keeps the recovery's placement while it restores and moves to the view as it is
// when done); D, a recovery nobody starts (a member that missed a recovery order asked the leader from
// its older epoch, and the leader's epoch fence dropped the request: VIEW_SEED=2566282930, 5004).
// A failing seed is named in the assertion; replay it alone with: VIEW_SEED=<seed> node dist/test/cluster/view-sim.test.js
// (each run adds fresh seeds to the fixed ones, printed first; VIEW_TRACE=<n> prints the problems of every
// run that has any, excused or not, and each node's last n log lines)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { STATUS_EDGES } from '../../cluster/view-core.js';
import type { NetworkConditions } from './sim-network.js';
import { ViewWorld, type WorldNode } from './view-sim-world.js';
import { replayLine, seedsFor } from '../sim/seeds.js';

const replaySeed = process.env.VIEW_SEED === undefined ? null : Number(process.env.VIEW_SEED);
/** VIEW_SEED_SCALE=10 runs ten times the seeds, for a soak run by hand. */
const seedScale = Number(process.env.VIEW_SEED_SCALE ?? 1);
const CLEAN: NetworkConditions = { delayMinMs: 1, delayMaxMs: 20, lossRate: 0 };
const KEY_GROUPS = 64;
/** Status changes seen over all runs ("from->to"). */
const edgesSeen = new Set<string>();
type Gap = 'A' | 'B';
/** Runs excused by each known gap, over all scenarios. */
const excused: Record<Gap, number[]> = { A: [], B: [] };

interface Run {
  world: ViewWorld;
  /** Problems found, each either excused by a known gap or not. */
  problems: { text: string; gap: Gap | null }[];
}

/**
 * Runs `scenario` for `count` seeds from `first` (or only the replayed seed). A run fails on its first
 * problem that no known gap excuses; the message names the seed so it can be replayed. At most
 * `excusedMax` runs may be excused, so that the checks keep meaning something.
 */
const REPLAY = 'VIEW_SEED=<seed> node dist/test/cluster/view-sim.test.js';

function forSeeds(name: string, first: number, count: number, excusedMax: number, scenario: (seed: number) => Run): void {
  const seeds = seedsFor({ name, first, count: Math.ceil(count * seedScale), replay: replaySeed, replayCommand: REPLAY });
  let excusedRuns = 0;
  for (const seed of seeds) {
    let run: Run;
    try {
      run = scenario(seed);
    } catch (error) {
      assert.unreachable(`${name}, seed ${seed} threw ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n(replay: ${replayLine({ replayCommand: REPLAY }, seed)})`);
      return;
    }
    const { world, problems } = run;
    if (process.env.VIEW_TRACE !== undefined && problems.length > 0) {
      console.log(problems.map((problem) => `${problem.gap}: ${problem.text}`).slice(0, 5).join('\n'));
      for (const node of world.running()) console.log(`${node.id}:\n    ${node.logs.filter((line) => !line.includes('key groups were not handed')).slice(-Number(process.env.VIEW_TRACE)).join('\n    ')}`);
    }
    const failure = problems.find((problem) => problem.gap === null);
    if (failure !== undefined) {
      const logs = world.running().map((node) => `  ${node.id}: ${node.logs.slice(-4).join(' | ')}`);
      assert.unreachable(`${name}, seed ${seed}: ${failure.text}\n${logs.join('\n')}\n(replay: ${replayLine({ replayCommand: REPLAY }, seed)})`);
    }
    const gaps = new Set(problems.map((problem) => problem.gap!));
    for (const gap of gaps) excused[gap].push(seed);
    if (gaps.size > 0) excusedRuns++;
  }
  // The cap grows with the seeds run (fresh seeds, a soak scale): a rate, not a count.
  const allowed = Math.ceil((excusedMax * seeds.length) / count);
  assert.ok(excusedRuns <= allowed, `${name}: ${excusedRuns} of ${seeds.length} runs hit a known gap, more than the ${allowed} allowed`);
}

/** Checks run on every action and after every event. */
function watch(world: ViewWorld, options: { exclusive: boolean }): Run {
  const run: Run = { world, problems: [] };
  /** Nodes that went from joining to recovering (gap B). */
  const recoveredWhileJoining = new Set<string>();
  const fail = (text: string, gap: Gap | null = null) => run.problems.push({ text: `at ${world.nowMs} ms ${text}`, gap });
  world.onAction = (node, action) => {
    if (action.type === 'status') {
      const { from, to } = action;
      edgesSeen.add(`${from}->${to}`);
      if (from === 'joining' && to === 'recovering') recoveredWhileJoining.add(node.id);
      if (!STATUS_EDGES[from].includes(to)) fail(`${node.id} went from ${from} to ${to}`);
      if (to === 'serving' && !node.core.inMajority()) fail(`${node.id} serves without a majority`);
      if ((to === 'awaiting-rollback' || to === 'recovering') && !world.checkpointing) fail(`${node.id} is ${to} with checkpoints off`);
    }
    if (action.type === 'own' && !node.core.inMajority()) {
      for (let keyGroup = 0; keyGroup < KEY_GROUPS; keyGroup++) {
        if (action.owned(keyGroup) === true && !node.owned[keyGroup]) fail(`${node.id} claims key group ${keyGroup} without a majority`);
      }
    }
  };
  if (options.exclusive) {
    const owners: (WorldNode | null)[] = new Array(KEY_GROUPS);
    world.afterEvent = () => {
      owners.fill(null);
      for (const node of world.running()) {
        if (!node.core.admits()) continue;
        for (let keyGroup = 0; keyGroup < KEY_GROUPS; keyGroup++) {
          if (!node.owned[keyGroup]) continue;
          const other = owners[keyGroup];
          if (other !== null && other !== undefined) {
            // Gap B: a newcomer serving a view of one owns everything until its view grows.
            const lone = [other, node].some((owner) => recoveredWhileJoining.has(owner.id) && owner.core.placement.members.length === 1);
            if (run.problems.length < 20) fail(`${other.id} and ${node.id} both own key group ${keyGroup} and both serve`, lone ? 'B' : null);
          }
          owners[keyGroup] = node;
        }
      }
    };
  }
  return run;
}

/** Adds a problem for each way the running nodes are not settled: one view, all serving, each key group owned by its placement owner alone. */
function checkSettled(run: Run): void {
  const { world } = run;
  const running = world.running();
  const ids = running.map((node) => node.id).sort();
  const fail = (text: string, gap: Gap | null = null) => run.problems.push({ text: `at the end, ${text}`, gap });
  for (const [epoch, leaders] of world.recoveryLeaders) if (leaders.size > 1) fail(`recovery ${epoch} was ordered by ${[...leaders].sort().join(' and ')}`);
  for (const node of running) {
    if (node.core.status !== 'serving') fail(`${node.id} is ${node.core.status} (${node.core.reason ?? node.core.awaitingReason ?? ''})`);
    if (node.core.placement.members.join(',') !== ids.join(',')) fail(`${node.id} places key groups on [${node.core.placement.members.join(', ')}], the running nodes are [${ids.join(', ')}]`);
  }
  if (run.problems.some((problem) => problem.gap === null)) return;
  const placement = running[0]!.core.placement;
  for (let keyGroup = 0; keyGroup < KEY_GROUPS; keyGroup++) {
    const expected = placement.members[placement.owners[keyGroup]!]!;
    /** The known gap that keeps the placement owner's move of this key group from ending, if any. */
    let ownerMoveGap: Gap | null = null;
    for (const node of running) {
      const moving = node.core.moves.get(keyGroup);
      if (moving === undefined) continue;
      const from = moving.state === 'awaiting' ? world.nodes.get(moving.from) : undefined;
      // Gap A: awaited from a live member that does not have it (and is not moving it).
      const fromLacksIt = from !== undefined && from.running && !from.owned[keyGroup] && !from.core.moves.isMoving(keyGroup);
      const gap: Gap | null = fromLacksIt ? 'A' : null;
      if (node.id === expected) ownerMoveGap = gap;
      fail(`${node.id} still has key group ${keyGroup} on the move (${JSON.stringify(moving)})`, gap);
    }
    const owners = running.filter((node) => node.owned[keyGroup]).map((node) => node.id);
    if (owners.length !== 1 || owners[0] !== expected) fail(`key group ${keyGroup} is owned by [${owners.join(', ')}], its placement owner is ${expected}`, ownerMoveGap);
  }
}

/** n0 starts alone; n1 and n2 join through it; then joins, crashes and graceful leaves at random, then quiet. */
function churn(seed: number, checkpointing: boolean): Run {
  const world = new ViewWorld(seed, KEY_GROUPS, checkpointing, CLEAN);
  const run = watch(world, { exclusive: true });
  world.addNode('n0', []);
  for (let index = 1; index < 3; index++) {
    world.runUntil(world.nowMs + Math.floor(world.random() * 300));
    world.addNode(`n${index}`, ['n0']);
  }
  let next = 3;
  let lastCrashMs = -Infinity;
  let timeMs = 3_000;
  while (timeMs < 25_000 && !run.problems.some((problem) => problem.gap === null)) {
    timeMs += 1_000 + Math.floor(world.random() * 3_000);
    world.runUntil(timeMs);
    const members = world.running().filter((node) => !node.leaving);
    const pick = members[Math.floor(world.random() * members.length)]!;
    const roll = world.random();
    // A crash leaves a majority of the view (the last dead member has left it by then).
    if (roll < 0.4 && next < 7) world.addNode(`n${next++}`, members.map((node) => node.id));
    else if (roll < 0.7 && members.length >= 3 && timeMs - lastCrashMs > 10_000) {
      world.crash(pick.id);
      lastCrashMs = timeMs;
    } else if (members.length >= 3) world.leave(pick.id);
  }
  world.runUntil(timeMs + 45_000);
  checkSettled(run);
  return run;
}

/** Five nodes; a minority (or, when `even`, half of four) is cut off for a few seconds, then the network heals. */
function split(seed: number, checkpointing: boolean, even: boolean): Run {
  const world = new ViewWorld(seed, KEY_GROUPS, checkpointing, CLEAN);
  // Not exclusive: the node cut off serves until it suspects the others, while the majority already
  // declared it dead and took its key groups (with checkpoints, nothing it does then is ever committed).
  const run = watch(world, { exclusive: false });
  const count = even ? 4 : 5;
  world.addNode('n0', []);
  for (let index = 1; index < count; index++) {
    world.runUntil(world.nowMs + Math.floor(world.random() * 300));
    world.addNode(`n${index}`, ['n0']);
  }
  world.runUntil(5_000);
  const ids = [...world.nodes.keys()].sort(() => world.random() - 0.5);
  const cut = even ? 2 : 1 + Math.floor(world.random() * 2);
  world.partition([ids.slice(cut), ids.slice(0, cut)]);
  world.runUntil(5_000 + 3_000 + Math.floor(world.random() * 7_000));
  const serving = world.running().filter((node) => node.core.admits());
  if (even && serving.length > 0) run.problems.push({ text: `${serving.map((node) => node.id).join(', ')} serve while the cluster is split in halves`, gap: null });
  world.heal();
  world.runUntil(world.nowMs + 60_000);
  checkSettled(run);
  return run;
}

test('churn, checkpoints off: exclusive owners while serving, no claim without a majority, all settles', () => {
  forSeeds('churn without checkpoints', 1, 60, 6, (seed) => churn(seed, false));
});

test('churn, checkpoints on: deaths recover through the leader; the same properties hold', () => {
  forSeeds('churn with checkpoints', 1_001, 60, 6, (seed) => churn(seed, true));
});

test('a minority cut off stops claiming and rejoins after the heal (checkpoints off and on)', () => {
  forSeeds('minority partition without checkpoints', 2_001, 30, 3, (seed) => split(seed, false, false));
  forSeeds('minority partition with checkpoints', 3_001, 30, 10, (seed) => split(seed, true, false));
});

test('a cluster split in halves: nobody serves until the heal', () => {
  forSeeds('split in halves without checkpoints', 4_001, 15, 2, (seed) => split(seed, false, true));
  forSeeds('split in halves with checkpoints', 5_001, 15, 4, (seed) => split(seed, true, true));
});

test('the runs went through the status edges that matter', () => {
  console.log(`  recovery claims that found another node's claim for their epoch (that node's order, or the next epoch, followed): ${ViewWorld.contended}`);
  console.log(`  runs excused by a known gap: ${(['A', 'B'] as const).map((gap) => `${gap} [${excused[gap].join(', ')}]`).join(', ')}`);
  if (replaySeed !== null) return;
  for (const edge of ['joining->no-majority', 'no-majority->serving', 'serving->no-majority', 'serving->left', 'serving->recovering', 'recovering->serving', 'serving->awaiting-rollback', 'awaiting-rollback->recovering']) {
    assert.ok(edgesSeen.has(edge), `no run went ${edge}; seen: ${[...edgesSeen].sort().join(', ')}`);
  }
});

test.run();
