/**
 * The checkpoint coordinator, on the leader, as a sans-I/O state machine (docs/checkpoints.md).
 *
 * The class owns no socket, timer, clock or store. The shell calls the inputs with the current time in
 * ms (every input takes it, even those that do not need it yet, so calls stay uniform), performs the
 * actions they return, in order, and calls `tick` again at `nextDeadline()`.
 *
 *   tick: due and idle → start c (to every participant's main thread)
 *   tick: c waits for acks past askAgainMs → ask-again c (the 'start' again, to those not yet answered)
 *   every participant acknowledged c (its key groups' object keys; null: unchanged)
 *     → write-manifest c   (unchanged key groups keep the previous committed manifest's entry)
 *   manifestWritten c → write-commit c  (the commit record of c in this leader's term: terms.ts)
 *   commitWritten c   → committed c, then delete (checkpoints past the retain count, failed leftovers)
 *   deposed c         → deposed c: a newer term began, c is not announced and this coordinator stops
 *
 * One checkpoint at a time; checkpoint numbers increase strictly, also across coordinators (a new one
 * starts above `lastCheckpoint`). An upload failure, a failed manifest write, a missing ack or manifest
 * by the deadline (`ackTimeoutMs` after the start), or a view change fails c only; the next one starts
 * on schedule (`intervalMs` after the previous start, or at once when that time has passed).
 *
 * The commit record is the commit point and cannot be taken back, so once it is requested neither the
 * deadline nor a view change fails c: the shell must report its definite outcome (commitWritten;
 * deposed when a newer term was sealed, so c may or may not be in the store's history but is never
 * announced; writeFailed when the write or the check after it failed). Objects of failed checkpoints
 * are deleted only after a later commit of this term has moved the head past them, so a commit record
 * reported failed that did land cannot leave the head on deleted objects.
 *
 * Fencing acks of another view is the shell's: it drops control frames of other view ids. Object keys
 * must be unique per upload (e.g. include the view id), so that a late upload of a previous epoch never
 * overwrites an object of a checkpoint reusing its number; manifests and commit records carry the term.
 */
import { KEY_GROUP_HASH } from '../../lib/key-group.js';
import { commitKey, termId, type CheckpointRef, type CommitRecord } from './terms.js';

export const CHECKPOINT_MANIFEST_VERSION = 2;

/** Written as `manifestKey(c, term)`; a commit record (terms.ts) makes it the committed one. */
export interface CheckpointManifest {
  version: number;
  checkpoint: number;
  /** The term of the leader that wrote it. */
  term: string;
  /** The view (epoch) id the checkpoint was taken in. */
  view: string;
  /** K, fixed for the cluster's lifetime. */
  keyGroups: number;
  /** How ids map to key groups (lib/key-group.ts). */
  hash: string;
  /** Index: key group. The object holding its state, possibly written by an earlier checkpoint. */
  objects: string[];
  /**
   * Objects holding the messages that were in flight on channels at the cut (one per process that
   * recorded any): replayed after the key groups are loaded, each to its key group's owner.
   */
  channels: string[];
  /**
   * Earlier committed checkpoints kept alongside this one (oldest first): a new coordinator rebuilds
   * retention from the head's manifest and these, without listing the store.
   */
  retained: CheckpointRef[];
  /**
   * Index: key group. How many instances its state holds (-1: not known, from a manifest written
   * before counts were kept). A restore that loads another number is an error. Absent when no
   * participant reported counts.
   */
  instances?: number[];
}

/**
 * Per key group of a participant: the key of the object it uploaded, '' for a key group with nothing in
 * it (no object), or null when unchanged since its last committed object.
 */
export type AcknowledgedObjects = ReadonlyMap<number, string | null>;

export type CoordinatorAction =
  /** Tell every participant's main thread to begin checkpoint `checkpoint`. */
  | { type: 'start'; checkpoint: number; participants: string[] }
  /**
   * Ask these participants again for their part of the running checkpoint (the same 'start' message):
   * one that answered already answers again, so a lost or misdirected answer costs an interval, not
   * the whole ack timeout.
   */
  | { type: 'ask-again'; checkpoint: number; participants: string[] }
  /** Write `manifest` under `key`; report manifestWritten or writeFailed(…, 'manifest'). */
  | { type: 'write-manifest'; checkpoint: number; key: string; manifest: CheckpointManifest }
  /** Write the commit record, then check no newer term began; report commitWritten, deposed or writeFailed(…, 'commit'). */
  | { type: 'write-commit'; checkpoint: number; record: CommitRecord }
  /** The checkpoint is durable: release its egress, confirm the client events it covers. */
  | { type: 'committed'; checkpoint: number; manifest: CheckpointManifest }
  /** The checkpoint will never commit; participants drop what they hold for it. */
  | { type: 'failed'; checkpoint: number; reason: string }
  /**
   * A newer term began before the commit was confirmed: the checkpoint is not announced (participants
   * treat it as failed; the newer term's writer decides whether it is in the history) and the
   * coordinator stops for good.
   */
  | { type: 'deposed'; checkpoint: number; by: string }
  /** Best-effort deletion of objects no retained manifest references. */
  | { type: 'delete'; keys: string[] };

