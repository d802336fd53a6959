/**
 * A shard: one worker thread that owns a set of key groups and runs their instances.
 *
 * Its loop, one turn at a time: drain the input rings, deliver the messages it sent to itself, fire due
 * delayed messages, then publish everything it wrote to other threads in one batch per ring. When all
 * inputs are empty it parks on its doorbell; a Node timer wakes it for the next delayed message.
 *
 * Each instance handles one message at a time, in arrival order. A synchronous handler runs to the end
 * inside the turn and leaves no trace in the busy table; an async one marks its instance busy, and the
 * messages that arrive meanwhile wait in that instance's queue while other instances go on.
 *
 * Whatever a handler throws (or whatever goes wrong applying its effects) becomes a dead letter and its
 * instance goes on with its next message: nothing a handler does may stop the shard or wedge an address.
 */
import { formatAddress } from '../../lib/address.js';
import { StatecraftError, UnknownFunctionTypeError } from '../../lib/errors.js';
import { BARRIER_BYTES, EnvelopeDecoder, EnvelopeKind, egressLengthMax, invokeLengthMax, readBarrier, readKeyGroup, writeBarrier, writeEgress, writeInvoke } from '../../lib/envelope.js';
import { DEAD_LETTERS_EGRESS, DEAD_LETTER_TYPENAME, type DeadLetter, type FunctionDefinition } from '../../lib/function.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { Message } from '../../lib/message.js';
import { TypedValue } from '../../lib/typed-value.js';
import { encodeUtf8, truncateUtf8 } from '../../lib/utf8.js';
import { AddressQueue, FunctionRuntime } from './function-runtime.js';
import { Effect, EffectKind, Invocation, isThenable, type InvocationLimits } from '../../lib/invocation.js';
import { Inbox, MAIN_THREAD, Outbox, Stat, ThreadStats, type MailboxLayout } from '../rings/mailbox.js';
import { Metric, ThreadMetrics } from '../rings/metrics.js';
import type { RecordVisitor } from '../rings/spsc-ring.js';
import { StateStore, type RecordLayout } from '../keygroups/state-store.js';
import { EndpointTable, type EndpointSpec } from '../remote/remote-endpoints.js';
import { RemoteFunction } from '../remote/remote-function.js';
import { callEndpoint, type AttemptError } from '../remote/remote-client.js';
import { RemoteFunctionError } from '../../lib/errors.js';
import { TimerQueue } from '../keygroups/timer-queue.js';
import { HANDOVER_VERSION, decodeExport, encodeExport, type ExportedTimer, type KeyGroupExport } from '../keygroups/handover.js';
import { primitiveType } from '../../lib/types.js';
import { ProducerMark } from '../keygroups/producer-marks.js';
import { BarrierTracker, type BarrierAction } from '../checkpoint/barrier-tracker.js';

/** An egress record held until the checkpoint it belongs to commits. */
interface PendingEgress {
  /** Stable per key group: with the key group, the record's id. */
  seq: number;
  /** The first checkpoint that covers it: released when that one (or a later one) commits. */
  checkpoint: number;
  /** The egress envelope, carrying `seq`. */
  bytes: Uint8Array;
}

/** A shard's local snapshot of one checkpoint: taken at its first barrier, written once every input is aligned. */
interface OpenSnapshot {
  checkpoint: number;
  /** Key groups this shard owned at the cut. */
  owned: number[];
  /** Key groups changed since their last committed object, captured at the cut. */
  parts: Map<number, KeyGroupExport & { egress: [number, Uint8Array][]; egressSeq: number }>;
  /** Why this shard's part cannot be used (a message in flight at the cut left with a moving key group). */
  broken: string | null;
  /** The shard's generation at the cut: a part finished after a recovery is dropped. */
  generation: number;
}

/** A shard's part of a checkpoint, ready for upload (see shard-worker.ts). */
export interface CheckpointPart {
  checkpoint: number;
  /** The recovery generation the snapshot was taken in (it names the uploads). */
  generation: number;
  /** Per owned key group: its new object, '' when it holds nothing, or null when unchanged. */
  keyGroups: [number, Uint8Array | '' | null][];
  /** Messages recorded in flight on this shard's input channels (null: none). */
  channel: Uint8Array[] | null;
  error: string | null;
}

export interface ShardConfig {
  readonly thread: number;
  readonly layout: MailboxLayout;
  /** int32 per key group: the thread that owns it. */
  readonly routing: SharedArrayBuffer;
  readonly metrics: SharedArrayBuffer;
  readonly keyGroups: number;
  readonly limits: InvocationLimits;
  readonly definitions: readonly FunctionDefinition[];
  /** Called for errors that are not the handler's (a bug in the runtime), and for rate-limited notices. */
  readonly log?: (line: string) => void;
  /**
   * Checkpoints on: barriers are tracked, egress records wait for the checkpoint that covers them, and
   * each completed local snapshot is handed here (encoded) for upload.
   */
  readonly onCheckpointPart?: (part: CheckpointPart) => void;
  /** Remote function types: where they are served (see remote-endpoints.ts). */
  readonly endpoints?: readonly EndpointSpec[];
  /** Messages one remote address may have waiting before more are dead-lettered. Default 100,000. */
  readonly remoteBacklogMax?: number;
}

/** A message waiting in the timer queue. */
class DelayedMessage {
  constructor(
    readonly targetTypename: string,
    readonly targetId: string,
    readonly callerTypename: string,
    readonly callerId: string,
    readonly value: TypedValue,
    /** Key group of the sender: the timer belongs to the sender's state. */
    readonly senderKeyGroup: number,
  ) {}
}

const RECORDS_PER_RING_PER_TURN = 2048;
const LOCAL_PER_TURN = 4096;
const TIMERS_PER_TURN = 4096;
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_KEY_GROUPS_PER_TICK = 64;
const NOTICE_INTERVAL_MS = 5000;
/** Node fires a longer setTimeout after 1 ms instead: longer delays are armed in steps. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;
/** Dead letters carry at most this much of the error's message (a handler may throw megabytes). */
const DEAD_LETTER_REASON_BYTES_MAX = 4096;
const DEAD_LETTER_NAME_BYTES_MAX = 256;
/** A smaller cut, when ids make the dead letter too long for a ring record even so. */
const DEAD_LETTER_SHORT_BYTES_MAX = 256;
const NOTICE_REASON_BYTES_MAX = 500;
/** Client sessions remembered per key group (the oldest first seen is forgotten first). */
const PRODUCER_MARKS_PER_KEY_GROUP_MAX = 10_000;
const REMOTE_BACKLOG_MAX_DEFAULT = 100_000;
/** Missing-state rounds one batch may take (a function asking again for what it was given is broken). */
const REMOTE_NEGOTIATION_ROUNDS_MAX = 4;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * The timer queue's key for a sender's cancellation token. Ids and tokens may hold any character, so
 * the id's length is part of the key: a plain separator would let ("a\0b", "c") and ("a", "b\0c") collide.
 * Type names cannot hold \0.
 */
function tokenKey(typename: string, id: string, token: string): string {
  return `${typename}\u0000${id.length}\u0000${id}${token}`;
}


/** What a dead letter says about a thrown value. Never throws, whatever the handler threw (a null-prototype object, a hostile Proxy). */
function describeThrown(thrown: unknown): { code: string; name: string; message: string } {
  let code = 'SC_ERR_HANDLER';
  let name = 'Error';
  let message: string;
  try {
    if (thrown instanceof StatecraftError && typeof thrown.code === 'string') code = thrown.code;
    if (thrown instanceof Error) {
      name = String(thrown.name);
      message = String(thrown.message);
    } else {
      message = String(thrown);
    }
  } catch {
    message = `the handler threw ${typeof thrown === 'object' ? 'an object' : `a ${typeof thrown}`} that cannot be turned into a string; throw an Error instead`;
  }
  return {
    code,
    name: truncateUtf8(name, DEAD_LETTER_NAME_BYTES_MAX),
    message: truncateUtf8(message, DEAD_LETTER_REASON_BYTES_MAX, `… [truncated: the message had ${message.length} characters]`),
  };
}

