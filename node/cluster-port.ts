/**
 * How a cluster layer plugs into a node, without the node knowing about clusters (layers point down:
 * cluster → node). The node routes key groups it does not own to `ClusterHooks.forward`, offers the
 * records its shards emit to `onEgress`, and hands HTTP requests and WebSocket upgrades it does not
 * serve itself to the hooks. The cluster layer drives the node through the `ClusterPort` it gets back.
 */
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
  /** Serves an HTTP request the node does not; returns false to let the node answer 404. */
  http(request: IncomingMessage, response: ServerResponse): boolean;
  /** Takes a WebSocket upgrade on a path other than the client path `/`; false: refused. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /** Extra lines for GET /metrics (Prometheus text, without trailing newline). */
  metrics(): string[];
}

export interface ClusterPort {
  /**
   * Which key groups this node owns from now on: true = owned (routed to its shard), false = routed to
   * `forward`, null = leave as it is (a key group in the middle of a hand-over).
   */
  setOwnership(owned: (keyGroup: number) => boolean | null): void;
  /**
   * Hands key groups out: routes them to `forward` at once, then has their shards export them (state,
   * timers, queued messages; see handover.ts). Resolves with one body per key group.
   */
  releaseKeyGroups(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]>;
  /** Takes handed-over key groups in; resolves once their shard owns them (routing included). */
  adoptKeyGroups(bodies: readonly { keyGroup: number; bytes: Uint8Array }[]): Promise<number>;
  /**
   * An envelope from a peer: invoke → the owning local shard (or `forward` if not ours); egress → local
   * subscribers. (Hand-over envelopes are the cluster layer's: give their bodies to `adoptKeyGroups`.)
   */
  deliver(bytes: Uint8Array, offset: number, length: number): void;
  /** Publishes what `deliver` wrote to the shard rings (call once per batch). */
  flush(): void;
  /** Wakes the node's loop so it re-checks admission (call when `admits()` may have turned true). */
  recheckAdmission(): void;
  log(line: string): void;
}
