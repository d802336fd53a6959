/**
 * A remote function type as one shard runs it: where its endpoint is, the value specs it registered,
 * its busy addresses (one request in flight each, and the messages waiting for the next batch), and
 * the translation between shard messages and StateFun's request-reply messages.
 *
 * A response is checked whole before anything of it applies: every address, type name, value size,
 * delay and state name. One bad part fails the batch (a dead letter per message) and nothing of it is
 * applied, so a batch's state mutations and messages take effect together or not at all.
 */
import { isTypename } from '../../lib/address.js';
import { DELAY_MS_MAX, CANCELLATION_TOKEN_LENGTH_MAX } from '../../lib/function.js';
import { RemoteFunctionError } from '../../lib/errors.js';
import { EFFECTS_PER_INVOCATION_MAX, Effect, EffectKind, type InvocationLimits } from '../../lib/invocation.js';
import type { Message } from '../../lib/message.js';
import { fromRemoteAddress, fromRemoteEgress, fromRemoteValue, toRemoteAddress } from '../../lib/remote-values.js';
import { decodeFromFunction, encodeToFunction, type RemoteTypedValue, type RemoteValueSpec } from '../../lib/statefun-protocol.js';
import { checkValueSize } from '../../lib/typed-value.js';
import { primitiveType } from '../../lib/types.js';
import type { AddressQueue } from '../shard/address-queue.js';
import type { ResolvedEndpoint } from './remote-endpoints.js';
import { RemoteStateLayout } from './remote-state.js';

/** What a response asks for, checked and ready to apply. */
export type RemoteOutcome =
  | { kind: 'incomplete'; missing: RemoteValueSpec[] }
  | { kind: 'result'; mutations: { name: string; value: RemoteTypedValue | null }[]; effects: Effect[] };

function bad(endpoint: ResolvedEndpoint, why: string): RemoteFunctionError {
  return new RemoteFunctionError('SC_ERR_REMOTE_RESPONSE', `the answer from ${endpoint.url} was rejected, nothing of it applied: ${why}`);
}

export class RemoteFunction {
  /** Addresses with a request in flight, and what waits for them. */
  readonly busy = new Map<string, AddressQueue>();

  constructor(
    /** Index in the shard's state records. */
    readonly index: number,
    readonly typename: string,
    readonly endpoint: ResolvedEndpoint,
    /** The value specs it registered, and its records' layout. */
    readonly layout: RemoteStateLayout = new RemoteStateLayout(),
  ) {}

  /** Most messages one request carries (StateFun's maxNumBatchRequests). */
  get batchMax(): number {
    return this.endpoint.spec.maxNumBatchRequests;
  }

  /** The request for one address: every registered value, and the batch's messages in order. */
  encodeRequest(id: string, record: unknown, messages: readonly Message[], nowMs: number): Uint8Array {
    return encodeToFunction({
      target: toRemoteAddress(this.typename, id),
      state: this.layout.requestState(record, nowMs),
      invocations: messages.map((message) => ({
        caller: message.callerTypename === null ? null : toRemoteAddress(message.callerTypename, message.callerId!),
        argument: { typename: message.valueTypeName, value: message.rawValueBytes },
      })),
    });
  }

