/**
 * The checkpoint simulation's checks (checkpoint-sim-world.ts calls them; a failed one throws a
 * CheckFailure and the caller names the seed). They keep the one valid history: outcomes, heads,
 * starts and commits, and what was released as egress.
 * - at every commit: restoring the manifest (images into a fresh KeyGroupState, their queued messages,
 *   the channel objects' messages) gives exactly the counters of the consistent cut (base of the epoch
 *   plus every message originated before its originator's snapshot), computed from the world's event
 *   log; and at the id level, every message of the epoch's base and of the cut is covered exactly once
 *   (an applied record, a queued message or a recorded channel message, never two) and no other is; an
 *   image's held egress belongs to messages it applied. At recovery the loaded shards give the same;
 * - a shard's state applies a message at most once;
 * - egress: a released record (a thread-0 write; repeats of a key group + seq dropped as clients do)
 *   carries a message applied in some committed checkpoint's restored state; a record id never names two
 *   messages nor a message two ids; per key group seqs have no gaps; at the end every message with
 *   egress that a settled commit applied was released;
 * - outcomes: a checkpoint commits, fails or is withheld by its deposed coordinator at most once; the head
 *   (terms.ts) never goes back and only ever names a checkpoint that was announced committed, restored by a
 *   recovery (adopted: a deposed leader's, or one whose check failed after its record landed), or whose
 *   outcome was left open by a failed check; announced numbers increase strictly, across coordinators too;
 *   a deposed coordinator announces nothing;
 * - barriers: a source's tracker snapshots once per checkpoint, first, immediately followed by
 *   forward-barrier; a shard's cut snapshots once per checkpoint and forwards it to every other thread
 *   at once, only on a barrier's arrival;
 * - retention: a deleted object is referenced by no retained manifest; the head's manifest and objects are
 *   always there; at the end, everything of checkpoints past the retain count is gone;
 * - liveness: once faults stop (the calm phase), every checkpoint started commits, also after a crash.
 * The checks on a shard's applying, on barriers and on the head and start numbers sit where those
 * happen (checkpoint-sim-processes.ts, checkpoint-sim-world.ts); the rest are here.
 */
import { readKeyGroup } from '../../../lib/envelope.js';
import type { CheckpointManifest } from '../../../node/checkpoint/checkpoint-coordinator.js';
import { decodeChannelObject, manifestKey, parseObjectRef } from '../../../node/checkpoint/checkpoint-format.js';
import type { CommitRecord } from '../../../node/checkpoint/terms.js';
import { sliceImages } from '../../../node/checkpoint/part-upload.js';
import { decodeImage, type KeyGroupImage } from '../../../node/keygroups/key-group-image.js';
import type { KeyGroupState } from '../../../node/keygroups/key-group-state.js';
import { APPLIED, COUNTER, addTo, bodyOf, counterDifference, newKeyGroupState, referencedKeys, type Commit, type ReadCheckpoint, type Tally } from './checkpoint-sim-common.js';
import type { SimCore } from './checkpoint-sim-core.js';

/** The world's times the end-of-run checks need. */
export interface CheckTiming {
  /** When the calm phase starts and the run ends. */
  readonly calmStartMs: number;
  readonly endMs: number;
  readonly ackTimeoutMs: number;
}

export class CheckpointChecks {
  /** Every head read after a write that changed it, in order. */
  readonly headHistory: { checkpoint: number; term: string }[] = [];
  /** `${coordinator}:${checkpoint}` → outcome. */
  readonly outcomes = new Map<string, 'committed' | 'failed' | 'deposed'>();
  /** `${term id}:${checkpoint}` of commits whose record landed but whose check failed: their outcome is open. */
  readonly uncertain = new Set<string>();
  readonly starts: { term: number; checkpoint: number; timeMs: number }[] = [];
  readonly commits: Commit[] = [];

  /** Messages whose application emits egress. */
  readonly withEgress = new Set<number>();
  /** Messages applied in the restored state of some committed checkpoint. */
  private readonly committedApplied = new Set<number>();
  /** Per key group: the message of each egress seq released (index: seq). */
  private readonly releasedBySeq: number[][];
  /** Message id → its released record id. */
  private readonly releasedMessages = new Map<number, string>();

