/**
 * The checkpoint simulation's vocabulary (checkpoint-sim-world.ts runs it): its options and statistics,
 * the negative controls, the messages it sends (invoke envelopes whose value is a SimBody) and the
 * KeyGroupState of its two function types, the records of processes, channels, the event log, the store
 * and the commits, and small functions on counter maps and manifests. Nothing here holds state.
 */
import { BARRIER_BYTES, invokeLengthMax, writeBarrier, writeInvoke } from '../../../lib/envelope.js';
import type { Message } from '../../../lib/message.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { Types } from '../../../lib/types.js';
import type { BarrierTracker } from '../../../node/checkpoint/barrier-tracker.js';
import type { CheckpointManifest } from '../../../node/checkpoint/checkpoint-coordinator.js';
import type { CommitRecord } from '../../../node/checkpoint/terms.js';
import { parseObjectRef } from '../../../node/checkpoint/checkpoint-format.js';
import type { ShardCut } from '../../../node/checkpoint/shard-cut.js';
import type { KeyGroupImage } from '../../../node/keygroups/key-group-image.js';
import { KeyGroupState } from '../../../node/keygroups/key-group-state.js';
import type { RecordLayout } from '../../../node/keygroups/state-store.js';

export class CheckFailure extends Error {}

/**
 * Negative controls: the world misuses the real code once (or, for 'release-on-failure', at every
 * failure), so the checks must catch it.
 * - 'drop-recording': a shard does not record one message in flight at its cut;
 * - 'skip-changed': a shard does not mark the key group of one delivered message changed (one unchanged
 *   since its last snapshot, and the message emits no egress, which would mark it);
 * - 'release-on-failure': a failed checkpoint releases the egress it held, as a commit would.
 */
export type Breakage = 'drop-recording' | 'skip-changed' | 'release-on-failure' | 'unfenced-commit';

export interface WorldOptions {
  seed: number;
  /** 'nodes': main threads (sources) with shards, as Statecraft has; 'mesh': random graph, random sources. */
  topology: 'nodes' | 'mesh';
  /** Length of the faulty phase; a calm phase (no faults, no crashes) follows. */
  durationMs: number;
  /** Crashes injected during the faulty phase, one at a time (each recovered before the next). */
  crashes: number;
  /** Whether a recovery may also replace the coordinator (a new leader). */
  coordinatorFailover: boolean;
  /** Failed and slow uploads, failed store writes, stalled channels. */
  faults: boolean;
  breakage?: Breakage;
  /**
   * A crash pauses the leader (SIGSTOP, a partition) instead of being waited for: its manifest and
   * commit writes in flight, and the check for a newer term after a commit, happen at any later time,
   * after a new coordinator took over; they go to the old coordinator (terms.ts fences them).
   */
  zombieWrites?: boolean;
}

export interface WorldStats {
  processes: number;
  keyGroups: number;
  started: number;
  /** Times the coordinator asked participants again for a running checkpoint. */
  askedAgain: number;
  committed: number;
  failed: number;
  superseded: number;
  recordedMessages: number;
  /** Messages queued for an instance in committed images. */
  queuedMessages: number;
  reusedObjects: number;
  recoveries: number;
  coordinators: number;
  messages: number;
  /** Egress records released for the first time, and released again (dropped as repeats). */
  egressReleased: number;
  egressRepeats: number;
  deletedKeys: number;
  /** Crashes that happened, and crashes asked for that could not happen (no faulty time left for them). */
  crashes: number;
  crashesSkipped: number;
  /** Terms begun (terms.ts); checkpoints a deposed coordinator did not announce; heads nobody announced, adopted at a recovery. */
  terms: number;
  deposed: number;
  adopted: number;
}

export const COUNTERS_PER_GROUP = 3;
/** Breakages strike at the first chance from here on (after the first commits, so reuse is possible). */
export const BREAKAGE_FROM_MS = 300;
export const COUNTER_TYPE = 'sim/counter';
const APPLIED_TYPE = 'sim/applied';
export const EGRESS_NAME = 'sim/out';
const plainLayout: RecordLayout = { hasExpiry: false, expire: (record) => record };

/** What a message carries. `hops` left: the receiver originates the next one. */
export interface SimBody {
  readonly id: number;
  readonly amount: number;
  readonly hops: number;
  /** Whether applying it emits an egress record. */
  readonly egress: boolean;
}

/** The value of a message: a string "id amount hops egress" (a primitive type: cheap to write and read). */
export function encodeInvoke(keyGroup: number, counter: number, body: SimBody): Uint8Array {
  const value = toTypedValue(`${body.id} ${body.amount} ${body.hops} ${body.egress ? 1 : 0}`, Types.string);
  const id = String(counter);
  const buffer = new Uint8Array(invokeLengthMax(COUNTER_TYPE, id, null, null, value));
  return buffer.subarray(0, writeInvoke(buffer, 0, keyGroup, COUNTER_TYPE, id, null, null, value));
}

export function bodyOf(message: Message): SimBody {
  const text = message.as(Types.string);
  const first = text.indexOf(' ');
  const second = text.indexOf(' ', first + 1);
  const third = text.indexOf(' ', second + 1);
  return { id: Number(text.slice(0, first)), amount: Number(text.slice(first + 1, second)), hops: Number(text.slice(second + 1, third)), egress: text.endsWith('1') };
}

