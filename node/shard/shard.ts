/**
 * A shard: one worker thread that owns a set of key groups and runs their instances.
 *
 * Its loop, one turn at a time: drain the input rings, deliver the messages it sent to itself, fire due
 * delayed messages, then publish everything it wrote to other threads in one batch per ring. When all
 * inputs are empty it parks on its doorbell; a Node timer wakes it for the next delayed message.
 *
 * The parts it runs: embedded invocations (embedded-invoker.ts), remote batches
 * (remote/remote-dispatcher.ts), the checkpoint cut and held egress (checkpoint/shard-cut.ts), all over
 * the key groups' data (keygroups/key-group-state.ts); they see the shard through ShardContext. Key
 * groups arrive and leave (hand-over, recovery) through key-group-moves.ts.
 */
import { formatAddress } from '../../lib/address.js';
import { UnknownFunctionTypeError } from '../../lib/errors.js';
import { EnvelopeDecoder, EnvelopeKind, egressLengthMax, invokeLengthMax, readBarrier, readKeyGroup, writeEgress, writeInvoke } from '../../lib/envelope.js';
import { DEAD_LETTERS_EGRESS, type FunctionDefinition } from '../../lib/function.js';
import { FifoQueue } from '../../lib/fifo-queue.js';
import { Effect, EffectKind, type InvocationLimits } from '../../lib/invocation.js';
import { keyGroupOf } from '../../lib/key-group.js';
import { Message } from '../../lib/message.js';
import { TypedValue } from '../../lib/typed-value.js';
import { truncateUtf8 } from '../../lib/utf8.js';
import { ShardCut, type CheckpointPart, type CutHost } from '../checkpoint/shard-cut.js';
import { DelayedMessage, tokenKey } from '../keygroups/delayed-message.js';
import type { KeyGroupImage } from '../keygroups/key-group-image.js';
import { KeyGroupState, PRODUCER_MARKS_PER_KEY_GROUP_MAX } from '../keygroups/key-group-state.js';
import { Inbox, MAIN_THREAD, Outbox, Stat, ThreadStats, heldAt, leavingFrom, shardOfRoute, type MailboxLayout } from '../rings/mailbox.js';
import { ThreadMetrics } from '../rings/metrics.js';
import type { RecordVisitor } from '../rings/spsc-ring.js';
import { RemoteDispatcher } from '../remote/remote-dispatcher.js';
import { DELAYED_PENDING_MAX_DEFAULT } from './delayed-limit.js';
import { EndpointTable, type EndpointSpec } from '../remote/remote-endpoints.js';
import { deadLetterFor, describeThrown } from './dead-letters.js';
import { EmbeddedInvoker } from './embedded-invoker.js';
import { HeldMessages } from './held-messages.js';
import { KeyGroupMoves } from './key-group-moves.js';
import { HANDLER_TIMEOUT_MS_DEFAULT, type KeyGroupFate, type ShardContext } from './shard-context.js';
import { ShardCounters } from './shard-counters.js';
import { checkPhaseChange, type ShardPhase } from './shard-phase.js';

export interface ShardConfig {
  readonly thread: number;
  readonly layout: MailboxLayout;
  /** int32 per key group: the thread that owns it, or heldAt(shard) (rings/mailbox.ts). */
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
  /** Failed calls of one remote message, for an outage of its endpoint, before it is a dead letter (0: no limit). Default 0. */
  readonly remoteAttemptsMax?: number;
  /** Delayed messages one instance may have pending (delayed-limit.ts). Default 100,000. */
  readonly delayedPendingMax?: number;
  /** How long an async handler may run before it is abandoned. Default HANDLER_TIMEOUT_MS_DEFAULT. */
  readonly handlerTimeoutMs?: number;
}

