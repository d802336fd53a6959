/**
 * What the parts of a shard (embedded invocations, remote batches, the checkpoint cut) see of it: the
 * key groups' data, the clock of the current turn, and the few things only the shard's loop may do —
 * apply effects, report dead letters, route messages, track work that runs across turns.
 */
import type { Effect, InvocationLimits } from '../../lib/invocation.js';
import type { Message } from '../../lib/message.js';
import type { KeyGroupState } from '../keygroups/key-group-state.js';
import type { ShardCounters } from './shard-counters.js';

/** An async handler's time budget by default (`--handler-timeout`). */
export const HANDLER_TIMEOUT_MS_DEFAULT = 10_000;

/** Where a key group is when work that ran across turns ends. */
export type KeyGroupFate =
  /** Still this shard's: go on. */
  | 'here'
  /** Being released for a hand-over: what waits for its addresses goes with the release. */
  | 'releasing'
  /** Owned elsewhere now: what waits for its addresses is forwarded to the new owner. */
  | 'gone';

export interface ShardContext {
  readonly thread: number;
  readonly limits: InvocationLimits;
  /** Delayed messages one instance may have pending (delayed-limit.ts). */
  readonly delayedPendingMax: number;
  /** How long an async handler may run before it is abandoned (SC_ERR_HANDLER_TIMEOUT). */
  readonly handlerTimeoutMs: number;
  readonly groups: KeyGroupState;
  readonly counters: ShardCounters;
  /** The time of the current turn, or of the callback running now (see `refreshNow`). */
  readonly nowMs: number;
  /** Sets `nowMs` to the wall clock (a callback outside a turn: an async handler or a remote answer finished). */
  refreshNow(): void;
  /** Sends, schedules, cancels and emits what an invocation asked for, in its order. */
  applyEffects(effects: readonly Effect[], selfTypename: string, selfId: string, keyGroup: number): void;
  /** Reports a message that could not be handled on the dead-letter egress. Never throws. */
  deadLetter(message: Message, error: unknown): void;
  /** Sends a message on to its key group's current owner (this shard: next turn). */
  forward(message: Message): void;
  /** Work that runs across turns (an async invocation, a remote batch) begins in `keyGroup`. */
  startRun(keyGroup: number): void;
  /** Such work ended: where its key group is now. */
  endRun(keyGroup: number): KeyGroupFate;
  /** A line for the node's log. */
  log(line: string): void;
  /** Publishes what was written, once the current callback is done. */
  scheduleFlush(): void;
}
