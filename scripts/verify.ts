/**
 * The exactly-once verifier, modelled on StateFun's smoke test.
 *
 * Starts a cluster of node processes sharing one checkpoint store, sends seeded random command trees
 * (increment, send to another id, send after a delay, cancel a delayed send, emit egress; nested up to
 * depth 10, cycles allowed) to `--ids` instances, and meanwhile SIGKILLs a random node at random
 * moments and starts it again. An oracle knows how many increments each id must receive and which
 * egress records must appear. At the end every id reports its count; any over- or under-count, and any
 * egress record missing or seen twice, is a mismatch.
 *
 *   npm run verify                                 the long run: 3 nodes, 128 ids, 5 kills, 60 s
 *   node scripts/verify.js --duration 10 --kills 1 a short one (the tests run this)
 *
 * Prints the seed and a command line to replay it first, progress every second, and one final JSON
 * line; exits 1 on any mismatch. A kill counts only when events were in flight at that moment (sent,
 * not yet confirmed): one that lands on an idle cluster proves nothing and is reported apart.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from '../lib/index.js';
import { Command, Emitted, Report, TYPENAME, type Op } from './verify/functions.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    nodes: { type: 'string', default: '3' },
    ids: { type: 'string', default: '128' },
    duration: { type: 'string', default: '60' },
    kills: { type: 'string', default: '5' },
    rate: { type: 'string', default: '200' },
    shards: { type: 'string', default: '1' },
    'checkpoint-interval': { type: 'string', default: '500' },
    'checkpoint-store': { type: 'string' },
    'max-delay': { type: 'string', default: '400' },
    'restart-delay': { type: 'string' },
    remote: { type: 'boolean', default: false },
    'host-kills': { type: 'string', default: '0' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});
if (values.help) {
  console.log('usage: node scripts/verify.js [--seed n] [--nodes 3] [--ids 128] [--duration 60] [--kills 5] [--rate 200] [--shards 1] [--checkpoint-interval 500] [--checkpoint-store url|off] [--max-delay 400] [--restart-delay ms] [--remote [--host-kills n]]');
  console.log('  --remote: the functions run in a function host process (node cluster/serve.js) that the nodes reach over HTTP;');
  console.log('  --host-kills n: SIGKILL that host n times during the run and start it again.');
  process.exit(0);
}
function whole(name: string, text: string | undefined, min: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    console.error(`--${name} must be a whole number >= ${min}, got ${text}`);
    process.exit(2);
  }
  return value;
}
const seed = whole('seed', values.seed, 0);
const nodeCount = whole('nodes', values.nodes, 3);
const idCount = whole('ids', values.ids, 1);
const durationMs = whole('duration', values.duration, 1) * 1000;
const killCount = whole('kills', values.kills, 0);
const rate = whole('rate', values.rate, 1);
const maxDelayMs = whole('max-delay', values['max-delay'], 0);
/** How long a killed node stays down; default random 200-1200 ms (often back before it is declared dead). */
const restartDelayMs = values['restart-delay'] === undefined ? null : whole('restart-delay', values['restart-delay'], 0);
const remote = values.remote === true;
const hostKillCount = whole('host-kills', values['host-kills'], 0);
if (hostKillCount > 0 && !remote) {
  console.error('--host-kills needs --remote');
  process.exit(2);
}
const MAX_DEPTH = 10;
const OPS_PER_TREE_MAX = 24;
/** How long a kill waits for events in flight before it lands anyway (and is not counted). */
const TRAFFIC_WAIT_MS = 10_000;

// First of all, so that a run that hangs or is killed still says how to run it again.
const replayArgs = [
  ['--seed', seed],
  ['--nodes', nodeCount],
  ['--ids', idCount],
  ['--duration', durationMs / 1000],
  ['--kills', killCount],
  ['--rate', rate],
  ['--shards', values.shards],
  ['--checkpoint-interval', values['checkpoint-interval']],
  ['--max-delay', maxDelayMs],
  ...(values['checkpoint-store'] === undefined ? [] : [['--checkpoint-store', values['checkpoint-store']]]),
  ...(restartDelayMs === null ? [] : [['--restart-delay', restartDelayMs]]),
  ...(remote ? [['--remote'], ['--host-kills', hostKillCount]] : []),
].flat();
console.log(`verify: seed ${seed}${gitCommit()}; replay: node scripts/verify.js ${replayArgs.join(' ')}`);

