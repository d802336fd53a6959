/**
 * How a cluster layer plugs into a node, without the node knowing about clusters (layers point down:
 * cluster → node). The node routes key groups it does not own to `ClusterHooks.forward`, offers the
 * records its shards emit to `onEgress`, and hands HTTP requests and WebSocket upgrades it does not
 * serve itself to the hooks. The cluster layer drives the node through the `ClusterPort` it gets back.
 */
import type { CheckpointRef } from '../checkpoint/terms.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

export interface ClusterHooks {
  /**
   * An invoke envelope for a key group this node does not own (from a shard, a client or a peer).
   * The bytes are only valid during the call: copy what you keep.
   */
  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void;
  /** An egress record a local shard emitted (already appended for local subscribers). Copy to keep. */
  onEgress(egress: string, bytes: Uint8Array, offset: number, length: number): void;
  /** False while client events must wait (not yet part of a cluster, no majority, peers backed up). */
  admits(): boolean;
  /**
   * Why clients should be elsewhere now (this node reaches no majority of its cluster), or null. While
   * it says so, new client connections are refused (HTTP 503 with the reason), so a client given
   * several nodes goes on to another.
   */
  refusesClients(): string | null;
  /** Serves an HTTP request the node does not; returns false to let the node answer 404. */
  http(request: IncomingMessage, response: ServerResponse): boolean;
  /** Takes a WebSocket upgrade on a path other than the client path `/`; false: refused. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Extra lines for GET /metrics (Prometheus text, without trailing newline). */
  metrics(): string[];
  /**
   * The node is closing and has finished its work: the cluster layer lets its peers acknowledge what it
   * sent, then closes its peer connections (they came in through the node's HTTP server, which cannot
   * close while they are open). Called once; the cluster layer's own close() after it is a no-op.
   */
  close(): Promise<void>;
  // ---- checkpoints (only called when the node checkpoints) ----
  /** Writes barrier `checkpoint` on the link to every peer of the view, after what was sent before. */
  writeBarrier(checkpoint: number): void;
  /** Why this node cannot take a consistent snapshot now (key groups on the move, messages held), or null. */
  checkpointBlocked(): string | null;
  /** Sends a checkpoint control message (start, ack, outcome) to a peer. */
  sendCheckpointControl(peer: string, message: CheckpointControl): void;
}

/** Checkpoint control between a node and the leader's coordinator (carried on the peer links). */
export type CheckpointControl =
  | { type: 'start'; checkpoint: number }
  | { type: 'ack'; checkpoint: number; objects: [number, string | null][]; channels: string[]; instances?: [number, number][] }
  /** `seen`: the highest checkpoint number the participant has begun, when the start was for an older one. */
  | { type: 'failed'; checkpoint: number; reason: string; seen?: number }
  | { type: 'outcome'; checkpoint: number; committed: boolean }
  /**
   * Recovery: every node of `members` enters recovery epoch `epoch` and restores checkpoint `restore`.
   * `claimant`: the leader that claimed the epoch in the store (whoever passes the order on).
   */
  | { type: 'rollback'; epoch: number; members: string[]; restore: CheckpointRef; claimant: string }
  /** To the leader: `node` restarted (its state is gone), so the cluster must recover; `epoch`: the sender's recovery epoch. */
  | { type: 'restarted'; epoch: number; node: string }
  /** To the sender of a message of a newer recovery epoch than this node's own (`epoch`): asks for that recovery. */
  | { type: 'behind'; epoch: number };

export interface RollBackResult {
  /** The checkpoint restored (0: none was committed, the node starts empty). */
  checkpoint: number;
  instances: number;
}

/**
 * How a node routes a key group: true = it runs here (routed to its shard); 'held' = it is this node's
 * but nothing of it may run now (no majority): its messages wait at its shard, in order, and run first
 * when it is routed here again; false = another node's (routed to `forward`).
 */
export type KeyGroupRoute = boolean | 'held';

