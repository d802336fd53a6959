/**
 * The smallest useful function: greets each person and counts how often it has seen them.
 *
 *   node cluster/start.js --functions examples/greeter/functions.js
 *   node examples/greeter/send.js Alice
 */
import { defineFunction, Types } from 'statecraft';

export const greeter = defineFunction({
  typename: 'example/greeter',
  specs: [{ name: 'seen', type: Types.int }],
  fn(context, message) {
    const name = message.asString();
    const seen = (context.storage.seen ?? 0) + 1;
    context.storage.seen = seen;
    context.egress('greetings', seen === 1 ? `Hello, ${name}!` : `Hello again, ${name} (visit #${seen})`);
  },
});