  /** `retain`: how many committed checkpoints the coordinator keeps. */
  constructor(
    private readonly core: SimCore,
    private readonly retain: number,
    private readonly timing: CheckTiming,
  ) {
    this.releasedBySeq = Array.from({ length: core.keyGroups }, () => []);
  }

  // ---- egress ----

  /** A released egress record at the sink, as a subscription sees it: repeats (same key group and seq) dropped. */
  onEgress(bytes: Uint8Array): void {
    const record = this.core.decoder.decodeEgress(bytes, 0, bytes.length);
    const { keyGroup, recordSeq: seq } = record;
    const id = record.decoded as number;
    if (seq === null) this.core.fail(`an egress record of key group ${keyGroup} without a seq`);
    const released = this.releasedBySeq[keyGroup]!;
    const recordId = `${keyGroup}:${seq}`;
    if (seq < released.length) {
      if (released[seq] !== id) this.core.fail(`egress record ${recordId} was released for message ${released[seq]}, and again for message ${id}`);
      this.core.stats.egressRepeats++;
      return;
    }
    if (seq !== released.length) this.core.fail(`egress of key group ${keyGroup} jumps from seq ${released.length - 1} to ${seq}`);
    if (!this.committedApplied.has(id)) this.core.fail(`egress record ${recordId} of message ${id} was released, but no committed checkpoint covers that message`);
    const earlier = this.releasedMessages.get(id);
    if (earlier !== undefined) this.core.fail(`message ${id} was released as egress record ${earlier} and again as ${recordId}`);
    released.push(id);
    this.releasedMessages.set(id, recordId);
    this.core.stats.egressReleased++;
  }

  // ---- commits and failures ----

  /**
   * The coordinator says `checkpoint` committed (`key`: its outcome key; `head`: the head now): it commits
   * once, the head names it, numbers increase, the store holds its manifest, which retains the right
   * checkpoints, and it restores to the cut. Records the commit.
   */
  committed(checkpoint: number, manifest: CheckpointManifest, key: string, head: CommitRecord): void {
    if (this.outcomes.has(key)) this.core.fail(`checkpoint ${checkpoint} committed after it ${this.outcomes.get(key)}`);
    this.outcomes.set(key, 'committed');
    if (head.checkpoint !== checkpoint || head.term !== manifest.term) this.core.fail(`checkpoint ${checkpoint} of term ${manifest.term} committed, but the head is ${head.checkpoint} of term ${head.term}`);
    this.record(checkpoint, manifest);
  }

  /**
   * A recovery restores `head`, which nobody announced committed (`key`: its outcome key): its deposed
   * leader withheld it, or its check failed after the record landed. It is in the history from now on,
   * checked as a commit is.
   */
  adopt(manifest: CheckpointManifest, head: CommitRecord, key: string): void {
    const outcome = this.outcomes.get(key);
    if (outcome === 'committed') this.core.fail(`the head ${head.checkpoint} (${key}) was announced, yet it is not the last commit`);
    if (outcome === 'failed' && !this.uncertain.has(`${head.term}:${head.checkpoint}`)) this.core.fail(`the head ${head.checkpoint} (${key}) failed, and its record cannot have landed`);
    this.core.stats.adopted++;
    this.record(head.checkpoint, manifest);
  }

  /** A commit in the history: numbers increase, its stored manifest retains the right checkpoints, it restores to the cut. */
  private record(checkpoint: number, manifest: CheckpointManifest): void {
    const previous = this.commits.at(-1)?.checkpoint ?? 0;
    if (checkpoint <= previous) this.core.fail(`checkpoint ${checkpoint} committed after ${previous}`);
    const stored = this.core.store.get(manifestKey(checkpoint, manifest.term));
    if (stored?.kind !== 'manifest' || JSON.stringify(stored.manifest) !== JSON.stringify(manifest)) this.core.fail(`committed manifest ${checkpoint} is not the one in the store`);
    const expectedRetained = this.commits.slice(Math.max(0, this.commits.length - (this.retain - 1))).map((commit) => ({ checkpoint: commit.checkpoint, term: commit.manifest.term }));
    if (JSON.stringify(manifest.retained) !== JSON.stringify(expectedRetained)) this.core.fail(`manifest ${checkpoint} retains ${JSON.stringify(manifest.retained)}, expected ${JSON.stringify(expectedRetained)}`);