export interface ClusterPort {
  /** How this node routes each key group from now on (KeyGroupRoute); null = leave as it is (a key group in the middle of a hand-over). */
  setOwnership(owned: (keyGroup: number) => KeyGroupRoute | null): void;
  /**
   * Hands key groups out: routes them to `forward` at once, then has their shards export them (state,
   * timers, queued messages; see handover.ts). Resolves with one body per key group.
   */
  releaseKeyGroups(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]>;
  /** Takes handed-over key groups in; resolves once their shard owns them (routing included). */
  adoptKeyGroups(bodies: readonly { keyGroup: number; bytes: Uint8Array }[]): Promise<number>;
  /**
   * An envelope from a peer: invoke → the owning local shard (or `forward` if not ours); egress → local
   * subscribers; barrier → the checkpoint's channel from that peer. (Hand-over envelopes are the
   * cluster layer's: give their bodies to `adoptKeyGroups`.) `fromPeer` is null for messages the
   * cluster layer held and delivers later (not a channel of the snapshot).
   */
  deliver(bytes: Uint8Array, offset: number, length: number, fromPeer?: string | null): void;
  /** True when the node checkpoints (then the calls below apply). */
  readonly checkpointing: boolean;
  /** The peers of the agreed view: their links are the main thread's checkpoint channels. */
  setCheckpointPeers(peers: readonly string[]): void;
  /** Runs the checkpoint coordinator here (this node leads `participants`), or stops it (null). */
  leadCheckpoints(lead: { participants: readonly string[]; view: string } | null): void;
  /** A checkpoint control message from a peer. */
  onCheckpointControl(from: string, message: CheckpointControl): void;
  /**
   * Recovery: drops all state and in-flight work, then loads the key groups `owned` says are this
   * node's from committed checkpoint `checkpoint` (number 0: none, start empty) and replays the messages
   * recorded in flight for them. Client
   * connections are closed so clients re-send what was not committed. `epoch` names this node's
   * uploads from now on.
   */
  rollBack(owned: (keyGroup: number) => boolean, epoch: number, checkpoint: CheckpointRef): Promise<RollBackResult>;
  /**
   * On the leader, before it orders recovery `epoch`: stops coordinating (waiting for a manifest or
   * commit write in flight), begins a term (a leader elsewhere can no longer announce a commit unseen),
   * reads the last committed checkpoint (`restore`, the one every node must restore) and claims the
   * epoch in the store for `members`. `contendedBy`, when not empty, names other nodes that claimed it
   * too: this node must not order it (node/checkpoint/recovery-claims.ts).
   */
  prepareRollBack(epoch: number, members: readonly string[]): Promise<{ restore: CheckpointRef; contendedBy: string[] }>;
  /**
   * Why a rollback order from a peer is not to be taken, or null: its claimant's claim of its epoch,
   * for the same checkpoint and members, must be in the store (only the recovery's leader writes one).
   */
  checkRollback(order: CheckpointControl & { type: 'rollback' }): Promise<string | null>;
  /**
   * A recovery to epoch `epoch` begins (call at once, before any await): until its rollBack has
   * reset the shards, what they emit is stale and is dropped rather than sent to peers.
   */
  beginRecovery(epoch: number): void;
  /** Publishes what `deliver` wrote to the shard rings (call once per batch). */
  flush(): void;
  /** Wakes the node's loop so it re-checks admission (call when `admits()` may have turned true). */
  recheckAdmission(): void;
  /**
   * Closes every client connection with `reason` (the node lost its majority): clients reconnect,
   * to another node if they were given several, and re-send what was not confirmed.
   */
  closeClients(reason: string): void;
  /**
   * Every member of the cluster is stopping at once (this node found nobody to hand its key groups
   * to): its stop takes part in one final checkpoint across the cluster, coordinated by the leader.
   */
  stoppingTogether(): void;
  log(line: string): void;
}