export function barrierEnvelope(checkpoint: number): Uint8Array {
  const bytes = new Uint8Array(BARRIER_BYTES);
  writeBarrier(bytes, 0, checkpoint);
  return bytes;
}

/** A KeyGroupState with the world's two function types: index 0 counters, index 1 applied messages. */
export function newKeyGroupState(keyGroups: number): KeyGroupState {
  const groups = new KeyGroupState(keyGroups, true);
  if (groups.addType(COUNTER_TYPE, plainLayout) !== COUNTER || groups.addType(APPLIED_TYPE, plainLayout) !== APPLIED) throw new Error('function type indices changed');
  return groups;
}
export const COUNTER = 0;
export const APPLIED = 1;

export type ChannelItem = { kind: 'envelope'; bytes: Uint8Array } | { kind: 'close' };

export interface Channel {
  readonly id: string;
  readonly from: number;
  readonly to: number;
  /** FIFO: a delivery is never scheduled before the previous one on the channel. */
  lastDeliveryMs: number;
}

export type Stored =
  | { readonly kind: 'object'; readonly bytes: Uint8Array }
  | { readonly kind: 'manifest'; readonly manifest: CheckpointManifest }
  /** A term's seal (terms.ts). */
  | { readonly kind: 'seal' }
  /** A term's base or a commit record (terms.ts). */
  | { readonly kind: 'record'; readonly record: CommitRecord };

/** A main thread's part: its tracker and the checkpoints it has a snapshot of, not complete. */
export interface MainPart {
  tracker: BarrierTracker<Uint8Array, string>;
  open: Set<number>;
}

/** A shard's part: the real state and cut, and what the world's CutHost keeps for it. */
export interface ShardPart {
  readonly groups: KeyGroupState;
  readonly cut: ShardCut;
  /** Messages to its own key groups, delivered next turn (Shard.local). */
  local: { keyGroup: number; bytes: Uint8Array }[];
  turnScheduled: boolean;
  /** The checkpoint it snapshotted whose part has not come yet (null: none). */
  openSnapshot: number | null;
}

export interface Proc {
  readonly index: number;
  readonly id: string;
  /** Its thread number for the cut (index + 1: thread 0 is the egress sink). */
  readonly thread: number;
  readonly inputs: Channel[];
  readonly outputs: Channel[];
  /** Output channel by target process. */
  readonly outputTo: Map<number, Channel>;
  /** Mean gap between messages it originates. */
  readonly meanGapMs: number;
  alive: boolean;
  /** Bumped on a crash: uploads and signals of the dead incarnation are lost. */
  incarnation: number;
  /** Exactly one of `main` and `shard`. */
  main: MainPart | null;
  shard: ShardPart | null;
  /** Event seq of its snapshot per checkpoint (this epoch). */
  snapSeq: Map<number, number>;
}

export interface Origin {
  process: number;
  seq: number;
  counter: number;
  amount: number;
}

export interface EpochLog {
  epoch: number;
  baseCounters: Map<number, number>;
  /** Messages of earlier epochs the restored checkpoint covers: baseIds[id] = 1 (ids below firstId). */
  baseIds: Uint8Array;
  baseSize: number;
  /** Message ids of this epoch start here; origins[id - firstId]. */
  firstId: number;
  origins: Origin[];
}

/** A checkpoint as read back from the store: its images by key group ('' ones absent), and its recorded messages. */
export interface ReadCheckpoint {
  images: Map<number, KeyGroupImage>;
  recorded: Uint8Array[];
}

/** What a restored checkpoint holds: counters after its pending messages are applied, and message ids. */
export interface Tally {
  counters: Map<number, number>;
  /** Ids in applied records. */
  applied: number[];
  /** Ids of queued and recorded messages (applied after the restore). */
  pending: number[];
  queued: number;
}

export interface Commit {
  checkpoint: number;
  manifest: CheckpointManifest;
  /** Object keys the manifest references (segments and channel objects). */
  keys: Set<string>;
  counters: Map<number, number>;
  covered: number;
  /** Messages its restored state applied. */
  applied: number[];
  timeMs: number;
}

export interface QueuedEvent {
  timeMs: number;
  order: number;
  run: () => void;
}

export function addTo(map: Map<number, number>, key: number, amount: number): void {
  map.set(key, (map.get(key) ?? 0) + amount);
}

/** First difference between two counter maps (absent = 0), or null. */
export function counterDifference(actual: Map<number, number>, expected: Map<number, number>): string | null {
  for (const key of new Set([...actual.keys(), ...expected.keys()])) {
    const a = actual.get(key) ?? 0;
    const e = expected.get(key) ?? 0;
    if (a !== e) return `counter ${key} is ${a}, the cut says ${e}`;
  }
  return null;
}

/** The objects a manifest references, by object key (a slice names its segment). */
export function referencedKeys(manifest: CheckpointManifest): Set<string> {
  const keys = new Set<string>(manifest.channels);
  for (const ref of manifest.objects) if (ref !== '') keys.add(parseObjectRef(ref).key);
  return keys;
}
