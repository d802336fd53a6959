/**
 * The hand-over shell: keeps the messages that wait for a key group to settle, has the node release and
 * adopt key groups, sends their images to their new owners, and keeps images that arrived while views
 * disagreed about their owner. What to do with each key group is decided in handover-core.ts; this
 * file holds the bytes and does the I/O. It is the one user of the key-group image helpers.
 *
 * Two kinds of held messages:
 * - for a key group on the move (released here, awaited, or being adopted): kept per key group and
 *   delivered right after its move ends, in order;
 * - for a key group this node cannot route now (not serving, or the sender thinks we own it while we
 *   think it does): kept briefly, and delivered again once this node serves.
 * Besides, messages that start here wait behind a key group's route fence (route-fences.ts) while its
 * owner changes, so they stay in order with the ones sent to its old owner.
 */
import { EnvelopeKind, readKeyGroup } from '../lib/envelope.js';
import { decodeFence, encodeFence } from './fence-envelope.js';
import { RouteFences, type ClosedFence } from './route-fences.js';
import { StatecraftError } from '../lib/errors.js';
import { decodeImage, handoverEnvelope, handoverImage } from '../node/keygroups/key-group-image.js';
import type { ClusterPort } from '../node/index.js';
import type { ClusterView } from './view-core.js';

/** How long a message waits before going back to a peer that sent it to us as its owner (views differ). */
const BOUNCE_HOLD_MS = 20;
/** Hand-overs kept while views disagree about their owner, at most. */
const PENDING_HANDOVERS_MAX = 4096;

export interface HandoverShellOptions {
  core: ClusterView;
  port: Pick<ClusterPort, 'deliver' | 'flush' | 'releaseKeyGroups' | 'adoptKeyGroups'>;
  /** Queues an envelope for a peer. */
  send(peer: string, bytes: Uint8Array, offset: number, length: number): void;
  /** The peer whose envelopes are being delivered right now, else null. */
  deliveringFrom(): string | null;
  /** Whether a member is dead (a route fence's marker would go nowhere). */
  isDead(id: string): boolean;
  log(line: string): void;
}

/** Hand-overs this node adopted and released, and how long their key groups were stopped (old owner's freeze to adoption here). */
export interface HandoverStats {
  adopted: number;
  released: number;
  instances: number;
  lastPauseMs: number;
  maxPauseMs: number;
  totalPauseMs: number;
  /** Images that arrived for a key group this node owns and holds live: older copies, not adopted. */
  ignored: number;
}

export class HandoverShell {
  readonly stats: HandoverStats = { adopted: 0, released: 0, instances: 0, lastPauseMs: 0, maxPauseMs: 0, totalPauseMs: 0, ignored: 0 };
  private readonly core: ClusterView;
  /** Messages held briefly (views differ, or this node does not serve), in arrival order. */
  private held: Uint8Array[] = [];
  private heldTimer: NodeJS.Timeout | null = null;
  /** Messages that wait for a key group's hand-over to land, per key group. */
  private readonly heldByKeyGroup = new Map<number, Uint8Array[]>();
  private heldByKeyGroupCount = 0;
  /** Bytes of held messages (they count towards admission control, like bytes queued for peers). */
  private heldBytesTotal = 0;
  /** Hand-overs that arrived while views disagreed about their owner; retried on the next view. */
  private pending: Uint8Array[] = [];
  private releasesInFlight = 0;
  private releasesDone: (() => void)[] = [];
  /** Keeps messages that start here in order while their key group's owner changes. */
  readonly fences: RouteFences;
  private fenceTimer: NodeJS.Timeout | null = null;
  /** True while this shell delivers what it held: those messages passed the fences already (or came from peers). */
  private redelivering = false;
  /** True while messages held behind a fence go: they start here, whichever peer's envelope opened the fence. */
  private fenceReleasing = false;

  constructor(private readonly options: HandoverShellOptions) {
    this.core = options.core;
    this.fences = new RouteFences({ selfId: this.core.selfId, keyGroups: this.core.keyGroups, send: options.send });
  }

  /** Messages held, of every kind (behind route fences too). */
  get heldCount(): number {
    return this.held.length + this.heldByKeyGroupCount + this.fences.heldCount;
  }

  get heldBytes(): number {
    return this.heldBytesTotal + this.fences.heldBytes;
  }

