/**
 * Placement: which node owns each key group, computed from the live members of a membership view.
 *
 * Key groups are placed on a consistent-hash ring (`hashring`: ketama, md5, virtual nodes) of the live
 * member ids; key group g sits at the ring point of the string `kg:<g>`. Every node computes the same
 * table from the same set of ids, whatever order it learnt them in, so no coordination is needed to
 * agree on ownership once views agree; and when one member joins or leaves, only about 1/n of the key
 * groups move. Pure: no I/O, no clocks.
 */
import HashRing from 'hashring';
import { createHash } from 'node:crypto';

/** Ring points per member: 40 vnodes × 4 replicas = 160, as ketama does. */
export const VNODES_DEFAULT = 40;

export interface Placement {
  /** Live member ids, sorted: owners are indexes into this list. */
  readonly members: readonly string[];
  /** owner[keyGroup] = index into `members`. */
  readonly owners: Uint16Array;
  /**
   * Identifies the member set: equal on every node that computed the table from the same members,
   * different (with overwhelming probability) otherwise. Hex, 16 characters.
   */
  readonly viewId: string;
}

export function computePlacement(memberIds: Iterable<string>, keyGroups: number, vnodes = VNODES_DEFAULT): Placement {
  const members = [...new Set(memberIds)].sort();
  if (members.length === 0) throw new RangeError('placement needs at least one live member');
  if (members.length > 0xffff) throw new RangeError(`placement supports at most 65,535 members, got ${members.length}`);
  const owners = new Uint16Array(keyGroups);
  if (members.length > 1) {
    const servers: Record<string, { vnodes: number }> = {};
    for (const id of members) servers[id] = { vnodes };
    // The ring's cache would only hold our K lookups once; keep it small.
    const ring = new HashRing(servers, 'md5', { 'max cache size': 16 });
    const indexOf = new Map(members.map((id, index) => [id, index]));
    for (let keyGroup = 0; keyGroup < keyGroups; keyGroup++) owners[keyGroup] = indexOf.get(ring.get(`kg:${keyGroup}`))!;
  }
  const viewId = createHash('sha256').update(members.join('\n')).digest('hex').slice(0, 16);
  return { members, owners, viewId };
}

/** How many key groups each member owns. */
export function ownedCounts(placement: Placement): Record<string, number> {
  const counts: Record<string, number> = Object.fromEntries(placement.members.map((id) => [id, 0]));
  for (const owner of placement.owners) counts[placement.members[owner]!]!++;
  return counts;
}

/** Key groups whose owner differs between two placements (same K). */
export function movedKeyGroups(before: Placement, after: Placement): number[] {
  const moved: number[] = [];
  for (let keyGroup = 0; keyGroup < after.owners.length; keyGroup++) {
    if (before.members[before.owners[keyGroup]!] !== after.members[after.owners[keyGroup]!]) moved.push(keyGroup);
  }
  return moved;
}
