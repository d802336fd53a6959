/**
 * Route fences: messages from this node to one address stay in send order when the address's key group
 * moves (a live hand-over).
 *
 * The hazard: this node forwarded message 1 for key group k to its owner A; the placement moves k to B,
 * and this node sends message 2 straight to B. Message 1 may still be on its way to A, or reach A after
 * A handed k over; A then passes it on to B, behind message 2. So when the owner of k changes for a node
 * that has forwarded k's messages to another node, it opens a fence: it sends a marker to the node it
 * last forwarded k's messages to, and holds its own new messages for k. The marker travels exactly as
 * those messages did (held behind them while k moves, passed on to k's owner); the node that owns k by
 * its view answers it, and by then every message sent before the marker has reached that owner. The
 * held messages then go, in order, by the placement of now. A hand-over image of k that arrives here
 * while the fence is open is adopted only after the answer, behind the messages the old owner passed
 * back to this node.
 *
 * Only messages that start here wait (from this node's clients and shards); messages passing through
 * from a peer belong to that peer's fences. A fence whose answer does not come (its marker was lost
 * with a node) opens after FENCE_WAIT_MS, and says so. A recovery drops every fence.
 */
import { encodeFence } from './fence-envelope.js';

/** How long a fence waits for its answer before its messages go anyway. */
export const FENCE_WAIT_MS = 5_000;

interface OpenFence {
  id: number;
  /** The node the marker went to. */
  to: string;
  openedMs: number;
  /** Messages that start here, held until the answer (copies). */
  held: Uint8Array[];
  /** A hand-over image of this key group that arrived while the fence was open. */
  image: Uint8Array | null;
}

export interface ClosedFence {
  keyGroup: number;
  held: Uint8Array[];
  image: Uint8Array | null;
}

export interface RouteFencesOptions {
  selfId: string;
  keyGroups: number;
  send(peer: string, bytes: Uint8Array, offset: number, length: number): void;
}

export class RouteFences {
  /** The peer this node last forwarded each key group's messages to (undefined: none since the last change of owner). */
  private readonly lastPeer: (string | undefined)[];
  private readonly open = new Map<number, OpenFence>();
  private nextId = 1;
  private heldMessages = 0;
  private heldBytesTotal = 0;

  constructor(private readonly options: RouteFencesOptions) {
    this.lastPeer = new Array<string | undefined>(options.keyGroups).fill(undefined);
  }

  /** Messages held behind open fences. */
  get heldCount(): number {
    return this.heldMessages;
  }

  get heldBytes(): number {
    return this.heldBytesTotal;
  }

  /** Fences open now. */
  get count(): number {
    return this.open.size;
  }

  isOpen(keyGroup: number): boolean {
    return this.open.size > 0 && this.open.has(keyGroup);
  }

  /** This node forwarded a message of `keyGroup` to `peer`. */
  sentTo(keyGroup: number, peer: string): void {
    this.lastPeer[keyGroup] = peer;
  }

  /** Holds a message that starts here behind the key group's open fence (the caller checked `isOpen`). */
  hold(keyGroup: number, bytes: Uint8Array): void {
    this.open.get(keyGroup)!.held.push(bytes);
    this.heldMessages++;
    this.heldBytesTotal += bytes.length;
  }

  /** Keeps a hand-over image until the fence's answer (the caller checked `isOpen`). */
  holdImage(keyGroup: number, envelope: Uint8Array): void {
    this.open.get(keyGroup)!.image = envelope;
  }

  /**
   * The placement changed: opens a fence for each key group whose owner is no longer the peer this node
   * last forwarded its messages to. `reachable`: whether a peer is still there (a marker to a dead node
   * would never be answered; what it held is dropped or re-routed with its link).
   */
  placementChanged(ownerOf: (keyGroup: number) => string, reachable: (peer: string) => boolean, nowMs: number): number {
    let opened = 0;
    for (let keyGroup = 0; keyGroup < this.lastPeer.length; keyGroup++) {
      const last = this.lastPeer[keyGroup];
      if (last === undefined || ownerOf(keyGroup) === last) continue;
      this.lastPeer[keyGroup] = undefined;
      if (this.open.has(keyGroup) || !reachable(last)) continue;
      const id = this.nextId;
      this.nextId = this.nextId === 0xffff_ffff ? 1 : this.nextId + 1;
      this.open.set(keyGroup, { id, to: last, openedMs: nowMs, held: [], image: null });
      const marker = encodeFence({ keyGroup, id, origin: this.options.selfId, answer: false });
      this.options.send(last, marker, 0, marker.length);
      opened++;
    }
    return opened;
  }

  /** The answer to fence `id` of `keyGroup`: closes it and returns what it held; null if it is not open (any more). */
  answered(keyGroup: number, id: number): ClosedFence | null {
    const fence = this.open.get(keyGroup);
    if (fence === undefined || fence.id !== id) return null;
    return this.close(keyGroup, fence);
  }

  /** Closes the fences open longer than `waitMs`, returning them with the peers their markers went to. */
  expired(nowMs: number, waitMs = FENCE_WAIT_MS): (ClosedFence & { to: string })[] {
    const closed: (ClosedFence & { to: string })[] = [];
    for (const [keyGroup, fence] of this.open) if (nowMs - fence.openedMs >= waitMs) closed.push({ ...this.close(keyGroup, fence), to: fence.to });
    return closed;
  }

  /** When the oldest open fence expires (performance.now() time), or null. */
  nextExpiryMs(waitMs = FENCE_WAIT_MS): number | null {
    let oldest = Infinity;
    for (const fence of this.open.values()) oldest = Math.min(oldest, fence.openedMs);
    return oldest === Infinity ? null : oldest + waitMs;
  }

  /** A recovery: every fence and what it held is dropped (clients re-send what was not committed). */
  dropAll(): void {
    this.open.clear();
    this.lastPeer.fill(undefined);
    this.heldMessages = 0;
    this.heldBytesTotal = 0;
  }

  private close(keyGroup: number, fence: OpenFence): ClosedFence {
    this.open.delete(keyGroup);
    this.heldMessages -= fence.held.length;
    for (const bytes of fence.held) this.heldBytesTotal -= bytes.length;
    return { keyGroup, held: fence.held, image: fence.image };
  }
}