  /** Releases under way (exports the node has not finished yet). */
  get releasesPending(): number {
    return this.releasesInFlight;
  }

  /** An invoke envelope for a key group this node does not own (ClusterHooks.forward). */
  forward(bytes: Uint8Array, offset: number, length: number, keyGroup: number): void {
    if (this.fences.isOpen(keyGroup) && !this.redelivering && this.options.deliveringFrom() === null) {
      // It starts here, and the key group's owner changed: it goes after what went to the old owner.
      this.fences.hold(keyGroup, bytes.slice(offset, offset + length));
      return;
    }
    if (this.core.moves.isMoving(keyGroup)) {
      // Its hand-over is under way: the message goes after it, in order.
      this.holdForKeyGroup(keyGroup, bytes.slice(offset, offset + length));
      return;
    }
    const owner = this.core.forwardTo(keyGroup, this.fenceReleasing ? null : this.options.deliveringFrom());
    if (owner === null) this.hold(bytes.slice(offset, offset + length));
    else {
      this.fences.sentTo(keyGroup, owner);
      this.options.send(owner, bytes, offset, length);
    }
  }

  /** The placement changed: opens route fences for the key groups whose owner changed (route-fences.ts). */
  placementChanged(): void {
    // A member that left still passes on what reaches it, until its link is retired (then the marker is re-routed).
    this.fences.placementChanged((keyGroup) => this.core.ownerOf(keyGroup), (peer) => !this.options.isDead(peer), performance.now());
    this.armFenceTimer();
  }

  /** A route fence envelope from a peer (or one this node held): a marker on its way to the key group's owner, or the owner's answer. */
  onFence(envelope: Uint8Array): void {
    const fence = decodeFence(envelope, 0, envelope.length);
    if (fence.keyGroup >= this.core.keyGroups) throw new StatecraftError('SC_ERR_MALFORMED_FRAME', `a route fence for key group ${fence.keyGroup}, but the cluster has ${this.core.keyGroups}`);
    if (fence.answer) {
      if (fence.origin === this.core.selfId) this.fenceAnswered(fence.keyGroup, fence.id);
      return;
    }
    if (this.core.ownerOf(fence.keyGroup) === this.core.selfId && this.core.inMajority()) {
      // It reached the owner: whatever was sent before it is here (delivered, or held in order).
      if (fence.origin === this.core.selfId) this.fenceAnswered(fence.keyGroup, fence.id);
      else {
        const answer = encodeFence({ ...fence, answer: true });
        this.options.send(fence.origin, answer, 0, answer.length);
      }
      return;
    }
    // On its way, exactly as a message of that key group would go.
    if (this.core.moves.isMoving(fence.keyGroup)) return this.holdForKeyGroup(fence.keyGroup, envelope);
    const owner = this.core.forwardTo(fence.keyGroup, this.options.deliveringFrom());
    if (owner === null) this.hold(envelope);
    else this.options.send(owner, envelope, 0, envelope.length);
  }

  /** Delivers what waited for a key group's hand-over, in order, by the routing table as it is now. */
  flushHeld(keyGroup: number): void {
    const held = this.heldByKeyGroup.get(keyGroup);
    if (held === undefined) return;
    this.heldByKeyGroup.delete(keyGroup);
    this.heldByKeyGroupCount -= held.length;
    for (const bytes of held) this.heldBytesTotal -= bytes.length;
    this.redeliver(held);
  }

  /** Delivers the messages held briefly, if this node serves; else keeps them a while longer. */
  releaseHeld(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    if (!this.core.admits()) {
      if (this.held.length > 0) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
      return;
    }
    const held = this.held;
    this.held = [];
    for (const bytes of held) this.heldBytesTotal -= bytes.length;
    this.redeliver(held);
  }

