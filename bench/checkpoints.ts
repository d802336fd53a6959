/**
 * Checkpoint benchmarks (issue 4):
 *
 *   A. throughput with checkpoints every second versus checkpoints off, in the same run, alternating
 *      (off, on, off, on, ...): function→function hops on one node, each invocation updating its
 *      instance's state (checkpoint_ratio, target >= 0.9);
 *   B. checkpoint duration and bytes for 1,000,000 addresses: the first (full) checkpoint after they are
 *      written, then an incremental one after 1% of them change (target < 2 s);
 *   C. time from SIGKILL of a node to the first event processed on one of its key groups by a survivor
 *      (3 node processes, default failure detector; target < 3 s);
 *   the store is a local directory, or S3 on s3rver with --store s3.
 *
 *   node bench/checkpoints.js [--store file|s3] [--seconds 4] [--rounds 3] [--addresses 1000000] [--trials 3] [--only A,B,C]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from 'statecraft';
import { startNode, type NodeOptions, type StatecraftNode } from 'statecraft/node';
import { computePlacement } from '../cluster/placement.js';
import { keyGroupOf } from '../lib/key-group.js';
import { openBlobStore } from '../node/storage/blob-store.js';
import { readHead } from '../node/checkpoint/terms.js';
import { startS3Server, type S3TestServer } from '../test/s3-server.js';
import { format, median, quiet, sampleRates, sleep } from './harness.js';
import { startBenchCluster } from './processes.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'file' },
    seconds: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    addresses: { type: 'string', default: '1000000' },
    trials: { type: 'string', default: '3' },
    only: { type: 'string', default: 'A,B,C' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const addresses = Number(values.addresses);
const trials = Number(values.trials);
const only = new Set(values.only!.split(','));
const functions = [fileURLToPath(new URL('./functions.js', import.meta.url))];
const work = mkdtempSync(join(tmpdir(), 'statecraft-bench-checkpoints-'));
process.once('exit', () => rmSync(work, { recursive: true, force: true }));
let s3: S3TestServer | null = null;
let stores = 0;

/** A fresh, empty store of the chosen kind. */
async function freshStore(): Promise<NonNullable<NodeOptions['checkpoints']>> {
  stores++;
  if (values.store === 's3') {
    s3 ??= await startS3Server();
    return { store: `s3://${s3.bucket}/bench-${stores}`, s3Endpoint: s3.endpoint, s3Region: 'us-east-1' };
  }
  return { store: `file://${join(work, `store-${stores}`)}` };
}

const result: Record<string, unknown> = { benchmark: 'checkpoints', store: values.store };

// ---- A: throughput, checkpoints on versus off ----
async function hopRate(checkpoints: NodeOptions['checkpoints'] | undefined): Promise<number> {
  const chains = 2000;
  process.env.BENCH_SHARDS = '2';
  process.env.BENCH_HOPS_MAX = String(Math.ceil((3_000_000 * (seconds + 3)) / chains));
  const node = await startNode({ functions, shards: 2, port: 0, log: quiet(), ...(checkpoints ? { checkpoints } : {}) });
  // 2,000 chains over 10,000 instances, each invocation writing its instance's state: every checkpoint
  // copies, encodes and uploads every key group.
  for (let index = 0; index < chains; index++) node.send({ typename: 'bench/stateful-hop', id: `h${index}` }, 0);
  const rates = await sampleRates(() => node.metrics().Invocations, { warmupMs: 1500, windowMs: 500, windows: seconds * 2 });
  const committed = node.checkpointStatus()?.leader?.committed ?? 0;
  await node.close();
  if (checkpoints) console.log(`  (checkpoints committed during the run: ${committed})`);
  return median(rates);
}

if (only.has('A')) {
  const off: number[] = [];
  const on: number[] = [];
  for (let round = 0; round < rounds; round++) {
    off.push(await hopRate(undefined));
    console.log(`round ${round + 1}: checkpoints off ${format(off.at(-1)!)} inv/s`);
    on.push(await hopRate({ ...(await freshStore()), intervalMs: 1000, ...(process.env.BENCH_NO_FSYNC ? { fsync: false } : {}) }));
    console.log(`round ${round + 1}: checkpoints every 1 s ${format(on.at(-1)!)} inv/s`);
  }
  const ratio = median(on) / median(off);
  console.log(`A. stateful function->function, 2 shards, 2000 chains over 10,000 instances: off median ${format(median(off))}, on median ${format(median(on))} inv/s; checkpoint_ratio ${ratio.toFixed(2)}`);
  Object.assign(result, { off_invocations_per_s: Math.round(median(off)), on_invocations_per_s: Math.round(median(on)), checkpoint_ratio: Number(ratio.toFixed(3)) });
}

