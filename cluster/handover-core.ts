/**
 * Key groups on the move between nodes, as this node sees them, sans-I/O: which key groups it releases,
 * which it awaits from their old owner, which it is adopting, and which it started afresh because their
 * owner died. It decides; the hand-over shell (handover-shell.ts) holds the messages and the images and
 * performs the actions emitted here (through the same `perform` as the view core, in order).
 *
 *   releasing ── image sent to its owner ──► gone from here
 *   awaiting  ── image arrives ──► adopting ── adopted ──► owned here (or released again if the
 *                                                          placement moved on meanwhile)
 *   awaiting  ── its old owner is dead (or left long ago) ──► started afresh here ("claimed")
 *
 * Time comes in as `nowMs`; no clock, timer or socket in here.
 */
import { invariant } from '../lib/errors.js';
import type { MemberState } from './membership.js';
import type { Placement } from './placement.js';
import type { KeyGroupRoute } from '../node/index.js';
import type { ViewAction } from './view-actions.js';

/** How long key groups wait for a hand-over from a member that left before starting afresh. */
export const HANDOVER_FROM_LEFT_WAIT_MS = 15_000;
/** How long a key group started afresh (its owner died) still adopts a hand-over that turns up. */
export const CLAIMED_AFRESH_ADOPT_MS = 10_000;

/** A key group on the move, as this node sees it. */
export type Moving =
  | { state: 'releasing'; sinceMs: number }
  | { state: 'awaiting'; from: string; sinceMs: number }
  | { state: 'adopting'; sinceMs: number };

/** What to do with a hand-over image that arrived from a peer. */
export type HandoverDecision =
  /** This node owns the key group and waited for it (or started it afresh a moment ago): adopt it. */
  | { action: 'adopt' }
  /** Views disagree for a moment, or this node is busy with that key group: keep it and retry later. */
  | { action: 'pend' }
  /** Another node owns it: pass it on. */
  | { action: 'pass'; to: string }
  /**
   * This node owns it, expected nothing, and holds its live state: the image is an older copy (one
   * delivered twice, or re-routed late). Adopting would overwrite live state; the shell says so and counts it.
   */
  | { action: 'ignore' };

/** What the hand-over rules read of the view core. */
export interface PlacementFacts {
  readonly selfId: string;
  readonly keyGroups: number;
  ownerOf(keyGroup: number): string;
  /** Joined, and a majority of the last agreed view was reachable at the last view update. */
  inMajority(): boolean;
  /** Past joining: a seed answered (or there was none), or a recovery took this node in. */
  hasJoined(): boolean;
}

export class HandoverTable {
  private readonly moving = new Map<number, Moving>();
  /** Key groups started afresh because their owner died: a hand-over that turns up until the time given is still adopted. */
  private readonly claimedAfresh = new Map<number, number>();
  /**
   * Key groups whose image this node sent to another node and has not taken back since: it holds
   * nothing of them, so an image of one that comes back here while this node owns it is its only
   * copy, and is adopted even when this node did not wait for it.
   */
  private readonly sentAway = new Set<number>();

  constructor(
    private readonly facts: PlacementFacts,
    private readonly perform: (action: ViewAction) => void,
  ) {}

  /** Key groups on the move now. */
  get count(): number {
    return this.moving.size;
  }

  isMoving(keyGroup: number): boolean {
    return this.moving.has(keyGroup);
  }

  get(keyGroup: number): Moving | undefined {
    return this.moving.get(keyGroup);
  }

  /**
   * A key group's route while this node has no majority: its own key groups are held at their shards
   * (nothing runs; messages wait there in order), one being adopted is left to its adoption, and the
   * rest (another node's, or on the move) go to the cluster layer.
   */
  routeWithoutMajority(keyGroup: number): KeyGroupRoute | null {
    const moving = this.moving.get(keyGroup);
    if (moving?.state === 'adopting') return null;
    if (moving !== undefined) return false;
    return this.facts.ownerOf(keyGroup) === this.facts.selfId ? 'held' : false;
  }

