/**
 * Fakes for driving a node's checkpoint roles without threads (checkpointing.test.ts, recovery.test.ts):
 * a main thread that records what it is asked, a cluster layer that records control messages and peer
 * barriers, a real FileBlobStore in a temp dir (optionally holding back a write), committed checkpoints
 * written into it as a leader of a term would, and a way to play a node's shards through one checkpoint.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { KEY_GROUP_HASH } from '../../../lib/key-group.js';
import { CHECKPOINT_MANIFEST_VERSION, type CheckpointManifest } from '../../../node/checkpoint/checkpoint-coordinator.js';
import type { Checkpointing, CheckpointingHost } from '../../../node/checkpoint/checkpointing.js';
import { writeManifest } from '../../../node/checkpoint/checkpoint-format.js';
import { NO_COMMIT, sealKey, setBase, termId, writeCommit, type CheckpointRef, type CommitRecord } from '../../../node/checkpoint/terms.js';
import type { CheckpointControl, ClusterHooks } from '../../../node/main/cluster-port.js';
import { openBlobStore, type BlobInfo, type BlobStore } from '../../../node/storage/blob-store.js';

export const KEY_GROUPS = 4;

export class FakeCheckpointingHost implements CheckpointingHost {
  readonly keyGroups = KEY_GROUPS;
  readonly shards = 2;
  closing = false;
  discarding = false;
  restoring = false;
  cluster: ClusterHooks | null = null;
  barriers: number[] = [];
  marks: number[] = [];
  outcomes: [number, boolean][] = [];
  logs: string[] = [];

  constructor(readonly nodeId = 'n1') {}

  writeBarrierToShards(checkpoint: number): void {
    this.barriers.push(checkpoint);
  }
  markEvents(checkpoint: number): void {
    this.marks.push(checkpoint);
  }
  outcome(checkpoint: number, committed: boolean): void {
    this.outcomes.push([checkpoint, committed]);
  }
  // A bound function, as the real host's is: Checkpointing.lead hands `host.log` on unbound.
  readonly log = (line: string): void => {
    this.logs.push(line);
  };
}

/** The cluster layer as checkpoints see it: control messages and peer barriers recorded. */
export class FakeCluster implements ClusterHooks {
  sent: [string, CheckpointControl][] = [];
  peerBarriers: number[] = [];
  blocked: string | null = null;

  forward(): void {
    throw new Error('not used by checkpoints');
  }
  onEgress(): void {
    throw new Error('not used by checkpoints');
  }
  admits(): boolean {
    return true;
  }
  refusesClients(): string | null {
    return null;
  }
  http(_request: IncomingMessage, _response: ServerResponse): boolean {
    return false;
  }
  upgrade(): boolean {
    return false;
  }
  async close(): Promise<void> {}
  metrics(): string[] {
    return [];
  }
  writeBarrier(checkpoint: number): void {
    this.peerBarriers.push(checkpoint);
  }
  checkpointBlocked(): string | null {
    return this.blocked;
  }
  sendCheckpointControl(peer: string, message: CheckpointControl): void {
    this.sent.push([peer, message]);
  }
}

/**
 * A real store whose writes of one key can be held back until `release()`. A key given as a pattern
 * holds every key it matches (a commit record's key holds a term id the test does not know beforehand).
 * One listing can be held back as well (`holdNextList`): it lists what the store holds once released.
 */
export class GatedStore implements BlobStore {
  private gate: Promise<void> | null = null;
  private open: (() => void) | null = null;
  /** Writes of `heldKey` waiting at the gate. */
  waiting = 0;
  heldKey: string | RegExp | null = null;
  private listGate: { prefix: string; taken: boolean; opened: Promise<void>; open: () => void } | null = null;
  /** Listings waiting at the list gate. */
  listsWaiting = 0;

  constructor(readonly inner: BlobStore) {}

  /** The next listing of exactly `prefix` waits until `releaseList()`. */
  holdNextList(prefix: string): void {
    let open: () => void = () => undefined;
    const opened = new Promise<void>((resolve) => (open = resolve));
    this.listGate = { prefix, taken: false, opened, open };
  }
  releaseList(): void {
    this.listGate?.open();
    this.listGate = null;
  }

