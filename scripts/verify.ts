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
 * Nemeses besides SIGKILL (issue 13), applied one at a time at evenly spread, jittered moments:
 *   --pauses n       SIGSTOP a random node for 1-10 s, then SIGCONT
 *   --partitions n   isolate a random node from the others (both ways) for 2-10 s, then heal
 *   --one-way n      drop the packets of one random node to another for 2-10 s (a one-way cut)
 *   --splits n       split the cluster in two for 2-10 s: a random minority (2 of 5, 1 of 3) from the rest
 *   --flaps n        isolate and heal a random node repeatedly (0.2-1.5 s each) for 4-10 s
 *   --handover-kills n  SIGKILL a node while key groups move (after a node came back), restart it
 *   --host-pauses n  (with --remote) SIGSTOP the function host for 1-10 s
 *   --store-fulls n  fill the disk under the checkpoint store for 2-10 s, then free it (the store is put
 *                    on a 64 MB tmpfs for the run: needs root)
 *   --fault-ms ms    a fixed fault length instead of the random ones
 * Partitions need Linux network namespaces (root): each node runs in its own namespace on a bridge
 * (scripts/verify/netns.ts; --netns forces it for the other nemeses). By default a partition cuts
 * node↔node traffic only and the clients keep reaching every node (--partition-mode peers); with
 * --partition-mode all the clients' path to the victim is cut too, like a real partition (the client has
 * no dead-connection detection: a client on the victim hangs until the heal).
 *
 *   node scripts/verify.js --nodes 5 --partitions 1 --fault-ms 10000 --kills 0 --duration 30   the issue's case
 *   node scripts/verify.js --nodes 5 --duration 300 --kills 4 --pauses 4 --partitions 4 --one-way 3 --splits 2 --flaps 3 --handover-kills 2 --store-fulls 2
 *                                                  the long mix (about 6 minutes; needs root)
 *
 * Prints the seed and a command line to replay it first, progress every second, and one final JSON
 * line; exits 1 on any mismatch or order violation. A nemesis counts only when events were in flight
 * at that moment (sent, not yet confirmed): one that lands on an idle cluster proves nothing and is
 * reported apart (idleNemeses). The JSON line's fields:
 *   mismatches            count mismatches + egress records missing, duplicated or unexpected + failed sends
 *   order_violations      applications of a message after a later one from the same sender to the same
 *                         address (senders: the client, and each instance's `send`s; see functions.ts)
 *   duplicate_applications, seq_gaps  the same check's other findings (see functions.ts)
 *   stall_after_heal_max_ms  the longest time without a confirmation, with events in flight, after a
 *                         fault healed or after the majority had a view without the victim (stall.ts)
 *   confirm_gap_max_ms    the longest such time over the whole run, faults included
 *   nemeses               how many of each nemesis were applied with traffic in flight
 *   unsettled             nemeses after which the cluster did not settle within 60 s
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from '../lib/index.js';
import { CLIENT_SENDER, Command, Emitted, OrderViolation, Report, TYPENAME, type Op } from './verify/functions.js';
import { NetnsCluster, netnsAvailable } from './verify/netns.js';
import { StallClock } from './verify/stall.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    nodes: { type: 'string', default: '3' },
    ids: { type: 'string', default: '128' },
    duration: { type: 'string', default: '60' },
    kills: { type: 'string', default: '5' },
    pauses: { type: 'string', default: '0' },
    partitions: { type: 'string', default: '0' },
    'one-way': { type: 'string', default: '0' },
    splits: { type: 'string', default: '0' },
    flaps: { type: 'string', default: '0' },
    'handover-kills': { type: 'string', default: '0' },
    'host-pauses': { type: 'string', default: '0' },
    'store-fulls': { type: 'string', default: '0' },
    'fault-ms': { type: 'string' },
    'partition-mode': { type: 'string', default: 'peers' },
    netns: { type: 'boolean', default: false },
    'keep-logs': { type: 'boolean', default: false },
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
  console.log('usage: node scripts/verify.js [--seed n] [--nodes 3] [--ids 128] [--duration 60] [--kills 5] [--rate 200] [--shards 1] [--checkpoint-interval 500] [--checkpoint-store url|off] [--max-delay 400] [--restart-delay ms] [--remote [--host-kills n] [--host-pauses n]]');
  console.log('       [--pauses n] [--partitions n] [--one-way n] [--splits n] [--flaps n] [--handover-kills n] [--store-fulls n] [--fault-ms ms] [--partition-mode peers|all] [--netns] [--keep-logs]');
  console.log('  --keep-logs: write every node\'s output, stamped with the verifier\'s clock, to a file even when the run passes.');
  console.log('  --remote: the functions run in a function host process (node cluster/serve.js) that the nodes reach over HTTP;');
  console.log('  --host-kills n: SIGKILL that host n times during the run and start it again; --host-pauses n: SIGSTOP it for 1-10 s.');
  console.log('  --pauses, --partitions, --one-way, --splits, --flaps, --handover-kills, --store-fulls: nemeses (see the header of scripts/verify.ts);');
  console.log('  partitions need root: the nodes then run in network namespaces (--netns forces that for any run).');
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
const pauseCount = whole('pauses', values.pauses, 0);
const partitionCount = whole('partitions', values.partitions, 0);
const oneWayCount = whole('one-way', values['one-way'], 0);
const splitCount = whole('splits', values.splits, 0);
const flapCount = whole('flaps', values.flaps, 0);
const handoverKillCount = whole('handover-kills', values['handover-kills'], 0);
const hostPauseCount = whole('host-pauses', values['host-pauses'], 0);
const storeFullCount = whole('store-fulls', values['store-fulls'], 0);
if (storeFullCount > 0 && values['checkpoint-store'] !== undefined) {
  console.error('--store-fulls fills the default store (a directory of the run); it cannot be used with --checkpoint-store');
  process.exit(2);
}
const faultMs = values['fault-ms'] === undefined ? null : whole('fault-ms', values['fault-ms'], 1);
const partitionMode = values['partition-mode'];
if (partitionMode !== 'peers' && partitionMode !== 'all') {
  console.error(`--partition-mode must be peers or all, got ${partitionMode}`);
  process.exit(2);
}
const rate = whole('rate', values.rate, 1);
const maxDelayMs = whole('max-delay', values['max-delay'], 0);
/** How long a killed node stays down; default random 200-1200 ms (often back before it is declared dead). */
const restartDelayMs = values['restart-delay'] === undefined ? null : whole('restart-delay', values['restart-delay'], 0);
const remote = values.remote === true;
const hostKillCount = whole('host-kills', values['host-kills'], 0);
if ((hostKillCount > 0 || hostPauseCount > 0) && !remote) {
  console.error('--host-kills and --host-pauses need --remote');
  process.exit(2);
}
const useNetns = values.netns === true || partitionCount + oneWayCount + splitCount + flapCount > 0;
const MAX_DEPTH = 10;
const OPS_PER_TREE_MAX = 24;
/** How long a nemesis waits for events in flight before it lands anyway (and is not counted). */
const TRAFFIC_WAIT_MS = 10_000;
/** Inside a namespace every node has its own IP, so all listen on this port. */
const NETNS_PORT = 7000;

// First of all, so that a run that hangs or is killed still says how to run it again.
const replayArgs = [
  ['--seed', seed],
  ['--nodes', nodeCount],
  ['--ids', idCount],
  ['--duration', durationMs / 1000],
  ['--kills', killCount],
  ...(pauseCount > 0 ? [['--pauses', pauseCount]] : []),
  ...(partitionCount > 0 ? [['--partitions', partitionCount]] : []),
  ...(oneWayCount > 0 ? [['--one-way', oneWayCount]] : []),
  ...(splitCount > 0 ? [['--splits', splitCount]] : []),
  ...(flapCount > 0 ? [['--flaps', flapCount]] : []),
  ...(handoverKillCount > 0 ? [['--handover-kills', handoverKillCount]] : []),
  ...(storeFullCount > 0 ? [['--store-fulls', storeFullCount]] : []),
  ...(faultMs === null ? [] : [['--fault-ms', faultMs]]),
  ...(partitionMode === 'peers' ? [] : [['--partition-mode', partitionMode]]),
  ...(values.netns === true ? [['--netns']] : []),
  ['--rate', rate],
  ['--shards', values.shards],
  ['--checkpoint-interval', values['checkpoint-interval']],
  ['--max-delay', maxDelayMs],
  ...(values['checkpoint-store'] === undefined ? [] : [['--checkpoint-store', values['checkpoint-store']]]),
  ...(restartDelayMs === null ? [] : [['--restart-delay', restartDelayMs]]),
  ...(remote ? [['--remote'], ['--host-kills', hostKillCount], ...(hostPauseCount > 0 ? [['--host-pauses', hostPauseCount]] : [])] : []),
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
const between = (low: number, high: number): number => low + Math.floor(random() * (high - low + 1));
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
// The cluster's secret: every node proves it to its peers (cluster/peer-auth.ts).
const secretFile = join(work, 'cluster-secret');
writeFileSync(secretFile, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
/** With --store-fulls the store lives on a small tmpfs of its own (`disk`), which the nemesis fills. */
const disk = join(work, 'disk');
const storeDir = storeFullCount > 0 ? join(disk, 'store') : join(work, 'store');
const store = values['checkpoint-store'] ?? `file://${storeDir}`;
/** The full-store nemesis writes this file until the store's disk has no room. */
const storeFiller = join(disk, 'filler.bin');
let storeMounted = false;
if (storeFullCount > 0) {
  mkdirSync(disk);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', disk], { stdio: ['ignore', 'ignore', 'pipe'] });
    storeMounted = true;
  } catch (error) {
    console.error(`verify: --store-fulls puts the store on a tmpfs, which needs root: ${String((error as { stderr?: Buffer }).stderr ?? (error as Error).message).trim()}`);
    rmSync(work, { recursive: true, force: true });
    process.exit(2);
  }
}
const serveScript = join(root, 'cluster', 'serve.js');
const hostSocket = join(work, 'fn.sock');

// ---- the network (partitions): made before any process starts, deleted on exit ----
let net: NetnsCluster | null = null;
if (useNetns) {
  const available = netnsAvailable();
  if (!available.ok) {
    console.error(`verify: partitions need network namespaces (run as root): ${available.reason}`);
    process.exit(2);
  }
  net = new NetnsCluster(nodeCount);
  net.create();
  console.log(`verify: network namespaces ${net.ns(1)}..${nodeCount} on bridge ${net.bridge}, nodes at ${net.ip(1)}..${nodeCount}, clients from ${net.hostIp}`);
}

// ---- the function host (--remote) ----
const host: { child: ChildProcess | null; output: string } = { child: null, output: '' };

function launchHost(): Promise<void> {
  return spawnUntilReady(host, 'the function host', [process.execPath, serveScript, '--functions', functionsModule, '--unix-socket', hostSocket, '--threads', '1'], 30_000, (output) => output.includes('ready'));
}

/** Spawns a process into `owner` and resolves once `isReady` accepts its output so far. */
function spawnUntilReady(owner: { child: ChildProcess | null; output: string; log?: string[] }, name: string, command: string[], timeoutMs: number, isReady: (output: string) => boolean): Promise<void> {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  owner.child = child;
  owner.output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} is not ready in ${timeoutMs / 1000} s:\n${owner.output.slice(-3000)}`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      owner.output += text;
      // Every line, stamped with the verifier's clock, for the analysis of a failed run.
      owner.log?.push(...text.split('\n').filter((line) => line !== '').map((line) => `${seconds()} ${line}`));
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
      owner.log?.push(`${seconds()} [verify: the process exited (${code ?? signal})]`);
      reject(new Error(`${name} exited (${code ?? signal}) before ready:\n${owner.output.slice(-3000)}`));
    });
  });
}

interface NodeHandle {
  /** 1-based: the namespace and IP index. */
  index: number;
  id: string;
  ip: string;
  port: number;
  child: ChildProcess | null;
  output: string;
  log: string[];
}
const handles: NodeHandle[] = [];
const peerAddress = (handle: NodeHandle) => `${handle.ip}:${handle.port}`;
const adminUrl = (handle: NodeHandle) => `http://${handle.ip}:${handle.port}/cluster`;

function launch(handle: NodeHandle, join_: string[]): Promise<void> {
  const args = [
    startScript,
    ...(remote ? ['--endpoint', `verify/*=http+unix://${hostSocket}/`] : ['--functions', functionsModule]),
    '--host', handle.ip,
    '--port', String(handle.port),
    '--shards', String(values.shards),
    '--node-id', handle.id,
    '--data-dir', join(work, handle.id),
    '--cluster-secret-file', secretFile,
    '--checkpoint-store', store,
    ...(store === 'off' ? [] : ['--checkpoint-interval', String(values['checkpoint-interval'])]),
    '--egress-retain', '10000000',
    '--probe-interval', '100',
    '--probe-timeout', '40',
    ...(join_.length > 0 ? ['--join', join_.join(',')] : []),
  ];
  handle.log.push(`${seconds()} [verify: starting ${handle.id}${join_.length > 0 ? ` --join ${join_.join(',')}` : ''}]`);
  const command = net === null ? [process.execPath, ...args] : ['ip', 'netns', 'exec', net.ns(handle.index), process.execPath, ...args];
  return spawnUntilReady(handle, handle.id, command, 60_000, (output) => {
    const match = /ready ws:\/\/[^\s]+:(\d+)/.exec(output);
    if (match && handle.port === 0) handle.port = Number(match[1]);
    return match !== null;
  });
}

function stopAll(): void {
  for (const handle of handles) handle.child?.kill('SIGKILL');
  host.child?.kill('SIGKILL');
}
// The network's own exit handler (registered by create(), before this one) deletes the namespaces;
// a namespace whose processes still run goes once they die, which this handler makes sure of.
process.on('exit', () => {
  stopAll();
  net?.cleanup();
  if (storeMounted) spawnSync('umount', ['-l', disk]);
  rmSync(work, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

interface Status {
  serving: boolean;
  view: string[];
  viewId: string;
  recovery?: { recovering: boolean; awaiting: string | null; epoch: number };
  handovers: { keyGroupsMoving: number };
}

async function statusOf(handle: NodeHandle, timeoutMs = 1000): Promise<Status | null> {
  try {
    return (await (await fetch(adminUrl(handle), { signal: AbortSignal.timeout(timeoutMs) })).json()) as Status;
  } catch {
    return null;
  }
}

async function clusterSettled(): Promise<boolean> {
  const statuses = await Promise.all(handles.map((handle) => statusOf(handle)));
  return statuses.every(
    (status) =>
      status !== null && status.serving && status.view.length === nodeCount && status.viewId === statuses[0]!.viewId && !status.recovery?.recovering && status.recovery?.awaiting === null && status.handovers.keyGroupsMoving === 0,
  );
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
      const status = (await (await fetch(adminUrl(handle), { signal: AbortSignal.timeout(2000) })).json()) as Record<string, unknown>;
      console.log(`--- ${handle.id}: ${JSON.stringify({ serving: status.serving, view: status.view, recovery: status.recovery, checkpoints: status.checkpoints, handovers: status.handovers })}`);
    } catch (error) {
      console.log(`--- ${handle.id}: /cluster failed: ${(error as Error).message}`);
    }
    console.log(handle.output.split('\n').filter((line) => !line.includes('MaxListeners')).slice(-25).join('\n'));
  }
}

// ---- the run ----
const started = Date.now();
type Nemesis = 'kill' | 'pause' | 'partition' | 'one-way' | 'split' | 'flap' | 'handover-kill' | 'host-kill' | 'host-pause' | 'store-full';
/** Nemeses that landed with events in flight, by kind; and those that found the cluster idle. */
const applied: Record<Nemesis, number> = { kill: 0, pause: 0, partition: 0, 'one-way': 0, split: 0, flap: 0, 'handover-kill': 0, 'host-kill': 0, 'host-pause': 0, 'store-full': 0 };
const idle: Record<Nemesis, number> = { kill: 0, pause: 0, partition: 0, 'one-way': 0, split: 0, flap: 0, 'handover-kill': 0, 'host-kill': 0, 'host-pause': 0, 'store-full': 0 };
const inFlightAtKills: number[] = [];
const inFlightAtHostKills: number[] = [];
/** What happened when, for the report of a failed run. */
const timeline: string[] = [];
let unsettled = 0;
/** Nodes that exited by themselves (not killed by the verifier); they are started again. */
let selfExits = 0;
let sent = 0;
let confirmed = 0;
let failedSends = 0;
const seen = new Map<string, number>();
const reports = new Map<string, { count: number; nonce: number; viol: number; dup: number; gaps: number }>();
const orderRecords: { at: string; from: string; n: number; last: number }[] = [];
const clientSeq = new Map<string, number>();
const stall = new StallClock();

/** Events sent and not yet confirmed (nor failed). */
const inFlight = (): number => sent - confirmed - failedSends;

const seconds = (): string => ((Date.now() - started) / 1000).toFixed(1);

function note(line: string): void {
  const stamped = `${seconds()} s: ${line}`;
  timeline.push(stamped);
  console.log(`verify: ${stamped}`);
}

/** Waits (at most TRAFFIC_WAIT_MS) until events are in flight; returns how many (0: the cluster stayed idle). */
async function trafficInFlight(): Promise<number> {
  const deadline = Date.now() + TRAFFIC_WAIT_MS;
  while (inFlight() === 0 && Date.now() < deadline) await sleep(1);
  return inFlight();
}

/** Counts a nemesis that landed with `load` events in flight. */
function count(kind: Nemesis, load: number): string {
  if (load > 0) applied[kind]++;
  else idle[kind]++;
  return `with ${load} events in flight${load > 0 ? '' : ' (idle: not counted)'}`;
}

/**
 * Waits (at most TRAFFIC_WAIT_MS) until events are in flight, then SIGKILLs `owner`'s process in the same step.
 * Returns how many were in flight when it landed (0: the cluster was idle).
 */
async function killWithTraffic(name: string, owner: { child: ChildProcess | null }): Promise<number> {
  const load = await trafficInFlight();
  if (owner.child === null) throw new Error(`${name} should be running at its kill, but its process is gone`);
  owner.child.kill('SIGKILL');
  return load;
}

const faultLength = (low: number, high: number): number => faultMs ?? between(low, high);

/**
 * While `victims` are cut off or stopped: arms the stall clock once every other node agrees on a view
 * without them and has no recovery pending (the majority could go on). Stops when `done()`.
 */
async function watchMajority(victims: NodeHandle[], label: string, done: () => boolean): Promise<void> {
  const others = handles.filter((handle) => !victims.includes(handle));
  if (victims.length === 0 || others.length <= nodeCount / 2) return; // no victim to go on without, or no majority left
  while (!done()) {
    const statuses = await Promise.all(others.map((handle) => statusOf(handle, 500)));
    if (
      !done() &&
      statuses.every((status) => status !== null && status.serving && status.viewId === statuses[0]!.viewId && victims.every((victim) => !status.view.includes(victim.id)) && !status.recovery?.recovering && status.recovery?.awaiting === null)
    ) {
      stall.arm(`${label}: majority went on`);
      note(`${label}: the majority (${others.map((handle) => handle.id).join(',')}) has a view without ${victims.map((victim) => victim.id).join(',')} and no recovery pending`);
      return;
    }
    await sleep(100);
  }
}

/** Runs a fault for `ms`: `apply` now, `heal` after; the stall clock is disarmed meanwhile and armed at the heal. */
async function fault(label: string, victims: NodeHandle[], ms: number, apply: () => void, heal: () => void): Promise<void> {
  stall.disarm();
  apply();
  let over = false;
  const watcher = watchMajority(victims, label, () => over);
  await sleep(ms);
  over = true;
  heal();
  stall.arm(`${label}: healed`);
  await watcher;
}

/** After a nemesis: restarts nodes that exited by themselves, then waits for the cluster to settle (counting a timeout). */
async function afterNemesis(label: string): Promise<void> {
  for (const handle of handles) {
    if (handle.child === null) {
      selfExits++;
      note(`${handle.id} is not running (it exited by itself: ${handle.output.split('\n').slice(-3).join(' | ')}); starting it again`);
      await launch(handle, handles.filter((other) => other !== handle).map(peerAddress));
    }
  }
  try {
    await waitSettled(60_000);
    note(`${label}: the cluster settled`);
  } catch {
    unsettled++;
    note(`${label}: the cluster did NOT settle within 60 s; the nodes say:`);
    await dumpNodes();
  }
}

async function nodeKill(kind: 'kill' | 'handover-kill'): Promise<void> {
  let victim = pick(handles);
  let load: number;
  if (kind === 'handover-kill') {
    // Make key groups move: kill and restart a node, then kill a node while they move back to it.
    const first = pick(handles);
    first.child?.kill('SIGKILL');
    note(`SIGKILL ${first.id} (to start a hand-over)`);
    await sleep(restartDelayMs ?? between(200, 1200));
    await launch(first, handles.filter((handle) => handle !== first).map(peerAddress));
    const deadline = Date.now() + 20_000;
    let moving = 0;
    while (Date.now() < deadline) {
      const statuses = await Promise.all(handles.map((handle) => statusOf(handle, 300)));
      const movers = handles.filter((_, index) => (statuses[index]?.handovers.keyGroupsMoving ?? 0) > 0);
      if (movers.length > 0) {
        victim = pick(movers);
        moving = statuses[handles.indexOf(victim)]!.handovers.keyGroupsMoving;
        break;
      }
      await sleep(5);
    }
    if (moving === 0) {
      idle[kind]++;
      note(`no hand-over seen within 20 s after ${first.id} came back: hand-over kill not applied`);
      await afterNemesis(kind);
      return;
    }
    load = inFlight();
    victim.child?.kill('SIGKILL');
    if (load > 0) applied[kind]++;
    else idle[kind]++;
    note(`SIGKILL ${victim.id} while ${moving} key groups move, with ${load} events in flight${load > 0 ? '' : ' (idle: not counted)'}`);
  } else {
    load = await killWithTraffic(victim.id, victim);
    note(`SIGKILL ${victim.id} ${count(kind, load)}`);
  }
  if (load > 0 && kind === 'kill') inFlightAtKills.push(load);
  stall.disarm();
  await sleep(restartDelayMs ?? between(200, 1200));
  await launch(victim, handles.filter((handle) => handle !== victim).map(peerAddress));
  stall.arm(`${kind} ${victim.id}: restarted`);
  note(`${victim.id} back`);
  await afterNemesis(`${kind} ${victim.id}`);
}

async function pause(): Promise<void> {
  const victim = pick(handles);
  const ms = faultLength(1000, 10_000);
  const load = await trafficInFlight();
  const child = victim.child!;
  await fault(`pause ${victim.id} ${ms} ms`, [victim], ms, () => {
    child.kill('SIGSTOP');
    note(`SIGSTOP ${victim.id} for ${ms} ms ${count('pause', load)}`);
  }, () => {
    child.kill('SIGCONT');
    note(`SIGCONT ${victim.id}`);
  });
  await afterNemesis(`pause ${victim.id}`);
}

async function partition(): Promise<void> {
  const victim = pick(handles);
  const ms = faultLength(2000, 10_000);
  const load = await trafficInFlight();
  await fault(`partition ${victim.id} ${ms} ms`, [victim], ms, () => {
    net!.isolate(victim.index, { clients: partitionMode === 'all' });
    note(`isolate ${victim.id} (${partitionMode === 'all' ? 'clients cut too' : 'clients still reach it'}) for ${ms} ms ${count('partition', load)}`);
  }, () => {
    net!.heal(victim.index);
    note(`heal ${victim.id}`);
  });
  await afterNemesis(`partition ${victim.id}`);
}

async function oneWay(): Promise<void> {
  const from = pick(handles);
  const to = pick(handles.filter((handle) => handle !== from));
  const ms = faultLength(2000, 10_000);
  const load = await trafficInFlight();
  // Neither side is the victim a majority goes on without, necessarily: the clock arms at the heal.
  await fault(`one-way ${from.id}->${to.id} ${ms} ms`, [], ms, () => {
    net!.cut(from.index, to.index);
    note(`cut ${from.id} -> ${to.id} (one way) for ${ms} ms ${count('one-way', load)}`);
  }, () => {
    net!.uncut(from.index, to.index);
    note(`heal ${from.id} -> ${to.id}`);
  });
  await afterNemesis(`one-way ${from.id}->${to.id}`);
}

/** Writes zeros to `file` until the disk is full (ENOSPC). */
function fillDisk(file: string): number {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(1024 * 1024);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, chunk);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    closeSync(fd);
  }
  return written;
}

async function storeFull(): Promise<void> {
  const ms = faultLength(2000, 10_000);
  const load = await trafficInFlight();
  // No victim: every node's checkpoint writes fail while it lasts; the clock arms when there is room again.
  await fault(`store full ${ms} ms`, [], ms, () => {
    const written = fillDisk(storeFiller);
    note(`the store's disk is full (${Math.round(written / 1024 / 1024)} MB of filler) for ${ms} ms ${count('store-full', load)}`);
  }, () => {
    rmSync(storeFiller, { force: true });
    note('the store has room again');
  });
  await afterNemesis('store full');
}

async function split(): Promise<void> {
  const shuffled = [...handles];
  for (let index = shuffled.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [shuffled[index], shuffled[other]] = [shuffled[other]!, shuffled[index]!];
  }
  const minority = shuffled.slice(0, Math.floor((handles.length - 1) / 2)).sort((a, b) => a.index - b.index);
  const names = minority.map((handle) => handle.id).join(',');
  const ms = faultLength(2000, 10_000);
  const load = await trafficInFlight();
  await fault(`split ${names} ${ms} ms`, minority, ms, () => {
    net!.split(minority.map((handle) => handle.index));
    note(`split ${names} from the others for ${ms} ms ${count('split', load)}`);
  }, () => {
    for (const handle of minority) net!.heal(handle.index);
    note(`heal the split of ${names}`);
  });
  await afterNemesis(`split ${names}`);
}

async function flap(): Promise<void> {
  const victim = pick(handles);
  const total = faultLength(4000, 10_000);
  const load = await trafficInFlight();
  stall.disarm();
  note(`flap ${victim.id} for ${total} ms ${count('flap', load)}`);
  const end = Date.now() + total;
  let cuts = 0;
  while (Date.now() < end) {
    net!.isolate(victim.index, { clients: partitionMode === 'all' });
    cuts++;
    await sleep(between(200, 1500));
    net!.heal(victim.index);
    await sleep(between(200, 1500));
  }
  stall.arm(`flap ${victim.id}: healed`);
  note(`flap ${victim.id} over (${cuts} cuts)`);
  await afterNemesis(`flap ${victim.id}`);
}

async function main(): Promise<number> {
  if (remote) await launchHost();
  for (let index = 0; index < nodeCount; index++) {
    handles.push({ index: index + 1, id: `v${index + 1}`, ip: net?.ip(index + 1) ?? '127.0.0.1', port: net === null ? 0 : NETNS_PORT, child: null, output: '', log: [] });
  }
  await launch(handles[0]!, []);
  await Promise.all(handles.slice(1).map((handle) => launch(handle, [peerAddress(handles[0]!)])));
  await waitSettled(30_000);
  const urls = handles.map((handle) => `ws://${handle.ip}:${handle.port}`);
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
      if (known === undefined || known.nonce <= report.nonce) reports.set(report.id, { count: report.count, nonce: report.nonce, viol: report.viol, dup: report.dup, gaps: report.gaps });
    }
  })();
  void (async () => {
    for await (const record of watcher.subscribe('verify-order', { from: 'earliest', type: OrderViolation })) {
      orderRecords.push(record.value);
      note(`order violation at ${record.value.at}: from ${record.value.from} n ${record.value.n} after ${record.value.last}`);
    }
  })();

  const progress = setInterval(() => {
    const nemeses = (Object.keys(applied) as Nemesis[]).filter((kind) => applied[kind] + idle[kind] > 0).map((kind) => `${kind} ${applied[kind]}`).join(' ');
    console.log(`verify: ${((Date.now() - started) / 1000).toFixed(0)} s  sent ${sent}  confirmed ${confirmed}  in flight ${inFlight()}  ${nemeses}  egress ${seen.size}/${expectedEgress.size}`);
  }, 1000);
  const stallSampler = setInterval(() => stall.sample(inFlight()), 20);

  // The node nemeses, one at a time, in a seeded order at evenly spread, jittered moments; each waits for
  // the cluster to settle before the next.
  const plan: Nemesis[] = [
    ...Array<Nemesis>(killCount).fill('kill'),
    ...Array<Nemesis>(pauseCount).fill('pause'),
    ...Array<Nemesis>(partitionCount).fill('partition'),
    ...Array<Nemesis>(oneWayCount).fill('one-way'),
    ...Array<Nemesis>(splitCount).fill('split'),
    ...Array<Nemesis>(flapCount).fill('flap'),
    ...Array<Nemesis>(handoverKillCount).fill('handover-kill'),
    ...Array<Nemesis>(storeFullCount).fill('store-full'),
  ];
  for (let index = plan.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [plan[index], plan[other]] = [plan[other]!, plan[index]!];
  }
  const times = plan.map((_, index) => started + ((index + 1) / (plan.length + 1)) * durationMs * (0.85 + 0.3 * random()));
  const nemesisRunner = (async () => {
    for (const [index, kind] of plan.entries()) {
      await sleep(Math.max(0, times[index]! - Date.now()));
      if (kind === 'kill' || kind === 'handover-kill') await nodeKill(kind);
      else if (kind === 'pause') await pause();
      else if (kind === 'partition') await partition();
      else if (kind === 'one-way') await oneWay();
      else if (kind === 'store-full') await storeFull();
      else if (kind === 'split') await split();
      else await flap();
    }
  })();

  // The function host dies (or stops) at its own moments (between node nemeses), and comes back on the same socket.
  const hostPlan: Nemesis[] = [...Array<Nemesis>(hostKillCount).fill('host-kill'), ...Array<Nemesis>(hostPauseCount).fill('host-pause')];
  const hostTimes = hostPlan.map((_, index) => started + ((index + 0.5) / (hostPlan.length + 0.5)) * durationMs * (0.85 + 0.2 * random()));
  const hostNemesis = (async () => {
    for (const [index, kind] of hostPlan.entries()) {
      await sleep(Math.max(0, hostTimes[index]! - Date.now()));
      if (kind === 'host-kill') {
        const load = await killWithTraffic('the function host', host);
        if (load > 0) inFlightAtHostKills.push(load);
        note(`SIGKILL the function host ${count(kind, load)}`);
        await sleep(between(200, 1200));
        await launchHost();
        note('the function host is back');
      } else {
        const load = await trafficInFlight();
        const ms = faultLength(1000, 10_000);
        const child = host.child!;
        child.kill('SIGSTOP');
        note(`SIGSTOP the function host for ${ms} ms ${count(kind, load)}`);
        await sleep(ms);
        child.kill('SIGCONT');
        stall.arm('host pause: resumed');
        note('SIGCONT the function host');
      }
    }
  })();

  // Traffic goes on until the last nemesis has healed and the cluster settled, however late that is.
  let nemesesDone = false;
  void Promise.allSettled([nemesisRunner, hostNemesis]).then(() => (nemesesDone = true));
  const sends: Promise<void>[] = [];
  const tickMs = 20;
  const perTick = rate * (tickMs / 1000);
  let carry = 0;
  while (Date.now() - started < durationMs || !nemesesDone) {
    carry += perTick;
    for (; carry >= 1; carry--) {
      const target = pick(ids);
      const ops = generate(1, { left: OPS_PER_TREE_MAX });
      expect(target, ops);
      sent++;
      const n = (clientSeq.get(target) ?? 0) + 1;
      clientSeq.set(target, n);
      sends.push(
        sender.send({ typename: TYPENAME, id: target }, { ops, s: CLIENT_SENDER, n }, Command).then(
          () => {
            confirmed++;
            stall.confirmed();
          },
          (error: Error) => {
            failedSends++;
            console.log(`verify: a send failed: ${error.message}`);
          },
        ),
      );
    }
    await sleep(tickMs);
  }
  await nemesisRunner;
  await hostNemesis;
  console.log('verify: sending done; waiting for every command to be committed');
  const allSent = Promise.all(sends);
  if ((await Promise.race([allSent.then(() => true), sleep(30_000).then(() => false)])) === false) {
    console.log('verify: commands still unconfirmed after 30 s; the nodes say:');
    await dumpNodes();
    await Promise.race([allSent, sleep(90_000)]);
  }
  clearInterval(stallSampler);
  try {
    await waitSettled(60_000);
  } catch {
    unsettled++;
    note('the cluster did NOT settle within 60 s at the end; the nodes say:');
    await dumpNodes();
  }

  // Delayed messages may still be due (a chain of them, at most MAX_DEPTH deep): report rounds until the
  // counts match or stop changing for a while.
  let nonce = 0;
  let mismatchedCounts: string[] = [];
  let stable = 0;
  let previous = '';
  for (let round = 0; round < 60; round++) {
    await sleep(round === 0 ? maxDelayMs * 2 : 1000);
    nonce++;
    await Promise.race([Promise.all(ids.map((id) => sender.send({ typename: TYPENAME, id }, { ops: [{ k: 'report', nonce }] }, Command))), sleep(30_000)]);
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
  for (const handle of handles) recoveries = Math.max(recoveries, (await statusOf(handle, 2000))?.recovery?.epoch ?? 0);
  const missing = [...expectedEgress].filter((id) => !seen.has(id));
  const duplicates = [...seen].filter(([, count]) => count > 1).map(([id]) => id);
  const unexpected = [...seen.keys()].filter((id) => !expectedEgress.has(id));
  for (const id of mismatchedCounts.slice(0, 10)) console.log(`verify: ${id} counted ${reports.get(id)?.count ?? 'nothing'}, expected ${expectedCounts.get(id) ?? 0}`);
  if (missing.length > 0) console.log(`verify: egress records never seen: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ' …' : ''}`);
  if (duplicates.length > 0) console.log(`verify: egress records seen twice: ${duplicates.slice(0, 10).join(', ')}`);
  const mismatches = mismatchedCounts.length + missing.length + duplicates.length + unexpected.length + failedSends;
  const sum = (field: 'viol' | 'dup' | 'gaps') => [...reports.values()].reduce((total, report) => total + (report[field] ?? 0), 0);
  // The state's count is what survived; the egress records say which ones were applied (committed).
  const orderViolations = Math.max(sum('viol'), orderRecords.length);
  const countsOff = mismatchedCounts.map((id) => (reports.get(id)?.count ?? 0) - (expectedCounts.get(id) ?? 0));
  const result = {
    seed,
    nodes: nodeCount,
    ids: idCount,
    commands: sent,
    confirmed,
    kills: applied.kill,
    idleKills: idle.kill,
    inFlightAtKills,
    ...(remote ? { remote: true, hostKills: applied['host-kill'], idleHostKills: idle['host-kill'], inFlightAtHostKills } : {}),
    nemeses: applied,
    idleNemeses: idle,
    ...(net === null ? {} : { netns: true, partitionMode }),
    recoveries,
    increments,
    egressExpected: expectedEgress.size,
    egressSeen: seen.size,
    countMismatches: mismatchedCounts.length,
    countsUnder: countsOff.filter((off) => off < 0).reduce((total, off) => total - off, 0),
    countsOver: countsOff.filter((off) => off > 0).reduce((total, off) => total + off, 0),
    egressMissing: missing.length,
    egressDuplicates: duplicates.length,
    egressUnexpected: unexpected.length,
    failedSends,
    mismatches,
    order_violations: orderViolations,
    duplicate_applications: sum('dup'),
    seq_gaps: sum('gaps'),
    stall_after_heal_max_ms: stall.maxMs,
    confirm_gap_max_ms: stall.gapMaxMs,
    stalls: stall.perFault.map((entry) => `${entry.label}: ${entry.stallMs}`),
    unsettled,
    selfExits,
    durationMs: Date.now() - started,
  };
  await sender.close({ timeoutMs: 1000 }).catch(() => undefined);
  await watcher.close({ timeoutMs: 1000 }).catch(() => undefined);
  const failed = mismatches > 0 || orderViolations > 0;
  if (failed || values['keep-logs'] === true) {
    console.log('verify: the nemeses applied:');
    console.log(timeline.join('\n'));
    const logFile = join(tmpdir(), `statecraft-verify-${seed}-${process.pid}.nodes.log`);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(logFile, handles.map((handle) => `===== ${handle.id}\n${handle.log.join('\n')}`).join('\n'));
    console.log(`verify: every node's output, stamped with the verifier's clock (s): ${logFile}`);
    if (failed) for (const handle of handles) console.log(`--- ${handle.id} (last lines)\n${handle.output.split('\n').slice(-15).join('\n')}`);
  }
  console.log(JSON.stringify(result));
  return failed ? 1 : 0;
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
