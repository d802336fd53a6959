// test-timeout-ms: 180000
// Checkpoints on one node: commit confirms events and releases egress, a restart restores, an upload
// that fails fails its checkpoint only, a corrupt object makes the restore fall back, and the same on S3.
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, unlinkSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, keyGroupOf, type Client, type StatecraftError } from '../../../lib/index.js';
import { openBlobStore } from '../../../node/storage/blob-store.js';
import { parseObjectRef, readManifest } from '../../../node/checkpoint/checkpoint-format.js';
import { readHead } from '../../../node/checkpoint/terms.js';
import type { NodeOptions } from '../../../node/index.js';
import { counted } from '../../fixtures/functions.js';
import { countReports, eventually, fixture, sleep, startTestNode, subscribed, withTimeout, type TestNode } from '../../helpers.js';
import { startS3Server, type S3TestServer } from '../../s3-server.js';

const functions: string[] = [fixture('functions')];
const nodes: TestNode[] = [];
const clients: Client[] = [];
const dirs: string[] = [];
let s3: S3TestServer | null = null;

async function stopAll(): Promise<void> {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 500 }).catch(() => undefined);
  for (const node of nodes.splice(0)) await node.close().catch(() => undefined);
}

test.after.each(stopAll);
test.after(async () => {
  await s3?.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(`${tmpdir()}/statecraft-checkpoints-`);
  dirs.push(dir);
  return dir;
}

async function start(checkpoints: NodeOptions['checkpoints'], extra: Omit<Partial<NodeOptions>, 'functions'> = {}): Promise<TestNode> {
  const node = await startTestNode({ keyGroups: 64, ...extra, functions, ...(checkpoints ? { checkpoints } : {}) });
  nodes.push(node);
  return node;
}

async function client(node: TestNode, options: Parameters<typeof connect>[1] = {}): Promise<Client> {
  const created = await connect(node.url, options);
  clients.push(created);
  return created;
}

async function reportCounts(node: TestNode, ids: string[]): Promise<Map<string, number>> {
  const sender = await client(node);
  return countReports(sender, sender, ids, 15_000);
}

test('send() resolves once a checkpoint commits; egress is released on commit, with stable ids; a restart restores the state', async () => {
  const dir = tempDir();
  const store = `file://${dir}`;
  let node = await start({ store, intervalMs: 100 });
  const sender = await client(node);
  const received: { id: string | null; count: number }[] = [];
  const subscription = sender.subscribe('counts', { type: counted });
  void (async () => {
    for await (const record of subscription) received.push({ id: record.recordId, count: record.value.count });
  })();
  await subscribed(subscription);
  const ids = ['a', 'b', 'c', 'd'];
  for (let round = 0; round < 5; round++) await Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  const latest = (await readHead(await openBlobStore(store))).checkpoint;
  assert.ok(latest >= 1, `the head names checkpoint ${latest}`);
  await eventually(() => received.length === 20, `20 egress records (got ${received.length})`);
  assert.ok(received.every((record) => record.id !== null && /^\d+:\d+$/.test(record.id)), 'records carry stable ids');
  assert.is(new Set(received.map((record) => record.id)).size, 20);
  await stopAll();

  node = await start({ store, intervalMs: 100 });
  assert.ok(node.checkpointStatus()!.restored >= latest, `restored ${node.checkpointStatus()!.restored}`);
  const found = await reportCounts(node, ids);
  assert.equal([...found.values()], [5, 5, 5, 5]);
});

test("confirm: 'accept' resolves on acceptance; without a commit the egress waits", async () => {
  const node = await start({ store: `file://${tempDir()}`, intervalMs: 3_600_000 });
  const sender = await client(node, { confirm: 'accept' });
  const records: number[] = [];
  const counts = sender.subscribe('counts', { type: counted });
  void (async () => {
    for await (const record of counts) records.push(record.value.count);
  })();
  await subscribed(counts);
  await withTimeout(sender.send({ typename: 'test/counter', id: 'x' }, 1), 20_000, 'accepted');
  await eventually(() => node.metrics().Invocations === 1, 'processed');
  await sleep(300);
  assert.equal(records, [], 'no checkpoint has committed: the record is held');
  assert.is(sender.pending, 1, 'the client keeps the event until a commit covers it');
});

test('a graceful stop takes a final checkpoint: what was accepted since the last one is confirmed to its client and restored after a restart', async () => {
  const store = `file://${tempDir()}`;
  // No periodic checkpoint in this test: only the final one can make the events durable.
  const node = await start({ store, intervalMs: 3_600_000 });
  const sender = await client(node, { confirm: 'accept' });
  const ids = ['p', 'q', 'r'];
  await Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  await eventually(() => node.metrics().Invocations === 3, 'processed');
  assert.is(sender.pending, 3, 'accepted, not yet covered by a commit');
  await node.close();
  nodes.splice(nodes.indexOf(node), 1);
  assert.is(sender.pending, 0, 'the final checkpoint confirmed every event before the node closed its connections');
  const restarted = await start({ store, intervalMs: 100 });
  assert.ok(restarted.checkpointStatus()!.restored >= 1, `restored ${restarted.checkpointStatus()!.restored}`);
  const found = await reportCounts(restarted, ids);
  assert.equal([...found.values()], [1, 1, 1]);
});

test('a store whose commit records were deleted (terms/ and commits/ gone, the objects still there) is refused at start, untouched; put back, it restores', async () => {
  const dir = tempDir();
  const store = `file://${dir}`;
  const node = await start({ store, intervalMs: 100 });
  const sender = await client(node);
  await Promise.all(['m', 'n'].map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  await stopAll();
  const backup = tempDir();
  cpSync(join(dir, 'terms'), join(backup, 'terms'), { recursive: true });
  cpSync(join(dir, 'commits'), join(backup, 'commits'), { recursive: true });
  rmSync(join(dir, 'terms'), { recursive: true });
  rmSync(join(dir, 'commits'), { recursive: true });
  const objects = readdirSync(join(dir, 'checkpoints'), { recursive: true }).length;
  const error = (await start({ store, intervalMs: 100 }).then(
    () => null,
    (refusal: StatecraftError) => refusal,
  ))!;
  assert.ok(error !== null, 'the node must not start empty over the objects');
  assert.is(error.code, 'SC_ERR_STORE_CORRUPT');
  assert.match(error.message, /holds \d+ checkpoint objects \(checkpoints\/.*\) but no commit records \(terms\/, commits\/\): they were deleted or lost/);
  assert.is(readdirSync(join(dir, 'checkpoints'), { recursive: true }).length, objects, 'nothing in the store was changed');
  assert.not.ok(existsSync(join(dir, 'terms')), 'no term was begun');
  cpSync(join(backup, 'terms'), join(dir, 'terms'), { recursive: true });
  cpSync(join(backup, 'commits'), join(dir, 'commits'), { recursive: true });
  const restored = await start({ store, intervalMs: 100 });
  assert.equal([...(await reportCounts(restored, ['m', 'n'])).values()], [1, 1]);
});

test('an upload that fails fails that checkpoint only: the node goes on, and the next checkpoint that can be written commits', async () => {
  const dir = tempDir();
  // A file where the checkpoints directory must go: every object write fails.
  writeFileSync(`${dir}/checkpoints`, 'not a directory');
  const node = await start({ store: `file://${dir}`, intervalMs: 100 });
  const sender = await client(node);
  const records: number[] = [];
  const counts = sender.subscribe('counts', { type: counted });
  void (async () => {
    for await (const record of counts) records.push(record.value.count);
  })();
  await subscribed(counts);
  let resolved = false;
  const sends = Promise.all([1, 2, 3].map(() => sender.send({ typename: 'test/counter', id: 'up' }, 1))).then(() => (resolved = true));
  await eventually(() => node.metrics().Invocations === 3, 'the events are processed meanwhile');
  await eventually(() => (node.checkpointStatus()!.leader?.failed ?? 0) >= 2, 'checkpoints fail');
  assert.match(node.checkpointStatus()!.leader!.lastFailure!, /upload failed/);
  assert.not.ok(resolved, 'nothing is confirmed before a commit');
  assert.equal(records, [], 'no egress before a commit');
  unlinkSync(`${dir}/checkpoints`);
  mkdirSync(`${dir}/checkpoints`);
  await withTimeout(sends, 30_000, 'the sends resolve once a checkpoint commits');
  await eventually(() => records.length === 3, 'the egress is released once');
  assert.equal(records, [1, 2, 3]);
  await sleep(400);
  assert.equal(records, [1, 2, 3], 'and not again');
});

test('a corrupt checkpoint object is detected on restore, and the checkpoint before it is used', async () => {
  const dir = tempDir();
  const store = `file://${dir}`;
  let node = await start({ store, intervalMs: 50 });
  let sender = await client(node);
  await Promise.all([1, 2, 3].map(() => sender.send({ typename: 'test/counter', id: 'k' }, 1)));
  await sleep(300); // idle checkpoints meanwhile: they reuse the objects written for these three
  const quiet = (await readHead(await openBlobStore(store))).checkpoint;
  // One event, so that one checkpoint takes k from 3 to 5 (two could land in two checkpoints, and the one
  // before the corrupt one would hold 4).
  await sender.send({ typename: 'test/counter', id: 'k' }, 2);
  await stopAll();
  const blobs = await openBlobStore(store);
  const head = await readHead(blobs);
  const latest = head.checkpoint;
  // The object holding k's key group (idle checkpoints after its own point at it too).
  const ref = (await readManifest(blobs, head))!.objects[keyGroupOf('k', 64)]!;
  const slice = parseObjectRef(ref);
  const written = Number(/^checkpoints\/(\d+)\//.exec(slice.key)?.[1]);
  assert.ok(written > quiet && written <= latest, `k's key group was written by checkpoint ${written} (${ref}), after ${quiet}`);
  const path = `${dir}/${slice.key}`;
  const bytes = readFileSync(path);
  bytes[bytes.length - 1] ^= 0xff; // one flipped bit in the payload of the object that holds k's key group
  writeFileSync(path, bytes);

  const logs: string[] = [];
  node = await start({ store, intervalMs: 50 }, { log: (line) => logs.push(line) });
  const restored = node.checkpointStatus()!.restored;
  assert.ok(restored < written && restored >= quiet, `restored ${restored}, between ${quiet} and ${written}`);
  assert.ok(logs.some((line) => line.includes(`cannot restore checkpoint ${latest}`) && /corrupt|checksum/i.test(line)), logs.join('\n'));
  // The start's term continues from the checkpoint restored: the corrupt one is out of the history for good.
  const after = await readHead(await openBlobStore(store));
  assert.not.ok([...after.retained, after].some((ref) => ref.checkpoint === latest && ref.term === head.term), `the corrupt checkpoint ${latest} is not in the history of ${JSON.stringify(after)}`);
  const found = await reportCounts(node, ['k']);
  assert.is(found.get('k'), 3, 'the state of the checkpoint before the corrupt one');
  sender = await client(node);
});

test('the same on S3 (s3rver): commit, restart, restore', async () => {
  s3 = await startS3Server();
  const checkpoints = { store: `s3://${s3.bucket}/cluster-a`, s3Endpoint: s3.endpoint, s3Region: 'us-east-1', intervalMs: 100 };
  let node = await start(checkpoints);
  const sender = await client(node);
  for (let round = 0; round < 3; round++) await Promise.all(['p', 'q'].map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  await stopAll();
  node = await start(checkpoints);
  assert.ok(node.checkpointStatus()!.restored >= 1);
  const found = await reportCounts(node, ['p', 'q']);
  assert.equal([...found.values()], [3, 3]);
});

test.run();