export interface CheckpointCoordinatorConfig {
  /** Process ids that must acknowledge each checkpoint. */
  participants: Iterable<string>;
  /** K: every manifest names one object per key group. */
  keyGroups: number;
  /** The view (epoch) id written into manifests; changes with viewChanged. Default '0'. */
  view?: string;
  /** This leader's term (terms.ts): in its manifests' keys and commit records. Default term 0. */
  term?: string;
  /** Default 1000. */
  intervalMs?: number;
  /** Acks and the manifest write must be done this long after the start; default 30000. */
  ackTimeoutMs?: number;
  /** Participants that have not answered are asked again this often; default 1000. */
  askAgainMs?: number;
  /** Committed checkpoints kept; default 3. */
  retain?: number;
  /**
   * The highest checkpoint number that may have been used (at least the last committed): new ones
   * start above it. Default: the last of `committed`, or 0.
   */
  lastCheckpoint?: number;
  /**
   * The retained committed manifests, oldest first, the last being the head's (read back on a new
   * leader). Empty: nothing committed yet, so the first checkpoint must upload every key group.
   */
  committed?: readonly CheckpointManifest[];
  /** Default `checkpoints/<c>/manifest-<term>.json`. */
  manifestKey?: (checkpoint: number, term: string) => string;
}

export type CheckpointPhase = 'acks' | 'manifest' | 'commit';

interface Running {
  checkpoint: number;
  startedMs: number;
  deadlineMs: number;
  /** When the participants that have not answered are asked again. */
  askAgainAtMs: number;
  phase: CheckpointPhase;
  waiting: Set<string>;
  /** Key group → new object key, or null (unchanged). */
  objects: Map<number, string | null>;
  /** New object keys reported so far: garbage if the checkpoint fails. */
  uploaded: string[];
  /** Key group → instances in its new image, as participants reported them (null: none reported counts). */
  instances: Map<number, number> | null;
  channels: string[];
  manifest: CheckpointManifest | null;
}

export const CHECKPOINT_DEFAULTS = Object.freeze({ intervalMs: 1000, ackTimeoutMs: 30_000, askAgainMs: 1000, retain: 3 });

const defaultManifestKey = (checkpoint: number, term: string) => `checkpoints/${checkpoint}/manifest-${term}.json`;

function integer(name: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) throw new RangeError(`checkpoint coordinator: ${name} must be an integer >= ${minimum} (got ${value})`);
}

export class CheckpointCoordinator {
  readonly intervalMs: number;
  readonly ackTimeoutMs: number;
  readonly askAgainMs: number;
  readonly retain: number;
  readonly keyGroups: number;
  readonly term: string;
  private readonly manifestKey: (checkpoint: number, term: string) => string;
  private participantSet: Set<string>;
  private view: string;
  /** Highest number used: strictly increasing. */
  private last: number;
  /** Committed manifests kept, oldest first; the last is the head's. */
  private readonly retainedManifests: CheckpointManifest[];
  private running: Running | null = null;
  /** Keys of failed checkpoints, deleted after the next commit. */
  private readonly garbage = new Set<string>();
  /** null until the first tick arms the schedule. */
  private nextStartMs: number | null = null;
  /** Set when a newer term began: nothing starts or commits any more. */
  private newerTerm: string | null = null;