  /** A hand-over envelope from a peer: adopt it if this node owns the key group now, else pass it on or keep it. */
  onHandover(envelope: Uint8Array): void {
    const keyGroup = readKeyGroup(envelope, 0);
    if (keyGroup >= this.core.keyGroups) {
      this.options.log(`cluster: dropped a hand-over for key group ${keyGroup}: the cluster has ${this.core.keyGroups}`);
      return;
    }
    const decision = this.core.moves.handoverArrived(keyGroup, this.options.deliveringFrom(), performance.now());
    switch (decision.action) {
      case 'pend':
        if (this.pending.length < PENDING_HANDOVERS_MAX) this.pending.push(envelope);
        else this.options.log(`cluster: dropped a hand-over for key group ${keyGroup}: ${PENDING_HANDOVERS_MAX} are waiting already`);
        return;
      case 'pass':
        this.options.send(decision.to, envelope, 0, envelope.length);
        return;
      case 'ignore':
        this.stats.ignored++;
        this.options.log(
          `cluster: ignored a hand-over of key group ${keyGroup} from ${this.options.deliveringFrom() ?? 'a re-route'}: this node owns it, was not waiting for it and holds its live state, so the image is an older copy (counted in statecraft_handovers_ignored)`,
        );
        return;
      case 'adopt':
        // Behind an open route fence: adopted after its answer, so what the old owner passed back comes first.
        if (this.fences.isOpen(keyGroup)) this.fences.holdImage(keyGroup, envelope);
        else this.adopt(keyGroup, handoverImage(envelope, 0, envelope.length));
    }
  }

  /** Retries the hand-overs that arrived while views disagreed about their owner. */
  retryPending(): void {
    const pending = this.pending;
    this.pending = [];
    for (const envelope of pending) this.onHandover(envelope);
  }

  /** An envelope that was queued for a peer now gone: invokes and hand-overs go to their key group's new owner. */
  reroute(envelope: Uint8Array): void {
    if (envelope[0] === EnvelopeKind.Handover) {
      // Our own hand-over never reached its owner: send it where the placement says now.
      this.sendImage(readKeyGroup(envelope, 0), handoverImage(envelope, 0, envelope.length));
      return;
    }
    // A marker goes on to the key group's owner; an answer for a node that is gone is moot.
    if (envelope[0] === EnvelopeKind.Fence) {
      if (!decodeFence(envelope, 0, envelope.length).answer) this.onFence(envelope);
      return;
    }
    // Egress records were copies for that peer's subscribers; this node has its own.
    if (envelope[0] !== EnvelopeKind.Invoke) return;
    this.options.port.deliver(envelope, 0, envelope.length);
    this.options.port.flush();
  }

  /** Has the node export a key group, and sends its image to its owner (one request per key group). */
  release(keyGroup: number): void {
    this.releasesInFlight++;
    const epoch = this.core.epoch;
    this.options.port.releaseKeyGroups([keyGroup]).then(
      (images) => {
        // A recovery since: the image is of state the recovery dropped.
        if (epoch === this.core.epoch) for (const image of images) this.sendImage(image.keyGroup, image.bytes);
        this.stats.released += images.length;
        this.releaseSettled();
      },
      (error: Error) => {
        this.options.log(`cluster: releasing key group ${keyGroup} failed (${error.message}): it stays here`);
        this.core.moves.releaseFailed(keyGroup);
        this.releaseSettled();
      },
    );
  }