  /**
   * Decodes and checks the response to a batch of `invocations` messages; throws a RemoteFunctionError
   * (SC_ERR_REMOTE_RESPONSE) saying what is wrong, or SC_ERR_LIMIT_REACHED for more effects than that
   * many embedded invocations may ask for.
   */
  interpret(bytes: Uint8Array, limits: InvocationLimits, invocations = 1): RemoteOutcome {
    const endpoint = this.endpoint;
    let response;
    try {
      response = decodeFromFunction(bytes);
    } catch (error) {
      throw bad(endpoint, (error as Error).message);
    }
    if (response.kind === 'incomplete') {
      for (const spec of response.missingValues) {
        if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/.test(spec.name)) throw bad(endpoint, `value spec name ${JSON.stringify(spec.name.slice(0, 200))} is not a name of at most 128 letters, digits, '_', '.', '-'`);
        if (!isTypename(spec.typename)) throw bad(endpoint, `value spec ${spec.name} has type name ${JSON.stringify(String(spec.typename).slice(0, 200))}, not of the form namespace/name`);
        if (spec.expireAfterMs > DELAY_MS_MAX * 100) throw bad(endpoint, `value spec ${spec.name} expires after ${spec.expireAfterMs} ms`);
      }
      if (response.missingValues.length === 0) throw bad(endpoint, 'an incomplete invocation context that names no missing value');
      return { kind: 'incomplete', missing: response.missingValues };
    }
    const asked = response.outgoingMessages.length + response.delayedInvocations.length + response.outgoingEgresses.length;
    if (asked > EFFECTS_PER_INVOCATION_MAX * invocations) {
      throw new RemoteFunctionError(
        'SC_ERR_LIMIT_REACHED',
        `${endpoint.url} answered ${invocations === 1 ? 'one message' : `a batch of ${invocations} messages`} with ${asked} messages, delayed messages, cancellations and egress records, more than ${EFFECTS_PER_INVOCATION_MAX} per invocation: nothing of it was applied. Spread the work over several invocations.`,
      );
    }
    const mutations: { name: string; value: RemoteTypedValue | null }[] = [];
    for (const mutation of response.stateMutations) {
      const spec = this.layout.spec(mutation.name);
      if (spec === undefined) throw bad(endpoint, `it writes state ${JSON.stringify(mutation.name.slice(0, 200))}, which the function never declared (declared: ${this.layout.registered.map((known) => known.name).join(', ') || 'none'})`);
      if (mutation.value !== null) {
        if (mutation.value.typename !== spec.typename) throw bad(endpoint, `it writes state ${spec.name} as ${mutation.value.typename}, but the function declared it as ${spec.typename}`);
        if (mutation.value.value === null) throw bad(endpoint, `its MODIFY of state ${spec.name} carries no value`);
        if (mutation.value.value.length > limits.valueBytesMax) throw bad(endpoint, `state ${spec.name} of ${mutation.value.value.length} bytes exceeds the limit of ${limits.valueBytesMax} bytes (--value-bytes-max)`);
        const primitive = primitiveType(spec.typename);
        if (primitive !== undefined) {
          try {
            primitive.deserialize(mutation.value.value);
          } catch (error) {
            throw bad(endpoint, `state ${spec.name}: ${(error as Error).message}`);
          }
        }
      }
      mutations.push(mutation);
    }
    const effects: Effect[] = [];
    const check = <T>(where: string, make: () => T): T => {
      try {
        return make();
      } catch (error) {
        throw bad(endpoint, `${where}: ${(error as Error).message}`);
      }
    };
    response.outgoingMessages.forEach((outgoing, index) => {
      const { target, value } = check(`outgoing message ${index}`, () => {
        const target = fromRemoteAddress(outgoing.target, limits.idBytesMax);
        const value = fromRemoteValue(outgoing.argument, 'its argument');
        checkValueSize(value, limits.valueBytesMax);
        return { target, value };
      });
      effects.push(new Effect(EffectKind.Send, target.typename, target.id, value, 0, null));
    });
    response.delayedInvocations.forEach((delayed, index) => {
      const token = delayed.cancellationToken;
      if (token !== null && token.length > CANCELLATION_TOKEN_LENGTH_MAX) throw bad(endpoint, `delayed message ${index}'s cancellation token is longer than ${CANCELLATION_TOKEN_LENGTH_MAX}`);
      if (delayed.cancel) {
        effects.push(new Effect(EffectKind.Cancel, '', '', null, 0, delayed.cancellationToken));
        return;
      }
      if (delayed.delayMs > DELAY_MS_MAX) throw bad(endpoint, `delayed message ${index} waits ${delayed.delayMs} ms, more than a year`);
      const { target, value } = check(`delayed message ${index}`, () => {
        const target = fromRemoteAddress(delayed.target, limits.idBytesMax);
        const value = fromRemoteValue(delayed.argument, 'its argument');
        checkValueSize(value, limits.valueBytesMax);
        return { target, value };
      });
      effects.push(new Effect(EffectKind.SendAfter, target.typename, target.id, value, delayed.delayMs, token));
    });
    response.outgoingEgresses.forEach((egress, index) => {
      const { name, value } = check(`egress message ${index}`, () => {
        const name = fromRemoteEgress(egress.namespace, egress.type);
        const value = fromRemoteValue(egress.argument, 'its argument');
        checkValueSize(value, limits.valueBytesMax);
        return { name, value };
      });
      effects.push(new Effect(EffectKind.Egress, name, '', value, 0, null));
    });
    return { kind: 'result', mutations, effects };
  }
}
