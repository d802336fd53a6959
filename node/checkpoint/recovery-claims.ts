/**
 * Recovery claims: one leader per recovery epoch, fenced in the store (docs/checkpoints.md, "One
 * recovery per epoch").
 *
 * Views differ for a while after a fault heals, and the leader is the smallest id of a node's own
 * view, so two nodes may each start recovery e with a different placement; members that took the
 * first order to reach them would then restore different key groups, and key groups end with two
 * owners or none. So a recovery leader claims its epoch in the store before it orders anything: it
 * writes its claim, then lists the epoch's claims. Only a leader that sees no other node's claim
 * orders the recovery. As with terms (terms.ts), the two writes come before the two reads, so two
 * claimants cannot both miss each other on a store that lists what it wrote: at most one goes on. A
 * claimant that sees another waits for that one's order, and claims the next epoch if none comes.
 *
 *   recoveries/<epoch>/<term>.json   { writer }: `writer` claimed recovery <epoch> in <term> (its own)
 *
 * Claims of older epochs are removed by the next claimant that goes on.
 */
import type { BlobStore } from '../storage/blob-store.js';
import { writerOf } from './terms.js';

export const RECOVERIES_PREFIX = 'recoveries/';
const EPOCH_DIGITS = 10;

const epochPrefix = (epoch: number): string => `${RECOVERIES_PREFIX}${String(epoch).padStart(EPOCH_DIGITS, '0')}/`;
export const claimKey = (epoch: number, term: string): string => `${epochPrefix(epoch)}${term}.json`;

/** The keys of claims for epochs below `epoch`, from a listing of `recoveries/`. */
export function olderClaimKeys(keys: readonly string[], epoch: number): string[] {
  return keys.filter((key) => {
    const match = /^recoveries\/(\d+)\//.exec(key);
    return match !== null && Number(match[1]) < epoch;
  });
}

/**
 * Claims recovery `epoch` for `writer` (in its term `term`, begun for this recovery), then lists the
 * epoch's claims. Resolves with the other nodes that claimed it too (empty: this node orders it), each
 * named by its claim ("another node" when the claim cannot be read). Claims of `writer`'s own earlier
 * attempts do not count against it.
 */
export async function claimRecovery(store: BlobStore, epoch: number, term: string, writer: string): Promise<string[]> {
  const own = claimKey(epoch, term);
  await store.put(own, new TextEncoder().encode(JSON.stringify({ writer, claimedAt: new Date().toISOString() })));
  const others: string[] = [];
  for (const key of await store.list(epochPrefix(epoch))) {
    if (key === own) continue;
    const claimant = await writerOf(store, key);
    if (claimant !== writer) others.push(claimant ?? 'another node');
  }
  if (others.length === 0) {
    // Going on: what older recoveries claimed is history now (best effort).
    const older = olderClaimKeys(await store.list(RECOVERIES_PREFIX).catch(() => []), epoch);
    if (older.length > 0) await store.delete(older).catch(() => undefined);
  }
  return [...new Set(others)].sort();
}