    const tally = this.checkCut(checkpoint, manifest);
    for (const id of tally.applied) this.committedApplied.add(id);
    this.core.stats.queuedMessages += tally.queued;
    this.commits.push({
      checkpoint,
      manifest,
      keys: referencedKeys(manifest),
      counters: tally.counters,
      covered: tally.applied.length + tally.pending.length,
      applied: tally.applied,
      timeMs: this.core.nowMs,
    });
    this.core.stats.committed++;
  }

  /**
   * The coordinator of term `term` says `checkpoint` failed: it had no outcome yet, and the head does not
   * name it unless its record landed and only the check after it failed.
   */
  failed(checkpoint: number, key: string, head: CommitRecord, term: string): void {
    if (this.outcomes.has(key)) this.core.fail(`checkpoint ${checkpoint} failed after it ${this.outcomes.get(key)}`);
    if (head.checkpoint === checkpoint && head.term === term && !this.uncertain.has(`${term}:${checkpoint}`)) this.core.fail(`checkpoint ${checkpoint} failed, but the head names it`);
    this.outcomes.set(key, 'failed');
    this.core.stats.failed++;
  }

  /** A deposed coordinator withheld `checkpoint`: it had no outcome yet. */
  deposed(checkpoint: number, key: string): void {
    if (this.outcomes.has(key)) this.core.fail(`checkpoint ${checkpoint} was withheld after it ${this.outcomes.get(key)}`);
    this.outcomes.set(key, 'deposed');
  }

  /** A committed checkpoint's objects, read as a restore reads them (sliceImages, decodeImage, decodeChannelObject). */
  readCheckpoint(checkpoint: number, manifest: CheckpointManifest): ReadCheckpoint {
    const refs: string[] = [];
    const refGroups: number[] = [];
    manifest.objects.forEach((ref, group) => {
      if (ref === '') return;
      refs.push(ref);
      refGroups.push(group);
    });
    const objects = new Map<string, Uint8Array>();
    refs.forEach((ref, index) => {
      const { key } = parseObjectRef(ref);
      if (objects.has(key)) return;
      const stored = this.core.store.get(key);
      if (stored?.kind !== 'object') this.core.fail(`restoring ${checkpoint}: object ${key} of key group ${refGroups[index]} is missing`);
      objects.set(key, stored.bytes);
    });
    const images = new Map<number, KeyGroupImage>();
    sliceImages(refs, objects).forEach((body, index) => {
      const image = decodeImage(body);
      if (image.keyGroup !== refGroups[index]) this.core.fail(`restoring ${checkpoint}: ${refs[index]} holds key group ${image.keyGroup}, the manifest says ${refGroups[index]}`);
      images.set(image.keyGroup, image);
    });
    const recorded: Uint8Array[] = [];
    for (const key of manifest.channels) {
      const stored = this.core.store.get(key);
      if (stored?.kind !== 'object') this.core.fail(`restoring ${checkpoint}: channel object ${key} is missing`);
      recorded.push(...decodeChannelObject(stored.bytes));
    }
    return { images, recorded };
  }