export class Shard implements RecordVisitor {
  readonly thread: number;
  private readonly functions = new Map<string, FunctionRuntime>();
  private readonly functionNames: string[];
  /** Remote function types seen so far (created on first use from the endpoint table). */
  private readonly remotes = new Map<string, RemoteFunction>();
  private readonly endpoints: EndpointTable | null;
  private readonly remoteBacklogMax: number;
  /** Per function index (embedded first, then remote types as they are first seen). */
  private readonly layouts: RecordLayout[];
  private readonly store: StateStore;
  private readonly timers = new TimerQueue<DelayedMessage>();
  private readonly outbox: Outbox;
  private readonly inbox: Inbox;
  private readonly decoder = new EnvelopeDecoder();
  private readonly routing: Int32Array;
  private readonly stats: ThreadStats;
  private readonly metrics: ThreadMetrics;
  private readonly keyGroups: number;
  private readonly limits: InvocationLimits;
  private readonly log: (line: string) => void;

  /** Messages this shard sent to its own instances, delivered next turn (never recursively). */
  private local: Message[] = [];
  private localHead = 0;
  private queued = 0;
  private inFlight = 0;
  /** Messages waiting for remote requests in flight (not in `queued`: a slow endpoint must not throttle the node's clients). */
  private remoteQueued = 0;
  /** Remote requests in flight (one per busy address; not in the backlog clients wait on either). */
  private remoteInFlight = 0;
  private ingressReceived = 0;
  private nowMs = Date.now();
  private inTurn = false;
  private parked = false;
  private flushScheduled = false;
  private stopping = false;
  private timerHandle: NodeJS.Timeout | null = null;
  private timerDueMs = Infinity;
  /** Async invocations running, per key group (a key group is exported only when it has none). */
  private readonly runningByKeyGroup = new Map<number, number>();
  /** Key groups being released (exported for a hand-over), and what waits for their invocations. */
  private readonly releasing = new Set<number>();
  /** While a release drains the input rings: the key groups whose messages go into the export. */
  private capturing: ReadonlySet<number> | null = null;
  /** Captured envelopes and their key groups, alternating. */
  private captured: (Uint8Array | number)[] = [];
  /** Per key group: client session → last sequence number applied. */
  private readonly producerMarks: (Map<string, ProducerMark> | undefined)[] = [];
  /** Key groups adopted before the routing table points here. */
  private readonly adopted = new Set<number>();
  private releaseWaiters: (() => void)[] = [];
  /** Sweeps expired state while the loop is parked (turns sweep too, but an idle shard has no turns). */
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweepCursor = 0;
  private lastSweepMs = 0;
  private lastNoticeMs = 0;
  private suppressedNotices = 0;
  // ---- checkpoints (docs/checkpoints.md) ----
  private readonly tracker: BarrierTracker<Uint8Array, number> | null;
  private readonly onCheckpointPart: ((part: CheckpointPart) => void) | null;
  /** 1 for a key group changed since the last object of it a committed checkpoint holds. */
  private readonly dirty: Uint8Array;
  private snapshot: OpenSnapshot | null = null;
  /** Checkpoints snapshotted here whose outcome is not known yet, with the key groups they took as changed. */
  private readonly outcomePending = new Map<number, number[]>();
  /** The newest checkpoint this shard took a snapshot for: egress emitted now belongs to the next one. */
  private snapshotsTaken = 0;
  private readonly pendingEgress: (PendingEgress[] | undefined)[] = [];
  private readonly egressSeq: number[];
  private pendingEgressCount = 0;
  /** True while a recovery drains the input rings into nothing. */
  private discarding = false;
  /** True from a reset or a restore until resume(): the loop runs nothing. */
  private frozen = false;
  private readonly unfreezeWaiters: (() => void)[] = [];
  /** Messages queued in restored key groups, delivered by resume() once every shard has loaded. */
  private restoredQueued: Message[] = [];
  /** Names this shard's uploads and fences parts of checkpoints taken before a recovery. */
  generation = 0;
  private readonly threads: number;
  private readonly counters = {
    invocations: 0,
    failures: 0,
    deadLetters: 0,
    delayedScheduled: 0,
    delayedFired: 0,
    delayedCancelled: 0,
    egress: 0,
    messagesIn: 0,
    duplicates: 0,
    remoteRequests: 0,
  };

  constructor(config: ShardConfig) {
    this.thread = config.thread;
    this.keyGroups = config.keyGroups;
    this.limits = config.limits;
    this.log = config.log ?? ((line) => process.stderr.write(line + '\n'));
    config.definitions.forEach((definition, index) => {
      this.functions.set(definition.typename, new FunctionRuntime(index, definition));
    });
    this.functionNames = [...this.functions.keys()];
    this.endpoints = config.endpoints !== undefined && config.endpoints.length > 0 ? new EndpointTable(config.endpoints) : null;
    this.remoteBacklogMax = config.remoteBacklogMax ?? REMOTE_BACKLOG_MAX_DEFAULT;
    this.layouts = [...this.functions.values()].map((runtime) => runtime.layout);
    this.store = new StateStore(config.keyGroups, this.layouts);
    this.outbox = new Outbox(config.layout, config.thread);
    this.inbox = new Inbox(config.layout, config.thread, this);
    this.routing = new Int32Array(config.routing);
    this.stats = new ThreadStats(config.layout);
    this.metrics = new ThreadMetrics(config.metrics, config.layout.threads);
    this.onCheckpointPart = config.onCheckpointPart ?? null;
    this.threads = config.layout.threads;
    const inputs: number[] = [];
    for (let thread = 0; thread < config.layout.threads; thread++) if (thread !== config.thread) inputs.push(thread);
    this.tracker = this.onCheckpointPart === null ? null : new BarrierTracker<Uint8Array, number>({ inputs });
    // Nothing is committed yet: the first checkpoint writes every key group.
    this.dirty = new Uint8Array(config.keyGroups).fill(1);
    this.egressSeq = new Array<number>(config.keyGroups).fill(0);
  }

  /** Runs turns until `stop()`; parks when idle. */
  async run(): Promise<void> {
    if (this.endpoints !== null || [...this.functions.values()].some((runtime) => runtime.layout.hasExpiry)) {
      this.sweepTimer = setInterval(this.sweepWhileIdle, SWEEP_INTERVAL_MS);
      this.sweepTimer.unref();
    }
    while (!this.stopping) {
      if (this.frozen) {
        // A restore is loading key groups: nothing runs until every shard has loaded (resume()).
        await new Promise<void>((resolve) => this.unfreezeWaiters.push(resolve));
        continue;
      }
      const worked = this.turn();
      if (worked > 0) {
        await yieldToEventLoop();
        continue;
      }
      this.parked = true;
      // With records stuck in overflow queues, retry the flush every millisecond until they drain.
      await this.inbox.park(this.outbox.hasOverflow ? 1 : Infinity);
      this.parked = false;
    }
    if (this.timerHandle) clearTimeout(this.timerHandle);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.outbox.flush();
  }

  stop(): void {
    this.stopping = true;
    for (const resolve of this.unfreezeWaiters.splice(0)) resolve();
    this.inbox.wake();
  }

  /** One turn; returns how much work it found. */
  turn(): number {
    if (this.frozen) return 0;
    this.inTurn = true;
    this.nowMs = Date.now();
    let work = this.inbox.poll(RECORDS_PER_RING_PER_TURN);
    work += this.drainLocal();
    work += this.fireTimers();
    if (this.nowMs - this.lastSweepMs >= SWEEP_INTERVAL_MS) this.sweep();
    this.inTurn = false;
    this.flush();
    return work;
  }