  hold(key: string | RegExp): void {
    this.heldKey = key;
    this.gate = new Promise((resolve) => (this.open = resolve));
  }
  release(): void {
    this.heldKey = null;
    this.open?.();
  }
  private held(key: string): boolean {
    const heldKey = this.heldKey;
    return heldKey !== null && (typeof heldKey === 'string' ? key === heldKey : heldKey.test(key));
  }
  async put(key: string, bytes: Uint8Array): Promise<void> {
    if (this.held(key)) {
      this.waiting++;
      await this.gate;
      this.waiting--;
    }
    return this.inner.put(key, bytes);
  }
  get(key: string): Promise<Uint8Array | null> {
    return this.inner.get(key);
  }
  head(key: string): Promise<BlobInfo | null> {
    return this.inner.head(key);
  }
  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }
  async list(prefix?: string): Promise<string[]> {
    const gate = this.listGate;
    if (gate !== null && !gate.taken && prefix === gate.prefix) {
      gate.taken = true;
      this.listsWaiting++;
      await gate.opened;
      this.listsWaiting--;
    }
    return this.inner.list(prefix);
  }
  delete(keys: readonly string[]): Promise<void> {
    return this.inner.delete(keys);
  }
  check(): Promise<void> {
    return this.inner.check();
  }
  close(): Promise<void> {
    this.release();
    this.releaseList();
    return this.inner.close();
  }
  describe(): string {
    return this.inner.describe();
  }
}

/** A FileBlobStore in a fresh temp dir (no fsync: throwaway data); `remove()` closes it and deletes the dir. */
export async function tempStore(): Promise<{ store: BlobStore; dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'statecraft-cp-test-'));
  const store = await openBlobStore(`file://${dir}`, { fsync: false });
  return {
    store,
    dir,
    remove: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The term the tests' committed checkpoints were written in (an earlier leader's, before any term a test begins). */
export const TEST_TERM = termId(1, '0000000a');

/** Checkpoint `checkpoint` of TEST_TERM, as a manifest's retained list or a recovery names it. */
export const testRef = (checkpoint: number): CheckpointRef => ({ checkpoint, term: TEST_TERM });

/** A committed-looking manifest for K = KEY_GROUPS, written by the leader of `term`. */
export function manifest(checkpoint: number, objects: string[], channels: string[] = [], retained: CheckpointRef[] = [], keyGroups = KEY_GROUPS, term = TEST_TERM): CheckpointManifest {
  return { version: CHECKPOINT_MANIFEST_VERSION, checkpoint, term, view: 'test', keyGroups, hash: KEY_GROUP_HASH, objects, channels, retained };
}

/**
 * Writes what the leader of `manifest.term` leaves in the store when it commits `manifest`: the term's
 * seal and base (`base`, unless the term has one already), the manifest, then its commit record.
 */
export async function commitManifest(store: BlobStore, committed: CheckpointManifest, base: CommitRecord = NO_COMMIT): Promise<CommitRecord> {
  const term = committed.term;
  if (!(await store.exists(sealKey(term)))) {
    await store.put(sealKey(term), new TextEncoder().encode(JSON.stringify({ writer: 'test' })));
    await setBase(store, term, base);
  }
  await writeManifest(store, committed);
  const record: CommitRecord = { checkpoint: committed.checkpoint, term, retained: committed.retained };
  await writeCommit(store, record);
  return record;
}

/**
 * Plays both shards of a node through checkpoint `checkpoint`: barrier from each shard thread, then each
 * shard's uploaded part. Shard 1 owns key groups 0 and 2, shard 2 owns 1 and 3 (pool.shardOf with 2).
 */
export function playShards(
  checkpointing: Checkpointing,
  checkpoint: number,
  parts: {
    epoch?: number;
    objects?: Record<1 | 2, [number, string | null][]>;
    channels?: Record<1 | 2, string | null>;
    errors?: Record<1 | 2, string | null>;
  } = {},
): void {
  const epoch = parts.epoch ?? 0;
  const objects = parts.objects ?? {
    1: [
      [0, `checkpoints/${checkpoint}/seg-s1.bin#0+10`],
      [2, `checkpoints/${checkpoint}/seg-s1.bin#10+20`],
    ],
    2: [
      [1, `checkpoints/${checkpoint}/seg-s2.bin#0+5`],
      [3, ''],
    ],
  };
  const channels = parts.channels ?? { 1: `checkpoints/${checkpoint}/ch-s1.bin`, 2: null };
  const errors = parts.errors ?? { 1: null, 2: null };
  checkpointing.participant.onBarrier(1, checkpoint);
  checkpointing.participant.onBarrier(2, checkpoint);
  // Instance counts for the new images: 3 per key group of the default objects, as a shard reports them.
  const instances = (thread: 1 | 2): [number, number][] => objects[thread].filter(([, key]) => typeof key === 'string' && key !== '').map(([keyGroup]) => [keyGroup, 3]);
  for (const thread of [1, 2] as const) checkpointing.participant.onShardPart(thread, checkpoint, epoch, objects[thread], channels[thread], errors[thread], instances(thread));
}
