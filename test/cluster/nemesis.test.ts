// test-exclusive
// test-timeout-ms: 420000
// Nemeses besides SIGKILL (issue 13, item 4): the verifier (scripts/verify.js) with nodes in Linux network
// namespaces: a short mix on 3 nodes (a kill, a pause, a partition, a one-way cut, a flapping link), a long
// one-way cut (one side is left out so the others go on), and the case, 5 nodes with one
// isolated for 10 s and healed. Every client event counts exactly
// once, no sender's messages to an address are applied out of order, and confirmations resume soon after
// each heal. Needs root (ip netns, tc htb/tbf/u32): skipped with the reason otherwise, failing under CI=true.
import { readFileSync, rmSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { netnsAvailable, removeStale } from '../../scripts/verify/netns.js';
import { requireTool } from '../requirements.js';
import { runVerifier } from './run-verifier.js';

/** Confirmations must resume within this after a heal (or after the majority went on): detection, recovery and a few checkpoints. */
const STALL_MAX_MS = 5000;
/** The same with five members (see the 5-node test). */
const STALL_MAX_MS_FIVE = 8000;

const netns = netnsAvailable();
test.after(() => removeStale());

const randomSeed = () => String(1 + Math.floor(Math.random() * 1e6));

function assertClean(result: Record<string, any>, expected: Record<string, number>, stallMaxMs = STALL_MAX_MS): void {
  console.log(`  verifier: ${JSON.stringify({ ...result, output: undefined })}`);
  assert.is(result.mismatches, 0, `mismatches:\n${result.output}`);
  assert.is(result.order_violations, 0, `order violations:\n${result.output}`);
  assert.is(result.exitCode, 0, result.output);
  for (const [kind, count] of Object.entries(expected)) assert.is(result.nemeses[kind], count, `${kind} applied with traffic in flight: ${result.nemeses[kind]} (idle ${result.idleNemeses[kind]}); ${result.output}`);
  assert.is(result.unsettled, 0, `the cluster settled after every nemesis; ${result.output}`);
  assert.ok(result.stall_after_heal_max_ms < stallMaxMs, `stall after heal ${result.stall_after_heal_max_ms} ms (${result.stalls.join('; ')}); ${result.output}`);
  assert.ok(result.increments > 1000, `the run did real work; ${result.output}`);
}

if (!netns.ok) {
  test('the nemesis verifier needs network namespaces', () => void requireTool(false, `network namespaces (${netns.reason})`, 'run as root on Linux with iproute2'));
} else {
  test('a short mix on 3 nodes: kill, pause, partition, one-way cut, flapping link, full store — exactly once, in order, no long stall after a heal', async () => {
    const result = await runVerifier(
      ['--nodes', '3', '--duration', '24', '--kills', '1', '--pauses', '1', '--partitions', '1', '--one-way', '1', '--flaps', '1', '--store-fulls', '1', '--fault-ms', '2500', '--ids', '64', '--rate', '150', '--seed', randomSeed()],
      150_000,
    );
    assertClean(result, { kill: 1, pause: 1, partition: 1, 'one-way': 1, flap: 1, 'store-full': 1 });
  });

  test('a one-way cut of 25 s between two of 3 nodes (both still reach the third): one side is left out and the others go on during the cut; it comes back after the heal', async () => {
    const faultMs = 25_000;
    const result = await runVerifier(['--nodes', '3', '--duration', '40', '--kills', '0', '--one-way', '1', '--fault-ms', String(faultMs), '--keep-logs', '--ids', '64', '--rate', '150', '--seed', randomSeed()], 180_000);
    assertClean(result, { 'one-way': 1 });
    const logFile = /every node's output, stamped with the verifier's clock \(s\): (\S+)/.exec(result.printed)?.[1];
    assert.ok(logFile, `the nodes' log is kept; ${result.output}`);
    const log = readFileSync(logFile!, 'utf8');
    rmSync(logFile!, { force: true });
    assert.match(log, /left out of the view \(cut links between live members\): v\d/, 'the others leave one side out');
    assert.match(log, /left out of the view: some live members cannot reach this node directly/, 'the side left out knows it');
    assert.match(log, /no member is left out for cut links any more/, 'and it is back after the heal');
    // Without the verdict nothing is confirmed while the cut lasts: barriers cannot cross it.
    assert.ok(result.confirm_gap_max_ms < faultMs, `confirmations went on during the cut: the longest gap was ${result.confirm_gap_max_ms} ms; ${result.output}`);
  });

  // Once pinned (a rare ~9 s stall: a client on a node that was stopped or cut off waited for it). With
  // the client's heartbeat (8742fe4), 20 runs of seeds 201-220 (one victim each): 0 mismatches, 0 order
  // violations, stall_after_heal_max_ms <= 2,228 ms in 19 and 5,517 ms once (seed 204, v3 isolated; two
  // re-runs of it: 1,944 and 710 ms). With five members the isolated node takes longer to find itself
  // in a minority (2.7 s in that run) before it sends its clients away, hence the wider bound here.
  test('5 nodes, one isolated for 10 s and healed (the issue\'s case): exactly once, in order, no long stall', async () => {
    const result = await runVerifier(['--nodes', '5', '--duration', '22', '--kills', '0', '--partitions', '1', '--fault-ms', '10000', '--ids', '128', '--rate', '150', '--seed', randomSeed()], 150_000);
    assertClean(result, { partition: 1 }, STALL_MAX_MS_FIVE);
  });
}

test.run();
