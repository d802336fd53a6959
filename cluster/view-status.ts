/**
 * The status of this node in the cluster, as the view core (view-core.ts) keeps it, and the changes it
 * allows. Data only, no I/O.
 *
 *   joining ──► no-majority ◄──► serving ──► awaiting-rollback
 *      │             │              │               │
 *      └─────────────┴──────────────┴───────────────┴──► recovering ──► serving | no-majority
 *   every status ──► left (terminal)
 */

/**
 * This node's status in the cluster: exactly one at a time, changed only along `STATUS_EDGES`.
 *
 * - joining: seeds were given and none has answered yet; this node owns and processes nothing.
 * - serving: in a majority of the last agreed view, no recovery pending: it owns its key groups.
 * - no-majority: joined, but reaches no majority of the last agreed view (or has not counted it yet):
 *   it processes nothing, keeps the view and claims no key group until the majority is back.
 * - awaiting-rollback: a member died with its key groups' state (checkpoints on) and the leader's
 *   rollback order has not arrived yet.
 * - recovering: restoring the last committed checkpoint; peer envelopes wait.
 * - left: left gracefully (or closed). Terminal: it answers as the status it left from did (it still
 *   forwards and hands over what it has), and follows no view or recovery any more.
 *
 * Whether a majority is reachable is a fact beside the status (`inMajority()`): a node recovering or
 * awaiting a rollback may gain or lose its majority meanwhile, and returns to serving or no-majority
 * by it.
 */
export type ClusterStatus = 'joining' | 'serving' | 'no-majority' | 'awaiting-rollback' | 'recovering' | 'left';

export const STATUS_EDGES: Readonly<Record<ClusterStatus, readonly ClusterStatus[]>> = {
  // A seed answered (the majority is counted at the view update that follows); or a rollback order came;
  // or, checkpoints on, a member of its view died before it joined (it awaits the leader's order).
  joining: ['no-majority', 'awaiting-rollback', 'recovering', 'left'],
  serving: ['no-majority', 'awaiting-rollback', 'recovering', 'left'],
  'no-majority': ['serving', 'recovering', 'left'],
  // awaiting → awaiting: another member died meanwhile (the reason changes).
  'awaiting-rollback': ['awaiting-rollback', 'recovering', 'left'],
  // recovering → recovering: a newer recovery took over.
  recovering: ['recovering', 'serving', 'no-majority', 'left'],
  left: [],
};

