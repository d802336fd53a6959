/**
 * The README's example: a shopping cart that reserves stock and reminds its user about an abandoned cart.
 *
 *   node cluster/start.js --functions examples/shop/functions.js
 */
import { defineFunction, Types } from 'statecraft';

export interface Cart {
  items: Record<string, number>;
}
export const CartType = Types.json<Cart>('shop/cart');
export const AddItem = Types.json<{ sku: string; quantity: number }>('shop/add-item');
const REMINDER_MS = Number(process.env.SHOP_REMINDER_MS ?? 3600_000);

export const cart = defineFunction({
  typename: 'shop/cart', // namespace/name
  specs: [
    { name: 'cart', type: CartType, expireAfterCall: 24 * 3600_000 }, // forgotten after a day idle
    { name: 'reminders', type: Types.int },
  ],
  fn(context, message) {
    if (message.isString() && message.asString() === 'remind') {
      context.storage.reminders = (context.storage.reminders ?? 0) + 1;
      context.egress('cart-reminders', { user: context.self.id, cart: context.storage.cart }, Types.json());
      return;
    }
    const add = message.as(AddItem); // another type throws: a dead letter, and the cart is unchanged
    const cart = context.storage.cart ?? { items: {} }; // typed: Cart | null
    cart.items[add.sku] = (cart.items[add.sku] ?? 0) + add.quantity;
    context.storage.cart = cart; // staged; applied when the handler returns

    context.send({ typename: 'shop/inventory', id: add.sku }, add.quantity, Types.int);
    context.egress('cart-updates', { user: context.self.id, cart }, Types.json());

    // Remind the user later, unless they add to the cart again before then.
    context.cancelDelayedMessage('reminder');
    context.sendAfter(REMINDER_MS, context.self, 'remind', { cancellationToken: 'reminder' });
  },
});

export const inventory = defineFunction({
  typename: 'shop/inventory',
  specs: [{ name: 'reserved', type: Types.int }],
  fn(context, message) {
    context.storage.reserved = (context.storage.reserved ?? 0) + message.asInt();
    context.egress('stock', { sku: context.self.id, reserved: context.storage.reserved, by: context.caller?.id }, Types.json());
  },
});