  /** Resolves true once no release is under way, or false at `deadlineMs` (performance.now() time). */
  async releasesFinished(deadlineMs: number): Promise<boolean> {
    if (this.releasesInFlight === 0) return true;
    return Promise.race([
      new Promise<boolean>((resolve) => this.releasesDone.push(() => resolve(true))),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), Math.max(0, deadlineMs - performance.now())).unref()),
    ]);
  }

  /** A recovery began: what waited for the old placement is dropped (clients re-send what was not committed). */
  dropAll(): void {
    this.heldByKeyGroup.clear();
    this.heldByKeyGroupCount = 0;
    this.held = [];
    this.heldBytesTotal = 0;
    this.pending = [];
    this.fences.dropAll();
  }

  /** Shutdown: says what is dropped. */
  close(): void {
    if (this.heldTimer) clearTimeout(this.heldTimer);
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    const waiting = this.heldCount;
    if (waiting > 0) this.options.log(`cluster: ${waiting} messages still waiting for a key group were dropped at shutdown`);
    if (this.pending.length > 0) {
      this.options.log(`cluster: ${this.pending.length} hand-overs found no owner before shutdown (are all nodes stopping?): dropped`);
    }
  }

  private holdForKeyGroup(keyGroup: number, bytes: Uint8Array): void {
    let held = this.heldByKeyGroup.get(keyGroup);
    if (held === undefined) this.heldByKeyGroup.set(keyGroup, (held = []));
    held.push(bytes);
    this.heldByKeyGroupCount++;
    this.heldBytesTotal += bytes.length;
  }

  /** Delivers held envelopes in order: messages through the node (past the fences), markers on their way. */
  private redeliver(envelopes: readonly Uint8Array[]): void {
    this.redelivering = true;
    try {
      for (const bytes of envelopes) {
        if (bytes[0] === EnvelopeKind.Fence) this.onFence(bytes);
        else this.options.port.deliver(bytes, 0, bytes.length);
      }
    } finally {
      this.redelivering = false;
    }
    this.options.port.flush();
  }

  private fenceAnswered(keyGroup: number, id: number): void {
    const closed = this.fences.answered(keyGroup, id);
    if (closed !== null) this.fenceClosed(closed);
  }

  /** A fence opened: its messages go by the placement of now, then the image it kept (if any) is taken in. */
  private fenceClosed(closed: ClosedFence): void {
    this.fenceReleasing = true;
    try {
      for (const bytes of closed.held) this.options.port.deliver(bytes, 0, bytes.length);
    } finally {
      this.fenceReleasing = false;
    }
    this.options.port.flush();
    if (closed.image !== null) this.onHandover(closed.image);
  }

  private armFenceTimer(): void {
    if (this.fenceTimer !== null) return;
    const due = this.fences.nextExpiryMs();
    if (due === null) return;
    this.fenceTimer = setTimeout(() => {
      this.fenceTimer = null;
      for (const closed of this.fences.expired(performance.now())) {
        this.options.log(`cluster: the route fence of key group ${closed.keyGroup} (marker to ${closed.to}) had no answer in time: its ${closed.held.length} held messages go on, and their order with those sent earlier is not guaranteed`);
        this.fenceClosed(closed);
      }
      this.armFenceTimer();
    }, Math.max(1, due - performance.now())).unref();
  }

  private hold(bytes: Uint8Array): void {
    this.held.push(bytes);
    this.heldBytesTotal += bytes.length;
    if (this.heldTimer === null) this.heldTimer = setTimeout(() => this.releaseHeld(), BOUNCE_HOLD_MS);
  }

  private releaseSettled(): void {
    if (--this.releasesInFlight === 0) for (const done of this.releasesDone.splice(0)) done();
  }

  /** Sends an exported key group to its owner now (or adopts it back, if the placement returned it here). */
  private sendImage(keyGroup: number, image: Uint8Array): void {
    const owner = this.core.moves.imageReady(keyGroup);
    if (owner === null) {
      this.adopt(keyGroup, image);
      return;
    }
    const envelope = handoverEnvelope(keyGroup, image);
    this.options.send(owner, envelope, 0, envelope.length);
    // What waited for the release follows the hand-over on the same link, so it arrives after it.
    this.flushHeld(keyGroup);
  }

  private adopt(keyGroup: number, image: Uint8Array): void {
    this.core.moves.adoptStarted(keyGroup, performance.now());
    let frozenAt = Date.now();
    try {
      const decoded = decodeImage(image);
      if (decoded.keyGroup !== keyGroup) throw new StatecraftError('SC_ERR_MALFORMED_IMAGE', `its body is for key group ${decoded.keyGroup}`);
      frozenAt = decoded.frozenAt;
    } catch (error) {
      this.options.log(`cluster: a hand-over for key group ${keyGroup} is malformed (${(error as Error).message}): dropped`);
      this.core.moves.adoptDropped(keyGroup);
      return;
    }
    const epoch = this.core.epoch;
    this.options.port.adoptKeyGroups([{ keyGroup, bytes: image }]).then(
      (instances) => {
        if (epoch !== this.core.epoch) return; // a recovery reset everything meanwhile
        const pause = Math.max(0, Date.now() - frozenAt);
        this.stats.adopted++;
        this.stats.instances += instances;
        this.stats.lastPauseMs = pause;
        this.stats.maxPauseMs = Math.max(this.stats.maxPauseMs, pause);
        this.stats.totalPauseMs += pause;
        this.core.moves.adopted(keyGroup, performance.now());
      },
      (error: Error) => {
        this.options.log(`cluster: adopting key group ${keyGroup} failed (${error.message}): it starts afresh here`);
        this.core.moves.adoptFailed(keyGroup);
      },
    );
  }
}