  /** A record from an input ring. */
  visit(data: Uint8Array, offset: number, length: number, source: number): void {
    if (source === MAIN_THREAD) this.ingressReceived = (this.ingressReceived + 1) | 0;
    if (this.discarding) return;
    const kind = data[offset];
    if (kind === EnvelopeKind.Invoke) {
      const keyGroup = readKeyGroup(data, offset);
      const owner = this.routing[keyGroup];
      // In flight at the cut of the open checkpoint: recorded as channel state (and processed as usual).
      const recording = this.snapshot !== null && this.tracker!.isRecording(source);
      if (this.capturing !== null && this.capturing.has(keyGroup)) {
        if (recording) this.snapshot!.broken = `key group ${keyGroup} was handed over during the checkpoint`;
        // Sent before its key group started moving: it goes with the hand-over, ahead of what waits.
        this.captured.push(data.slice(offset, offset + length));
        this.captured.push(keyGroup);
        return;
      }
      if (owner !== this.thread && owner !== undefined && !this.ownsAdopted(keyGroup)) {
        // Its key group moved (handed over, or to another node) while the message was on its way.
        if (recording) this.tracker!.onMessage(source, data.slice(offset, offset + length));
        this.outbox.writeBytes(owner, data, offset, length);
        this.scheduleFlush();
        return;
      }
      let message: Message;
      try {
        message = this.decoder.decodeInvoke(data, offset, length);
      } catch (error) {
        this.notice(`shard ${this.thread}: dropped an undecodable envelope (${(error as Error).message}); this is a bug, please report it`);
        return;
      }
      this.counters.messagesIn++;
      if (message.producer !== null && !this.acceptProducerMark(message)) return;
      // Recorded only once accepted: a repeat dropped here must not come back with a restore.
      if (recording) this.tracker!.onMessage(source, data.slice(offset, offset + length));
      this.deliver(message);
      return;
    }
    if (kind === EnvelopeKind.Barrier) {
      if (this.tracker !== null) this.performBarrierActions(this.tracker.onBarrier(source, readBarrier(data, offset)));
      return;
    }
    this.notice(`shard ${this.thread}: ignored an envelope of unknown kind ${kind}`);
  }

  /** Hands a message to its instance: now if the instance is idle, else after the messages before it. */
  deliver(message: Message): void {
    this.dirty[message.keyGroup] = 1;
    const runtime = this.functions.get(message.targetTypename);
    if (runtime === undefined) {
      const remote = this.remoteFor(message.targetTypename);
      if (remote !== undefined) this.deliverRemote(remote, message);
      else this.deadLetter(message, new UnknownFunctionTypeError(message.targetTypename, this.functionNames));
      return;
    }
    const queue = runtime.busy.get(message.targetId);
    if (queue !== undefined) {
      queue.push(message);
      this.queued++;
      return;
    }
    this.start(runtime, message, null);
  }

  /** Starts an invocation; returns true when it went async (its instance stays busy). Never throws. */
  private start(runtime: FunctionRuntime, message: Message, queue: AddressQueue | null): boolean {
    const invocation = new Invocation<FunctionRuntime>(runtime, message, this.loadRecord, this.limits, this.nowMs);
    this.counters.invocations++;
    let result: unknown;
    let async: boolean;
    try {
      result = runtime.definition.fn(invocation, message);
      async = isThenable(result);
    } catch (error) {
      this.fail(invocation, error);
      return false;
    }
    if (!async) {
      this.settle(invocation, undefined, false);
      return false;
    }
    if (queue === null) {
      queue = new AddressQueue();
      runtime.busy.set(message.targetId, queue);
    }
    queue.current = message;
    this.inFlight++;
    this.runningByKeyGroup.set(message.keyGroup, (this.runningByKeyGroup.get(message.keyGroup) ?? 0) + 1);
    const busyQueue = queue;
    // Promise.resolve: a hand-made thenable may throw from then(), or call both callbacks, or twice.
    Promise.resolve(result as PromiseLike<unknown>).then(
      () => this.finishAsync(invocation, busyQueue, undefined, false),
      (error: unknown) => this.finishAsync(invocation, busyQueue, error, true),
    );
    return true;
  }

  /** Ends an async invocation and starts the next message its instance has waiting. Never throws. */
  private finishAsync(invocation: Invocation<FunctionRuntime>, queue: AddressQueue, error: unknown, failed: boolean): void {
    if (queue.current !== invocation.message) return; // dropped by a restore while it ran
    queue.current = null;
    this.inFlight--;
    this.nowMs = Date.now();
    this.settle(invocation, error, failed);
    const runtime = invocation.runtime;
    const id = invocation.message.targetId;
    const keyGroup = invocation.message.keyGroup;
    if (this.leftWithKeyGroup(keyGroup, this.endRun(keyGroup), queue, runtime.busy, id, false)) return;
    while (queue.length > 0) {
      const next = queue.shift();
      this.queued--;
      if (this.start(runtime, next, queue)) {
        this.scheduleFlush();
        return;
      }
    }
    runtime.busy.delete(id);
    this.scheduleFlush();
  }

  // ---- remote functions (StateFun's request-reply protocol over HTTP) ----

  /** The remote function serving `typename`, created when the endpoint table first resolves it. */
  private remoteFor(typename: string): RemoteFunction | undefined {
    let remote = this.remotes.get(typename);
    if (remote !== undefined || this.endpoints === null) return remote;
    const endpoint = this.endpoints.resolve(typename);
    if (endpoint === null) return undefined;
    remote = new RemoteFunction(this.layouts.length, typename, endpoint);
    this.layouts.push(remote.layout);
    this.remotes.set(typename, remote);
    return remote;
  }

  /** Every function type of this shard, embedded and remote (for hand-overs, snapshots and resets). */
  private allRuntimes(): (FunctionRuntime | RemoteFunction)[] {
    return [...this.functions.values(), ...this.remotes.values()];
  }

  /** One request in flight per address: a message for a busy address waits for the next batch. */
  private deliverRemote(remote: RemoteFunction, message: Message): void {
    const queue = remote.busy.get(message.targetId);
    if (queue === undefined) {
      const fresh = new AddressQueue();
      remote.busy.set(message.targetId, fresh);
      this.startBatch(remote, fresh, [message]);
      return;
    }
    if (queue.length >= this.remoteBacklogMax) {
      this.deadLetter(
        message,
        new RemoteFunctionError(
          'SC_ERR_REMOTE_BACKLOG_FULL',
          `${message.targetTypename}/${message.targetId} has ${queue.length} messages waiting for ${remote.endpoint.url}: the endpoint is slower than this address's load; scale it out, or raise --remote-backlog-max`,
        ),
      );
      return;
    }
    queue.push(message);
    this.remoteQueued++;
  }

  private startBatch(remote: RemoteFunction, queue: AddressQueue, batch: Message[]): void {
    const token = {};
    queue.batch = batch;
    queue.request = token;
    this.remoteInFlight++;
    const keyGroup = batch[0]!.keyGroup;
    this.runningByKeyGroup.set(keyGroup, (this.runningByKeyGroup.get(keyGroup) ?? 0) + 1);
    void this.callRemote(remote, queue, token, batch);
  }