  /**
   * What a restored checkpoint holds: each key group's records (from the state `stateOf` gives, with the
   * images loaded), the messages queued in its images and the recorded ones; counters as after they are
   * applied.
   */
  tally(checkpoint: number, read: ReadCheckpoint, stateOf: (keyGroup: number) => KeyGroupState): Tally {
    const counters = new Map<number, number>();
    const applied: number[] = [];
    const pending: number[] = [];
    let queued = 0;
    const addPending = (envelope: Uint8Array, where: string) => {
      const message = this.core.decode(envelope);
      const body = bodyOf(message);
      if (Number(message.targetId) % this.core.keyGroups !== message.keyGroup) this.core.fail(`restoring ${checkpoint}: ${where} holds message ${body.id} with a wrong key group`);
      addTo(counters, Number(message.targetId), body.amount);
      pending.push(body.id);
    };
    for (let group = 0; group < this.core.keyGroups; group++) {
      const tables = stateOf(group).records.peekKeyGroup(group);
      for (const [id, value] of tables?.[COUNTER] ?? []) {
        const counter = Number(id);
        if (counter % this.core.keyGroups !== group) this.core.fail(`restoring ${checkpoint}: key group ${group} holds counter ${counter} of another key group`);
        addTo(counters, counter, value as number);
      }
      const appliedHere = tables?.[APPLIED];
      for (const id of appliedHere?.keys() ?? []) applied.push(Number(id));
      const image = read.images.get(group);
      if (image === undefined) continue;
      for (const [seq, bytes] of image.egress ?? []) {
        const egress = this.core.decoder.decodeEgress(bytes, 0, bytes.length);
        if (egress.recordSeq !== seq || seq >= (image.egressSeq ?? 0)) this.core.fail(`restoring ${checkpoint}: key group ${group} holds egress seq ${seq} (record ${egress.recordSeq}, next ${image.egressSeq})`);
        if (appliedHere?.has(String(egress.decoded)) !== true) this.core.fail(`restoring ${checkpoint}: key group ${group} holds egress of message ${egress.decoded}, which it has not applied`);
      }
      for (const envelope of image.queued) {
        if (readKeyGroup(envelope, 0) !== group) this.core.fail(`restoring ${checkpoint}: key group ${group} queues a message of key group ${readKeyGroup(envelope, 0)}`);
        addPending(envelope, `key group ${group}'s queue`);
        queued++;
      }
    }
    for (const envelope of read.recorded) addPending(envelope, 'a channel object');
    return { counters, applied, pending, queued };
  }

  /**
   * The committed checkpoint restores to the consistent cut, each message covered once. Returns what it
   * holds.
   */
  private checkCut(checkpoint: number, manifest: CheckpointManifest): Tally {
    const read = this.readCheckpoint(checkpoint, manifest);
    const groups = newKeyGroupState(this.core.keyGroups);
    for (const image of read.images.values()) groups.put(image, checkpoint);
    const tally = this.tally(checkpoint, read, () => groups);
    const log = this.core.log;
    const expected = new Map(log.baseCounters);
    const inCut = new Uint8Array(log.origins.length);
    let cutSize = 0;
    const snapSeqs = this.core.processes.map((proc) => proc.snapSeq.get(checkpoint));
    log.origins.forEach((origin, index) => {
      const snapSeq = snapSeqs[origin.process];
      if (snapSeq === undefined) this.core.fail(`checkpoint ${checkpoint} committed, but ${this.core.processes[origin.process]!.id} never took its snapshot`);
      if (origin.seq < snapSeq) {
        addTo(expected, origin.counter, origin.amount);
        inCut[index] = 1;
        cutSize++;
      }
    });
    const seen = new Uint8Array(log.origins.length);
    const baseSeen = new Uint8Array(log.baseIds.length);
    let coveredSize = 0;
    let baseCovered = 0;
    const cover = (id: number) => {
      if (id < log.firstId) {
        if (log.baseIds[id] !== 1) this.core.fail(`checkpoint ${checkpoint} covers message ${id} of an earlier epoch, which the restored checkpoint did not cover`);
        if (baseSeen[id] === 1) this.core.fail(`checkpoint ${checkpoint} counts message ${id} of the epoch's base twice`);
        baseSeen[id] = 1;
        baseCovered++;
        return;
      }
      const index = id - log.firstId;
      if (inCut[index] !== 1) this.core.fail(`checkpoint ${checkpoint} covers message ${id}, originated after its originator's snapshot (${this.describe(index)})`);
      if (seen[index] === 1) this.core.fail(`checkpoint ${checkpoint} counts message ${id} twice: applied, queued or recorded more than once (${this.describe(index)})`);
      seen[index] = 1;
      coveredSize++;
    };
    for (const id of tally.applied) cover(id);
    for (const id of tally.pending) cover(id);
    if (baseCovered !== log.baseSize) {
      const missing = log.baseIds.findIndex((flag, id) => flag === 1 && baseSeen[id] !== 1);
      this.core.fail(`checkpoint ${checkpoint} misses message ${missing} of the epoch's base (covered by the restored checkpoint)`);
    }
    if (coveredSize !== cutSize) {
      const missing = inCut.findIndex((flag, index) => flag === 1 && seen[index] !== 1);
      this.core.fail(`checkpoint ${checkpoint} misses message ${log.firstId + missing}: originated before the cut, neither applied, queued nor recorded (${this.describe(missing)})`);
    }
    const difference = counterDifference(tally.counters, expected);
    if (difference !== null) this.core.fail(`checkpoint ${checkpoint} restores to a state that is not the cut: ${difference}`);
    return tally;
  }

