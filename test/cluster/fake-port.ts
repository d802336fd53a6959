/**
 * A node's cluster port without a node: a routing table, and releases, adoptions and recoveries that the
 * test settles by hand. It routes like the real node: an invoke envelope delivered for a key group the
 * node does not own goes back to the cluster layer's `forward`; the others are recorded as delivered
 * to a shard.
 */
import { EnvelopeKind, readKeyGroup, writeKeyGroup } from '../../lib/envelope.js';
import { IMAGE_VERSION, encodeImage } from '../../node/keygroups/key-group-image.js';
import type { CheckpointControl, CheckpointRef, ClusterHooks, ClusterPort, KeyGroupRoute, RollBackResult } from '../../node/index.js';
import { termId } from '../../node/checkpoint/terms.js';

/** Checkpoint `checkpoint` as a recovery names it (0: none), in a fixed term. */
export const ref = (checkpoint: number): CheckpointRef => ({ checkpoint, term: checkpoint === 0 ? '' : termId(1, '0000000a') });

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((resolveWith, rejectWith) => {
    resolve = resolveWith;
    reject = rejectWith;
  });
  return { promise, resolve, reject };
}

/** Lets pending promise callbacks run. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));

/** An invoke envelope for a key group, tagged so a test can tell messages apart. */
export function invoke(keyGroup: number, tag: number): Uint8Array {
  const bytes = new Uint8Array(9);
  bytes[0] = EnvelopeKind.Invoke;
  writeKeyGroup(bytes, 0, keyGroup);
  bytes[8] = tag;
  return bytes;
}

/** A valid key-group image (empty state), frozen `agoMs` ago. */
export function image(keyGroup: number, agoMs = 5): Uint8Array {
  return encodeImage({ v: IMAGE_VERSION, keyGroup, frozenAt: Date.now() - agoMs, state: [], timers: [], queued: [] });
}

export class FakePort implements ClusterPort {
  readonly owned: boolean[];
  /** Envelopes that reached a shard: [keyGroup, tag] for invokes, else [kind, -1]. */
  readonly delivered: [number, number][] = [];
  readonly releases: { keyGroups: readonly number[]; done: Deferred<{ keyGroup: number; bytes: Uint8Array }[]> }[] = [];
  readonly adoptions: { keyGroup: number; bytes: Uint8Array; done: Deferred<number> }[] = [];
  readonly rollBacks: { owned: (keyGroup: number) => boolean; epoch: number; checkpoint: CheckpointRef; done: Deferred<RollBackResult> }[] = [];
  readonly prepares: Deferred<{ restore: CheckpointRef; contendedBy: string[] }>[] = [];
  readonly controls: { from: string; message: CheckpointControl }[] = [];
  readonly calls: string[] = [];
  flushes = 0;
  hooks: ClusterHooks | null = null;

  constructor(
    keyGroups: number,
    readonly checkpointing = false,
    /** Releases and adoptions settle at once (an image of each released key group; no instances). */
    private readonly settleAtOnce = false,
  ) {
    this.owned = new Array<boolean>(keyGroups).fill(true);
  }

  /** `owned`: the key groups that run here (held ones do not). */
  setOwnership(owned: (keyGroup: number) => KeyGroupRoute | null): void {
    for (let keyGroup = 0; keyGroup < this.owned.length; keyGroup++) {
      const own = owned(keyGroup);
      if (own !== null) this.owned[keyGroup] = own === true;
    }
  }

  releaseKeyGroups(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]> {
    for (const keyGroup of keyGroups) this.owned[keyGroup] = false;
    const done = deferred<{ keyGroup: number; bytes: Uint8Array }[]>();
    this.releases.push({ keyGroups, done });
    if (this.settleAtOnce) done.resolve(keyGroups.map((keyGroup) => ({ keyGroup, bytes: image(keyGroup) })));
    return done.promise;
  }

  /** Settles the release of `keyGroup` with an image of it. */
  finishRelease(keyGroup: number): void {
    const release = this.releases.find((entry) => entry.keyGroups.includes(keyGroup))!;
    release.done.resolve(release.keyGroups.map((group) => ({ keyGroup: group, bytes: image(group) })));
  }

  adoptKeyGroups(bodies: readonly { keyGroup: number; bytes: Uint8Array }[]): Promise<number> {
    const done = deferred<number>();
    for (const body of bodies) this.adoptions.push({ ...body, done });
    if (this.settleAtOnce) done.resolve(0);
    // Routing points at the shard once adopted.
    return done.promise.then((instances) => {
      for (const { keyGroup } of bodies) this.owned[keyGroup] = true;
      return instances;
    });
  }

  deliver(bytes: Uint8Array, offset: number, length: number, fromPeer?: string | null): void {
    const kind = bytes[offset]!;
    if (kind !== EnvelopeKind.Invoke) {
      this.delivered.push([kind, -1]);
      return;
    }
    const keyGroup = readKeyGroup(bytes, offset);
    if (!this.owned[keyGroup]) this.hooks!.forward(bytes, offset, length, keyGroup);
    else this.delivered.push([keyGroup, bytes[offset + 8]!]);
    void fromPeer;
  }

  setCheckpointPeers(peers: readonly string[]): void {
    this.calls.push(`checkpoint-peers ${peers.join(',')}`);
  }

  leadCheckpoints(lead: { participants: readonly string[]; view: string } | null): void {
    this.calls.push(`lead ${lead === null ? 'none' : `${lead.participants.join(',')} ${lead.view}`}`);
  }

  onCheckpointControl(from: string, message: CheckpointControl): void {
    this.controls.push({ from, message });
  }

  rollBack(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult> {
    const done = deferred<RollBackResult>();
    this.rollBacks.push({ owned, epoch, checkpoint, done });
    return done.promise.then((result) => {
      for (let keyGroup = 0; keyGroup < this.owned.length; keyGroup++) this.owned[keyGroup] = owned(keyGroup);
      return result;
    });
  }

  /** Epochs prepared, in order (the deferreds in `prepares` answer them). */
  preparedEpochs: number[] = [];

  /** Rollback orders checked; `orderRefusal` is the answer (null: the store holds their claim). */
  readonly orderChecks: (CheckpointControl & { type: 'rollback' })[] = [];
  orderRefusal: string | null = null;

  checkRollback(order: CheckpointControl & { type: 'rollback' }): Promise<string | null> {
    this.orderChecks.push(order);
    return Promise.resolve(this.orderRefusal);
  }

  prepareRollBack(epoch: number): Promise<{ restore: CheckpointRef; contendedBy: string[] }> {
    const done = deferred<{ restore: CheckpointRef; contendedBy: string[] }>();
    this.prepares.push(done);
    this.preparedEpochs.push(epoch);
    return done.promise;
  }

  beginRecovery(epoch: number): void {
    this.calls.push(`begin-recovery ${epoch}`);
  }

  flush(): void {
    this.flushes++;
  }

  recheckAdmission(): void {
    this.calls.push('recheck-admission');
  }

  closeClients(reason: string): void {
    this.calls.push(`close-clients ${reason}`);
  }

  stoppingTogether(): void {
    this.calls.push('stopping-together');
  }

  log(): void {}
}
