/**
 * What one node knows of how checkpoints go, for /health, /metrics and its log: when it last learned
 * of a commit, how many outcomes in a row were failures, and why its own part last failed. A node
 * whose checkpoints keep failing, or that has heard of no commit for a while, confirms nothing and
 * releases no egress: /health says so (503) instead of answering 200 while nothing is durable.
 *
 * Failures are logged once per kind (a system error code such as ENOSPC where the reason has one, else
 * the reason with its numbers taken out), then summed up every
 * SUMMARY_MS while they go on, and once when a checkpoint commits again: a full disk under the
 * store would otherwise log a line every interval.
 */

/** Failed outcomes in a row from which the node is unhealthy. */
export const FAILURES_UNHEALTHY = 3;
/** How often a failure that goes on is said again. */
const SUMMARY_MS = 30_000;

export class CheckpointHealth {
  private lastCommitAt: number;
  private failedInARow = 0;
  private lastReason: string | null = null;
  /** The kind of failure last logged, its repeats since, and when it was last said. */
  private loggedKind: string | null = null;
  private repeats = 0;
  private saidAt = 0;
  private failuresSinceCommit = 0;

  constructor(
    /** No commit heard of for this long makes the node unhealthy. */
    private readonly ageLimitMs: number,
    private readonly log: (line: string) => void,
    now: number,
  ) {
    this.lastCommitAt = now;
  }

  committed(now: number): void {
    this.lastCommitAt = now;
    this.failedInARow = 0;
    if (this.loggedKind !== null) this.log(`checkpoints: committed again, after ${this.failuresSinceCommit} failed`);
    this.loggedKind = null;
    this.repeats = 0;
    this.failuresSinceCommit = 0;
  }

  failed(): void {
    this.failedInARow++;
  }

  /** Logs a failure, once per kind (see above); `reason` is also what /health gives. */
  failure(now: number, reason: string, line: string): void {
    this.lastReason = reason;
    this.failuresSinceCommit++;
    const kind = kindOf(reason);
    if (kind !== this.loggedKind) {
      this.loggedKind = kind;
      this.repeats = 0;
      this.saidAt = now;
      this.log(line);
      return;
    }
    this.repeats++;
    if (now - this.saidAt < SUMMARY_MS) return;
    this.log(`checkpoints: still failing, ${this.repeats} more times in the last ${Math.round((now - this.saidAt) / 1000)} s: ${reason}`);
    this.repeats = 0;
    this.saidAt = now;
  }

  /** This node's own part of a checkpoint failed (its uploads): the likeliest reason to give. */
  ownFailure(reason: string): void {
    this.lastReason = reason;
  }

  ageMs(now: number): number {
    return now - this.lastCommitAt;
  }

  get consecutiveFailures(): number {
    return this.failedInARow;
  }

  /** Why checkpoints make this node unhealthy (null: they do not). */
  problem(now: number): string | null {
    const why = this.lastReason === null ? '' : ` (last failure: ${this.lastReason})`;
    if (this.failedInARow >= FAILURES_UNHEALTHY) return `the last ${this.failedInARow} checkpoints failed${why}: nothing is confirmed to clients or released to egress until one commits`;
    const age = this.ageMs(now);
    if (age > this.ageLimitMs) return `no checkpoint has committed for ${Math.round(age / 1000)} s${why}: nothing is confirmed to clients or released to egress until one commits`;
    return null;
  }
}

/** A failure's kind: the system error code it names (ENOSPC, EACCES, ...), else its text without numbers. */
function kindOf(reason: string): string {
  return /\((E[A-Z]{2,})\)/.exec(reason)?.[1] ?? reason.replace(/\d+/g, 'N');
}