  /** Sends a batch (again after a missing-state reply) and applies the answer; never throws. */
  private async callRemote(remote: RemoteFunction, queue: AddressQueue, token: object, batch: Message[]): Promise<void> {
    const first = batch[0]!;
    const keyGroup = first.keyGroup;
    const id = first.targetId;
    let failure: unknown = null;
    try {
      for (let round = 1; ; round++) {
        const sent = remote.layout.registered;
        const body = remote.encodeRequest(id, this.store.get(keyGroup, remote.index, id), batch, Date.now());
        const payloadMax = remote.endpoint.spec.payloadMaxBytes;
        if (body.length > payloadMax) {
          if (batch.length > 1) {
            // Too large for the endpoint in one request: the second half waits for the next batch.
            const rest = batch.splice(Math.ceil(batch.length / 2));
            queue.unshiftAll(rest);
            this.remoteQueued += rest.length;
            round--;
            continue;
          }
          throw new RemoteFunctionError(
            'SC_ERR_REMOTE_CALL',
            `a request for ${remote.typename}/${id} with this message would have ${body.length} bytes, over the endpoint's payload limit of ${payloadMax} (payload_max_bytes); raise the limit or send smaller values`,
          );
        }
        const { body: answer } = await callEndpoint(remote.endpoint, body, () => this.counters.remoteRequests++);
        if (queue.request !== token) return; // a recovery dropped this batch meanwhile
        const outcome = remote.interpret(answer, this.limits);
        if (outcome.kind === 'result') {
          this.nowMs = Date.now();
          const record = this.store.get(keyGroup, remote.index, id);
          const next = remote.layout.apply(record, outcome.mutations, this.nowMs);
          if (next !== record) this.store.set(keyGroup, remote.index, id, next);
          this.dirty[keyGroup] = 1;
          this.counters.invocations += batch.length;
          this.applyEffects(outcome.effects, remote.typename, id, keyGroup);
          break;
        }
        // Another address's answer may have registered these meanwhile: only asking again for what this
        // very request carried means the function is broken.
        const changed = remote.layout.register(outcome.missing);
        const askedForSent = outcome.missing.every((spec) => sent.some((known) => known.name === spec.name && known.typename === spec.typename && known.expireMode === spec.expireMode && known.expireAfterMs === spec.expireAfterMs));
        if ((!changed && askedForSent) || round >= REMOTE_NEGOTIATION_ROUNDS_MAX) {
          throw new RemoteFunctionError(
            'SC_ERR_REMOTE_RESPONSE',
            `${remote.endpoint.url} asked again for state it was given (${outcome.missing.map((spec) => spec.name).join(', ')}) after ${round} rounds; check that the function's value specs do not change between requests`,
          );
        }
      }
    } catch (error) {
      if (queue.request !== token) return;
      failure = error;
    }
    this.finishBatch(remote, queue, batch, failure);
  }

  /** Ends a batch: dead letters if it failed, then the next batch of what waits, or the address goes idle. */
  private finishBatch(remote: RemoteFunction, queue: AddressQueue, batch: Message[], failure: unknown): void {
    queue.batch = null;
    queue.request = null;
    this.remoteInFlight--;
    this.nowMs = Date.now();
    const first = batch[0]!;
    const keyGroup = first.keyGroup;
    if (failure !== null) {
      if ((failure as AttemptError).code === 'SC_ERR_REMOTE_HANDLER' && batch.length > 1) {
        // A handler threw somewhere in the batch: send its messages one by one, so only the one that
        // throws becomes a dead letter (as for an embedded function).
        queue.unshiftAll(batch);
        queue.singles += batch.length;
        this.remoteQueued += batch.length;
      } else {
        this.counters.failures += batch.length;
        for (const message of batch) this.deadLetter(message, failure);
      }
    }
    if (this.leftWithKeyGroup(keyGroup, this.endRun(keyGroup), queue, remote.busy, first.targetId, true)) return;
    if (queue.length > 0) {
      const size = queue.singles > 0 ? 1 : remote.batchMax;
      const next = queue.take(size);
      if (queue.singles > 0) queue.singles--;
      this.remoteQueued -= next.length;
      this.startBatch(remote, queue, next);
    } else {
      queue.singles = 0;
      remote.busy.delete(first.targetId);
    }
    this.scheduleFlush();
  }

  /** An async invocation or a remote batch of `keyGroup` ended: returns how many still run in it. */
  private endRun(keyGroup: number): number {
    const running = (this.runningByKeyGroup.get(keyGroup) ?? 1) - 1;
    if (running === 0) this.runningByKeyGroup.delete(keyGroup);
    else this.runningByKeyGroup.set(keyGroup, running);
    return running;
  }

  /**
   * After an async invocation or a remote batch: when its key group is leaving this shard, what waits
   * for the address goes with it (a release exports it) or, if nothing releases it, on to its new
   * owner. True when the key group left.
   */
  private leftWithKeyGroup(keyGroup: number, running: number, queue: AddressQueue, busy: Map<string, AddressQueue>, id: string, remote: boolean): boolean {
    if (this.routing[keyGroup] === this.thread || this.ownsAdopted(keyGroup)) return false;
    if (!this.releasing.has(keyGroup)) {
      while (queue.length > 0) {
        this.forward(queue.shift());
        if (remote) this.remoteQueued--;
        else this.queued--;
      }
      queue.singles = 0;
      busy.delete(id);
    }
    if (running === 0) for (const wake of this.releaseWaiters.splice(0)) wake();
    this.scheduleFlush();
    return true;
  }

  private readonly loadRecord = (invocation: Invocation<FunctionRuntime>): unknown =>
    this.store.get(invocation.message.keyGroup, invocation.runtime.index, invocation.message.targetId);

  /**
   * Commits a successful invocation, or dead-letters a failed one. Never throws: should committing fail
   * (a runtime bug), that error becomes the dead letter; effects applied before it stay applied.
   */
  private settle(invocation: Invocation<FunctionRuntime>, error: unknown, failed: boolean): void {
    if (!failed) {
      try {
        this.commit(invocation);
        return;
      } catch (commitError) {
        error = commitError;
      }
    }
    this.fail(invocation, error);
  }

  /** Applies a successful invocation: state first, then its messages in the order the handler sent them. */
  private commit(invocation: Invocation<FunctionRuntime>): void {
    invocation.closed = true;
    const runtime = invocation.runtime;
    const message = invocation.message;
    this.dirty[message.keyGroup] = 1;
    const layout = runtime.layout;
    if (invocation.staged !== null || (layout.hasCallExpiry && layout.count > 0)) {
      const record = invocation.touchedState
        ? invocation.record
        : this.store.get(message.keyGroup, runtime.index, message.targetId);
      const next = layout.apply(record, invocation.staged, this.nowMs);
      if (next !== record) this.store.set(message.keyGroup, runtime.index, message.targetId, next);
    }
    if (invocation.effects !== null) this.applyEffects(invocation.effects, message.targetTypename, message.targetId, message.keyGroup);
  }

  /** Sends, schedules, cancels and emits what an invocation asked for, in its order. */
  private applyEffects(effects: readonly Effect[], selfTypename: string, selfId: string, keyGroup: number): void {
    for (let index = 0; index < effects.length; index++) {
      const effect = effects[index]!;
      switch (effect.kind) {
        case EffectKind.Send:
          this.route(effect.targetTypename, effect.targetId, selfTypename, selfId, effect.value!);
          break;
        case EffectKind.SendAfter: {
          const delayed = new DelayedMessage(effect.targetTypename, effect.targetId, selfTypename, selfId, effect.value!, keyGroup);
          const key = effect.cancellationToken === null ? null : tokenKey(selfTypename, selfId, effect.cancellationToken);
          this.timers.schedule(this.nowMs + effect.delayMs, delayed, key);
          this.counters.delayedScheduled++;
          this.armTimer();
          break;
        }
        case EffectKind.Cancel:
          this.counters.delayedCancelled += this.timers.cancel(tokenKey(selfTypename, selfId, effect.cancellationToken!));
          break;
        case EffectKind.Egress:
          this.emitEgress(effect.targetTypename, selfTypename, selfId, keyGroup, effect.value!);
          break;
      }
    }
  }

  /** Discards a failed invocation's effects and reports it on the dead-letter egress. */
  private fail(invocation: Invocation<FunctionRuntime>, error: unknown): void {
    invocation.closed = true;
    this.counters.failures++;
    this.deadLetter(invocation.message, error);
  }