function gitCommit(): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: fileURLToPath(new URL('.', import.meta.url)), stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    return commit === '' ? '' : ` at commit ${commit}`;
  } catch {
    return ''; // not in a git checkout
  }
}

// ---- seeded randomness (mulberry32) ----
let state = seed >>> 0;
function random(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
const ids = Array.from({ length: idCount }, (_, index) => `id-${index}`);

// ---- the generator and the oracle ----
const expectedCounts = new Map<string, number>();
const expectedEgress = new Set<string>();
let egressCounter = 0;
let tokenCounter = 0;
let increments = 0;

/** A random op list for instance `at`; `budget` bounds the tree size. */
function generate(depth: number, budget: { left: number }): Op[] {
  const ops: Op[] = [];
  const count = 1 + Math.floor(random() * 3);
  for (let index = 0; index < count && budget.left > 0; index++) {
    budget.left--;
    const roll = random();
    if (roll < 0.4 || depth >= MAX_DEPTH) ops.push({ k: 'inc' });
    else if (roll < 0.5) ops.push({ k: 'egress', id: `e${seed}-${++egressCounter}` });
    else if (roll < 0.8) ops.push({ k: 'send', to: pick(ids), ops: generate(depth + 1, budget) });
    else if (roll < 0.92) ops.push({ k: 'after', to: pick(ids), ms: Math.floor(random() * (maxDelayMs + 1)), ops: generate(depth + 1, budget) });
    else {
      // A delayed send cancelled in the same invocation: nothing in it may ever happen.
      const token = `t${seed}-${++tokenCounter}`;
      ops.push({ k: 'after', to: pick(ids), ms: 50 + Math.floor(random() * (maxDelayMs + 1)), token, ops: generate(depth + 1, budget) });
      ops.push({ k: 'cancel', token });
    }
  }
  return ops;
}

/** What running `ops` at `at` must do, by the oracle. */
function expect(at: string, ops: readonly Op[]): void {
  const cancelled = new Set(ops.filter((op) => op.k === 'cancel').map((op) => op.token));
  for (const op of ops) {
    if (op.k === 'inc') {
      expectedCounts.set(at, (expectedCounts.get(at) ?? 0) + 1);
      increments++;
    } else if (op.k === 'egress') expectedEgress.add(op.id!);
    else if (op.k === 'send') expect(op.to!, op.ops!);
    else if (op.k === 'after' && !(op.token !== undefined && cancelled.has(op.token))) expect(op.to!, op.ops!);
  }
}

// ---- node processes ----
const root = fileURLToPath(new URL('..', import.meta.url));
const startScript = join(root, 'cluster', 'start.js');
const functionsModule = join(root, 'scripts', 'verify', 'functions.js');
const work = mkdtempSync(join(tmpdir(), 'statecraft-verify-'));
const store = values['checkpoint-store'] ?? `file://${join(work, 'store')}`;
const serveScript = join(root, 'cluster', 'serve.js');
const hostSocket = join(work, 'fn.sock');

// ---- the function host (--remote) ----
const host: { child: ChildProcess | null; output: string } = { child: null, output: '' };

function launchHost(): Promise<void> {
  return spawnUntilReady(host, 'the function host', [serveScript, '--functions', functionsModule, '--unix-socket', hostSocket, '--threads', '1'], 30_000, (output) => output.includes('ready'));
}

/** Spawns a process into `owner` and resolves once `isReady` accepts its output so far. */
function spawnUntilReady(owner: { child: ChildProcess | null; output: string }, name: string, args: string[], timeoutMs: number, isReady: (output: string) => boolean): Promise<void> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  owner.child = child;
  owner.output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} is not ready in ${timeoutMs / 1000} s:\n${owner.output.slice(-3000)}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      owner.output += chunk.toString();
      if (owner.output.length > 200_000) owner.output = owner.output.slice(-100_000);
      if (isReady(owner.output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (owner.child === child) owner.child = null;
      reject(new Error(`${name} exited (${code ?? signal}) before ready:\n${owner.output.slice(-3000)}`));
    });
  });
}

interface NodeHandle {
  id: string;
  port: number;
  child: ChildProcess | null;
  output: string;
}
const handles: NodeHandle[] = [];