const RECORDS_PER_RING_PER_TURN = 2048;
const LOCAL_PER_TURN = 4096;
const TIMERS_PER_TURN = 4096;
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_KEY_GROUPS_PER_TICK = 64;
/** A forgotten client session that sent within this long is likely still in use: said in a notice. */
const PRODUCER_RECENT_MS = 10 * 60_000;
const NOTICE_INTERVAL_MS = 5000;
/** Node fires a longer setTimeout after 1 ms instead: longer delays are armed in steps. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;
const NOTICE_REASON_BYTES_MAX = 500;
const REMOTE_BACKLOG_MAX_DEFAULT = 100_000;
/** How often a parked shard with held messages looks whether their key groups run again (the main thread also rings). */
const HELD_RECHECK_MS = 10;

export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class Shard implements RecordVisitor, ShardContext, CutHost {
  readonly thread: number;
  readonly threads: number;
  readonly limits: InvocationLimits;
  readonly delayedPendingMax: number;
  readonly handlerTimeoutMs: number;
  readonly groups: KeyGroupState;
  /** The key groups' changed bits and count, held here for the hot path (one load less per use). */
  private readonly changed: Uint8Array;
  readonly keyGroupCount: number;
  readonly counters = new ShardCounters();
  readonly embedded: EmbeddedInvoker;
  readonly remote: RemoteDispatcher | null;
  readonly cut: ShardCut | null;
  readonly moves: KeyGroupMoves;
  readonly outbox: Outbox;
  readonly inbox: Inbox;
  readonly decoder = new EnvelopeDecoder();
  readonly routing: Int32Array;
  /** This shard's routing entry for a key group it owns but may not run now. */
  readonly heldEntry: number;
  /** This shard's routing entry for a key group it is releasing (rings/mailbox.ts `leavingFrom`). */
  readonly leavingEntry: number;
  /** Messages of key groups held here, in order (held-messages.ts). */
  readonly held = new HeldMessages();
  private readonly stats: ThreadStats;
  private readonly metrics: ThreadMetrics;
  readonly log: (line: string) => void;
  /** Messages this shard sent to its own instances, delivered next turn (never recursively). */
  readonly local = new FifoQueue<Message>();
  private ingressReceived = 0;
  nowMs = Date.now();
  private lastForgottenNoticeMs = 0;
  private inTurn = false;
  parked = false;
  private flushScheduled = false;
  /** The shard's phase in recoveries (shard-phase.ts). */
  private current: ShardPhase = 'live';
  private stopping = false;
  private readonly thawWaiters: (() => void)[] = [];
  private timerHandle: NodeJS.Timeout | null = null;
  private timerDueMs = Infinity;
  /** Sweeps expired state while the loop is parked (turns sweep too, but an idle shard has no turns). */
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweepCursor = 0;
  private lastSweepMs = 0;
  private lastNoticeMs = 0;
  private suppressedNotices = 0;
  /** Names this shard's uploads, and voids parts of checkpoints taken before a recovery. */
  epoch = 0;

  constructor(config: ShardConfig) {
    this.thread = config.thread;
    this.threads = config.layout.threads;
    this.limits = config.limits;
    this.delayedPendingMax = config.delayedPendingMax ?? DELAYED_PENDING_MAX_DEFAULT;
    this.handlerTimeoutMs = config.handlerTimeoutMs ?? HANDLER_TIMEOUT_MS_DEFAULT;
    this.log = config.log ?? ((line) => process.stderr.write(line + '\n'));
    this.groups = new KeyGroupState(config.keyGroups, config.onCheckpointPart !== undefined);
    this.changed = this.groups.changed;
    this.keyGroupCount = config.keyGroups;
    this.embedded = new EmbeddedInvoker(this, config.definitions);
    this.remote = config.endpoints !== undefined && config.endpoints.length > 0 ? new RemoteDispatcher(this, new EndpointTable(config.endpoints), config.remoteBacklogMax ?? REMOTE_BACKLOG_MAX_DEFAULT, config.remoteAttemptsMax ?? 0) : null;
    this.outbox = new Outbox(config.layout, config.thread);
    this.inbox = new Inbox(config.layout, config.thread, this);
    this.routing = new Int32Array(config.routing);
    this.heldEntry = heldAt(config.thread);
    this.leavingEntry = leavingFrom(config.thread);
    this.stats = new ThreadStats(config.layout);
    this.metrics = new ThreadMetrics(config.metrics, config.layout.threads);
    this.cut = config.onCheckpointPart === undefined ? null : new ShardCut({ host: this, onPart: config.onCheckpointPart, pause: yieldToEventLoop });
    this.moves = new KeyGroupMoves(this);
  }

  /** Runs turns until `stop()`; parks when idle. */
  async run(): Promise<void> {
    if (this.remote !== null || this.embedded.hasExpiry) {
      this.sweepTimer = setInterval(this.sweepWhileIdle, SWEEP_INTERVAL_MS);
      this.sweepTimer.unref();
    }
    while (!this.stopping) {
      if (this.current !== 'live') {
        // A recovery is under way: nothing runs until every shard has loaded (resume()).
        await new Promise<void>((resolve) => this.thawWaiters.push(resolve));
        continue;
      }
      const worked = this.turn();
      if (worked > 0) {
        await yieldToEventLoop();
        continue;
      }
      this.parked = true;
      // With records stuck in overflow queues, retry the flush every millisecond until they drain.
      await this.inbox.park(this.outbox.hasOverflow ? 1 : this.held.count > 0 ? HELD_RECHECK_MS : Infinity);
      this.parked = false;
    }
    if (this.timerHandle) clearTimeout(this.timerHandle);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.outbox.flush();
  }

  stop(): void {
    this.stopping = true;
    this.thaw();
    this.inbox.wake();
  }

  get phase(): ShardPhase {
    return this.current;
  }

  enter(next: ShardPhase): void {
    checkPhaseChange(this.current, next);
    this.current = next;
    if (next === 'live') this.thaw();
  }

  /** Wakes a loop waiting for the shard to be live again (or to stop). */
  private thaw(): void {
    for (const resolve of this.thawWaiters.splice(0)) resolve();
  }

  /** One turn; returns how much work it found. */
  turn(): number {
    if (this.current === 'discarding' || this.current === 'frozen') return 0;
    this.inTurn = true;
    this.nowMs = Date.now();
    let work = this.held.count > 0 ? this.runHeldThatRuns() : 0;
    if (this.moves.leavingCount > 0) work += this.moves.runLeavingBack();
    work += this.inbox.poll(RECORDS_PER_RING_PER_TURN);
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
    if (this.current === 'discarding') return;
    const kind = data[offset];
    if (kind === EnvelopeKind.Invoke) {
      const keyGroup = readKeyGroup(data, offset);
      const owner = this.routing[keyGroup];
      // In flight at the cut of the open checkpoint: recorded as channel state (and processed as usual).
      const recording = this.cut !== null && this.cut.isRecording(source);
      if (this.moves.capture(data, offset, length, keyGroup, recording)) return;
      const held = owner === this.heldEntry;
      if (!held && owner !== this.thread && owner !== undefined && !this.moves.ownsAdopted(keyGroup)) {
        // Its key group moved (handed over, or to another node) while the message was on its way.
        if (recording) this.cut!.record(source, data.slice(offset, offset + length));
        // Leaving: kept for the release's image, ahead of newer messages still in the rings.
        if (owner === this.leavingEntry && this.moves.keepLeaving(keyGroup, data.slice(offset, offset + length))) return;
        this.outbox.writeBytes(shardOfRoute(owner), data, offset, length);
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
      if (message.producer !== null && !this.acceptEvent(message)) return;
      // Recorded only once accepted: a repeat dropped here must not come back with a restore.
      if (recording) this.cut!.record(source, data.slice(offset, offset + length));
      if (held) this.hold(message);
      else {
        if (this.held.count > 0 && this.held.has(keyGroup)) this.runHeld(keyGroup);
        this.deliver(message);
      }
      return;
    }
    if (kind === EnvelopeKind.Barrier) {
      this.cut?.onBarrier(source, readBarrier(data, offset));
      return;
    }
    this.notice(`shard ${this.thread}: ignored an envelope of unknown kind ${kind}`);
  }

  /** A client event: false when its key group has applied it already (a repeat, dropped). */
  acceptEvent(message: Message): boolean {
    if (this.groups.acceptEvent(message.keyGroup, message.producer!, this.nowMs, (idleMs) => this.producerForgotten(message.keyGroup, idleMs))) return true;
    this.counters.duplicates++;
    return false;
  }

  /** A key group full of client sessions forgot the least recently active one: said when it was recent (at most every 10 s). */
  private producerForgotten(keyGroup: number, idleMs: number): void {
    if (idleMs >= PRODUCER_RECENT_MS || this.nowMs - this.lastForgottenNoticeMs < 10_000) return;
    this.lastForgottenNoticeMs = this.nowMs;
    this.notice(
      `shard ${this.thread}: key group ${keyGroup} has ${PRODUCER_MARKS_PER_KEY_GROUP_MAX} client sessions; it forgot the least recently active one, which sent ${Math.round(idleMs / 1000)} s ago: a re-send of its events would apply again. Use fewer, longer-lived clients (one per process, not one per request).`,
    );
  }

  /** Keeps an accepted message of a held key group until it runs again (or leaves with a hand-over). */
  private hold(message: Message): void {
    this.changed[message.keyGroup] = 1;
    this.held.hold(message);
  }

  /** Delivers a key group's held messages, in order: it runs again. */
  private runHeld(keyGroup: number): number {
    const messages = this.held.take(keyGroup);
    for (const message of messages) this.deliver(message);
    return messages.length;
  }

  /**
   * Runs the held messages of key groups routed here again. Those of a key group routed away stay: a
   * release takes them into its image (the main thread asks for it right after pointing the routing
   * away), or a recovery drops them.
   */
  private runHeldThatRuns(): number {
    let work = 0;
    for (const keyGroup of this.held.keyGroups()) if (this.routing[keyGroup] === this.thread) work += this.runHeld(keyGroup);
    return work;
  }

  /** Hands a message to its instance: now if the instance is idle, else after the messages before it. */
  deliver(message: Message): void {
    this.changed[message.keyGroup] = 1;
    if (this.embedded.deliver(message)) return;
    if (this.remote?.deliver(message)) return;
    this.deadLetter(message, new UnknownFunctionTypeError(message.targetTypename, this.embedded.typenames));
  }

  // ---- ShardContext ----

  refreshNow(): void {
    this.nowMs = Date.now();
  }

  applyEffects(effects: readonly Effect[], selfTypename: string, selfId: string, keyGroup: number): void {
    for (let index = 0; index < effects.length; index++) {
      const effect = effects[index]!;
      switch (effect.kind) {
        case EffectKind.Send:
          this.route(effect.targetTypename, effect.targetId, selfTypename, selfId, effect.value!);
          break;
        case EffectKind.SendAfter: {
          const delayed = new DelayedMessage(effect.targetTypename, effect.targetId, selfTypename, selfId, effect.value!, keyGroup);
          const key = effect.cancellationToken === null ? null : tokenKey(selfTypename, selfId, effect.cancellationToken);
          this.groups.timers.schedule(this.nowMs + effect.delayMs, delayed, key);
          this.counters.delayedScheduled++;
          this.armTimer();
          break;
        }
        case EffectKind.Cancel:
          this.counters.delayedCancelled += this.groups.timers.cancel(tokenKey(selfTypename, selfId, effect.cancellationToken!));
          break;
        case EffectKind.Egress:
          this.emitEgress(effect.targetTypename, selfTypename, selfId, keyGroup, effect.value!);
          break;
      }
    }
  }

  deadLetter(message: Message, error: unknown): void {
    this.counters.deadLetters++;
    const address = formatAddress({ typename: message.targetTypename, id: message.targetId });
    let code: string;
    let reason: string;
    try {
      const { record, value } = deadLetterFor(message, error, this.nowMs, this.outbox.recordBytesMax);
      ({ code, reason } = record);
      this.emitEgress(DEAD_LETTERS_EGRESS, message.targetTypename, message.targetId, message.keyGroup, value);
    } catch (emitError) {
      this.notice(`shard ${this.thread}: could not emit the dead letter for ${truncateUtf8(address, NOTICE_REASON_BYTES_MAX)} (${describeThrown(emitError).message}); this is a bug, please report it`);
      return;
    }
    this.notice(`dead letter for ${truncateUtf8(address, NOTICE_REASON_BYTES_MAX)}: ${code}: ${truncateUtf8(reason, NOTICE_REASON_BYTES_MAX)} (subscribe to egress "${DEAD_LETTERS_EGRESS}" for all of them)`);
  }

  forward(message: Message): void {
    const to = this.routing[message.keyGroup]!;
    // Held here: it waits with the rest of its key group (drainLocal holds it, in order).
    if (to === this.thread || to === this.heldEntry || this.moves.ownsAdopted(message.keyGroup)) {
      this.changed[message.keyGroup] = 1;
      this.local.push(message);
      return;
    }
    const value = new TypedValue(message.valueTypeName, message.decoded, message.bytes);
    const outbox = this.outbox;
    const offset = outbox.reserve(shardOfRoute(to), invokeLengthMax(message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer));
    const end = writeInvoke(outbox.target, offset, message.keyGroup, message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  startRun(keyGroup: number): void {
    this.moves.startRun(keyGroup);
  }

  endRun(keyGroup: number): KeyGroupFate {
    return this.moves.endRun(keyGroup);
  }

  scheduleFlush(): void {
    if (this.inTurn || this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(this.flushNow);
  }

  // ---- CutHost ----

  owns(keyGroup: number): boolean {
    const route = this.routing[keyGroup];
    return route === this.thread || route === this.heldEntry || this.moves.ownsAdopted(keyGroup);
  }

  addWaiting(images: ReadonlyMap<number, KeyGroupImage>): void {
    const keyGroupOfId = (id: string) => keyGroupOf(id, this.keyGroupCount);
    const wanted = (keyGroup: number) => images.has(keyGroup);
    const into = (keyGroup: number, message: Message) => images.get(keyGroup)!.queued.push(this.encodeMessage(message));
    this.embedded.peekWaiting(keyGroupOfId, wanted, into);
    this.remote?.peekWaiting(keyGroupOfId, wanted, into);
    this.held.peek(wanted, into);
    for (const message of this.local) images.get(message.keyGroup)?.queued.push(this.encodeMessage(message));
  }

  write(thread: number, bytes: Uint8Array): void {
    this.outbox.writeBytes(thread, bytes, 0, bytes.length);
  }

  // ---- the loop ----

  /** Sends a message to the shard that owns its key group (this one: next turn, without encoding). */
  private route(typename: string, id: string, callerTypename: string, callerId: string, value: TypedValue): void {
    const keyGroup = keyGroupOf(id, this.keyGroupCount);
    const to = this.routing[keyGroup]!;
    // Held here: it waits with the rest of its key group (drainLocal holds it, in order).
    if (to === this.thread || to === this.heldEntry) {
      this.changed[keyGroup] = 1;
      this.local.push(new Message(keyGroup, typename, id, callerTypename, callerId, value.typename, value.value, value.bytes));
      if (this.parked) this.inbox.wake();
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(shardOfRoute(to), invokeLengthMax(typename, id, callerTypename, callerId, value));
    const end = writeInvoke(outbox.target, offset, keyGroup, typename, id, callerTypename, callerId, value);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  private emitEgress(egress: string, sourceTypename: string, sourceId: string, keyGroup: number, value: TypedValue): void {
    this.counters.egress++;
    if (this.cut !== null) {
      this.cut.holdEgress(keyGroup, egress, sourceTypename, sourceId, value);
      return;
    }
    const outbox = this.outbox;
    const offset = outbox.reserve(MAIN_THREAD, egressLengthMax(egress, sourceTypename, sourceId, value));
    const end = writeEgress(outbox.target, offset, keyGroup, egress, sourceTypename, sourceId, value);
    outbox.commit(end - offset);
    this.scheduleFlush();
  }

  encodeMessage(message: Message): Uint8Array {
    const value = new TypedValue(message.valueTypeName, message.decoded, message.bytes);
    const bytes = new Uint8Array(invokeLengthMax(message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer));
    const end = writeInvoke(bytes, 0, message.keyGroup, message.targetTypename, message.targetId, message.callerTypename, message.callerId, value, message.producer);
    return bytes.subarray(0, end);
  }

  private drainLocal(): number {
    if (this.local.isEmpty) return 0;
    // Taken as one batch: what these messages send to this shard waits for the next turn.
    const batch = this.local.take(LOCAL_PER_TURN);
    for (let index = 0; index < batch.length; index++) {
      const message = batch[index]!;
      const route = this.routing[message.keyGroup];
      if (route === this.heldEntry) this.hold(message);
      else if (route === this.thread || this.moves.ownsAdopted(message.keyGroup)) {
        if (this.held.count > 0 && this.held.has(message.keyGroup)) this.runHeld(message.keyGroup);
        this.deliver(message);
      } else if (route !== this.leavingEntry || !this.moves.keepLeaving(message.keyGroup, this.encodeMessage(message))) this.forward(message);
    }
    return batch.length;
  }

  private fireTimers(): number {
    const timers = this.groups.timers;
    if (timers.nextDueMs() > this.nowMs) {
      this.armTimer();
      return 0;
    }
    const due = timers.popDue(this.nowMs, TIMERS_PER_TURN);
    for (const delayed of due) {
      this.changed[delayed.senderKeyGroup] = 1;
      this.route(delayed.targetTypename, delayed.targetId, delayed.callerTypename, delayed.callerId, delayed.value);
    }
    this.counters.delayedFired += due.length;
    this.armTimer();
    // A bucket of only cancelled entries still counts as work, so the loop comes back for the rest.
    return due.length > 0 || timers.nextDueMs() <= this.nowMs ? Math.max(1, due.length) : 0;
  }

  /** Keeps one Node timer armed for the earliest delayed message, to wake a parked loop. */
  armTimer(): void {
    const next = this.groups.timers.nextDueMs();
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
    this.groups.records.sweep(this.sweepCursor, SWEEP_KEY_GROUPS_PER_TICK, this.nowMs);
    this.sweepCursor = (this.sweepCursor + SWEEP_KEY_GROUPS_PER_TICK) % this.groups.count;
  }

  private readonly flushNow = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  flush(): void {
    this.outbox.flush();
    // Records left in an overflow queue wait for the next flush; a loop parked without a timeout
    // (an async handler finished while it was idle) would never come back to it: wake it to retry.
    if (this.parked && this.outbox.hasOverflow) this.inbox.wake();
    const remoteWaiting = this.remote?.waiting ?? 0;
    // Held messages are not backlog: they cannot run until the node has a majority (a stop hands them over).
    const backlog = this.embedded.waiting + this.embedded.running + this.local.length;
    this.stats.set(this.thread, Stat.Backlog, backlog);
    this.stats.set(this.thread, Stat.IngressReceived, this.ingressReceived);
    this.stats.set(this.thread, Stat.RemoteWork, remoteWaiting + (this.remote?.inFlight ?? 0));
    this.counters.publish(this.metrics, this.thread, this.groups.timers.size, backlog, this.groups.records.size, remoteWaiting, this.held.count);
  }

  notice(line: string): void {
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