  constructor(config: CheckpointCoordinatorConfig) {
    this.intervalMs = config.intervalMs ?? CHECKPOINT_DEFAULTS.intervalMs;
    this.ackTimeoutMs = config.ackTimeoutMs ?? CHECKPOINT_DEFAULTS.ackTimeoutMs;
    this.askAgainMs = config.askAgainMs ?? CHECKPOINT_DEFAULTS.askAgainMs;
    this.retain = config.retain ?? CHECKPOINT_DEFAULTS.retain;
    this.keyGroups = config.keyGroups;
    integer('intervalMs', this.intervalMs, 1);
    integer('ackTimeoutMs', this.ackTimeoutMs, 1);
    integer('askAgainMs', this.askAgainMs, 1);
    integer('retain', this.retain, 1);
    integer('keyGroups', this.keyGroups, 1);
    this.manifestKey = config.manifestKey ?? defaultManifestKey;
    this.term = config.term ?? termId(0, '00000000');
    this.participantSet = new Set(config.participants);
    this.view = config.view ?? '0';
    const committed = [...(config.committed ?? [])];
    committed.forEach((manifest, index) => {
      if (manifest.keyGroups !== this.keyGroups || manifest.objects.length !== this.keyGroups) {
        throw new RangeError(`checkpoint coordinator: manifest ${manifest.checkpoint} has ${manifest.objects.length} objects for K = ${manifest.keyGroups}, but K is ${this.keyGroups}`);
      }
      if (index > 0 && manifest.checkpoint <= committed[index - 1]!.checkpoint) throw new RangeError('checkpoint coordinator: committed manifests must be given oldest first');
    });
    // More than `retain` given: the oldest are dropped (and deleted) at the next commit.
    this.retainedManifests = committed;
    const lastCommitted = committed.at(-1)?.checkpoint ?? 0;
    this.last = config.lastCheckpoint ?? lastCommitted;
    integer('lastCheckpoint', this.last, lastCommitted);
  }

  // ---- state, for shells and tests ----

  get participants(): string[] {
    return [...this.participantSet];
  }

  /** The checkpoint in progress and its phase, or null. */
  get inProgress(): { checkpoint: number; phase: CheckpointPhase } | null {
    return this.running === null ? null : { checkpoint: this.running.checkpoint, phase: this.running.phase };
  }

  /** The newer term that deposed this coordinator, or null. */
  get deposedBy(): string | null {
    return this.newerTerm;
  }

  /** The last committed checkpoint number, 0 when none. */
  get lastCommitted(): number {
    return this.retainedManifests.at(-1)?.checkpoint ?? 0;
  }

  /** The highest checkpoint number used so far. */
  get lastStarted(): number {
    return this.last;
  }

  /** Committed manifests kept, oldest first. */
  get retained(): readonly CheckpointManifest[] {
    return this.retainedManifests;
  }

  // ---- inputs ----

  /** Starts a checkpoint when due, fails the running one past its deadline. Idempotent. */
  tick(now: number): CoordinatorAction[] {
    const actions: CoordinatorAction[] = [];
    if (this.newerTerm !== null) return actions;
    if (this.nextStartMs === null) this.nextStartMs = now + this.intervalMs;
    const running = this.running;
    if (running !== null && running.phase !== 'commit' && now >= running.deadlineMs) {
      const missing = running.phase === 'acks' ? `no acknowledgement from ${[...running.waiting].sort().join(', ')}` : 'the manifest write did not finish';
      this.fail(running, `timed out after ${Math.round(now - running.startedMs)} ms: ${missing}`, actions);
    } else if (running !== null && running.phase === 'acks' && now >= running.askAgainAtMs) {
      running.askAgainAtMs = now + this.askAgainMs;
      actions.push({ type: 'ask-again', checkpoint: running.checkpoint, participants: [...running.waiting].sort() });
    }
    if (this.running === null && now >= this.nextStartMs) {
      if (this.participantSet.size === 0) {
        // Nothing to checkpoint: try again one interval later.
        this.nextStartMs = now + this.intervalMs;
      } else {
        this.start(now, actions);
      }
    }
    return actions;
  }

  /** When `tick` must run next. Before the first tick: 0 (tick at once; it arms the schedule). */
  nextDeadline(): number {
    if (this.newerTerm !== null) return Infinity;
    if (this.nextStartMs === null) return 0;
    const running = this.running;
    if (running === null) return this.nextStartMs;
    // The next start waits for the running one, whose own deadline (if any) comes first.
    if (running.phase === 'acks') return Math.min(running.deadlineMs, running.askAgainAtMs);
    return running.phase === 'commit' ? Infinity : running.deadlineMs;
  }

