/**
 * The checkpoint coordinator's shell on the leader (one node of the cluster, or a node on its own):
 * a timer, the store writes (manifest, then the commit record of the leader's term, then a check that
 * no newer term began) and the messages to participants. The decisions are the sans-I/O
 * CheckpointCoordinator's.
 */
import type { BlobStore } from '../storage/blob-store.js';
import { CheckpointCoordinator, type CheckpointManifest, type CoordinatorAction } from './checkpoint-coordinator.js';
import { manifestKey, unreferencedKeys, writeManifest } from './checkpoint-format.js';
import { deposedBy, olderTermKeys, writeCommit } from './terms.js';

export interface CheckpointLeaderOptions {
  store: BlobStore;
  keyGroups: number;
  intervalMs: number;
  retain: number;
  /** Acks and the manifest must be done within this long after a start. */
  ackTimeoutMs?: number;
  participants: readonly string[];
  view: string;
  /** This leader's term (begun and based by the caller: terms.ts). */
  term: string;
  /** Committed manifests retained (oldest first), as read back from the store. */
  committed: readonly CheckpointManifest[];
  /** Checkpoint numbers up to this may have been used. */
  lastCheckpoint: number;
  /** Tells a participant to begin a checkpoint. */
  start(participant: string, checkpoint: number): void;
  /** This leader was deposed (a newer term began): it coordinates no more. */
  deposed?(by: string): void;
  /** Tells every participant a checkpoint's outcome. */
  outcome(participants: readonly string[], checkpoint: number, committed: boolean): void;
  log(line: string): void;
  /** A checkpoint failed: `reason`, and the line to log (default: logged). */
  failed?(reason: string, line: string): void;
}

export interface CheckpointStats {
  committed: number;
  failed: number;
  lastCommitted: number;
  lastDurationMs: number;
  lastFailure: string | null;
  /** The newer term that deposed this leader (it coordinates no more), or null. */
  deposedBy: string | null;
  /** Of the failed: checkpoints in progress when this leader stopped (leadership moved, a recovery). */
  dropped: number;
}

export class CheckpointLeader {
  private readonly coordinator: CheckpointCoordinator;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly startedAt = new Map<number, number>();
  readonly stats: CheckpointStats = { committed: 0, failed: 0, lastCommitted: 0, lastDurationMs: 0, lastFailure: null, deposedBy: null, dropped: 0 };
  /** Once, after this term's first commit: older terms' records and what deposed leaders left behind are removed. */
  private swept = false;

  constructor(private readonly options: CheckpointLeaderOptions) {
    this.coordinator = new CheckpointCoordinator({
      participants: options.participants,
      keyGroups: options.keyGroups,
      view: options.view,
      term: options.term,
      intervalMs: options.intervalMs,
      retain: options.retain,
      ...(options.ackTimeoutMs === undefined ? {} : { ackTimeoutMs: options.ackTimeoutMs }),
      committed: options.committed,
      lastCheckpoint: Math.max(options.lastCheckpoint, options.committed.at(-1)?.checkpoint ?? 0),
      manifestKey,
    });
    this.stats.lastCommitted = this.coordinator.lastCommitted;
    this.schedule();
  }

  get lastCommitted(): number {
    return this.coordinator.lastCommitted;
  }

  /** The participants this leader coordinates. */
  get participants(): readonly string[] {
    return this.coordinator.participants;
  }

  /** Waiters for a checkpoint at or above a number: resolved true when one commits, false when one fails. */
  private readonly waiters: { checkpoint: number; resolve: (committed: boolean) => void }[] = [];

