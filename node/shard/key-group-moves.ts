/**
 * Key groups arriving at and leaving a shard: hand-over release and adopt, and recovery (reset, restore,
 * resume). Each goes through the key groups' one image (keygroups/key-group-state.ts); this file adds
 * what only the shard's loop knows — the messages waiting for the key group's instances, work still
 * running in it, and the records in the input rings.
 *
 * Ownership while moving: the main thread points a key group's routing away before a release, and at
 * the shard only after every shard has adopted; meanwhile an adopted key group counts as owned here
 * (`ownsAdopted`), so what it imported is not sent away again.
 */
import type { Message } from '../../lib/message.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { decodeImage, encodeImage, type KeyGroupImage } from '../keygroups/key-group-image.js';
import type { KeyGroupFate } from './shard-context.js';
import type { Shard } from './shard.js';

const RECORDS_PER_RING_PER_POLL = 2048;
/** Polls of the input rings that a release or a reset makes at most, to empty them. */
const DRAIN_POLLS_MAX = 1000;

export class KeyGroupMoves {
  /** Instances the last adopt() dropped: their function type does not run on this node (a notice says so). */
  dropped = 0;
  /** Work running across turns (async invocations, remote batches), per key group: a key group is released only when it has none. */
  private readonly running = new Map<number, number>();
  /** Key groups being released (exported for a hand-over). */
  private readonly releasing = new Set<number>();
  private releaseWaiters: (() => void)[] = [];
  /** While a release drains the input rings: the key groups whose messages go into the images. */
  private capturing: ReadonlySet<number> | null = null;
  /** Captured envelopes and their key groups, alternating. */
  private captured: (Uint8Array | number)[] = [];
  /** Key groups adopted before the routing table points here. */
  private readonly adopted = new Set<number>();
  /** Messages queued in restored key groups, delivered by resume() once every shard has loaded. */
  private restoredQueued: Message[] = [];
  /**
   * Envelopes read for key groups routed as leaving this shard (a release is on its way or waiting for
   * running work), in the order read: they go in the release's image ahead of what is still in the rings.
   */
  private readonly leaving = new Map<number, Uint8Array[]>();
  /** Key groups released here (their routing may say leaving a moment longer): what comes now goes on. */
  private readonly released = new Set<number>();

  /** Envelopes kept for leaving key groups. */
  get leavingCount(): number {
    return this.leaving.size;
  }

  /** Keeps an envelope of a key group routed as leaving this shard; false once it was released (send it on). */
  keepLeaving(keyGroup: number, envelope: Uint8Array): boolean {
    if (this.released.has(keyGroup)) return false;
    const kept = this.leaving.get(keyGroup);
    if (kept === undefined) this.leaving.set(keyGroup, [envelope]);
    else kept.push(envelope);
    return true;
  }

  /** A release that did not happen (the key group routed here again): what was kept runs first, in order. */
  runLeavingBack(): number {
    const shard = this.shard;
    let work = 0;
    for (const [keyGroup, envelopes] of this.leaving) {
      const route = shard.routing[keyGroup];
      if (route !== shard.thread) continue;
      this.leaving.delete(keyGroup);
      // Delivered now, before anything newer this turn reads from the rings.
      for (const envelope of envelopes) {
        const message = shard.decoder.decodeInvoke(envelope, 0, envelope.length);
        if (message.producer !== null && !shard.acceptEvent(message)) continue;
        shard.deliver(message);
        work++;
      }
    }
    return work;
  }

  constructor(private readonly shard: Shard) {}

  startRun(keyGroup: number): void {
    this.running.set(keyGroup, (this.running.get(keyGroup) ?? 0) + 1);
  }

  /**
   * An async invocation or a remote batch of `keyGroup` ended. When its key group is leaving this
   * shard, what waits for its address goes with a release, or (`gone`) on to the new owner.
   */
  endRun(keyGroup: number): KeyGroupFate {
    const running = (this.running.get(keyGroup) ?? 1) - 1;
    if (running === 0) this.running.delete(keyGroup);
    else this.running.set(keyGroup, running);
    const route = this.shard.routing[keyGroup];
    if (route === this.shard.thread || route === this.shard.heldEntry || this.ownsAdopted(keyGroup)) return 'here';
    if (running === 0) for (const wake of this.releaseWaiters.splice(0)) wake();
    this.shard.scheduleFlush();
    return this.releasing.has(keyGroup) ? 'releasing' : 'gone';
  }

  /** True for a key group adopted here whose routing does not point here yet. */
  ownsAdopted(keyGroup: number): boolean {
    if (this.adopted.size === 0 || !this.adopted.has(keyGroup)) return false;
    const route = this.shard.routing[keyGroup];
    if (route === this.shard.thread || route === this.shard.heldEntry) {
      this.adopted.delete(keyGroup); // the routing caught up
      return true;
    }
    // Routing elsewhere after an adoption means a release moved it on (release clears it below).
    return !this.releasing.has(keyGroup);
  }

