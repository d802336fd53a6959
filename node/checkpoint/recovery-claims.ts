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
 * The claim also names what the recovery restores and who takes part, and the order names its claimant:
 * a node takes a rollback order only when the store holds that very claim (checkOrder), so a peer that
 * merely holds the cluster secret cannot order a rollback the leader did not claim.
 *
 *   recoveries/<epoch>/<term>.json   { writer, restore, members }: `writer` claimed recovery <epoch> in
 *                                    <term> (its own), to restore checkpoint `restore` on `members`
 *
 * Claims of older epochs are removed by the next claimant that goes on.
 */
import type { BlobStore } from '../storage/blob-store.js';
import { isCheckpointRef, writerOf, type CheckpointRef } from './terms.js';

/** What a recovery claim says besides its writer: the checkpoint restored and the nodes taking part. */
export interface ClaimedRecovery {
  restore: CheckpointRef;
  members: readonly string[];
}

/** A rollback order as it travels (node/main/cluster-port.ts): `claimant` claimed `epoch` in the store. */
export interface ClaimedOrder extends ClaimedRecovery {
  epoch: number;
  claimant: string;
}

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
export async function claimRecovery(store: BlobStore, epoch: number, term: string, writer: string, recovery: ClaimedRecovery): Promise<string[]> {
  const own = claimKey(epoch, term);
  const claim = { writer, restore: recovery.restore, members: [...recovery.members], claimedAt: new Date().toISOString() };
  await store.put(own, new TextEncoder().encode(JSON.stringify(claim)));
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

/**
 * Why a rollback order is not to be taken, or null when the store holds its claim: a claim of its
 * epoch by its claimant, for the same checkpoint and the same members. A claim removed since (a newer
 * recovery went on) refuses the order too: the newer one's order is the one to take.
 */
export async function checkOrder(store: BlobStore, order: ClaimedOrder): Promise<string | null> {
  const keys = await store.list(epochPrefix(order.epoch));
  for (const key of keys) {
    const claim = await readClaim(store, key);
    if (claim === null || claim.writer !== order.claimant) continue;
    const sameRestore = claim.restore.checkpoint === order.restore.checkpoint && claim.restore.term === order.restore.term;
    const sameMembers = claim.members.length === order.members.length && claim.members.every((member, index) => member === order.members[index]);
    if (sameRestore && sameMembers) return null;
    return `it differs from ${order.claimant}'s claim in the store (checkpoint ${claim.restore.checkpoint} for ${claim.members.join(', ')})`;
  }
  return `the store holds no claim of recovery ${order.epoch} by ${order.claimant}`;
}

async function readClaim(store: BlobStore, key: string): Promise<(ClaimedRecovery & { writer: string }) | null> {
  const bytes = await store.get(key).catch(() => null);
  if (bytes === null) return null;
  try {
    const claim = JSON.parse(new TextDecoder().decode(bytes)) as { writer?: unknown; restore?: unknown; members?: unknown } | null;
    if (typeof claim?.writer !== 'string' || !isCheckpointRef(claim.restore) || !Array.isArray(claim.members) || !claim.members.every((member) => typeof member === 'string')) return null;
    return { writer: claim.writer, restore: claim.restore, members: claim.members as string[] };
  } catch {
    return null;
  }
}
