/**
 * The verifier's function (see scripts/verify.ts): one type, `verify/fn`, that runs a command tree.
 * Each op runs at the instance that received it:
 *   inc                     count += 1
 *   send   { to, ops }      sends the nested ops to another instance (cycles allowed)
 *   after  { to, ms, ops, token? }  the same, delayed; with a token it can be cancelled
 *   cancel { token }        cancels this instance's delayed messages sent with `token`
 *   egress { id }           emits { e: id } to the `verify` egress
 *   report { nonce }        emits { id, count, nonce } to the `verify-report` egress
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

export const Command = Types.json<{ ops: Op[] }>('verify/command');
export const Emitted = Types.json<{ e: string }>('verify/emitted');
export const Report = Types.json<{ id: string; count: number; nonce: number }>('verify/report');

export const TYPENAME = 'verify/fn';

export const verifyFunction = defineFunction({
  typename: TYPENAME,
  specs: [{ name: 'count', type: Types.int }],
  fn(context, message) {
    const { ops } = message.as(Command);
    for (const op of ops) {
      switch (op.k) {
        case 'inc':
          context.storage.count = (context.storage.count ?? 0) + 1;
          break;
        case 'send':
          context.send({ typename: TYPENAME, id: op.to! }, { ops: op.ops! }, Command);
          break;
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
          context.egress('verify-report', { id: context.self.id, count: context.storage.count ?? 0, nonce: op.nonce! }, Report);
          break;
      }
    }
  },
});
