/**
 * The node's side of the seam a cluster layer plugs into (cluster-port.ts): the cluster layer calls
 * these to own and move key groups, deliver peers' envelopes and drive checkpoints and recovery.
 */
import type { CheckpointRef } from '../checkpoint/terms.js';
import { StatecraftError } from '../../lib/errors.js';
import type { CheckpointControl, ClusterPort, KeyGroupRoute, RollBackResult } from './cluster-port.js';
import { MAIN_THREAD, leavingFrom } from '../rings/mailbox.js';
import type { Checkpointing } from '../checkpoint/checkpointing.js';
import type { Recovery } from '../checkpoint/recovery.js';
import type { ShardRequests } from './shard-pool.js';

/** What the port needs of the main thread. */
export interface PortHost {
  readonly nodeId: string;
  readonly pool: ShardRequests;
  readonly routing: Int32Array;
  readonly checkpointing: Pick<Checkpointing, 'setPeers' | 'lead' | 'onControl' | 'stoppingTogether'> | null;
  readonly recovery: Pick<Recovery, 'begin' | 'prepare' | 'rollBack' | 'checkOrder'> | null;
  setRouting(owned: (keyGroup: number) => KeyGroupRoute | null): void;
  deliverFromPeer(bytes: Uint8Array, offset: number, length: number, fromPeer: string | null): void;
  flush(): void;
  wake(): void;
  /** Closes every client connection with `reason` (see ClusterPort.closeClients). */
  closeClients(reason: string): void;
  log(line: string): void;
}

export class NodePort implements ClusterPort {
  constructor(private readonly main: PortHost) {}

  get checkpointing(): boolean {
    return this.main.checkpointing !== null;
  }

  setOwnership(owned: (keyGroup: number) => KeyGroupRoute | null): void {
    // Shards read this table for every message they route; a plain store per key group suffices (a
    // message routed by the old entry reaches the main thread, which forwards it again, or, held, waits at its shard).
    this.main.setRouting(owned);
  }

  async releaseKeyGroups(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]> {
    const { pool, routing } = this.main;
    // Leaving, not plainly elsewhere: what the shard still reads for them goes in their images.
    for (const keyGroup of keyGroups) Atomics.store(routing, keyGroup, leavingFrom(pool.shardOf(keyGroup)));
    const replies = await Promise.all([...pool.byShard(keyGroups, (keyGroup) => keyGroup)].map(([shard, groups]) => pool.ask<'released'>(shard, { type: 'release', request: 0, keyGroups: groups })));
    for (const keyGroup of keyGroups) Atomics.compareExchange(routing, keyGroup, leavingFrom(pool.shardOf(keyGroup)), MAIN_THREAD);
    for (const reply of replies) {
      if (reply.error) throw new StatecraftError('SC_ERR_INTERNAL', `a shard could not export key groups: ${reply.error}`);
    }
    return replies.flatMap((reply) => reply.exports);
  }

  async adoptKeyGroups(images: readonly { keyGroup: number; bytes: Uint8Array }[]): Promise<number> {
    const { pool, routing } = this.main;
    const byShard = pool.byShard(images, (image) => image.keyGroup);
    const replies = await Promise.all([...byShard].map(([shard, list]) => pool.ask<'adopted'>(shard, { type: 'adopt', request: 0, bodies: list.map((image) => image.bytes) })));
    let instances = 0;
    for (const reply of replies) {
      if (reply.error) throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `a hand-over could not be imported: ${reply.error}`);
      instances += reply.instances;
    }
    // Routing points at the shards only now: the caller delivers what waited right after this.
    for (const { keyGroup } of images) Atomics.store(routing, keyGroup, pool.shardOf(keyGroup));
    // From here the routing table alone says who owns them (a later change must not be ignored).
    for (const [shard, list] of byShard) pool.post(shard, { type: 'adopt-settled', keyGroups: list.map((image) => image.keyGroup) });
    return instances;
  }

  deliver(bytes: Uint8Array, offset: number, length: number, fromPeer?: string | null): void {
    this.main.deliverFromPeer(bytes, offset, length, fromPeer ?? null);
  }

  flush(): void {
    this.main.flush();
  }

  setCheckpointPeers(peers: readonly string[]): void {
    this.main.checkpointing?.setPeers(peers);
  }

  leadCheckpoints(lead: { participants: readonly string[]; view: string } | null): void {
    void this.main.checkpointing?.lead(lead);
  }

  onCheckpointControl(from: string, message: CheckpointControl): void {
    this.main.checkpointing?.onControl(from, message);
  }

  beginRecovery(epoch: number): void {
    this.main.recovery?.begin(epoch);
  }

  async prepareRollBack(epoch: number, members: readonly string[]): Promise<{ restore: CheckpointRef; contendedBy: string[] }> {
    const { head, contendedBy } = await this.main.recovery!.prepare(epoch, this.main.nodeId, members);
    return { restore: { checkpoint: head.checkpoint, term: head.term }, contendedBy };
  }

  checkRollback(order: CheckpointControl & { type: 'rollback' }): Promise<string | null> {
    return this.main.recovery!.checkOrder(order);
  }

  rollBack(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult> {
    return this.main.recovery!.rollBack(owned, epoch, checkpoint);
  }

  closeClients(reason: string): void {
    this.main.closeClients(reason);
  }

  stoppingTogether(): void {
    this.main.checkpointing?.stoppingTogether();
  }

  recheckAdmission(): void {
    this.main.wake();
  }

  log(line: string): void {
    this.main.log(line);
  }
}
