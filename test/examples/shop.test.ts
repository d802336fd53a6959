// The README's shop example, run as written: typed state, a send to another function, egress, and a
// reminder that each new item postpones (cancel + sendAfter with the same token).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { connect, type Client } from 'statecraft';
import { startTestNode, take, sleep, type TestNode } from '../helpers.js';

process.env.SHOP_REMINDER_MS = '300'; // read by the functions module in the shard threads
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
  await client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'tea', quantity: 2 }, AddItem);
  await sleep(150);
  await client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'tea', quantity: 1 }, AddItem);
  await client.send({ typename: 'shop/cart', id: 'alice' }, { sku: 'cups', quantity: 4 }, AddItem);
  const cartRecords = await take(updates, 3);
  assert.equal(cartRecords.at(-1)!.value.cart.items, { tea: 3, cups: 4 });
  const stockRecords = await take(stock, 3);
  assert.equal(
    stockRecords.map((record) => [record.value.sku, record.value.reserved, record.value.by]),
    [['tea', 2, 'alice'], ['tea', 3, 'alice'], ['cups', 4, 'alice']],
  );
  const [reminder] = await take(reminders, 1, 5000);
  assert.equal(reminder!.value, { user: 'alice', cart: { items: { tea: 3, cups: 4 } } });
  // The first two additions' reminders were cancelled: no second reminder comes.
  const extra = await take(reminders, 1, 600).catch(() => []);
  assert.equal(extra.length, 0);
});

test('a message of the wrong type is a dead letter and leaves the cart as it was', async () => {
  const deadLetters = client.subscribe<{ address: { id: string }; code: string; messageType: string }>('dead-letters');
  await client.send({ typename: 'shop/cart', id: 'bob' }, 42);
  const [letter] = await take(deadLetters, 1);
  assert.is(letter!.value.address.id, 'bob');
  assert.is(letter!.value.messageType, 'io.statefun.types/int');
});

test.run();
