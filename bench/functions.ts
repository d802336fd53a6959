/**
 * Function types for the benchmarks.
 *
 * bench/hop: each invocation sends one message to an address on another shard (computed from the key
 * group, with shards owning key groups round-robin: shard = 1 + keyGroup % shards, as node.ts assigns
 * them), until the chain has made BENCH_HOPS_MAX hops.
 */
import { defineFunction, keyGroupOf, Types, type Address } from 'statecraft';

const shards = Number(process.env.BENCH_SHARDS ?? 2);
const keyGroups = Number(process.env.BENCH_KEY_GROUPS ?? 1024);
const hopsMax = Number(process.env.BENCH_HOPS_MAX ?? 1e9);
export const HOP_IDS = 10_000;

/** For each hop id, a precomputed address on the next shard over. */
const peers = new Map<string, Address>();
{
  const byShard: string[][] = Array.from({ length: shards }, () => []);
  for (let index = 0; index < HOP_IDS; index++) {
    const id = `h${index}`;
    byShard[keyGroupOf(id, keyGroups) % shards]!.push(id);
  }
  for (let shard = 0; shard < shards; shard++) {
    const next = byShard[(shard + 1) % shards]!;
    byShard[shard]!.forEach((id, index) => peers.set(id, { typename: 'bench/hop', id: next[index % next.length]! }));
  }
}

export const hop = defineFunction({
  typename: 'bench/hop',
  fn(context, message) {
    const hops = message.asInt();
    if (hops < hopsMax) context.send(peers.get(context.self.id)!, hops + 1, Types.int);
  },
});

/** bench/delayed-hop: as bench/hop, but each hop is a delayed message due at once (the timer path). */
export const delayedHop = defineFunction({
  typename: 'bench/delayed-hop',
  fn(context, message) {
    const hops = message.asInt();
    const peer = peers.get(context.self.id)!;
    if (hops < hopsMax) context.sendAfter(0, { typename: 'bench/delayed-hop', id: peer.id }, hops + 1, { type: Types.int });
  },
});

/** Counts events per id (state: one int), for client ingress and memory benchmarks. */
export const count = defineFunction({
  typename: 'bench/count',
  specs: [{ name: 'n', type: Types.int }],
  fn(context) {
    context.storage.n = (context.storage.n ?? 0) + 1;
  },
});

/** Echoes each event to the `echo` egress, for client-to-egress latency. */
export const echo = defineFunction({
  typename: 'bench/echo',
  fn(context, message) {
    context.egress('echo', message.asDouble(), Types.double);
  },
});


const RANDOM_IDS = Number(process.env.BENCH_RANDOM_IDS ?? 100_000);

/**
 * bench/random-hop: each invocation sends one message to a uniformly random address of the same type
 * (ids r0..r<BENCH_RANDOM_IDS>): in a cluster of n nodes, (n-1)/n of the hops cross nodes.
 */
export const randomHop = defineFunction({
  typename: 'bench/random-hop',
  fn(context, message) {
    context.send({ typename: 'bench/random-hop', id: `r${Math.floor(Math.random() * RANDOM_IDS)}` }, message.asInt() + 1, Types.int);
  },
});

/** Emits the time it runs at to the `stamps` egress: when was an event processed (recovery benchmark). */
export const stamp = defineFunction({
  typename: 'bench/stamp',
  specs: [{ name: 'n', type: Types.int }],
  fn(context) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    context.egress('stamps', Date.now(), Types.double);
  },
});

/** Like bench/hop, but every invocation also updates its instance's state (one int): what checkpoints copy. */
export const statefulHop = defineFunction({
  typename: 'bench/stateful-hop',
  specs: [{ name: 'n', type: Types.int }],
  fn(context, message) {
    context.storage.n = (context.storage.n ?? 0) + 1;
    const hops = message.asInt();
    if (hops < hopsMax) context.send({ typename: 'bench/stateful-hop', id: peers.get(context.self.id)!.id }, hops + 1, Types.int);
  },
});