  private describe(index: number): string {
    const origin = this.core.log.origins[index]!;
    return `from ${this.core.processes[origin.process]!.id} at seq ${origin.seq}, to ${this.core.processes[this.core.owner[origin.counter % this.core.keyGroups]!]!.id}`;
  }

  /** Nothing a retained manifest needs is deleted. */
  onDelete(keys: string[]): void {
    const retained = this.commits.slice(-this.retain);
    for (const key of keys) {
      for (const commit of retained) {
        if (manifestKey(commit.checkpoint, commit.manifest.term) === key) this.core.fail(`deleting ${key}, the manifest of retained checkpoint ${commit.checkpoint}`);
        if (commit.keys.has(key)) this.core.fail(`deleting ${key}, an object of retained checkpoint ${commit.checkpoint}`);
      }
      if (this.core.store.delete(key)) this.core.stats.deletedKeys++;
    }
    const latest = this.commits.at(-1)!;
    if (this.core.store.get(manifestKey(latest.checkpoint, latest.manifest.term))?.kind !== 'manifest') this.core.fail(`the head's manifest ${latest.checkpoint} is gone`);
  }

  // ---- end of run ----

  /** At the end of the run; `recovering`: a recovery is pending, `recoveries`: when each one ran. */
  finalChecks(recovering: boolean, recoveries: readonly number[]): void {
    if (recovering) this.core.fail('a recovery was still pending at the end');
    // The head only ever named a checkpoint of the history (announced or adopted), or one whose outcome a
    // failed check left open.
    const history = new Set(this.commits.map((commit) => `${commit.manifest.term}:${commit.checkpoint}`));
    for (const { term, checkpoint } of this.headHistory) {
      if (checkpoint !== 0 && !history.has(`${term}:${checkpoint}`) && !this.uncertain.has(`${term}:${checkpoint}`)) this.core.fail(`the head named ${checkpoint} of term ${term}, which is neither committed nor restored`);
    }
    // Once calm, every checkpoint started commits (after a crash too).
    const settledMs = this.timing.calmStartMs + 800;
    const calm = this.starts.filter((start) => start.timeMs >= settledMs && start.timeMs <= this.timing.endMs - this.timing.ackTimeoutMs - 50);
    if (calm.length === 0) this.core.fail('no checkpoint started in the calm phase');
    for (const start of calm) {
      const outcome = this.outcomes.get(`${start.term}:${start.checkpoint}`);
      if (outcome !== 'committed') this.core.fail(`checkpoint ${start.checkpoint}, started at ${start.timeMs} ms in the calm phase, ended ${outcome ?? 'never'}`);
    }
    const lastRecovery = recoveries.at(-1);
    if (lastRecovery !== undefined && !this.commits.some((commit) => commit.timeMs > lastRecovery)) this.core.fail(`nothing committed after the recovery at ${lastRecovery} ms`);
    // Every message with egress that a settled commit applied was released (its outcome reached every shard).
    const settled = this.commits.filter((commit) => commit.timeMs <= this.timing.endMs - 50).at(-1);
    if (settled === undefined) this.core.fail('no commit settled before the end');
    for (const id of settled.applied) {
      if (this.withEgress.has(id) && !this.releasedMessages.has(id)) this.core.fail(`checkpoint ${settled.checkpoint} committed message ${id}, but its egress was never released`);
    }
    // Everything the retained checkpoints need is there; what only older ones needed is gone.
    const retained = this.commits.slice(-this.retain);
    const needed = new Set<string>();
    for (const commit of retained) {
      needed.add(manifestKey(commit.checkpoint, commit.manifest.term));
      for (const key of commit.keys) needed.add(key);
    }
    for (const key of needed) if (!this.core.store.has(key)) this.core.fail(`${key}, needed by a retained checkpoint, is missing`);
    for (const commit of this.commits.slice(0, -this.retain)) {
      for (const key of [manifestKey(commit.checkpoint, commit.manifest.term), ...commit.keys]) {
        if (!needed.has(key) && this.core.store.has(key)) this.core.fail(`${key} of checkpoint ${commit.checkpoint}, beyond the ${this.retain} retained, was not deleted`);
      }
    }
  }
}
