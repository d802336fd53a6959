/**
 * Embedded invocations: a message for a function type defined in this process runs its handler here.
 *
 * Each instance handles one message at a time, in arrival order. A synchronous handler runs to the end
 * inside the turn and leaves no trace in the busy table; an async one marks its instance busy, and the
 * messages that arrive meanwhile wait in that instance's queue while other instances go on. A handler
 * that throws (or effects that cannot be applied) make a dead letter, and the instance goes on with its
 * next message: nothing a handler does may stop the shard or wedge an address.
 */
import type { FunctionDefinition } from '../../lib/function.js';
import { HandlerTimeoutError } from '../../lib/errors.js';
import { Invocation, isThenable } from '../../lib/invocation.js';
import { checkDelayedPending } from './delayed-limit.js';
import type { Message } from '../../lib/message.js';
import { AddressQueue, peekWaiting, takeWaiting } from './address-queue.js';
import { FunctionRuntime } from './function-runtime.js';
import type { KeyGroupState } from '../keygroups/key-group-state.js';
import type { ShardContext } from './shard-context.js';
import type { ShardCounters } from './shard-counters.js';

export class EmbeddedInvoker {
  private readonly functions = new Map<string, FunctionRuntime>();
  /** The types defined here (named in the error for a message of an unknown type). */
  readonly typenames: readonly string[];
  /** Messages waiting for a busy instance. */
  waiting = 0;
  /** Async invocations running. */
  running = 0;
  // The context's parts the hot path uses, held here (one load less per use).
  private readonly changed: Uint8Array;
  private readonly records: KeyGroupState['records'];
  private readonly counters: ShardCounters;

  constructor(
    private readonly context: ShardContext,
    definitions: readonly FunctionDefinition[],
  ) {
    for (const definition of definitions) {
      this.functions.set(definition.typename, new FunctionRuntime(definition, (typename, layout) => context.groups.addType(typename, layout)));
    }
    this.typenames = [...this.functions.keys()];
    this.changed = context.groups.changed;
    this.records = context.groups.records;
    this.counters = context.counters;
  }

  /** Whether a type's state may expire (then the shard sweeps expired values). */
  get hasExpiry(): boolean {
    return [...this.functions.values()].some((runtime) => runtime.layout.hasExpiry);
  }

  has(typename: string): boolean {
    return this.functions.has(typename);
  }

  /** Runs or queues a message for an embedded type; false when the type is not embedded here. */
  deliver(message: Message): boolean {
    const runtime = this.functions.get(message.targetTypename);
    if (runtime === undefined) return false;
    const queue = runtime.busy.get(message.targetId);
    if (queue !== undefined) {
      queue.push(message);
      this.waiting++;
    } else {
      this.start(runtime, message, null);
    }
    return true;
  }

  /** Snapshot: what a restore must deliver again for the key groups `wanted` selects. */
  peekWaiting(keyGroupOf: (id: string) => number, wanted: (keyGroup: number) => boolean, into: (keyGroup: number, message: Message) => void): void {
    peekWaiting(this.functions.values(), keyGroupOf, wanted, into);
  }

  /** Hand-over: takes what waits for the addresses of `wanted` (nothing runs there any more). */
  takeWaiting(keyGroupOf: (id: string) => number, wanted: ReadonlySet<number>, into: (keyGroup: number, message: Message) => void): void {
    this.waiting -= takeWaiting(this.functions.values(), keyGroupOf, wanted, into);
  }

  /** A recovery: every busy instance is forgotten; invocations still running finish into nothing. */
  reset(): void {
    for (const runtime of this.functions.values()) {
      for (const queue of runtime.busy.values()) queue.abandon();
      runtime.busy.clear();
    }
    this.waiting = 0;
    this.running = 0;
  }

  /** Starts an invocation; returns true when it went async (its instance stays busy). Never throws. */
  private start(runtime: FunctionRuntime, message: Message, queue: AddressQueue | null): boolean {
    const context = this.context;
    const invocation = new Invocation<FunctionRuntime>(runtime, message, this.loadRecord, context.limits, context.nowMs);
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
    this.running++;
    context.startRun(message.keyGroup);
    const busyQueue = queue;
    // Past the time budget the invocation is abandoned: a dead letter, and the address goes on. The
    // handler may still settle later; finishAsync ignores it then (it is no longer the current one).
    const timeoutMs = context.handlerTimeoutMs;
    const timer = setTimeout(() => {
      if (busyQueue.current !== message) return; // dropped by a recovery meanwhile
      this.counters.handlerTimeouts++;
      this.finishAsync(invocation, busyQueue, new HandlerTimeoutError(`${message.targetTypename}/${message.targetId}`, timeoutMs), true);
    }, timeoutMs);
    timer.unref();
    // Promise.resolve: a hand-made thenable may throw from then(), or call both callbacks, or twice.
    Promise.resolve(result as PromiseLike<unknown>).then(
      () => {
        clearTimeout(timer);
        this.finishAsync(invocation, busyQueue, undefined, false);
      },
      (error: unknown) => {
        clearTimeout(timer);
        this.finishAsync(invocation, busyQueue, error, true);
      },
    );
    return true;
  }

  /** Ends an async invocation and starts the next message its instance has waiting. Never throws. */
  private finishAsync(invocation: Invocation<FunctionRuntime>, queue: AddressQueue, error: unknown, failed: boolean): void {
    if (queue.current !== invocation.message) return; // dropped by a recovery while it ran
    const context = this.context;
    queue.current = null;
    this.running--;
    context.refreshNow();
    this.settle(invocation, error, failed);
    const runtime = invocation.runtime;
    const id = invocation.message.targetId;
    const fate = context.endRun(invocation.message.keyGroup);
    if (fate === 'releasing') return; // what waits goes with the release
    if (fate === 'gone') {
      while (queue.length > 0) {
        context.forward(queue.shift());
        this.waiting--;
      }
      runtime.busy.delete(id);
      return;
    }
    while (queue.length > 0) {
      const next = queue.shift();
      this.waiting--;
      if (this.start(runtime, next, queue)) {
        context.scheduleFlush();
        return;
      }
    }
    runtime.busy.delete(id);
    context.scheduleFlush();
  }

  private readonly loadRecord = (invocation: Invocation<FunctionRuntime>): unknown =>
    this.records.get(invocation.message.keyGroup, invocation.runtime.index, invocation.message.targetId);

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
    // Over the effects limit: it fails whole, even if the handler caught the error.
    if (invocation.refused !== null) throw invocation.refused;
    const context = this.context;
    const runtime = invocation.runtime;
    const message = invocation.message;
    if (invocation.effects !== null) checkDelayedPending(context.groups.timers, invocation.effects, message.targetTypename, message.targetId, context.delayedPendingMax);
    this.changed[message.keyGroup] = 1;
    const layout = runtime.layout;
    if (invocation.staged !== null || (layout.hasCallExpiry && layout.count > 0)) {
      const record = invocation.touchedState ? invocation.record : this.records.get(message.keyGroup, runtime.index, message.targetId);
      const next = layout.apply(record, invocation.staged, context.nowMs);
      if (next !== record) this.records.set(message.keyGroup, runtime.index, message.targetId, next);
    }
    if (invocation.effects !== null) context.applyEffects(invocation.effects, message.targetTypename, message.targetId, message.keyGroup);
  }

  /** Discards a failed invocation's effects and reports it on the dead-letter egress. */
  private fail(invocation: Invocation<FunctionRuntime>, error: unknown): void {
    invocation.closed = true;
    this.counters.failures++;
    this.context.deadLetter(invocation.message, error);
  }
}
