/**
 * A shard's lifecycle, one phase at a time (whether its loop is parked is another matter: a parked
 * loop is live and idle):
 *
 *   live ── reset 1 ──► discarding ── reset 2 ──► frozen ── resume ──► live
 *   live ── restore ──► frozen             frozen ── restore, or reset 1 again (a fallback) ──► …
 *   any ── stop ──► stopping (for good)
 *
 * live: turns run. discarding: a recovery drops everything the input rings bring. frozen: key groups
 * are being loaded; nothing runs until every shard has loaded (resume). A resume with nothing restored
 * finds the shard live and leaves it so.
 */
import { invariant } from '../../lib/errors.js';

export type ShardPhase = 'live' | 'discarding' | 'frozen' | 'stopping';

const EDGES: Record<ShardPhase, readonly ShardPhase[]> = {
  live: ['live', 'discarding', 'frozen', 'stopping'],
  discarding: ['frozen', 'stopping'],
  frozen: ['frozen', 'discarding', 'live', 'stopping'],
  stopping: [],
};

/** Asserts that a shard may go from `from` to `to`. */
export function checkPhaseChange(from: ShardPhase, to: ShardPhase): void {
  invariant(EDGES[from].includes(to), `a shard cannot go from ${from} to ${to}`);
}