  anyAdopting(): boolean {
    for (const moving of this.moving.values()) if (moving.state === 'adopting') return true;
    return false;
  }

  /** A recovery drops every move: the key groups are loaded from the checkpoint instead. */
  clear(): void {
    this.moving.clear();
    this.claimedAfresh.clear();
    this.sentAway.clear();
  }

  /**
   * Moves key groups whose owner changed between two placements: releases the ones this node gives
   * up (they go to their new owner with their state, timers and queued messages), and holds messages
   * for the ones it gains until their hand-over lands. A key group whose old owner is gone (dead)
   * starts afresh: its state went with that node.
   */
  applyPlacement(previous: Placement, next: Placement, states: ReadonlyMap<string, MemberState>, nowMs: number): void {
    const self = this.facts.selfId;
    const outgoing: number[] = [];
    for (let keyGroup = 0; keyGroup < this.facts.keyGroups; keyGroup++) {
      const was = previous.members[previous.owners[keyGroup]!]!;
      const owner = next.members[next.owners[keyGroup]!]!;
      const moving = this.moving.get(keyGroup);
      if (was === self && owner !== self) {
        if (moving === undefined) outgoing.push(keyGroup);
        else if (moving.state === 'awaiting') {
          // It never reached us: whatever waits for it goes to the new owner, and so will its hand-over.
          this.moving.delete(keyGroup);
          this.perform({ type: 'flush-held', keyGroup });
        }
      } else if (was !== self && owner === self) {
        const from = states.get(was);
        if (moving === undefined && this.facts.hasJoined() && (from === 'alive' || from === 'suspect' || from === 'left')) {
          this.moving.set(keyGroup, { state: 'awaiting', from: was, sinceMs: nowMs });
        } else if (moving === undefined) {
          // Its owner is gone: it starts afresh, but a hand-over still on its way (re-routed by a
          // third node) is adopted for a while.
          this.claimedAfresh.set(keyGroup, nowMs + CLAIMED_AFRESH_ADOPT_MS);
          this.sentAway.delete(keyGroup);
        }
      } else if (owner !== self && moving?.state === 'awaiting') {
        this.moving.delete(keyGroup);
        this.perform({ type: 'flush-held', keyGroup });
      }
    }
    for (const keyGroup of outgoing) {
      this.moving.set(keyGroup, { state: 'releasing', sinceMs: nowMs });
      this.claimedAfresh.delete(keyGroup);
    }
    this.perform({
      type: 'own',
      owned: (keyGroup) => {
        const moving = this.moving.get(keyGroup);
        if (moving !== undefined) return moving.state === 'adopting' ? null : false;
        return this.facts.hasJoined() && next.members[next.owners[keyGroup]!] === self;
      },
    });
    // One request per key group: an invocation that never ends holds up its own key group only.
    for (const keyGroup of outgoing) this.perform({ type: 'release', keyGroup });
  }

  /** Key groups awaited from a member that died (or left long ago without handing them over) start afresh. */
  claimAbandoned(states: ReadonlyMap<string, MemberState>, nowMs: number): void {
    const claimed: number[] = [];
    for (const [keyGroup, moving] of this.moving) {
      if (moving.state !== 'awaiting') continue;
      const from = states.get(moving.from);
      if (from === 'dead' || from === undefined || (from === 'left' && nowMs - moving.sinceMs > HANDOVER_FROM_LEFT_WAIT_MS)) claimed.push(keyGroup);
    }
    if (claimed.length === 0) return;
    this.perform({ type: 'log', line: `cluster: ${claimed.length} key groups were not handed over (their owner is gone): they start afresh here` });
    const set = new Set(claimed);
    for (const keyGroup of claimed) {
      this.moving.delete(keyGroup);
      this.claimedAfresh.set(keyGroup, nowMs + CLAIMED_AFRESH_ADOPT_MS);
      this.sentAway.delete(keyGroup);
    }
    this.perform({ type: 'own', owned: (keyGroup) => (set.has(keyGroup) ? true : null) });
    for (const keyGroup of claimed) this.perform({ type: 'flush-held', keyGroup });
  }

