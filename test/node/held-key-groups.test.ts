// A node that loses its majority holds its key groups (nothing of them runs) and runs them again when
// the majority is back. Here a real node with two shard threads is held and run again hundreds of
// times, through the port a cluster layer uses, while messages flow from a real client, between
// functions across shards and from functions to themselves: every sender's messages must reach each
// address in the order it sent them, none lost and none twice.
//
// The hooks below do what the cluster layer does with a message it cannot route without a majority
// (keep it, and deliver it again once the node serves), so the test also shows what a held key group
// saves: with `false` instead of 'held' (routed to the cluster layer while held), messages already in a
// shard's ring go back to the main thread and can arrive after newer ones — this test then fails.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type Client } from 'statecraft';
import type { ClusterHooks, ClusterPort, KeyGroupRoute } from '../../node/index.js';
import { fixture, startTestNode, subscribed, withTimeout, type TestNode } from '../helpers.js';
import { step, violation } from '../fixtures/order.js';

const TIMEOUT_MS = 60_000;
/** How a node routes its own key groups while it has no majority. */
const WITHOUT_MAJORITY: KeyGroupRoute = 'held';

let node: TestNode | undefined;
let client: Client | undefined;
test.after.each(async () => {
  await client?.close();
  await node?.close();
  client = node = undefined;
});

/** Hooks of a cluster layer that keeps what it cannot route while held and delivers it again after. */
function heldHooks(): { hooks: ClusterHooks; redeliver(port: ClusterPort): void } {
  let kept: Uint8Array[] = [];
  const hooks: ClusterHooks = {
    forward: (bytes, offset, length) => void kept.push(bytes.slice(offset, offset + length)),
    onEgress: () => undefined,
    admits: () => true,
    refusesClients: () => null,
    http: () => false,
    upgrade: () => false,
    metrics: () => [],
    close: async () => undefined,
    writeBarrier: () => undefined,
    checkpointBlocked: () => null,
    sendCheckpointControl: () => undefined,
  };
  const redeliver = (port: ClusterPort) => {
    const messages = kept;
    kept = [];
    for (const bytes of messages) port.deliver(bytes, 0, bytes.length, null);
    port.flush();
  };
  return { hooks, redeliver };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('held and run again 300 times while messages flow: every sender keeps its order at every address, nothing lost or repeated', async () => {
  node = await startTestNode({ functions: [fixture('order')], shards: 2 });
  const { hooks, redeliver } = heldHooks();
  const port = node.attachCluster(hooks);
  client = await connect(node.url);
  const violations = client.subscribe('order-violations', { type: violation });
  const steps = client.subscribe('order-steps', { type: step });
  await subscribed(violations);
  await subscribed(steps);

  const sinks = 32;
  const sources = 40;
  const perSource = 200;
  const fromClient = 4000;
  // Sources message each other's sinks and themselves for as long as the flips go on.
  for (let index = 0; index < sources; index++) await client.send({ typename: 'test/order-source', id: `source-${index}` }, [sinks, perSource]);
  const sends: Promise<void>[] = [];
  let flipping = true;
  const flips = (async () => {
    let count = 0;
    while (flipping || count < 300) {
      port.setOwnership(() => WITHOUT_MAJORITY);
      await pause(count % 3);
      port.setOwnership(() => true);
      redeliver(port);
      await pause((count + 1) % 3);
      count++;
    }
    return count;
  })();
  for (let n = 0; n < fromClient; n++) {
    sends.push(client.send({ typename: 'test/order-sink', id: `sink-${n % sinks}` }, { from: 'client', n }, step));
    if (n % 200 === 199) await pause(1);
  }
  await withTimeout(Promise.all(sends), TIMEOUT_MS, 'the client events to be accepted');
  flipping = false;
  const flipCount = await withTimeout(flips, TIMEOUT_MS, 'the flips');
  redeliver(port);

  const expected = sources * perSource + fromClient;
  const seen = new Map<string, number[]>();
  const deadline = Date.now() + TIMEOUT_MS;
  for (let received = 0; received < expected; received++) {
    const next = await withTimeout(steps.next(), Math.max(1, deadline - Date.now()), 'the next step').catch(() => null);
    if (next === null || next.done) {
      const counts = [...seen].map(([from, numbers]) => `${from} ${numbers.length}`).join(', ');
      assert.unreachable(`${received} of ${expected} steps ran (per sender: ${counts})`);
      return;
    }
    seen.set(next.value.value.from, [...(seen.get(next.value.value.from) ?? []), next.value.value.n]);
  }
  assert.equal(seen.get('client')?.slice().sort((a, b) => a - b), Array.from({ length: fromClient }, (_, n) => n), "every client event ran once");
  for (let index = 0; index < sources; index++) {
    assert.equal(seen.get(`source-${index}`)?.slice().sort((a, b) => a - b), Array.from({ length: perSource }, (_, n) => n), `every step of source-${index} ran once`);
  }
  // The sinks check each sender's order per address; the steps report the order per sender too.
  const reported: string[] = [];
  for (;;) {
    const next = await Promise.race([violations.next(), pause(200).then(() => null)]);
    if (next === null || next.done) break;
    reported.push(JSON.stringify(next.value.value));
  }
  assert.equal(reported, [], `no sink saw a sender's messages out of order (${flipCount} flips)`);
  for (const [from, numbers] of seen) {
    const bySink = new Map<number, number[]>();
    for (const n of numbers) bySink.set(n % sinks, [...(bySink.get(n % sinks) ?? []), n]);
    for (const [sink, list] of bySink) assert.ok(list.every((n, index) => index === 0 || n > list[index - 1]!), `${from} → sink-${sink} in order: ${list.join(',')}`);
  }
});

test.run();
