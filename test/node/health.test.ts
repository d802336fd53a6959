// test-timeout-ms: 120000
// /health tells the truth (issue 15): a shard held by a handler that never returns, and a checkpoint
// store whose disk is full, each make a real node answer 503 with the reason, and show in /metrics and
// the log (once); the full disk freed, the node is healthy again and confirms again.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, keyGroupOf } from 'statecraft';
import { eventually, fixture, startTestNode, take, withTimeout, type TestNode } from '../helpers.js';
import { requireTool } from '../requirements.js';

interface Health {
  status: string;
  problems?: string[];
}

async function health(node: TestNode): Promise<{ status: number; body: Health }> {
  const response = await fetch(`http://127.0.0.1:${node.port}/health`);
  return { status: response.status, body: (await response.json()) as Health };
}

async function metric(node: TestNode, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  const match = new RegExp(`^statecraft_${name} (\\S+)$`, 'm').exec(text);
  if (match === null) throw new Error(`no statecraft_${name} in /metrics`);
  return Number(match[1]);
}

test('a handler in a synchronous loop: its shard is reported stalled (/health 503 with the reason, statecraft_shards_stalled, one log line); other shards go on; the node still stops', async () => {
  const node = await startTestNode({ functions: [fixture('hostile')], shards: 2, shardStallMs: 1000 });
  try {
    assert.is((await health(node)).status, 200);
    const client = await connect(node.url);
    const spins = client.subscribe<string>('spin');
    await client.send({ typename: 'hostile/spin', id: 's' }, 'spin');
    let last: { status: number; body: Health } | null = null;
    await eventually(async () => (last = await health(node)).status === 503, '/health to answer 503', 15_000);
    assert.is(last!.body.status, 'unhealthy');
    assert.is(last!.body.problems!.length, 1, JSON.stringify(last!.body));
    assert.match(last!.body.problems![0]!, /^shard [12] has not answered for \d+ s: a handler that never returns \(a synchronous loop\) holds it/);
    assert.is(await metric(node, 'shards_stalled'), 1);
    // The other shard still runs its addresses: find an id whose key group it owns.
    const held = Number(/^shard (\d)/.exec(last!.body.problems![0]!)![1]);
    const other = Array.from({ length: 64 }, (_, index) => `o${index}`).find((id) => node.shardOf(keyGroupOf(id, node.keyGroups)) !== held)!;
    await client.send({ typename: 'hostile/spin', id: other }, 'still here');
    const [record] = await take(spins, 1, 5000);
    assert.is(record!.value, 'still here');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.is(node.logs.filter((line) => /has not answered for/.test(line)).length, 1, `logged once:\n${node.logs.join('\n')}`);
    await client.close({ timeoutMs: 10 });
  } finally {
    await withTimeout(node.close(), 60_000, 'the node to stop with a shard held');
  }
});

test('a full disk under the checkpoint store: /health 503 saying so, the failure logged once, statecraft_checkpoint_failures_consecutive; space freed, healthy and confirming again', async () => {
  let root = false;
  try {
    root = process.getuid?.() === 0;
  } catch {
    root = false;
  }
  if (!requireTool(root, 'root (to mount a small tmpfs for the store)', 'run the tests as root, as CI does')) return;
  const disk = mkdtempSync(join(tmpdir(), 'statecraft-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', disk]);
  let node: TestNode | null = null;
  try {
    node = await startTestNode({ functions: [fixture('functions')], shards: 2, checkpoints: { store: `file://${join(disk, 'store')}`, intervalMs: 100 } });
    const client = await connect(node.url);
    await withTimeout(client.send({ typename: 'test/counter', id: 'a' }, 1), 10_000, 'a first event confirmed');
    assert.is((await health(node)).status, 200);
    // Fill the disk: every upload and manifest write fails with ENOSPC from here.
    try {
      writeFileSync(join(disk, 'filler'), Buffer.alloc(8 * 1024 * 1024));
    } catch {
      // ENOSPC once it is full: what was written stays
    }
    const stuck = client.send({ typename: 'test/counter', id: 'a' }, 1);
    let last: { status: number; body: Health } | null = null;
    await eventually(async () => (last = await health(node!)).status === 503, '/health to answer 503', 15_000);
    assert.match(last!.body.problems!.join('; '), /the last \d+ checkpoints failed \(last failure: .*(ENOSPC|disk is full)/);
    assert.ok((await metric(node, 'checkpoint_failures_consecutive')) >= 3);
    await new Promise((resolve) => setTimeout(resolve, 1000)); // ten more intervals of failures
    const failureLines = node.logs.filter((line) => /checkpoint \d+ failed/.test(line));
    assert.is(failureLines.length, 1, `one line for the failure, not one per interval:\n${node.logs.join('\n')}`);
    rmSync(join(disk, 'filler'));
    await withTimeout(stuck, 15_000, 'the event sent while the disk was full, confirmed once it is freed');
    await eventually(async () => (await health(node!)).status === 200, '/health to answer 200 again', 15_000);
    assert.ok(node.logs.some((line) => /checkpoints: committed again, after \d+ failed/.test(line)), node.logs.join('\n'));
    assert.is(await metric(node, 'checkpoint_failures_consecutive'), 0);
    await client.close({ timeoutMs: 1000 });
  } finally {
    await node?.close();
    execFileSync('umount', [disk]);
    rmSync(disk, { recursive: true, force: true });
  }
});

test.run();