// ---- B: a checkpoint of 1,000,000 addresses ----
async function waitFor(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

async function checkpointBytes(checkpoints: NonNullable<NodeOptions['checkpoints']>, checkpoint: number): Promise<{ bytes: number; objects: number }> {
  const store = await openBlobStore(checkpoints.store, { ...(checkpoints.s3Endpoint ? { endpoint: checkpoints.s3Endpoint, region: 'us-east-1' } : {}) });
  let bytes = 0;
  const keys = await store.list(`checkpoints/${checkpoint}/`);
  for (const key of keys) bytes += (await store.head(key))?.size ?? 0;
  await store.close();
  return { bytes, objects: keys.length };
}

if (only.has('B')) {
  const checkpoints = { ...(await freshStore()), intervalMs: 10_000 };
  const node: StatecraftNode = await startNode({ functions, shards: 2, port: 0, log: quiet(), backlogMax: 10_000_000, checkpoints });
  const writtenAt = performance.now();
  for (let index = 0; index < addresses; index++) {
    node.send({ typename: 'bench/count', id: `a${index}` }, 1);
    if ((index & 0xffff) === 0) await sleep(0);
  }
  await waitFor(() => node.metrics().Invocations >= addresses, `${addresses} events processed`, 120_000);
  console.log(`B. ${addresses} addresses written in ${Math.round(performance.now() - writtenAt)} ms; waiting for the first checkpoint (interval 10 s)`);
  await waitFor(() => (node.checkpointStatus()!.leader?.committed ?? 0) >= 1, 'the first checkpoint', 120_000);
  const full = { ...node.checkpointStatus()!.leader! };
  const fullBytes = await checkpointBytes(checkpoints, full.lastCommitted);
  console.log(`   full checkpoint ${full.lastCommitted}: ${full.lastDurationMs} ms, ${(fullBytes.bytes / 1e6).toFixed(1)} MB in ${fullBytes.objects} objects`);
  // The addresses of 1% of the key groups change (about 1% of the addresses): the next checkpoint
  // writes only those key groups; the manifest points at the full checkpoint's objects for the rest.
  const changedIds: string[] = [];
  for (let index = 0; index < addresses; index++) if (keyGroupOf(`a${index}`, 1024) < 10) changedIds.push(`a${index}`);
  for (const id of changedIds) node.send({ typename: 'bench/count', id }, 1);
  const changed = changedIds.length;
  await waitFor(() => node.metrics().Invocations >= addresses + changed, 'the changes processed', 60_000);
  await waitFor(() => (node.checkpointStatus()!.leader?.committed ?? 0) >= 2, 'the second checkpoint', 60_000);
  const incremental = { ...node.checkpointStatus()!.leader! };
  const incrementalBytes = await checkpointBytes(checkpoints, incremental.lastCommitted);
  console.log(`   after ${changed} addresses of 10 key groups changed: ${incremental.lastDurationMs} ms, ${(incrementalBytes.bytes / 1e6).toFixed(2)} MB in ${incrementalBytes.objects} objects`);
  await node.close();
  // Baseline in the same run: writing the same bytes as one object, without the runtime.
  const baselineStore = await openBlobStore(checkpoints.store, { ...(checkpoints.s3Endpoint ? { endpoint: checkpoints.s3Endpoint, region: 'us-east-1' } : {}) });
  const blob = new Uint8Array(fullBytes.bytes);
  const putAt = performance.now();
  await baselineStore.put('baseline/one-object.bin', blob);
  const putMs = performance.now() - putAt;
  // And as many objects as the checkpoint wrote, of the same total size, 64 at a time: the store's cost per object.
  const pieces = fullBytes.objects;
  const piece = new Uint8Array(Math.ceil(fullBytes.bytes / pieces));
  let next = 0;
  const manyAt = performance.now();
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < pieces) await baselineStore.put(`baseline/piece-${next++}.bin`, piece);
    }),
  );
  const manyMs = performance.now() - manyAt;
  await baselineStore.close();
  console.log(`   baselines, same store: one put of ${(blob.length / 1e6).toFixed(1)} MB ${Math.round(putMs)} ms; ${pieces} puts of ${piece.length} bytes, 64 at a time, ${Math.round(manyMs)} ms`);
  Object.assign(result, {
    addresses,
    full_checkpoint_ms: full.lastDurationMs,
    full_checkpoint_bytes: fullBytes.bytes,
    incremental_checkpoint_ms: incremental.lastDurationMs,
    incremental_checkpoint_bytes: incrementalBytes.bytes,
    single_put_baseline_ms: Math.round(putMs),
    same_objects_baseline_ms: Math.round(manyMs),
  });
}

