/**
 * Function types for the remote-function benchmark (bench/remote.ts). The same module runs embedded
 * (--functions) and in the function host (cluster/serve.js): the comparison is of the same code.
 *
 * rbench/ring: keeps a count per address and passes the message on to the next address of a ring of
 * RBENCH_ADDRESSES addresses until its hop budget is spent; rbench/echo answers on the `rbench-echo`
 * egress (latency).
 */
import { defineFunction, Types } from 'statecraft';

const addresses = Number(process.env.RBENCH_ADDRESSES ?? 256);

export const ring = defineFunction({
  typename: 'rbench/ring',
  specs: [{ name: 'n', type: Types.int }],
  fn(context, message) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    const left = message.asInt();
    if (left <= 0) return;
    const next = (Number(context.self.id.slice(1)) + 1) % addresses;
    context.send({ typename: 'rbench/ring', id: `a${next}` }, left - 1, Types.int);
  },
});

export const echo = defineFunction({
  typename: 'rbench/echo',
  specs: [{ name: 'n', type: Types.int }],
  fn(context, message) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    context.egress('rbench-echo', message.asDouble(), Types.double);
  },
});
