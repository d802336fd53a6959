/**
 * A shard's phase in recoveries (whether its loop is parked, or told to stop, is another matter: a
 * parked loop is live and idle, and a stop ends the loop in whatever phase):
 *
 *   live ── reset 1 ──► discarding ── reset 2 ──► frozen ── resume ──► live
 *   live ── restore ──► frozen             frozen ── restore, or reset 1 again (a fallback) ──► …
 *
 * live: turns run. discarding: a recovery drops everything the input rings bring. frozen: key groups
 * are being loaded; nothing runs until every shard has loaded (resume). A resume with nothing restored
 * finds the shard live and leaves it so.
 */
import { invariant } from '../../lib/errors.js';

export type ShardPhase = 'live' | 'discarding' | 'frozen';

const EDGES: Record<ShardPhase, readonly ShardPhase[]> = {
  live: ['live', 'discarding', 'frozen'],
  discarding: ['frozen'],
  frozen: ['frozen', 'discarding', 'live'],
};

/** Asserts that a shard may go from `from` to `to`. */
export function checkPhaseChange(from: ShardPhase, to: ShardPhase): void {
  invariant(EDGES[from].includes(to), `a shard cannot go from ${from} to ${to}`);
}