  /** Reports a message that could not be handled on the dead-letter egress. Never throws. */
  private deadLetter(message: Message, error: unknown): void {
    this.counters.deadLetters++;
    const thrown = describeThrown(error);
    const record: DeadLetter = {
      address: { typename: message.targetTypename, id: message.targetId },
      caller: message.callerTypename === null ? null : { typename: message.callerTypename, id: message.callerId! },
      messageType: message.valueTypeName,
      code: thrown.code,
      error: thrown.name,
      reason: thrown.message,
      at: new Date(this.nowMs).toISOString(),
    };
    const address = formatAddress(record.address);
    try {
      let value = new TypedValue(DEAD_LETTER_TYPENAME, undefined, encodeUtf8(JSON.stringify(record)));
      if (egressLengthMax(DEAD_LETTERS_EGRESS, message.targetTypename, message.targetId, value) > this.outbox.recordBytesMax) {
        // Long ids (escaped in JSON) on top of the reason: shorten both so the record fits a ring.
        record.address = { typename: record.address.typename, id: truncateUtf8(record.address.id, DEAD_LETTER_SHORT_BYTES_MAX) };
        if (record.caller !== null) record.caller = { typename: record.caller.typename, id: truncateUtf8(record.caller.id, DEAD_LETTER_SHORT_BYTES_MAX) };
        record.reason = truncateUtf8(record.reason, DEAD_LETTER_SHORT_BYTES_MAX);
        value = new TypedValue(DEAD_LETTER_TYPENAME, undefined, encodeUtf8(JSON.stringify(record)));
      }
      this.emitEgress(DEAD_LETTERS_EGRESS, message.targetTypename, message.targetId, message.keyGroup, value);
    } catch (emitError) {
      this.notice(`shard ${this.thread}: could not emit the dead letter for ${truncateUtf8(address, NOTICE_REASON_BYTES_MAX)} (${describeThrown(emitError).message}); this is a bug, please report it`);
      return;
    }
    this.notice(
      `dead letter for ${truncateUtf8(address, NOTICE_REASON_BYTES_MAX)}: ${record.code}: ${truncateUtf8(record.reason, NOTICE_REASON_BYTES_MAX)} (subscribe to egress "${DEAD_LETTERS_EGRESS}" for all of them)`,
    );
  }