  /** `process` finished its part of `checkpoint` and uploaded its objects. */
  acknowledged(now: number, process: string, checkpoint: number, objects: AcknowledgedObjects, channels: readonly string[] = [], instances?: ReadonlyMap<number, number>): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== 'acks') {
      // Late (the checkpoint failed, or this repeats an ack): new objects of another checkpoint are
      // garbage. Deletion skips whatever a retained manifest references, so a repeated ack of a committed
      // checkpoint loses nothing.
      if (running?.checkpoint !== checkpoint && checkpoint <= this.last) {
        for (const key of objects.values()) if (key) this.garbage.add(key);
        for (const key of channels) this.garbage.add(key);
      }
      return actions;
    }
    // Not a participant (a process of an older view), or a repeated ack: ignore.
    if (!running.waiting.has(process)) return actions;
    for (const key of channels) {
      running.uploaded.push(key);
      running.channels.push(key);
    }
    for (const [group, key] of objects) {
      if (key) running.uploaded.push(key);
      if (!Number.isSafeInteger(group) || group < 0 || group >= this.keyGroups) {
        this.fail(running, `${process} acknowledged key group ${group}, outside 0..${this.keyGroups - 1}`, actions);
        return actions;
      }
      if (running.objects.has(group)) {
        this.fail(running, `key group ${group} was acknowledged by two processes (placement disagreement)`, actions);
        return actions;
      }
      running.objects.set(group, key);
    }
    if (instances !== undefined) {
      running.instances ??= new Map();
      for (const [group, count] of instances) running.instances.set(group, count);
    }
    running.waiting.delete(process);
    if (running.waiting.size === 0) this.writeManifest(running, actions);
    return actions;
  }

  /**
   * `process` could not upload its part of `checkpoint`. `seen`: it had begun a checkpoint up to that
   * number already (another leader's, or one from before a view change): the next goes above it.
   */
  uploadFailed(now: number, process: string, checkpoint: number, reason: string, seen?: number): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    if (seen !== undefined && this.participantSet.has(process) && seen > this.last) this.last = seen;
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== 'acks' || !this.participantSet.has(process)) return actions;
    this.fail(running, `upload by ${process} failed: ${reason}`, actions);
    return actions;
  }

  manifestWritten(now: number, checkpoint: number): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== 'manifest') return actions;
    running.phase = 'commit';
    const manifest = running.manifest!;
    actions.push({ type: 'write-commit', checkpoint, record: { checkpoint, term: this.term, retained: manifest.retained } });
    return actions;
  }

  /** The commit record of `checkpoint` landed and no newer term had begun: it is committed. */
  commitWritten(now: number, checkpoint: number): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== 'commit') return actions;
    const manifest = running.manifest!;
    this.running = null;
    actions.push({ type: 'committed', checkpoint, manifest });
    this.retainedManifests.push(manifest);
    const candidates: string[] = [...this.garbage];
    this.garbage.clear();
    while (this.retainedManifests.length > this.retain) {
      const dropped = this.retainedManifests.shift()!;
      candidates.push(this.manifestKey(dropped.checkpoint, dropped.term), commitKey(dropped.term, dropped.checkpoint), ...dropped.objects, ...(dropped.channels ?? []));
    }
    // An entry may name a slice of a shared object (`key#offset+length`): objects are kept or deleted whole.
    const object = (key: string) => (key.includes('#') ? key.slice(0, key.lastIndexOf('#')) : key);
    const keep = new Set<string>();
    for (const kept of this.retainedManifests) {
      keep.add(this.manifestKey(kept.checkpoint, kept.term));
      keep.add(commitKey(kept.term, kept.checkpoint));
      for (const key of kept.objects) keep.add(object(key));
      for (const key of kept.channels ?? []) keep.add(object(key));
    }
    const keys = [...new Set(candidates.map(object))].filter((key) => key !== '' && !keep.has(key));
    if (keys.length > 0) actions.push({ type: 'delete', keys });
    return actions;
  }

  /**
   * A commit record landed, but term `by`, newer than this coordinator's, was sealed before the check:
   * the checkpoint is not announced and this coordinator stops (nothing of it is deleted).
   */
  deposed(now: number, checkpoint: number, by: string): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== 'commit') return actions;
    this.running = null;
    this.newerTerm = by;
    this.garbage.clear();
    actions.push({ type: 'deposed', checkpoint, by });
    return actions;
  }

  /** A manifest or commit write for `checkpoint` failed (for the commit: the write or the check after it). */
  writeFailed(now: number, checkpoint: number, what: 'manifest' | 'commit', reason = 'write failed'): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running === null || running.checkpoint !== checkpoint || running.phase !== what) return actions;
    this.fail(running, `${what} write failed: ${reason}`, actions);
    return actions;
  }

  /**
   * Asks for a checkpoint to start as soon as none runs (a final one, at a graceful stop): resolves to
   * the number it will get. Whatever the node accepted before this call is covered by it.
   */
  startSoon(now: number): number {
    this.nextStartMs = Math.min(this.nextStartMs ?? now, now);
    return this.last + 1;
  }

  /**
   * The coordinator stops (leadership moves, a recovery, shutdown): a checkpoint in its acks or manifest
   * phase fails with `reason`; one whose commit write is in flight is decided by that write.
   */
  stop(now: number, reason: string): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const running = this.running;
    if (running !== null && running.phase !== 'commit') this.fail(running, reason, actions);
    return actions;
  }

  /**
   * The agreed view changed: the participants (and the view id) are replaced. A checkpoint in its acks or
   * manifest phase fails; one whose commit write is in flight is decided by that write.
   */
  viewChanged(now: number, participants: Iterable<string>, view: string = this.view): CoordinatorAction[] {
    void now;
    const actions: CoordinatorAction[] = [];
    const next = new Set(participants);
    const same = view === this.view && next.size === this.participantSet.size && [...next].every((id) => this.participantSet.has(id));
    this.participantSet = next;
    this.view = view;
    const running = this.running;
    if (!same && running !== null && running.phase !== 'commit') this.fail(running, `the view changed to ${view}`, actions);
    return actions;
  }

  // ---- internals ----

  private start(now: number, actions: CoordinatorAction[]): void {
    const checkpoint = ++this.last;
    const participants = [...this.participantSet].sort();
    this.running = {
      checkpoint,
      startedMs: now,
      deadlineMs: now + this.ackTimeoutMs,
      askAgainAtMs: now + this.askAgainMs,
      phase: 'acks',
      waiting: new Set(participants),
      objects: new Map(),
      uploaded: [],
      instances: null,
      channels: [],
      manifest: null,
    };
    // Scheduled from the start, so a slow or failed checkpoint does not push the next ones back.
    this.nextStartMs = now + this.intervalMs;
    actions.push({ type: 'start', checkpoint, participants });
  }

  private writeManifest(running: Running, actions: CoordinatorAction[]): void {
    const previous = this.retainedManifests.at(-1) ?? null;
    const objects: string[] = [];
    for (let group = 0; group < this.keyGroups; group++) {
      const key = running.objects.get(group);
      if (key === undefined) {
        this.fail(running, `key group ${group} was acknowledged by no process`, actions);
        return;
      }
      if (key === null) {
        if (previous === null) {
          this.fail(running, `key group ${group} was reported unchanged, but no checkpoint has committed yet`, actions);
          return;
        }
        objects.push(previous.objects[group]!);
      } else {
        objects.push(key);
      }
    }
    const kept = this.retain > 1 ? this.retainedManifests.slice(-(this.retain - 1)) : [];
    // Counts: reported for new images, 0 for empty key groups, the previous manifest's for unchanged ones.
    const counted = running.instances;
    const instances =
      counted === null
        ? undefined
        : objects.map((key, group) => counted.get(group) ?? (key === '' ? 0 : running.objects.get(group) === null ? (previous?.instances?.[group] ?? -1) : -1));
    running.manifest = {
      version: CHECKPOINT_MANIFEST_VERSION,
      checkpoint: running.checkpoint,
      term: this.term,
      view: this.view,
      keyGroups: this.keyGroups,
      hash: KEY_GROUP_HASH,
      objects,
      channels: running.channels,
      retained: kept.map((manifest) => ({ checkpoint: manifest.checkpoint, term: manifest.term })),
      ...(instances === undefined ? {} : { instances }),
    };
    running.phase = 'manifest';
    actions.push({ type: 'write-manifest', checkpoint: running.checkpoint, key: this.manifestKey(running.checkpoint, this.term), manifest: running.manifest });
  }

  private fail(running: Running, reason: string, actions: CoordinatorAction[]): void {
    for (const key of running.uploaded) this.garbage.add(key);
    // A manifest or commit write may have landed (or still land): collect them with the rest.
    if (running.phase !== 'acks') this.garbage.add(this.manifestKey(running.checkpoint, this.term));
    if (running.phase === 'commit') this.garbage.add(commitKey(this.term, running.checkpoint));
    this.running = null;
    actions.push({ type: 'failed', checkpoint: running.checkpoint, reason });
  }
}
