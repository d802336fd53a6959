// Full rings between the main thread and the shards: records wait in the producer's overflow queue and
// are all delivered, in order, even when nothing else wakes the main thread (no egress traffic).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect } from 'statecraft';
import { eventually, fixture, startTestNode, type TestNode } from '../helpers.js';

let node: TestNode;

test.before(async () => {
  // The smallest rings the node accepts (64 KiB, so 16-byte values at most), and room for a large backlog.
  node = await startTestNode({ functions: [fixture('functions')], shards: 2, ringBytes: 64 * 1024, valueBytesMax: 16, backlogMax: 1_000_000 });
});

test.after(async () => {
  await node?.close();
});

test('node.send() faster than the shards drain: overflow, then every event is processed', async () => {
  const before = node.metrics().Invocations;
  // test/slow-tally takes ~40 µs a message: the shards cannot keep up with this loop, so the rings fill.
  const events = 40_000;
  for (let index = 0; index < events; index++) node.send({ typename: 'test/slow-tally', id: `t${index % 5000}` }, 1);
  assert.ok(node.metrics().overflowBytes > 0, 'the rings filled and records waited in overflow');
  await eventually(() => node.metrics().Invocations - before === events, `all ${events} processed (got ${node.metrics().Invocations - before})`, 20_000);
  assert.is(node.metrics().overflowBytes, 0);
});

test('client events into full rings: all accepted and processed, none lost', async () => {
  const before = node.metrics().Invocations;
  const client = await connect(node.url, { window: 50_000 });
  const events = 200_000;
  const sends: Promise<void>[] = [];
  for (let index = 0; index < events; index++) sends.push(client.send({ typename: 'test/tally', id: `c${index % 5000}` }, 1));
  await Promise.all(sends);
  await eventually(() => node.metrics().Invocations - before === events, `all ${events} processed (got ${node.metrics().Invocations - before})`, 20_000);
  await client.close();
});

test.run();