  /** Sends a message to the shard that owns its key group (this one: next turn, without encoding). */
  private route(typename: string, id: string, callerTypename: string, callerId: string, value: TypedValue): void {
    const keyGroup = keyGroupOf(id, this.keyGroups);
    const to = this.routing[keyGroup]!;
    if (to === this.thread) {
      this.dirty[keyGroup] = 1;
      this.local.push(new Message(keyGroup, typename, id, callerTypename, callerId, value.typename, value.value, value.bytes));
      if (this.parked) this.inbox.wake();
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(to, invokeLengthMax(typename, id, callerTypename, callerId, value));
    const end = writeInvoke(outbox.target, offset, keyGroup, typename, id, callerTypename, callerId, value);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  private emitEgress(egress: string, sourceTypename: string, sourceId: string, keyGroup: number, value: TypedValue): void {
    this.counters.egress++;
    if (this.tracker !== null) {
      // Exactly-once egress: held until a committed checkpoint covers the invocation that emitted it.
      this.dirty[keyGroup] = 1;
      const seq = this.egressSeq[keyGroup]!;
      this.egressSeq[keyGroup] = seq + 1;
      const buffer = new Uint8Array(egressLengthMax(egress, sourceTypename, sourceId, value));
      const end = writeEgress(buffer, 0, keyGroup, egress, sourceTypename, sourceId, value, seq);
      let pending = this.pendingEgress[keyGroup];
      if (pending === undefined) this.pendingEgress[keyGroup] = pending = [];
      pending.push({ seq, checkpoint: this.snapshotsTaken + 1, bytes: buffer.subarray(0, end) });
      this.pendingEgressCount++;
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(MAIN_THREAD, egressLengthMax(egress, sourceTypename, sourceId, value));
    const end = writeEgress(outbox.target, offset, keyGroup, egress, sourceTypename, sourceId, value);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  /**
   * A client event carries its session's sequence number for its key group: the key group remembers
   * the last one it applied per session, and drops an event it has applied already (re-sent after a
   * reconnect, possibly through another node). False for such a duplicate.
   */
  private acceptProducerMark(message: Message): boolean {
    const producer = message.producer!;
    let marks = this.producerMarks[message.keyGroup];
    if (marks === undefined) this.producerMarks[message.keyGroup] = marks = new Map();
    const mark = marks.get(producer.session);
    if (mark === undefined) {
      const fresh = new ProducerMark(0);
      fresh.accept(producer.seq);
      marks.set(producer.session, fresh);
      // Past the bound the oldest session first seen is forgotten (its next event starts a new mark).
      if (marks.size > PRODUCER_MARKS_PER_KEY_GROUP_MAX) marks.delete(marks.keys().next().value!);
      return true;
    }
    if (mark.accept(producer.seq)) return true;
    this.counters.duplicates++;
    return false;
  }

  /** The main thread has pointed the routing at these adopted key groups: the table decides from now on. */
  settleAdopted(keyGroups: readonly number[]): void {
    for (const keyGroup of keyGroups) this.adopted.delete(keyGroup);
  }

  /** True for a key group adopted here whose routing does not point here yet. */
  private ownsAdopted(keyGroup: number): boolean {
    if (this.adopted.size === 0 || !this.adopted.has(keyGroup)) return false;
    if (this.routing[keyGroup] === this.thread) {
      this.adopted.delete(keyGroup); // the routing caught up
      return true;
    }
    // Routing elsewhere after an adoption means a release moved it on (release clears it below).
    return !this.releasing.has(keyGroup);
  }

  /** Sends a decoded message on to its key group's current owner. */
  private forward(message: Message): void {
    const to = this.routing[message.keyGroup]!;
    if (to === this.thread || this.ownsAdopted(message.keyGroup)) {
      this.dirty[message.keyGroup] = 1;
      this.local.push(message);
      return;
    }
    const value = new TypedValue(message.valueTypeName, message.decoded, message.bytes);
    const outbox = this.outbox;
    const offset = outbox.reserve(to, invokeLengthMax(message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer));
    const end = writeInvoke(outbox.target, offset, message.keyGroup, message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  /**
   * Exports key groups for a hand-over: the caller has pointed their routing elsewhere already, so new
   * messages for them no longer reach this shard's instances. Waits for their running invocations, then
   * takes their state, the delayed messages their instances scheduled, and the messages queued for
   * them (those that waited behind an invocation first, then those sent from this shard and not yet
   * delivered), and forgets them.
   */
  async release(keyGroups: readonly number[]): Promise<{ keyGroup: number; bytes: Uint8Array }[]> {
    const frozenAt = Date.now();
    const wanted = new Set(keyGroups);
    if (this.snapshot !== null) this.snapshot.broken = 'key groups were handed over during the checkpoint';
    for (const keyGroup of wanted) {
      this.releasing.add(keyGroup);
      this.adopted.delete(keyGroup);
    }
    while ([...wanted].some((keyGroup) => this.runningByKeyGroup.has(keyGroup))) {
      await new Promise<void>((resolve) => this.releaseWaiters.push(resolve));
    }
    const exports = new Map<number, KeyGroupExport>();
    const exportOf = (keyGroup: number) => {
      let entry = exports.get(keyGroup);
      if (entry === undefined) {
        entry = { v: HANDOVER_VERSION, keyGroup, frozenAt, state: [], timers: [], queued: [] };
        exports.set(keyGroup, entry);
      }
      return entry;
    };
    for (const keyGroup of wanted) exportOf(keyGroup);
    for (const entry of this.timers.extract((delayed) => wanted.has(delayed.senderKeyGroup))) {
      const delayed = entry.payload;
      const bytes = delayed.value.bytes ?? primitiveType(delayed.value.typename)!.serialize(delayed.value.value as never);
      exportOf(delayed.senderKeyGroup).timers.push([
        entry.dueMs,
        entry.tokenKey,
        delayed.targetTypename,
        delayed.targetId,
        delayed.callerTypename,
        delayed.callerId,
        delayed.value.typename,
        bytes,
      ] satisfies ExportedTimer);
    }
    this.armTimer();
    for (const runtime of this.allRuntimes()) {
      const remote = runtime instanceof RemoteFunction;
      for (const [id, queue] of runtime.busy) {
        const keyGroup = keyGroupOf(id, this.keyGroups);
        if (!wanted.has(keyGroup)) continue;
        while (queue.length > 0) {
          exportOf(keyGroup).queued.push(this.encodeMessage(queue.shift()));
          if (remote) this.remoteQueued--;
          else this.queued--;
        }
        queue.singles = 0;
        runtime.busy.delete(id);
      }
    }
    // Messages already in the input rings were sent before the routing changed: older than anything
    // that now waits for the hand-over elsewhere, so they go in the export, after the queued ones.
    this.nowMs = Date.now();
    this.capturing = wanted;
    this.captured = [];
    for (let rounds = 0; rounds < 1000 && this.inbox.poll(RECORDS_PER_RING_PER_TURN) > 0; rounds++);
    this.capturing = null;
    for (let index = 0; index < this.captured.length; index += 2) {
      const bytes = this.captured[index] as Uint8Array;
      const message = this.decoder.decodeInvoke(bytes, 0, bytes.length);
      // Accepted here, on the key group's behalf: its marks travel with it.
      if (message.producer !== null && !this.acceptProducerMark(message)) continue;
      exportOf(this.captured[index + 1] as number).queued.push(bytes);
    }
    this.captured = [];
    const keep: Message[] = [];
    for (let index = this.localHead; index < this.local.length; index++) {
      const message = this.local[index]!;
      if (wanted.has(message.keyGroup)) exportOf(message.keyGroup).queued.push(this.encodeMessage(message));
      else keep.push(message);
    }
    this.local = keep;
    this.localHead = 0;
    for (const keyGroup of wanted) {
      const marks = this.producerMarks[keyGroup];
      if (marks !== undefined) {
        exportOf(keyGroup).marks = [...marks].map(([session, mark]) => [session, mark.highest, new Uint8Array(mark.seen.buffer.slice(0))]);
        this.producerMarks[keyGroup] = undefined;
      }
      if (this.tracker !== null) {
        const entry = exportOf(keyGroup);
        entry.egressSeq = this.egressSeq[keyGroup]!;
        const pending = this.pendingEgress[keyGroup];
        if (pending !== undefined) {
          entry.egress = pending.map((record) => [record.seq, record.bytes]);
          this.pendingEgressCount -= pending.length;
          this.pendingEgress[keyGroup] = undefined;
        }
      }
      const tables = this.store.takeKeyGroup(keyGroup);
      if (tables === undefined) continue;
      const state = exportOf(keyGroup).state;
      for (const runtime of this.allRuntimes()) {
        const table = tables[runtime.index];
        if (table !== undefined && table.size > 0) state.push([runtime.typename, [...table]]);
      }
    }
    for (const keyGroup of wanted) this.releasing.delete(keyGroup);
    this.flush();
    return [...exports.values()].map((entry) => ({ keyGroup: entry.keyGroup, bytes: encodeExport(entry) }));
  }

  /** Imports handed-over key groups: this shard owns them from now on. Returns how many instances came. */
  adopt(bodies: readonly (Uint8Array | KeyGroupExport)[], releasedUpTo = 0): number {
    this.nowMs = Date.now();
    let instances = 0;
    for (const body of bodies) {
      const handed = body instanceof Uint8Array ? decodeExport(body) : body;
      if (!Number.isInteger(handed.keyGroup) || handed.keyGroup < 0 || handed.keyGroup >= this.keyGroups) {
        throw new Error(`a hand-over for key group ${handed.keyGroup}, but there are ${this.keyGroups}`);
      }
      // The main thread points the routing here once every shard has adopted; until then this shard
      // treats the key group as its own, so what it imported is not sent away again.
      this.adopted.add(handed.keyGroup);
      this.dirty[handed.keyGroup] = 1;
      this.importEgress(handed, releasedUpTo);
      for (const [typename, entries] of handed.state) {
        const runtime = this.functions.get(typename) ?? this.remoteFor(typename);
        if (runtime === undefined) {
          this.notice(`shard ${this.thread}: a hand-over carried state of ${typename}, which this node does not run: dropped ${entries.length} instances. Run the same functions on every node.`);
          continue;
        }
        for (const [id, record] of entries) this.store.set(handed.keyGroup, runtime.index, id, record);
        instances += entries.length;
      }
      for (const [dueMs, key, targetTypename, targetId, callerTypename, callerId, valueTypename, bytes] of handed.timers) {
        const primitive = primitiveType(valueTypename);
        const value = primitive ? new TypedValue(valueTypename, primitive.deserialize(bytes), null) : new TypedValue(valueTypename, undefined, bytes);
        this.timers.schedule(dueMs, new DelayedMessage(targetTypename, targetId, callerTypename, callerId, value, handed.keyGroup), key);
      }
      if (handed.marks !== undefined && handed.marks.length > 0) {
        let marks = this.producerMarks[handed.keyGroup];
        if (marks === undefined) this.producerMarks[handed.keyGroup] = marks = new Map();
        for (const [session, highest, seen] of handed.marks) {
          const incoming = new ProducerMark(highest, new Uint32Array(Uint8Array.from(seen).buffer));
          const kept = marks.get(session);
          if (kept === undefined) marks.set(session, incoming);
          else kept.merge(incoming);
        }
      }
      // Queued messages passed the producer check where they were accepted.
      for (const envelope of handed.queued) this.deliver(this.decoder.decodeInvoke(envelope, 0, envelope.length));
    }
    this.armTimer();
    this.flush();
    if (this.parked) this.inbox.wake();
    return instances;
  }

  /**
   * Takes in a key group's unreleased egress records: those of a checkpoint already committed
   * (`releasedUpTo`) go out at once, with their ids; a repeat of a record released before is dropped
   * by subscribers.
   */
  private importEgress(handed: KeyGroupExport, releasedUpTo: number): void {
    if (this.tracker === null) return;
    const keyGroup = handed.keyGroup;
    if (handed.egressSeq !== undefined) this.egressSeq[keyGroup] = Math.max(this.egressSeq[keyGroup]!, handed.egressSeq);
    if (handed.egress === undefined || handed.egress.length === 0) return;
    let pending = this.pendingEgress[keyGroup];
    if (pending === undefined) this.pendingEgress[keyGroup] = pending = [];
    for (const [seq, bytes] of handed.egress) {
      // From a hand-over: they wait for the next commit here (the old owner's commit may not have covered them).
      pending.push({ seq, checkpoint: releasedUpTo > 0 ? releasedUpTo : this.snapshotsTaken + 1, bytes });
      this.pendingEgressCount++;
    }
    if (releasedUpTo > 0) this.releaseEgress(releasedUpTo);
  }

  // ---- checkpoints ----

  private performBarrierActions(actions: BarrierAction<Uint8Array, number>[]): void {
    for (const action of actions) {
      switch (action.type) {
        case 'snapshot':
          this.takeSnapshot(action.checkpoint);
          break;
        case 'forward-barrier':
          for (let thread = 0; thread < this.threads; thread++) {
            if (thread === this.thread) continue;
            const offset = this.outbox.reserve(thread, BARRIER_BYTES);
            this.outbox.commit(writeBarrier(this.outbox.target, offset, action.checkpoint) - offset);
          }
          this.scheduleFlush();
          break;
        case 'complete':
          this.completeSnapshot(action.checkpoint, action.recorded);
          break;
        case 'aborted':
          if (this.snapshot?.checkpoint === action.checkpoint) this.snapshot = null;
          break;
      }
    }
  }

  /**
   * The local snapshot at the cut: for each owned key group changed since its last committed object, its
   * state records (immutable: a shallow copy suffices), the delayed messages its instances scheduled,
   * the messages waiting for its instances (an async invocation running now is re-queued: its effects
   * land after the cut), its producer marks and its unreleased egress.
   */
  private takeSnapshot(checkpoint: number): void {
    // Checkpoints before this one whose commit was not heard of have failed (one runs at a time): their
    // key groups count as changed again. A commit notice merely late costs a re-upload, nothing more.
    for (const earlier of [...this.outcomePending.keys()]) if (earlier < checkpoint) this.forgetOutcome(earlier, false);
    this.snapshotsTaken = checkpoint;
    const frozenAt = Date.now();
    const owned: number[] = [];
    const parts: OpenSnapshot['parts'] = new Map();
    for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) {
      if (this.routing[keyGroup] !== this.thread && !this.ownsAdopted(keyGroup)) continue;
      owned.push(keyGroup);
      if (this.dirty[keyGroup] === 0) continue;
      this.dirty[keyGroup] = 0;
      const part: KeyGroupExport & { egress: [number, Uint8Array][]; egressSeq: number } = {
        v: HANDOVER_VERSION,
        keyGroup,
        frozenAt,
        state: [],
        timers: [],
        queued: [],
        egress: (this.pendingEgress[keyGroup] ?? []).map((record) => [record.seq, record.bytes]),
        egressSeq: this.egressSeq[keyGroup]!,
      };
      const tables = this.store.peekKeyGroup(keyGroup);
      if (tables !== undefined) {
        for (const runtime of this.allRuntimes()) {
          const table = tables[runtime.index];
          if (table !== undefined && table.size > 0) part.state.push([runtime.typename, [...table]]);
        }
      }
      const marks = this.producerMarks[keyGroup];
      if (marks !== undefined) part.marks = [...marks].map(([session, mark]) => [session, mark.highest, new Uint8Array(mark.seen.buffer.slice(0))]);
      parts.set(keyGroup, part);
    }
    if (parts.size > 0) {
      for (const entry of this.timers.pending()) {
        const part = parts.get(entry.payload.senderKeyGroup);
        if (part === undefined) continue;
        const delayed = entry.payload;
        const bytes = delayed.value.bytes ?? primitiveType(delayed.value.typename)!.serialize(delayed.value.value as never);
        part.timers.push([entry.dueMs, entry.tokenKey, delayed.targetTypename, delayed.targetId, delayed.callerTypename, delayed.callerId, delayed.value.typename, bytes]);
      }
      for (const runtime of this.allRuntimes()) {
        for (const [id, queue] of runtime.busy) {
          const part = parts.get(keyGroupOf(id, this.keyGroups));
          if (part === undefined) continue;
          if (queue.current !== null) part.queued.push(this.encodeMessage(queue.current));
          // A remote batch in flight at the cut is sent again after a restore: its answer lands after the cut.
          if (queue.batch !== null) for (const message of queue.batch) part.queued.push(this.encodeMessage(message));
          for (const message of queue.toArray()) part.queued.push(this.encodeMessage(message));
        }
      }
      for (let index = this.localHead; index < this.local.length; index++) {
        const message = this.local[index]!;
        parts.get(message.keyGroup)?.queued.push(this.encodeMessage(message));
      }
    }
    this.outcomePending.set(checkpoint, [...parts.keys()]);
    this.snapshot = { checkpoint, owned, parts, broken: null, generation: this.generation };
  }

  /** Every input is aligned: encode the snapshot and the recorded messages (yielding between key groups) and hand them over. */
  private completeSnapshot(checkpoint: number, recorded: Map<number, Uint8Array[]>): void {
    const snapshot = this.snapshot;
    if (snapshot === null || snapshot.checkpoint !== checkpoint) return;
    this.snapshot = null;
    const messages: Uint8Array[] = [];
    for (const list of recorded.values()) for (const message of list) messages.push(message);
    if (snapshot.broken !== null) {
      this.onCheckpointPart!({ checkpoint, generation: snapshot.generation, keyGroups: [], channel: null, error: snapshot.broken });
      return;
    }
    void this.encodeSnapshot(snapshot, messages);
  }

  private async encodeSnapshot(snapshot: OpenSnapshot, messages: Uint8Array[]): Promise<void> {
    const keyGroups: CheckpointPart['keyGroups'] = [];
    let encodedSinceYield = 0;
    for (const keyGroup of snapshot.owned) {
      const part = snapshot.parts.get(keyGroup);
      if (part === undefined) {
        keyGroups.push([keyGroup, null]);
        continue;
      }
      const empty = part.state.length === 0 && part.timers.length === 0 && part.queued.length === 0 && (part.marks?.length ?? 0) === 0 && part.egress.length === 0 && part.egressSeq === 0;
      if (empty) {
        keyGroups.push([keyGroup, '']);
        continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = encodeExport(part);
      } catch (error) {
        this.onCheckpointPart!({ checkpoint: snapshot.checkpoint, generation: snapshot.generation, keyGroups: [], channel: null, error: `key group ${keyGroup} could not be encoded: ${(error as Error).message}` });
        return;
      }
      keyGroups.push([keyGroup, bytes]);
      encodedSinceYield += bytes.length;
      // Encoding a large snapshot in one go would stall this shard's messages: let turns run between.
      if (encodedSinceYield > 256 * 1024) {
        encodedSinceYield = 0;
        await yieldToEventLoop();
        if (snapshot.generation !== this.generation) return; // a recovery meanwhile: this part is void
      }
    }
    if (snapshot.generation !== this.generation) return;
    this.onCheckpointPart!({ checkpoint: snapshot.checkpoint, generation: snapshot.generation, keyGroups, channel: messages.length > 0 ? messages : null, error: null });
  }

  /** The checkpoint coordinator decided: egress a committed checkpoint covers goes out; a failed one's key groups are changed again. */
  checkpointOutcome(checkpoint: number, committed: boolean): void {
    if (this.tracker === null) return;
    if (committed) {
      for (const earlier of [...this.outcomePending.keys()]) if (earlier <= checkpoint) this.forgetOutcome(earlier, true);
      this.releaseEgress(checkpoint);
      this.flush();
      return;
    }
    this.performBarrierActions(this.tracker.abort(checkpoint));
    this.forgetOutcome(checkpoint, false);
  }

  /** A checkpoint's outcome is known: if it did not commit, the key groups it took count as changed again. */
  private forgetOutcome(checkpoint: number, committed: boolean): void {
    const taken = this.outcomePending.get(checkpoint);
    if (taken === undefined) return;
    this.outcomePending.delete(checkpoint);
    if (!committed) for (const keyGroup of taken) this.dirty[keyGroup] = 1;
  }

  /** Writes the egress records that checkpoints up to `checkpoint` cover to the main thread, in order. */
  private releaseEgress(checkpoint: number): void {
    if (this.pendingEgressCount === 0) return;
    for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) {
      const pending = this.pendingEgress[keyGroup];
      if (pending === undefined) continue;
      let released = 0;
      while (released < pending.length && pending[released]!.checkpoint <= checkpoint) {
        this.outbox.writeBytes(MAIN_THREAD, pending[released]!.bytes, 0, pending[released]!.bytes.length);
        released++;
      }
      if (released === 0) continue;
      this.pendingEgressCount -= released;
      if (released === pending.length) this.pendingEgress[keyGroup] = undefined;
      else pending.splice(0, released);
    }
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
    if (phase === 2) {
      for (let rounds = 0; rounds < 1000 && this.inbox.poll(RECORDS_PER_RING_PER_TURN) > 0; rounds++);
      this.discarding = false;
      return;
    }
    this.discarding = true;
    this.frozen = true;
    this.restoredQueued = [];
    this.outbox.discardOverflow();
    for (let keyGroup = 0; keyGroup < this.keyGroups; keyGroup++) {
      this.store.takeKeyGroup(keyGroup);
      this.producerMarks[keyGroup] = undefined;
      this.pendingEgress[keyGroup] = undefined;
      this.egressSeq[keyGroup] = 0;
    }
    this.pendingEgressCount = 0;
    this.timers.extract(() => true);
    this.armTimer();
    for (const runtime of this.allRuntimes()) {
      for (const queue of runtime.busy.values()) {
        queue.current = null;
        queue.batch = null;
        queue.request = null;
      }
      runtime.busy.clear();
    }
    this.remoteQueued = 0;
    this.remoteInFlight = 0;
    this.runningByKeyGroup.clear();
    this.inFlight = 0;
    this.queued = 0;
    this.local = [];
    this.localHead = 0;
    this.adopted.clear();
    this.snapshot = null;
    this.outcomePending.clear();
    this.dirty.fill(1);
    this.snapshotsTaken = 0;
    this.tracker?.reset(0);
    this.captured = [];
    for (let rounds = 0; rounds < 1000 && this.inbox.poll(RECORDS_PER_RING_PER_TURN) > 0; rounds++);
    for (const wake of this.releaseWaiters.splice(0)) wake();
    this.flush();
  }

  /**
   * Loads key groups from checkpoint `checkpoint`'s objects (hand-over bodies): they are unchanged since
   * that committed checkpoint, and their unreleased egress goes out now.
   */
  restore(checkpoint: number, bodies: readonly Uint8Array[], fallback = false): number {
    this.frozen = true;
    this.snapshotsTaken = Math.max(this.snapshotsTaken, checkpoint);
    let instances = 0;
    for (const body of bodies) {
      const handed = decodeExport(body);
      // Their queued messages run in resume(), after every shard has loaded (they may message any key group).
      for (const envelope of handed.queued) this.restoredQueued.push(this.decoder.decodeInvoke(envelope, 0, envelope.length));
      instances += this.adopt([{ ...handed, queued: [] } as KeyGroupExport], checkpoint);
      this.dirty[handed.keyGroup] = 0;
      // An older checkpoint than the last committed one (its object was corrupt): records after it may
      // have been released already; new ones get seqs above anything released.
      if (fallback) this.egressSeq[handed.keyGroup] = this.egressSeq[handed.keyGroup]! + 2 ** 32;
    }
    return instances;
  }

  /** Every shard has loaded: run what the restored key groups had queued, then go on. */
  resume(): void {
    const queued = this.restoredQueued;
    this.restoredQueued = [];
    this.frozen = false;
    this.nowMs = Date.now();
    for (const message of queued) this.deliver(message);
    this.armTimer();
    this.flush();
    for (const resolve of this.unfreezeWaiters.splice(0)) resolve();
    this.inbox.wake();
  }

  /** After a restore: key groups of this shard the checkpoint had nothing for are unchanged too. */
  markRestored(keyGroups: readonly number[]): void {
    for (const keyGroup of keyGroups) this.dirty[keyGroup] = 0;
  }

  private encodeMessage(message: Message): Uint8Array {
    const value = new TypedValue(message.valueTypeName, message.decoded, message.bytes);
    const bytes = new Uint8Array(invokeLengthMax(message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer));
    const end = writeInvoke(bytes, 0, message.keyGroup, message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer);
    return bytes.subarray(0, end);
  }

  private drainLocal(): number {
    const available = this.local.length - this.localHead;
    if (available === 0) return 0;
    const count = Math.min(available, LOCAL_PER_TURN);
    for (let index = 0; index < count; index++) {
      const message = this.local[this.localHead]!;
      this.local[this.localHead++] = undefined as unknown as Message;
      if (this.routing[message.keyGroup] === this.thread || this.ownsAdopted(message.keyGroup)) this.deliver(message);
      else this.forward(message);
    }
    if (this.localHead === this.local.length) {
      this.local = [];
      this.localHead = 0;
    } else if (this.localHead > 4096 && this.localHead * 2 > this.local.length) {
      this.local = this.local.slice(this.localHead);
      this.localHead = 0;
    }
    return count;
  }

  private fireTimers(): number {
    if (this.timers.nextDueMs() > this.nowMs) {
      this.armTimer();
      return 0;
    }
    const due = this.timers.popDue(this.nowMs, TIMERS_PER_TURN);
    for (const delayed of due) {
      this.dirty[delayed.senderKeyGroup] = 1;
      this.route(delayed.targetTypename, delayed.targetId, delayed.callerTypename, delayed.callerId, delayed.value);
    }
    this.counters.delayedFired += due.length;
    this.armTimer();
    // A bucket of only cancelled entries still counts as work, so the loop comes back for the rest.
    return due.length > 0 || this.timers.nextDueMs() <= this.nowMs ? Math.max(1, due.length) : 0;
  }

  /** Keeps one Node timer armed for the earliest delayed message, to wake a parked loop. */
  private armTimer(): void {
    const next = this.timers.nextDueMs();
    if (next === this.timerDueMs) return;
    if (this.timerHandle !== null) clearTimeout(this.timerHandle);
    this.timerHandle = null;
    this.timerDueMs = next;
    if (next === Infinity) return;
    // +1: a Node timer may fire a little before Date.now() reaches `next`. A delay beyond what Node
    // accepts fires early, finds nothing due, and is armed again for the rest.
    const delayMs = Math.min(TIMER_DELAY_MAX_MS, Math.max(0, next - Date.now()) + 1);
    this.timerHandle = setTimeout(() => {
      this.timerHandle = null;
      this.timerDueMs = Infinity;
      if (this.parked) this.inbox.wake();
      else this.armTimer();
    }, delayMs);
    this.timerHandle.unref();
  }

  private readonly sweepWhileIdle = (): void => {
    // Timers never run inside a turn (turns are synchronous); a busy shard sweeps in its turns already.
    if (this.stopping || Date.now() - this.lastSweepMs < SWEEP_INTERVAL_MS) return;
    this.nowMs = Date.now();
    this.sweep();
    this.flush(); // publishes the instance count
  };

  private sweep(): void {
    this.lastSweepMs = this.nowMs;
    this.store.sweep(this.sweepCursor, SWEEP_KEY_GROUPS_PER_TICK, this.nowMs);
    this.sweepCursor = (this.sweepCursor + SWEEP_KEY_GROUPS_PER_TICK) % this.keyGroups;
  }

  private scheduleFlush(): void {
    if (this.inTurn || this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushNow);
  }

  private readonly flushNow = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  private flush(): void {
    this.outbox.flush();
    // Records left in an overflow queue wait for the next flush; a loop parked without a timeout
    // (an async handler finished while it was idle) would never come back to it: wake it to retry.
    if (this.parked && this.outbox.hasOverflow) this.inbox.wake();
    const backlog = this.queued + this.inFlight + (this.local.length - this.localHead);
    this.stats.set(this.thread, Stat.Backlog, backlog);
    this.stats.set(this.thread, Stat.IngressReceived, this.ingressReceived);
    this.stats.set(this.thread, Stat.RemoteWork, this.remoteQueued + this.remoteInFlight);
    this.publishMetrics(backlog);
  }

  private publishMetrics(backlog: number): void {
    const metrics = this.metrics;
    const thread = this.thread;
    const counters = this.counters;
    metrics.set(thread, Metric.Invocations, counters.invocations);
    metrics.set(thread, Metric.Failures, counters.failures);
    metrics.set(thread, Metric.DeadLetters, counters.deadLetters);
    metrics.set(thread, Metric.DelayedScheduled, counters.delayedScheduled);
    metrics.set(thread, Metric.DelayedFired, counters.delayedFired);
    metrics.set(thread, Metric.DelayedCancelled, counters.delayedCancelled);
    metrics.set(thread, Metric.DelayedPending, this.timers.size);
    metrics.set(thread, Metric.EgressRecords, counters.egress);
    metrics.set(thread, Metric.MessagesIn, counters.messagesIn);
    metrics.set(thread, Metric.DuplicatesDropped, counters.duplicates);
    metrics.set(thread, Metric.Backlog, backlog);
    metrics.set(thread, Metric.Instances, this.store.size);
    metrics.set(thread, Metric.RemoteRequests, counters.remoteRequests);
    metrics.set(thread, Metric.RemoteBacklog, this.remoteQueued);
  }

  private notice(line: string): void {
    const now = Date.now();
    if (now - this.lastNoticeMs < NOTICE_INTERVAL_MS) {
      this.suppressedNotices++;
      return;
    }
    const suppressed = this.suppressedNotices;
    this.suppressedNotices = 0;
    this.lastNoticeMs = now;
    this.log(suppressed > 0 ? `${line} (+${suppressed} similar notices suppressed)` : line);
  }
}
