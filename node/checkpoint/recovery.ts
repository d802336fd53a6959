/**
 * Recovery on a node's main thread: every thread forgets everything, then the node loads its key groups
 * from one committed checkpoint and replays the messages recorded in flight for them.
 *
 * - At start (a node alone, or founding a cluster) it restores the newest committed checkpoint it can
 *   read: a corrupt object makes it fall back to the one before.
 * - In a cluster, recovery epoch e (ClusterPort.rollBack) restores exactly the checkpoint the leader
 *   named for e, on every node: falling back here alone would mix checkpoints, so a checkpoint that
 *   cannot be read fails the recovery. From `beginRecovery(e)` until e's reset is done, whatever the
 *   shards emit comes from state the recovery drops: the main thread discards it.
 */
import { BlobCorruptError } from '../storage/blob-store.js';
import { readKeyGroup } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';
import type { RollBackResult } from '../main/cluster-port.js';
import type { ShardRequests } from '../main/shard-pool.js';
import type { CheckpointManifest } from './checkpoint-coordinator.js';
import type { Checkpointing } from './checkpointing.js';
import { decodeChannelObject, manifestKey, readManifest } from './checkpoint-format.js';
import { checkOrder, claimRecovery, type ClaimedOrder } from './recovery-claims.js';
import { NO_COMMIT, readHead, setBase, type CheckpointRef, type CommitRecord } from './terms.js';

/** What recovery needs of the main thread. */
export interface RecoveryHost {
  readonly keyGroups: number;
  readonly pool: ShardRequests;
  /** True while the main thread drops what the shards emit. */
  discarding: boolean;
  /** Drops what the main thread has not yet published, and what waits in its input rings. */
  dropUnpublished(): void;
  drainInputs(): void;
  /** Points each key group at its shard (owned) or at the main thread. */
  setRouting(owned: (keyGroup: number) => boolean): void;
  /** Closes client connections: clients re-send what was not committed. */
  dropClients(reason: string): Promise<void>;
  /** Writes messages recorded in flight at a checkpoint's cut into their shards' rings, and publishes. */
  replay(messages: readonly Uint8Array[]): void;
  log(line: string): void;
}

export class Recovery {
  /** The recovery epoch this node is in: names its uploads from now on. */
  epoch = 0;
  /** True while a rollback restores a checkpoint here. */
  restoring = false;
  private rollBacks: Promise<unknown> = Promise.resolve();
  /** The newest recovery epoch begun, and the newest whose reset is done: between them, shard output is stale. */
  private epochBegun = 0;
  private epochReset = 0;

  constructor(
    private readonly host: RecoveryHost,
    private readonly checkpointing: Checkpointing,
  ) {}

  /**
   * A recovery to epoch `epoch` begins: from now until its reset, whatever the shards emit comes from
   * state the recovery drops. The main thread discards it — it must not reach peers, whose frames
   * carry the new epoch already.
   */
  begin(epoch: number): void {
    if (epoch <= this.epochBegun) return;
    this.epochBegun = epoch;
    this.host.discarding = true;
  }

  /**
   * The checkpoint recovery `epoch` restores: coordination here stops (a manifest or commit write in
   * flight finishes first), then a term begins — sealed before the head is read, so a leader elsewhere
   * that is paused or cut off can no longer announce a commit the recovery did not see — and continues
   * from it. Then the epoch is claimed (recovery-claims.ts): `contendedBy` names the other nodes that
   * claimed it too, and this node must not order it.
   */
  async prepare(epoch: number, nodeId: string, members: readonly string[]): Promise<{ head: CommitRecord; contendedBy: string[] }> {
    await this.checkpointing.lead(null);
    const store = this.checkpointing.store;
    const { term, head } = await this.checkpointing.beginTerm();
    await setBase(store, term, head);
    const restore = { checkpoint: head.checkpoint, term: head.term };
    return { head, contendedBy: await claimRecovery(store, epoch, term, nodeId, { restore, members }) };
  }

  /** Why a rollback order is not to be taken (the store holds no such claim), or null (recovery-claims.ts). */
  checkOrder(order: ClaimedOrder): Promise<string | null> {
    return checkOrder(this.checkpointing.store, order);
  }