function launch(handle: NodeHandle, join_: string[]): Promise<void> {
  const args = [
    startScript,
    ...(remote ? ['--endpoint', `verify/*=http+unix://${hostSocket}/`] : ['--functions', functionsModule]),
    '--host', '127.0.0.1',
    '--port', String(handle.port),
    '--shards', String(values.shards),
    '--node-id', handle.id,
    '--data-dir', join(work, handle.id),
    '--checkpoint-store', store,
    ...(store === 'off' ? [] : ['--checkpoint-interval', String(values['checkpoint-interval'])]),
    '--egress-retain', '10000000',
    '--probe-interval', '100',
    '--probe-timeout', '40',
    ...(join_.length > 0 ? ['--join', join_.join(',')] : []),
  ];
  return spawnUntilReady(handle, handle.id, args, 60_000, (output) => {
    const match = /ready ws:\/\/[^\s]+:(\d+)/.exec(output);
    if (match && handle.port === 0) handle.port = Number(match[1]);
    return match !== null;
  });
}

function stopAll(): void {
  for (const handle of handles) handle.child?.kill('SIGKILL');
  host.child?.kill('SIGKILL');
}
process.on('exit', () => {
  stopAll();
  rmSync(work, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

async function clusterSettled(): Promise<boolean> {
  try {
    const statuses = await Promise.all(
      handles.map(async (handle) => (await (await fetch(`http://127.0.0.1:${handle.port}/cluster`)).json()) as { serving: boolean; view: string[]; viewId: string; recovery?: { recovering: boolean; awaiting: string | null }; handovers: { keyGroupsMoving: number } }),
    );
    return statuses.every(
      (status) => status.serving && status.view.length === nodeCount && status.viewId === statuses[0]!.viewId && !status.recovery?.recovering && status.recovery?.awaiting === null && status.handovers.keyGroupsMoving === 0,
    );
  } catch {
    return false;
  }
}

async function waitSettled(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await clusterSettled())) {
    if (Date.now() > deadline) throw new Error(`the cluster did not settle within ${timeoutMs} ms`);
    await sleep(100);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function dumpNodes(): Promise<void> {
  for (const handle of handles) {
    try {
      const status = (await (await fetch(`http://127.0.0.1:${handle.port}/cluster`)).json()) as Record<string, unknown>;
      console.log(`--- ${handle.id}: ${JSON.stringify({ serving: status.serving, view: status.view, recovery: status.recovery, checkpoints: status.checkpoints, handovers: status.handovers })}`);
    } catch (error) {
      console.log(`--- ${handle.id}: /cluster failed: ${(error as Error).message}`);
    }
    console.log(handle.output.split('\n').filter((line) => !line.includes('MaxListeners')).slice(-25).join('\n'));
  }
}

// ---- the run ----
const started = Date.now();
/** Kills that landed with events in flight, and the events in flight at each. */
let kills = 0;
const inFlightAtKills: number[] = [];
/** Kills that found nothing in flight within TRAFFIC_WAIT_MS: not counted as kills. */
let idleKills = 0;
let hostKills = 0;
const inFlightAtHostKills: number[] = [];
let idleHostKills = 0;
let sent = 0;
let confirmed = 0;
let failedSends = 0;
const seen = new Map<string, number>();
const reports = new Map<string, { count: number; nonce: number }>();

/** Events sent and not yet confirmed (nor failed). */
const inFlight = (): number => sent - confirmed - failedSends;

/**
 * Waits (at most TRAFFIC_WAIT_MS) until events are in flight, then SIGKILLs `owner`'s process in the same step.
 * Returns how many were in flight when it landed (0: the cluster was idle).
 */
async function killWithTraffic(name: string, owner: { child: ChildProcess | null }): Promise<number> {
  const deadline = Date.now() + TRAFFIC_WAIT_MS;
  while (inFlight() === 0 && Date.now() < deadline) await sleep(1);
  if (owner.child === null) throw new Error(`${name} should be running at its kill, but its process is gone`);
  const load = inFlight();
  owner.child.kill('SIGKILL');
  return load;
}

const seconds = (): string => ((Date.now() - started) / 1000).toFixed(1);

async function main(): Promise<number> {
  if (remote) await launchHost();
  for (let index = 0; index < nodeCount; index++) handles.push({ id: `v${index + 1}`, port: 0, child: null, output: '' });
  await launch(handles[0]!, []);
  await Promise.all(handles.slice(1).map((handle) => launch(handle, [`127.0.0.1:${handles[0]!.port}`])));
  await waitSettled(30_000);
  const urls = handles.map((handle) => `ws://127.0.0.1:${handle.port}`);
  const reconnect = { delayMs: 50, delayMaxMs: 500 };
  const sender = await connect(urls, { reconnect, window: 2000 });
  const watcher = await connect([...urls].reverse(), { reconnect });
  void (async () => {
    for await (const record of watcher.subscribe('verify', { from: 'earliest', type: Emitted })) seen.set(record.value.e, (seen.get(record.value.e) ?? 0) + 1);
  })();
  void (async () => {
    for await (const record of watcher.subscribe('verify-report', { from: 'earliest', type: Report })) {
      const report = record.value;
      const known = reports.get(report.id);
      if (known === undefined || known.nonce <= report.nonce) reports.set(report.id, { count: report.count, nonce: report.nonce });
    }
  })();

  const progress = setInterval(() => {
    console.log(`verify: ${((Date.now() - started) / 1000).toFixed(0)} s  sent ${sent}  confirmed ${confirmed}  kills ${kills}/${killCount}${remote ? `  host kills ${hostKills}/${hostKillCount}` : ''}  egress ${seen.size}/${expectedEgress.size}`);
  }, 1000);

  // Kills at evenly spread moments, jittered; each node comes back and the cluster settles before the next.
  const killTimes = Array.from({ length: killCount }, (_, index) => started + ((index + 1) / (killCount + 1)) * durationMs * (0.85 + 0.3 * random()));
  const killer = (async () => {
    for (const at of killTimes) {
      await sleep(Math.max(0, at - Date.now()));
      const victim = pick(handles);
      const load = await killWithTraffic(victim.id, victim);
      if (load > 0) {
        kills++;
        inFlightAtKills.push(load);
      } else idleKills++;
      console.log(`verify: SIGKILL ${victim.id} at ${seconds()} s with ${load} events in flight${load > 0 ? '' : ' (idle: not counted)'}`);
      await sleep(restartDelayMs ?? 200 + Math.floor(random() * 1000));
      const others = handles.filter((handle) => handle !== victim).map((handle) => `127.0.0.1:${handle.port}`);
      await launch(victim, others);
      await waitSettled(60_000);
      console.log(`verify: ${victim.id} back and the cluster settled at ${seconds()} s`);
    }
  })();

  // The function host dies at its own moments (between node kills), and comes back on the same socket.
  const hostKillTimes = Array.from({ length: hostKillCount }, (_, index) => started + ((index + 0.5) / (hostKillCount + 0.5)) * durationMs * (0.85 + 0.2 * random()));
  const hostKiller = (async () => {
    for (const at of hostKillTimes) {
      await sleep(Math.max(0, at - Date.now()));
      const load = await killWithTraffic('the function host', host);
      if (load > 0) {
        hostKills++;
        inFlightAtHostKills.push(load);
      } else idleHostKills++;
      console.log(`verify: SIGKILL the function host at ${seconds()} s with ${load} events in flight${load > 0 ? '' : ' (idle: not counted)'}`);
      await sleep(200 + Math.floor(random() * 1000));
      await launchHost();
      console.log(`verify: the function host is back at ${seconds()} s`);
    }
  })();

  // Traffic goes on until the last kill has landed and its node is back, however late that is.
  let killsDone = false;
  void Promise.allSettled([killer, hostKiller]).then(() => (killsDone = true));
  const sends: Promise<void>[] = [];
  const tickMs = 20;
  const perTick = rate * (tickMs / 1000);
  let carry = 0;
  while (Date.now() - started < durationMs || !killsDone) {
    carry += perTick;
    for (; carry >= 1; carry--) {
      const target = pick(ids);
      const ops = generate(1, { left: OPS_PER_TREE_MAX });
      expect(target, ops);
      sent++;
      sends.push(
        sender.send({ typename: TYPENAME, id: target }, { ops }, Command).then(
          () => void confirmed++,
          (error: Error) => {
            failedSends++;
            console.log(`verify: a send failed: ${error.message}`);
          },
        ),
      );
    }
    await sleep(tickMs);
  }
  await killer;
  await hostKiller;
  console.log('verify: sending done; waiting for every command to be committed');
  const allSent = Promise.all(sends);
  if ((await Promise.race([allSent.then(() => true), sleep(30_000).then(() => false)])) === false) {
    console.log('verify: commands still unconfirmed after 30 s; the nodes say:');
    await dumpNodes();
    await Promise.race([allSent, sleep(90_000)]);
  }
  await waitSettled(60_000);

  // Delayed messages may still be due (a chain of them, at most MAX_DEPTH deep): report rounds until the
  // counts match or stop changing for a while.
  let nonce = 0;
  let mismatchedCounts: string[] = [];
  let stable = 0;
  let previous = '';
  for (let round = 0; round < 60; round++) {
    await sleep(round === 0 ? maxDelayMs * 2 : 1000);
    nonce++;
    await Promise.all(ids.map((id) => sender.send({ typename: TYPENAME, id }, { ops: [{ k: 'report', nonce }] }, Command)));
    const deadline = Date.now() + 30_000;
    while (ids.some((id) => (reports.get(id)?.nonce ?? 0) < nonce) && Date.now() < deadline) await sleep(50);
    mismatchedCounts = ids.filter((id) => reports.get(id)?.count !== (expectedCounts.get(id) ?? 0));
    const egressDone = [...expectedEgress].every((id) => seen.has(id));
    if (mismatchedCounts.length === 0 && egressDone) break;
    const signature = JSON.stringify([...reports.entries()].map(([id, report]) => [id, report.count])) + seen.size;
    stable = signature === previous ? stable + 1 : 0;
    previous = signature;
    if (stable >= 5) break; // nothing moved for five rounds: what is wrong stays wrong
  }
  clearInterval(progress);
  let recoveries = 0;
  for (const handle of handles) {
    try {
      const status = (await (await fetch(`http://127.0.0.1:${handle.port}/cluster`)).json()) as { recovery?: { epoch: number } };
      recoveries = Math.max(recoveries, status.recovery?.epoch ?? 0);
    } catch {
      // reported below as it is
    }
  }
  const missing = [...expectedEgress].filter((id) => !seen.has(id));
  const duplicates = [...seen].filter(([, count]) => count > 1).map(([id]) => id);
  const unexpected = [...seen.keys()].filter((id) => !expectedEgress.has(id));
  for (const id of mismatchedCounts.slice(0, 10)) console.log(`verify: ${id} counted ${reports.get(id)?.count ?? 'nothing'}, expected ${expectedCounts.get(id) ?? 0}`);
  if (missing.length > 0) console.log(`verify: egress records never seen: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ' …' : ''}`);
  if (duplicates.length > 0) console.log(`verify: egress records seen twice: ${duplicates.slice(0, 10).join(', ')}`);
  const mismatches = mismatchedCounts.length + missing.length + duplicates.length + unexpected.length + failedSends;
  const result = {
    seed,
    nodes: nodeCount,
    ids: idCount,
    commands: sent,
    confirmed,
    kills,
    idleKills,
    inFlightAtKills,
    ...(remote ? { remote: true, hostKills, idleHostKills, inFlightAtHostKills } : {}),
    recoveries,
    increments,
    egressExpected: expectedEgress.size,
    egressSeen: seen.size,
    countMismatches: mismatchedCounts.length,
    egressMissing: missing.length,
    egressDuplicates: duplicates.length,
    egressUnexpected: unexpected.length,
    failedSends,
    mismatches,
    durationMs: Date.now() - started,
  };
  console.log(JSON.stringify(result));
  await sender.close({ timeoutMs: 1000 }).catch(() => undefined);
  await watcher.close({ timeoutMs: 1000 }).catch(() => undefined);
  if (mismatches > 0) {
    for (const handle of handles) console.log(`--- ${handle.id} (last lines)\n${handle.output.split('\n').slice(-15).join('\n')}`);
  }
  return mismatches === 0 ? 0 : 1;
}

main().then(
  (code) => {
    stopAll();
    process.exit(code);
  },
  (error: Error) => {
    console.error(`verify: ${error.stack ?? error.message}`);
    for (const handle of handles) console.error(`--- ${handle.id} (last lines)\n${handle.output.split('\n').slice(-30).join('\n')}`);
    stopAll();
    process.exit(2);
  },
);