// ---- C: SIGKILL to the first event processed on a reassigned key group ----
if (only.has('C')) {
  const times: number[] = [];
  const commits: number[] = [];
  for (let trial = 0; trial < trials; trial++) {
    const checkpoints = await freshStore();
    const storeArgs = ['--checkpoint-store', checkpoints.store, ...(checkpoints.s3Endpoint ? ['--s3-endpoint', checkpoints.s3Endpoint, '--s3-region', 'us-east-1'] : [])];
    const openStore = () => openBlobStore(checkpoints.store, checkpoints.s3Endpoint ? { endpoint: checkpoints.s3Endpoint, region: 'us-east-1' } : {});
    const nodes = await startBenchCluster(3, ['--shards', '1', ...storeArgs, '--checkpoint-interval', '1000']);
    const victim = nodes.at(-1)!;
    const placement = computePlacement(nodes.map((node) => node.id), 1024);
    const ids: string[] = [];
    for (let index = 0; ids.length < 20; index++) {
      const id = `s${index}`;
      if (placement.members[placement.owners[keyGroupOf(id, 1024)]!] === victim.id) ids.push(id);
    }
    const sender = await connect([nodes[0]!.url, nodes[1]!.url], { confirm: 'accept', reconnect: { delayMs: 20, delayMaxMs: 100 } });
    const watcher = await connect(nodes[1]!.url);
    const stamps: number[] = [];
    void (async () => {
      for await (const record of watcher.subscribe<number>('stamps')) stamps.push(record.value);
    })();
    let sending = true;
    const loop = (async () => {
      while (sending) {
        for (const id of ids) void sender.send({ typename: 'bench/stamp', id }, 0).catch(() => undefined);
        await sleep(5);
      }
    })();
    await sleep(2000);
    const before = await openStore();
    const latestBefore = (await readHead(before)).checkpoint;
    await before.close();
    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    await waitFor(() => stamps.some((at) => at > killedAt), 'an event processed on a reassigned key group', 30_000);
    const first = Math.min(...stamps.filter((at) => at > killedAt)) - killedAt;
    // And the first commit after the kill (events confirmed again).
    const store = await openStore();
    const commitDeadline = Date.now() + 30_000;
    while ((await readHead(store)).checkpoint <= latestBefore && Date.now() < commitDeadline) await sleep(20);
    const commit = Date.now() - killedAt;
    await store.close();
    times.push(first);
    commits.push(commit);
    console.log(`C. trial ${trial + 1}: first event processed on a reassigned key group ${first} ms after SIGKILL; first commit after it ${commit} ms`);
    sending = false;
    await loop;
    await sender.close({ timeoutMs: 200 }).catch(() => undefined);
    await watcher.close({ timeoutMs: 200 }).catch(() => undefined);
    await Promise.all(nodes.slice(0, -1).map((node) => node.stop()));
    await victim.stop();
  }
  console.log(`C. median ${Math.round(median(times))} ms to the first event processed, ${Math.round(median(commits))} ms to the first commit (${trials} trials)`);
  Object.assign(result, { kill_to_first_event_ms: Math.round(median(times)), kill_to_first_commit_ms: Math.round(median(commits)) });
}

await (s3 as S3TestServer | null)?.close();
console.log(JSON.stringify(result));
process.exit(0);