  /** Recovery in a cluster (see ClusterPort.rollBack); one at a time. */
  rollBack(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult> {
    this.begin(epoch);
    const next = this.rollBacks.then(() => this.rollBackNow(owned, epoch, checkpoint));
    this.rollBacks = next.catch(() => undefined);
    return next;
  }

  /**
   * A node starting on its own (alone, or founding a cluster) loads every key group `owned` selects from
   * the newest committed checkpoint it can read: a corrupt object makes it fall back to the one before.
   * Its start begins a term (see `prepare`), which continues from the checkpoint restored.
   */
  async restoreAtStart(owned: (keyGroup: number) => boolean): Promise<RollBackResult> {
    const store = this.checkpointing.store;
    // Read first: a store that cannot be restored (see readHead) is refused before this node writes to it.
    await readHead(store);
    const { term, head } = await this.checkpointing.beginTerm();
    const candidates: CommitRecord[] = head.checkpoint === 0 ? [] : [...head.retained.map((ref, index) => ({ ...ref, retained: head.retained.slice(0, index) })), head];
    const errors: string[] = [];
    for (let index = candidates.length - 1; index >= 0; index--) {
      const candidate = candidates[index]!;
      let result: RollBackResult;
      try {
        const manifest = await readManifest(store, candidate);
        if (manifest === null) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `its manifest ${manifestKey(candidate.checkpoint, candidate.term)} is missing`);
        result = await this.restoreManifest(manifest, owned, candidate !== head);
      } catch (error) {
        errors.push(`checkpoint ${candidate.checkpoint}: ${(error as Error).message}`);
        this.host.log(`checkpoints: cannot restore checkpoint ${candidate.checkpoint} (${(error as Error).message})${index > 0 ? '; trying the one before' : ''}`);
        await this.resetShards();
        continue;
      }
      // The new term continues from what was restored (after a fall-back, not from the head).
      await setBase(store, term, candidate);
      return result;
    }
    if (candidates.length > 0) {
      throw new BlobCorruptError(
        store.describe(),
        manifestKey(head.checkpoint, head.term),
        `no committed checkpoint can be restored (${errors.join('; ')})`,
        'Restore the store from a backup, or point --checkpoint-store elsewhere.',
      );
    }
    await setBase(store, term, NO_COMMIT);
    this.checkpointing.restoredCheckpoint = 0;
    this.resumeShards();
    return { checkpoint: 0, instances: 0 };
  }