  /**
   * A hand-over image from a peer (`fromPeer`: the peer whose envelopes are being delivered, if any):
   * adopt it if this node owns the key group now and waits for it, else pass it on or keep it.
   */
  handoverArrived(keyGroup: number, fromPeer: string | null, nowMs: number): HandoverDecision {
    invariant(keyGroup < this.facts.keyGroups, 'the shell drops hand-overs for key groups the cluster does not have');
    const self = this.facts.selfId;
    const owner = this.facts.ownerOf(keyGroup);
    const moving = this.moving.get(keyGroup);
    const inMajority = this.facts.inMajority();
    if (owner !== self || moving?.state === 'releasing' || moving?.state === 'adopting' || !inMajority) {
      // Views disagree for a moment (or we are busy with it): keep it until the next view or retry.
      if (owner === fromPeer || owner === self || !inMajority) return { action: 'pend' };
      return { action: 'pass', to: owner };
    }
    const claimedUntil = this.claimedAfresh.get(keyGroup);
    if (moving?.state !== 'awaiting' && !(claimedUntil !== undefined && claimedUntil > nowMs) && !this.sentAway.has(keyGroup)) return { action: 'ignore' };
    this.claimedAfresh.delete(keyGroup);
    return { action: 'adopt' };
  }

  /** This node starts adopting an image (the shell checks it, then hands it to the node). */
  adoptStarted(keyGroup: number, nowMs: number): void {
    this.sentAway.delete(keyGroup);
    this.moving.set(keyGroup, { state: 'adopting', sinceMs: nowMs });
  }

  /** The image was malformed: the key group is this node's, empty. */
  adoptDropped(keyGroup: number): void {
    this.endAdopting(keyGroup);
    const route = this.facts.inMajority() ? true : 'held';
    this.perform({ type: 'own', owned: (group) => (group === keyGroup ? route : null) });
    this.perform({ type: 'flush-held', keyGroup });
  }

  /** The node took the image in (its routing points at the shard now). */
  adopted(keyGroup: number, nowMs: number): void {
    this.endAdopting(keyGroup);
    // Without a majority it is held like every other key group until the majority is back.
    if (!this.facts.inMajority()) this.perform({ type: 'own', owned: (group) => (group === keyGroup ? 'held' : null) });
    if (this.facts.ownerOf(keyGroup) !== this.facts.selfId) {
      // The placement moved on while it was being adopted: pass it on.
      this.moving.set(keyGroup, { state: 'releasing', sinceMs: nowMs });
      this.perform({ type: 'release', keyGroup });
    }
    this.perform({ type: 'flush-held', keyGroup });
  }

  /** The node could not take the image in: the key group starts afresh here, if it is still ours. */
  adoptFailed(keyGroup: number): void {
    this.endAdopting(keyGroup);
    const route = this.facts.ownerOf(keyGroup) !== this.facts.selfId ? false : this.facts.inMajority() ? true : 'held';
    this.perform({ type: 'own', owned: (group) => (group === keyGroup ? route : null) });
    this.perform({ type: 'flush-held', keyGroup });
  }

  /**
   * A released key group's image is ready: null when the placement returned it here (adopt it back),
   * else the owner it goes to (it is no longer moving here; what waited for it follows the image).
   */
  imageReady(keyGroup: number): string | null {
    const owner = this.facts.ownerOf(keyGroup);
    if (owner === this.facts.selfId) return null;
    this.moving.delete(keyGroup);
    this.sentAway.add(keyGroup);
    return owner;
  }

  /** The node could not export the key group: it stays here. */
  releaseFailed(keyGroup: number): void {
    this.moving.delete(keyGroup);
    this.perform({ type: 'flush-held', keyGroup });
  }

  private endAdopting(keyGroup: number): void {
    // Not asserted to be 'adopting': an image of ours re-routed back here (its peer retired) may start a
    // second adoption of the same key group, and the first to finish ends the move.
    this.moving.delete(keyGroup);
  }
}
