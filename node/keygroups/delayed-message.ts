/**
 * A message waiting in a shard's timer queue (`sendAfter`), and the key it is cancelled by. The timer
 * belongs to its sender's key group: it moves, snapshots and restores with the sender's state.
 */
import type { TypedValue } from '../../lib/typed-value.js';
import type { TimerOwners } from './timer-queue.js';

export class DelayedMessage {
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

/**
 * The timer queue's key for a sender's cancellation token. Ids and tokens may hold any character, so
 * the id's length is part of the key: a plain separator would let ("a\0b", "c") and ("a", "b\0c") collide.
 * Type names cannot hold \0.
 */
export function tokenKey(typename: string, id: string, token: string): string {
  return `${typename}\u0000${id.length}\u0000${id}${token}`;
}

/** Delayed messages belong to their sender: the timer queue counts each instance's pending ones. */
export const DELAYED_OWNERS: TimerOwners<DelayedMessage> = {
  kind: (delayed) => delayed.callerTypename,
  id: (delayed) => delayed.callerId,
};
