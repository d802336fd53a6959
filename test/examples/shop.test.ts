// The README's shop example, run as written: typed state, a send to another function, egress, and a
// reminder that each new item postpones (cancel + sendAfter with the same token).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { connect, type Client } from 'statecraft';
import { eventually, startTestNode, take, sleep, type TestNode } from '../helpers.js';

// Read by the functions module in the shard threads. Far longer than the pause below, so that on a slow
// machine too every addition lands before the reminder of the one before is due.
const REMINDER_MS = 2000;
const PAUSE_MS = 500;
process.env.SHOP_REMINDER_MS = String(REMINDER_MS);
const shop = fileURLToPath(new URL('../../examples/shop/functions.js', import.meta.url));
let node: TestNode;
let client: Client;

test.before(async () => {
  node = await startTestNode({ functions: [shop] });
  client = await connect(node.url);
});
test.after(async () => {
  await client?.close();
  await node?.close();
});

test('adding items updates the cart and reserves stock; one reminder after the last addition', async () => {
  const { AddItem } = await import('../../examples/shop/functions.js');
  const updates = client.subscribe<{ user: string; cart: { items: Record<string, number> } }>('cart-updates');
  const stock = client.subscribe<{ sku: string; reserved: number; by: string }>('stock');
  const reminders = client.subscribe<{ user: string; cart: { items: Record<string, number> } }>('cart-reminders');
  const before = node.metrics();
  await client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'tea', quantity: 2 }, AddItem);
  await take(updates, 1); // the first addition has run: its reminder is due REMINDER_MS from then at the latest
  await sleep(PAUSE_MS);
  const lastSentAt = Date.now();
  await Promise.all([
    client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'tea', quantity: 1 }, AddItem),
    client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'cups', quantity: 4 }, AddItem),
  ]);
  const cartRecords = await take(updates, 2);
  assert.equal(cartRecords.at(-1)!.value.cart.items, { tea: 3, cups: 4 });
  const stockRecords = await take(stock, 3);
  assert.equal(
    stockRecords.map((record) => [record.value.sku, record.value.reserved, record.value.by]),
    [['tea', 2, 'alice'], ['tea', 3, 'alice'], ['cups', 4, 'alice']],
  );
  const [reminder] = await take(reminders, 1, 20_000);
  const remindedAfterMs = Date.now() - lastSentAt;
  assert.equal(reminder!.value, { user: 'alice', cart: { items: { tea: 3, cups: 4 } } });
  // Postponed: due REMINDER_MS after the last addition (a few ms of slack for clocks read in two
  // threads), not after the first one (PAUSE_MS earlier).
  assert.ok(remindedAfterMs >= REMINDER_MS - 20, `the reminder came ${remindedAfterMs} ms after the last addition`);
  // The first two additions' reminders were cancelled: nothing is pending, one fired, no other can come.
  await eventually(() => {
    const now = node.metrics();
    return now.DelayedPending === 0 && now.DelayedFired - before.DelayedFired >= 1 && now.EgressRecords - before.EgressRecords >= 7;
  }, 'no reminder pending, and the counters caught up');
  const after = node.metrics();
  assert.is(after.DelayedScheduled - before.DelayedScheduled, 3, 'a reminder per addition');
  assert.is(after.DelayedCancelled - before.DelayedCancelled, 2, 'the first two cancelled');
  assert.is(after.DelayedFired - before.DelayedFired, 1, 'one reminder fired');
  assert.is(after.EgressRecords - before.EgressRecords, 7, '3 cart updates, 3 stock records, 1 reminder');
});

test('a message of the wrong type is a dead letter and leaves the cart as it was', async () => {
  const deadLetters = client.subscribe<{ address: { id: string }; code: string; messageType: string }>('dead-letters');
  await client.send({ typename: 'shop/cart', id: 'bob' }, 42);
  const [letter] = await take(deadLetters, 1);
  assert.is(letter!.value.address.id, 'bob');
  assert.is(letter!.value.messageType, 'io.statefun.types/int');
});

test.run();