  /**
   * Starts a checkpoint as soon as none runs, covering everything accepted so far, and resolves with
   * whether it committed (false: it failed, this leader stopped, or `timeoutMs` passed).
   */
  checkpointNow(timeoutMs: number): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    const checkpoint = this.coordinator.startSoon(this.now());
    const done = new Promise<boolean>((resolve) => {
      this.waiters.push({ checkpoint, resolve });
      setTimeout(() => resolve(false), timeoutMs).unref();
    });
    this.schedule();
    return done;
  }

  private settle(checkpoint: number, committed: boolean): void {
    for (let index = this.waiters.length - 1; index >= 0; index--) {
      const waiter = this.waiters[index]!;
      if (checkpoint < waiter.checkpoint) continue;
      this.waiters.splice(index, 1);
      waiter.resolve(committed);
    }
  }

  acknowledged(participant: string, checkpoint: number, objects: ReadonlyMap<number, string | null>, channels: readonly string[], instances?: ReadonlyMap<number, number>): void {
    this.perform(this.coordinator.acknowledged(this.now(), participant, checkpoint, objects, channels, instances));
  }

  uploadFailed(participant: string, checkpoint: number, reason: string, seen?: number): void {
    this.perform(this.coordinator.uploadFailed(this.now(), participant, checkpoint, reason, seen));
  }

  viewChanged(participants: readonly string[], view: string): void {
    this.perform(this.coordinator.viewChanged(this.now(), participants, view));
  }

  /**
   * Stops; resolves once a manifest or commit write in flight has landed or failed (the head no longer
   * moves). A checkpoint still collecting acks or writing its manifest is dropped: said, counted, and
   * its participants told it failed (they keep its changes for the next one).
   */
  async stop(reason: string): Promise<void> {
    for (const waiter of this.waiters.splice(0)) waiter.resolve(false);
    if (!this.stopped) {
      for (const action of this.coordinator.stop(this.now(), reason)) {
        if (action.type !== 'failed') continue;
        this.startedAt.delete(action.checkpoint);
        this.stats.failed++;
        this.stats.dropped++;
        this.stats.lastFailure = `checkpoint ${action.checkpoint}: dropped: ${reason}`;
        this.options.log(`checkpoints: checkpoint ${action.checkpoint} dropped: ${reason}`);
        this.options.outcome(this.coordinator.participants, action.checkpoint, false);
      }
    }
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await Promise.allSettled([...this.writes]);
  }

  private readonly writes = new Set<Promise<unknown>>();

  private track(write: Promise<unknown>): void {
    this.writes.add(write);
    void write.finally(() => this.writes.delete(write));
  }

  /**
   * Deletes older terms' records, and objects of checkpoints up to `committed` that no retained manifest
   * needs (a deposed leader's commit may be this term's base: it deleted nothing). Best effort.
   */
  private sweep(committed: number): void {
    const store = this.options.store;
    const retained = [...this.coordinator.retained];
    void (async () => {
      const keys = [...(await olderTermKeys(store, this.options.term)), ...unreferencedKeys(await store.list('checkpoints/'), retained, committed)];
      if (keys.length > 0) await store.delete(keys);
    })().catch((error: Error) => this.options.log(`checkpoints: removing what earlier leaders left behind failed: ${error.message}`));
  }

  private now(): number {
    return performance.now();
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    const deadline = this.coordinator.nextDeadline();
    if (deadline === Infinity) {
      this.timer = null;
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.perform(this.coordinator.tick(this.now()));
    }, Math.max(0, Math.min(60_000, deadline - this.now())));
    this.timer.unref();
  }

  private perform(actions: CoordinatorAction[]): void {
    if (this.stopped) return;
    for (const action of actions) {
      switch (action.type) {
        case 'start':
          this.startedAt.set(action.checkpoint, this.now());
          for (const participant of action.participants) this.options.start(participant, action.checkpoint);
          break;
        case 'ask-again':
          for (const participant of action.participants) this.options.start(participant, action.checkpoint);
          break;
        case 'write-manifest':
          this.track(
            writeManifest(this.options.store, action.manifest).then(
              () => this.perform(this.coordinator.manifestWritten(this.now(), action.checkpoint)),
              (error: Error) => this.perform(this.coordinator.writeFailed(this.now(), action.checkpoint, 'manifest', error.message)),
            ),
          );
          break;
        case 'write-commit': {
          // The commit point, then the fence: a term sealed before this check may have read the store
          // before the record landed, so the checkpoint is not announced. A store error leaves open
          // whether the record landed, so the checkpoint is failed (its objects are kept until a later
          // commit moves the head past it, so a record that did land stays valid).
          const store = this.options.store;
          const { checkpoint, record } = action;
          this.track(
            writeCommit(store, record)
              .then(() => deposedBy(store, record.term))
              .then(
                (by) => this.perform(by === null ? this.coordinator.commitWritten(this.now(), checkpoint) : this.coordinator.deposed(this.now(), checkpoint, by)),
                (error: Error) => this.perform(this.coordinator.writeFailed(this.now(), checkpoint, 'commit', error.message)),
              ),
          );
          break;
        }
        case 'committed': {
          const began = this.startedAt.get(action.checkpoint);
          this.startedAt.delete(action.checkpoint);
          this.stats.committed++;
          this.stats.lastCommitted = action.checkpoint;
          if (began !== undefined) this.stats.lastDurationMs = Math.round(this.now() - began);
          this.options.outcome(this.coordinator.participants, action.checkpoint, true);
          this.settle(action.checkpoint, true);
          if (!this.swept) {
            this.swept = true;
            this.sweep(action.checkpoint);
          }
          break;
        }
        case 'deposed':
          this.startedAt.delete(action.checkpoint);
          this.stats.failed++;
          this.stats.deposedBy = action.by;
          this.stats.lastFailure = `checkpoint ${action.checkpoint}: term ${action.by} began before its commit was confirmed`;
          this.options.log(
            `checkpoints: term ${action.by} began after this leader's term ${this.options.term} (another node leads, or a recovery ran while this one was paused or cut off): checkpoint ${action.checkpoint} is not announced and this leader stops`,
          );
          this.options.outcome(this.coordinator.participants, action.checkpoint, false);
          this.settle(action.checkpoint, false);
          this.options.deposed?.(action.by);
          break;
        case 'failed':
          this.startedAt.delete(action.checkpoint);
          this.stats.failed++;
          this.stats.lastFailure = `checkpoint ${action.checkpoint}: ${action.reason}`;
          {
            const line = `checkpoints: checkpoint ${action.checkpoint} failed: ${action.reason}; the next one is tried on schedule`;
            if (this.options.failed === undefined) this.options.log(line);
            else this.options.failed(action.reason, line);
          }
          this.options.outcome(this.coordinator.participants, action.checkpoint, false);
          this.settle(action.checkpoint, false);
          break;
        case 'delete':
          this.options.store.delete(action.keys).catch((error: Error) => this.options.log(`checkpoints: deleting ${action.keys.length} old objects failed: ${error.message}`));
          break;
      }
    }
    this.schedule();
  }
}