  /** The main thread has pointed the routing at these adopted key groups: the table decides from now on. */
  settleAdopted(keyGroups: readonly number[]): void {
    for (const keyGroup of keyGroups) this.adopted.delete(keyGroup);
  }

  /**
   * While a release drains the rings: takes an invoke record of a key group being released (it goes in
   * the image, ahead of what waits elsewhere). True when taken.
   */
  capture(data: Uint8Array, offset: number, length: number, keyGroup: number, recording: boolean): boolean {
    if (this.capturing === null || !this.capturing.has(keyGroup)) return false;
    if (recording) this.shard.cut!.breakOpen(`key group ${keyGroup} was handed over during the checkpoint`);
    // Sent before its key group started moving: it goes with the hand-over, ahead of what waits.
    this.captured.push(data.slice(offset, offset + length));
    this.captured.push(keyGroup);
    return true;
  }

  /**
   * Exports key groups for a hand-over: the caller has pointed their routing elsewhere already, so new
   * messages for them no longer reach this shard's instances. Waits for their running invocations, then
   * takes their images with the messages queued for them (those that waited behind an invocation first,
   * then those held while the key group could not run, then those in the input rings, then those sent
   * from this shard and not yet delivered).
   */
  async release(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]> {
    const shard = this.shard;
    const frozenAt = Date.now();
    const wanted = new Set(keyGroups);
    shard.cut?.breakOpen('key groups were handed over during the checkpoint');
    for (const keyGroup of wanted) {
      this.releasing.add(keyGroup);
      this.adopted.delete(keyGroup);
    }
    while ([...wanted].some((keyGroup) => this.running.has(keyGroup))) {
      await new Promise<void>((resolve) => this.releaseWaiters.push(resolve));
    }
    const queued = new Map<number, Uint8Array[]>([...wanted].map((keyGroup) => [keyGroup, []]));
    const keyGroupOfId = (id: string) => keyGroupOf(id, shard.groups.count);
    const into = (keyGroup: number, message: Message) => queued.get(keyGroup)!.push(shard.encodeMessage(message));
    shard.embedded.takeWaiting(keyGroupOfId, wanted, into);
    shard.remote?.takeWaiting(keyGroupOfId, wanted, into);
    for (const keyGroup of wanted) for (const message of shard.held.take(keyGroup)) into(keyGroup, message);
    // Messages already in the input rings were sent before the routing changed: older than anything
    // that now waits for the hand-over elsewhere, so they go in the images, after the queued ones —
    // first those read while the release waited (kept as leaving), then what the rings still hold.
    shard.refreshNow();
    this.capturing = wanted;
    this.captured = [];
    for (const keyGroup of wanted) {
      for (const envelope of this.leaving.get(keyGroup) ?? []) this.captured.push(envelope, keyGroup);
      this.leaving.delete(keyGroup);
      this.released.add(keyGroup);
    }
    for (let rounds = 0; rounds < DRAIN_POLLS_MAX && shard.inbox.poll(RECORDS_PER_RING_PER_POLL) > 0; rounds++);
    this.capturing = null;
    for (let index = 0; index < this.captured.length; index += 2) {
      const bytes = this.captured[index] as Uint8Array;
      const message = shard.decoder.decodeInvoke(bytes, 0, bytes.length);
      // Accepted here, on the key group's behalf: its marks travel with it (taken below).
      if (message.producer !== null && !shard.acceptEvent(message)) continue;
      queued.get(this.captured[index + 1] as number)!.push(bytes);
    }
    this.captured = [];
    for (const message of shard.local.extract((message) => wanted.has(message.keyGroup))) into(message.keyGroup, message);
    const images = shard.groups.take(wanted, frozenAt);
    shard.armTimer();
    for (const [keyGroup, messages] of queued) images.get(keyGroup)!.queued = messages;
    for (const keyGroup of wanted) this.releasing.delete(keyGroup);
    shard.flush();
    return [...images.values()].map((image) => ({ keyGroup: image.keyGroup, bytes: encodeImage(image) }));
  }