  private async rollBackNow(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult> {
    this.restoring = true;
    try {
      return await this.rollBackSteps(owned, epoch, checkpoint);
    } finally {
      this.restoring = false;
    }
  }

  /**
   * Every node of the cluster restores the same checkpoint, the one the leader chose: falling back to an
   * older one here alone would mix checkpoints, so a checkpoint that cannot be read fails the recovery.
   */
  private async rollBackSteps(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult> {
    const host = this.host;
    this.epoch = epoch;
    await this.checkpointing.stopForRecovery();
    host.setRouting(() => false);
    await host.dropClients('the cluster is recovering from a failed node: reconnect and re-send what was not committed');
    await this.resetShards();
    this.epochReset = Math.max(this.epochReset, epoch);
    // Still discarding if a newer recovery began meanwhile.
    host.discarding = this.epochBegun > this.epochReset;
    this.checkpointing.participant.reset(0, epoch);
    let result: RollBackResult = { checkpoint: 0, instances: 0 };
    const ownsAny = Array.from({ length: host.keyGroups }, (_, keyGroup) => owned(keyGroup)).some(Boolean);
    if (checkpoint.checkpoint === 0 || !ownsAny) {
      // Nothing to load: nothing was committed, or this node is left out of the recovery's placement (a
      // member back after it, re-sent its order) and rejoins empty — the checkpoint may be long deleted.
      this.checkpointing.restoredCheckpoint = checkpoint.checkpoint;
      result = { checkpoint: checkpoint.checkpoint, instances: 0 };
      this.resumeShards();
    } else {
      const store = this.checkpointing.store;
      const manifest = await readManifest(store, checkpoint);
      const key = manifestKey(checkpoint.checkpoint, checkpoint.term);
      if (manifest === null) throw new BlobCorruptError(store.describe(), key, `the manifest of checkpoint ${checkpoint.checkpoint}, which the recovery restores, is missing`);
      result = await this.restoreManifest(manifest, owned, false);
    }
    this.checkpointing.participant.reset(result.checkpoint, epoch);
    host.setRouting(owned);
    return result;
  }

  /** Every thread of the node forgets everything (two phases: see KeyGroupMoves.reset). */
  private async resetShards(): Promise<void> {
    const host = this.host;
    host.discarding = true;
    host.dropUnpublished();
    await host.pool.askAll({ type: 'reset', request: 0, phase: 1, epoch: this.epoch });
    host.drainInputs();
    await host.pool.askAll({ type: 'reset', request: 0, phase: 2, epoch: this.epoch });
    host.drainInputs();
    host.discarding = this.epochBegun > this.epochReset;
  }

  /** Loads `manifest`'s key groups that `owned` selects into the (frozen) shards, then lets them resume. */
  private async restoreManifest(manifest: CheckpointManifest, owned: (keyGroup: number) => boolean, fallback: boolean): Promise<RollBackResult> {
    const host = this.host;
    if (manifest.keyGroups !== host.keyGroups) {
      throw new StatecraftError('SC_ERR_INVALID_OPTION', `it was taken with ${manifest.keyGroups} key groups, this node has ${host.keyGroups}`);
    }
    const store = this.checkpointing.store;
    // Channel objects first: a corrupt one fails this checkpoint before any shard loads anything.
    const recorded: Uint8Array[] = [];
    for (const key of manifest.channels) {
      const bytes = await store.get(key);
      if (bytes === null) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `its object ${key} is missing`);
      for (const message of decodeChannelObject(bytes)) if (owned(readKeyGroup(message, 0))) recorded.push(message);
    }
    const keysByShard = new Map<number, string[]>();
    const cleanByShard = new Map<number, number[]>();
    for (let keyGroup = 0; keyGroup < manifest.keyGroups; keyGroup++) {
      if (!owned(keyGroup)) continue;
      const shard = host.pool.shardOf(keyGroup);
      const key = manifest.objects[keyGroup]!;
      if (key === '') cleanByShard.set(shard, [...(cleanByShard.get(shard) ?? []), keyGroup]);
      else keysByShard.set(shard, [...(keysByShard.get(shard) ?? []), key]);
    }
    const replies = await Promise.all(
      Array.from({ length: host.pool.size }, (_, index) =>
        host.pool.ask<'restored'>(index + 1, { type: 'restore', request: 0, checkpoint: manifest.checkpoint, keys: keysByShard.get(index + 1) ?? [], clean: cleanByShard.get(index + 1) ?? [], fallback }),
      ),
    );
    let instances = 0;
    /** Instances of function types this node does not run: dropped with a notice, not lost unseen. */
    let dropped = 0;
    for (const reply of replies) {
      if (reply.error !== undefined) throw new StatecraftError(reply.code ?? 'SC_ERR_INTERNAL', reply.error);
      instances += reply.instances;
      dropped += reply.dropped ?? 0;
    }
    // The manifest says how many instances the key groups restored here hold: loading another number is
    // a damaged or misread checkpoint, never a success (the shards stay frozen; the caller resets them).
    const expected = expectedInstances(manifest, owned);
    if (expected !== null && instances + dropped !== expected) {
      throw new StatecraftError(
        'SC_ERR_STORE_CORRUPT',
        `checkpoint ${manifest.checkpoint} holds ${expected} instances in the key groups this node restores, but ${instances + dropped} were read; the store was damaged or written by something else`,
      );
    }
    this.checkpointing.restored(manifest.checkpoint);
    // Every shard has loaded: each runs its restored queued messages first, then the messages that were
    // in flight at the cut (written now, read after the resume), then whatever comes.
    this.resumeShards();
    host.replay(recorded);
    if (fallback) host.log(`checkpoints: restored checkpoint ${manifest.checkpoint}, older than the last committed one (see above)`);
    return { checkpoint: manifest.checkpoint, instances };
  }

  private resumeShards(): void {
    this.host.pool.postAll({ type: 'resume' });
  }
}

/** The instances the manifest counts in the key groups `owned` selects; null when it does not know them all. */
function expectedInstances(manifest: CheckpointManifest, owned: (keyGroup: number) => boolean): number | null {
  const counts = manifest.instances;
  if (counts === undefined) return null;
  let total = 0;
  for (let keyGroup = 0; keyGroup < manifest.keyGroups; keyGroup++) {
    if (!owned(keyGroup)) continue;
    const count = counts[keyGroup]!;
    if (count < 0) return null;
    total += count;
  }
  return total;
}
