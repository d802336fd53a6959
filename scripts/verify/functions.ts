/**
 * The verifier's function (see scripts/verify.ts): one type, `verify/fn`, that runs a command tree.
 * Each op runs at the instance that received it:
 *   inc                     count += 1
 *   send   { to, ops }      sends the nested ops to another instance (cycles allowed)
 *   after  { to, ms, ops, token? }  the same, delayed; with a token it can be cancelled
 *   cancel { token }        cancels this instance's delayed messages sent with `token`
 *   egress { id }           emits { e: id } to the `verify` egress
 *   report { nonce }        emits { id, count, nonce, … } to the `verify-report` egress
 *
 * Per-sender FIFO. A command may carry a sender `s` and a sequence number `n`, consecutive per
 * (sender, target address) from 1. Senders are:
 *   - `client`: the verifier's one sending client (its commands, in the order `send()` was called);
 *   - `fn:<id>`: the instance `verify/fn/<id>`, for its `send` ops (not `after`: a delayed message has
 *     no order with its sender's other messages). The sender keeps the next number per target in its
 *     state (`seqOut`), so a re-run after a recovery re-sends the same numbers.
 * The target keeps the last number applied per sender (`seqIn`) and counts, on applying n after last:
 *   n <  last     an order violation (a later message from that sender was applied before this one);
 *                 also emitted to the `verify-order` egress as { at, from, n, last }
 *   n == last     a duplicate application (the count is then off as well)
 *   n >  last + 1 a gap: an earlier message not (yet) applied — lost (the count shows it) or late
 *                 (an order violation follows when it comes)
 */
import { defineFunction, Types } from 'statecraft';

export interface Op {
  k: 'inc' | 'send' | 'after' | 'cancel' | 'egress' | 'report';
  to?: string;
  ms?: number;
  token?: string;
  ops?: Op[];
  id?: string;
  nonce?: number;
}

export interface CommandValue {
  ops: Op[];
  /** The sender, for the FIFO check: `client` or `fn:<id>`. */
  s?: string;
  /** Its sequence number to this address, from 1. */
  n?: number;
}

export interface ReportValue {
  id: string;
  count: number;
  nonce: number;
  /** Order violations, duplicate and gap applications seen at this address (see above). */
  viol: number;
  dup: number;
  gaps: number;
}

export const Command = Types.json<CommandValue>('verify/command');
export const Emitted = Types.json<{ e: string }>('verify/emitted');
export const Report = Types.json<ReportValue>('verify/report');
export const OrderViolation = Types.json<{ at: string; from: string; n: number; last: number }>('verify/order');
const SeqMap = Types.json<Record<string, number>>('verify/seq');

export const TYPENAME = 'verify/fn';
export const CLIENT_SENDER = 'client';

export const verifyFunction = defineFunction({
  typename: TYPENAME,
  specs: [
    { name: 'count', type: Types.int },
    { name: 'seqIn', type: SeqMap },
    { name: 'seqOut', type: SeqMap },
    { name: 'viol', type: Types.int },
    { name: 'dup', type: Types.int },
    { name: 'gaps', type: Types.int },
  ],
  fn(context, message) {
    const command = message.as(Command);
    const storage = context.storage;
    if (command.s !== undefined && command.n !== undefined) {
      const seqIn = { ...(storage.seqIn ?? {}) };
      const last = seqIn[command.s] ?? 0;
      if (command.n < last) {
        storage.viol = (storage.viol ?? 0) + 1;
        context.egress('verify-order', { at: context.self.id, from: command.s, n: command.n, last }, OrderViolation);
      } else if (command.n === last) storage.dup = (storage.dup ?? 0) + 1;
      else if (command.n > last + 1) storage.gaps = (storage.gaps ?? 0) + 1;
      seqIn[command.s] = Math.max(last, command.n);
      storage.seqIn = seqIn;
    }
    let seqOut: Record<string, number> | null = null;
    for (const op of command.ops) {
      switch (op.k) {
        case 'inc':
          storage.count = (storage.count ?? 0) + 1;
          break;
        case 'send': {
          seqOut ??= { ...(storage.seqOut ?? {}) };
          const n = (seqOut[op.to!] ?? 0) + 1;
          seqOut[op.to!] = n;
          context.send({ typename: TYPENAME, id: op.to! }, { ops: op.ops!, s: `fn:${context.self.id}`, n }, Command);
          break;
        }
        case 'after':
          context.sendAfter(op.ms!, { typename: TYPENAME, id: op.to! }, { ops: op.ops! }, op.token === undefined ? { type: Command } : { type: Command, cancellationToken: op.token });
          break;
        case 'cancel':
          context.cancelDelayedMessage(op.token!);
          break;
        case 'egress':
          context.egress('verify', { e: op.id! }, Emitted);
          break;
        case 'report':
          context.egress('verify-report', { id: context.self.id, count: storage.count ?? 0, nonce: op.nonce!, viol: storage.viol ?? 0, dup: storage.dup ?? 0, gaps: storage.gaps ?? 0 }, Report);
          break;
      }
    }
    if (seqOut !== null) storage.seqOut = seqOut;
  },
});
