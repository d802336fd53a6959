/**
 * The bound on an instance's pending delayed messages. Each invocation may ask for at most
 * EFFECTS_PER_INVOCATION_MAX effects, but an instance that keeps scheduling would still grow its shard
 * without limit (and every checkpoint with it): an invocation that would leave its instance more than
 * `delayedPendingMax` delayed messages pending fails whole, before any of its state or effects apply.
 */
import { ValidationError } from '../../lib/errors.js';
import { EffectKind, type Effect } from '../../lib/invocation.js';
import { tokenKey, type DelayedMessage } from '../keygroups/delayed-message.js';
import type { TimerQueue } from '../keygroups/timer-queue.js';

/** Pending delayed messages an instance may have by default (`--delayed-pending-max`). */
export const DELAYED_PENDING_MAX_DEFAULT = 100_000;

/** Throws SC_ERR_LIMIT_REACHED when applying `effects` would leave the instance over `max` pending delayed messages. */
export function checkDelayedPending(timers: TimerQueue<DelayedMessage>, effects: readonly Effect[], selfTypename: string, selfId: string, max: number): void {
  let scheduled = 0;
  for (let index = 0; index < effects.length; index++) if (effects[index]!.kind === EffectKind.SendAfter) scheduled++;
  // The shard's whole queue within the limit: this instance is too (the common case, no lookups).
  if (scheduled === 0 || timers.size + scheduled <= max) return;
  let cancelled = 0;
  let tokens: Set<string> | null = null;
  for (let index = 0; index < effects.length; index++) {
    const effect = effects[index]!;
    if (effect.kind !== EffectKind.Cancel) continue;
    // Counted once per token, and only what is pending now: a cancellation of a message this same
    // invocation schedules is not counted, which errs on the side of the limit.
    const key = tokenKey(selfTypename, selfId, effect.cancellationToken!);
    tokens ??= new Set();
    if (tokens.has(key)) continue;
    tokens.add(key);
    cancelled += timers.pendingWithToken(key);
  }
  const pending = timers.pendingOf(selfTypename, selfId) - cancelled + scheduled;
  if (pending <= max) return;
  throw new ValidationError(
    'SC_ERR_LIMIT_REACHED',
    `${selfTypename}/${selfId} would have ${pending} delayed messages pending, over the limit of ${max} per instance (--delayed-pending-max): this invocation is refused whole, its state unchanged and nothing sent. Cancel delayed messages that are no longer needed, or keep the schedule in state and send the next one when one fires.`,
  );
}