  /**
   * Imports key groups: this shard owns them from now on. From a hand-over (`restoredFrom` null) their
   * queued messages are delivered at once; from a restore of committed checkpoint `restoredFrom`, they
   * wait for resume(). Returns how many instances came.
   */
  adopt(bodies: readonly (Uint8Array | KeyGroupImage)[], restoredFrom: number | null = null): number {
    const shard = this.shard;
    shard.refreshNow();
    this.dropped = 0;
    let instances = 0;
    for (const body of bodies) {
      const image = body instanceof Uint8Array ? decodeImage(body) : body;
      const keyGroup = image.keyGroup;
      // A restore reads its queued messages first: one that cannot be read fails it before anything applies.
      const restoredQueued = restoredFrom === null ? null : image.queued.map((envelope) => shard.decoder.decodeInvoke(envelope, 0, envelope.length));
      shard.groups.checkKeyGroup(keyGroup);
      // The main thread points the routing here once every shard has adopted; until then this shard
      // treats the key group as its own, so what it imported is not sent away again.
      this.adopted.add(keyGroup);
      this.released.delete(keyGroup);
      const result = shard.groups.put(image, shard.cut?.heldCheckpoint(restoredFrom) ?? 0, (typename) => this.indexOf(typename), shard.nowMs);
      instances += result.instances;
      for (const [typename, count] of result.unknown) {
        this.dropped += count;
        shard.notice(`shard ${shard.thread}: a hand-over carried state of ${typename}, which this node does not run: dropped ${count} instances. Run the same functions on every node.`);
      }
      if (restoredFrom !== null) {
        // Held egress of a committed checkpoint goes out now, with its ids (subscribers drop repeats).
        shard.cut?.release(restoredFrom);
        // Their queued messages run in resume(), after every shard has loaded (they may message any key group).
        for (const message of restoredQueued!) this.restoredQueued.push(message);
      } else {
        // Queued messages passed the producer check where they were accepted.
        for (const envelope of image.queued) shard.deliver(shard.decoder.decodeInvoke(envelope, 0, envelope.length));
      }
    }
    shard.armTimer();
    shard.flush();
    if (shard.parked) shard.inbox.wake();
    return instances;
  }

  /**
   * A recovery, in two phases (every thread of the node does phase 1 before any does phase 2):
   * 1. forget everything — state, timers, queued and in-flight messages, marks, unreleased egress,
   *    checkpoint progress — and from now on discard whatever arrives; records this shard had written
   *    but not yet published go out now (to be discarded by their receivers);
   * 2. discard what is left in the input rings and go on with an empty shard.
   * Invocations still running finish into nothing.
   */
  reset(phase: 1 | 2): void {
    const shard = this.shard;
    if (phase === 2) {
      for (let rounds = 0; rounds < DRAIN_POLLS_MAX && shard.inbox.poll(RECORDS_PER_RING_PER_POLL) > 0; rounds++);
      shard.enter('frozen');
      return;
    }
    shard.enter('discarding');
    this.restoredQueued = [];
    shard.outbox.discardOverflow();
    shard.groups.clear();
    shard.armTimer();
    shard.embedded.reset();
    shard.remote?.reset();
    this.running.clear();
    shard.local.clear();
    shard.held.clear();
    this.adopted.clear();
    this.leaving.clear();
    this.released.clear();
    shard.cut?.reset();
    this.captured = [];
    for (let rounds = 0; rounds < DRAIN_POLLS_MAX && shard.inbox.poll(RECORDS_PER_RING_PER_POLL) > 0; rounds++);
    for (const wake of this.releaseWaiters.splice(0)) wake();
    shard.flush();
  }

  /**
   * Loads key groups from committed checkpoint `checkpoint`'s images: they are unchanged since it, and
   * their unreleased egress goes out now. `clean`: key groups of this shard it had nothing for (unchanged
   * too). `fallback`: an older checkpoint than the last committed one (its images were corrupt), so
   * records after it may have been released already: new ones get seqs above anything released.
   */
  restore(checkpoint: number, bodies: readonly Uint8Array[], clean: readonly number[], fallback: boolean): { instances: number; dropped: number } {
    const shard = this.shard;
    shard.enter('frozen');
    shard.cut?.restored(checkpoint);
    let instances = 0;
    let dropped = 0;
    for (const body of bodies) {
      const image = decodeImage(body);
      const keyGroup = image.keyGroup;
      instances += this.adopt([image], checkpoint);
      dropped += this.dropped;
      shard.groups.changed[keyGroup] = 0;
      if (fallback) shard.groups.skipEgressSeq(keyGroup);
    }
    for (const keyGroup of clean) shard.groups.changed[keyGroup] = 0;
    return { instances, dropped };
  }

  /** Every shard has loaded: run what the restored key groups had queued, then go on. */
  resume(): void {
    const shard = this.shard;
    const queued = this.restoredQueued;
    this.restoredQueued = [];
    shard.enter('live');
    shard.refreshNow();
    for (const message of queued) shard.deliver(message);
    shard.armTimer();
    shard.flush();
    shard.inbox.wake();
  }

  /** A function type's index in the records, adding a remote type its endpoints serve when first seen. */
  private indexOf(typename: string): number | undefined {
    return this.shard.groups.indexOf(typename) ?? this.shard.remote?.resolve(typename)?.index;
  }
}
