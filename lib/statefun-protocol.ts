/**
 * StateFun's request-reply protocol (remote functions over HTTP): the `ToFunction` message the runtime
 * POSTs for one address, and the `FromFunction` message the function answers with. Wire-compatible with
 * Apache Flink StateFun's runtime and SDKs: the schema below is written from the protocol's published
 * field numbers (package `io.statefun.sdk.reqreply`), and encoded with protobufjs.
 *
 *   ToFunction   { invocation (100): InvocationBatchRequest { target (1): Address,
 *                    state (2): [PersistedValue { state_name (1), state_value (2): TypedValue }],
 *                    invocations (3): [Invocation { caller (1): Address, argument (2): TypedValue }] } }
 *   FromFunction { invocation_result (100): InvocationResponse {
 *                    state_mutations (1): [{ mutation_type (1): DELETE 0 | MODIFY 1, state_name (2), state_value (3) }],
 *                    outgoing_messages (2): [{ target (1), argument (2) }],
 *                    delayed_invocations (3): [{ delay_in_ms (1), target (2), argument (3),
 *                                               is_cancellation_request (10), cancellation_token (11) }],
 *                    outgoing_egresses (4): [{ egress_namespace (1), egress_type (2), argument (3) }] }
 *                | incomplete_invocation_context (101): { missing_values (1): [PersistedValueSpec {
 *                    state_name (1), expiration_spec (2): { mode (1): NONE 0 | AFTER_WRITE 1 | AFTER_INVOKE 2,
 *                    expire_after_millis (2) }, type_typename (3) }] } }
 *   Address      { namespace (1), type (2), id (3) }
 *   TypedValue   { typename (1), has_value (2), value (3) }
 *
 * Decoding is strict where a runtime must not guess: a response with neither result, an address or value
 * missing where one is required, a negative delay — each is a ProtocolError saying what was wrong, and
 * nothing of that response is applied.
 */
import protobuf from 'protobufjs';
import { ProtocolError } from './errors.js';

const schema = {
  nested: {
    io: {
      nested: {
        statefun: {
          nested: {
            sdk: {
              nested: {
                reqreply: {
                  nested: {
                    Address: { fields: { namespace: { type: 'string', id: 1 }, type: { type: 'string', id: 2 }, id: { type: 'string', id: 3 } } },
                    TypedValue: { fields: { typename: { type: 'string', id: 1 }, hasValue: { type: 'bool', id: 2 }, value: { type: 'bytes', id: 3 } } },
                    ToFunction: {
                      oneofs: { request: { oneof: ['invocation'] } },
                      fields: { invocation: { type: 'InvocationBatchRequest', id: 100 } },
                      nested: {
                        PersistedValue: { fields: { stateName: { type: 'string', id: 1 }, stateValue: { type: 'TypedValue', id: 2 } } },
                        Invocation: { fields: { caller: { type: 'Address', id: 1 }, argument: { type: 'TypedValue', id: 2 } } },
                        InvocationBatchRequest: {
                          fields: {
                            target: { type: 'Address', id: 1 },
                            state: { rule: 'repeated', type: 'PersistedValue', id: 2 },
                            invocations: { rule: 'repeated', type: 'Invocation', id: 3 },
                          },
                        },
                      },
                    },
                    FromFunction: {
                      oneofs: { response: { oneof: ['invocationResult', 'incompleteInvocationContext'] } },
                      fields: {
                        invocationResult: { type: 'InvocationResponse', id: 100 },
                        incompleteInvocationContext: { type: 'IncompleteInvocationContext', id: 101 },
                      },
                      nested: {
                        PersistedValueMutation: {
                          nested: { MutationType: { values: { DELETE: 0, MODIFY: 1 } } },
                          fields: { mutationType: { type: 'MutationType', id: 1 }, stateName: { type: 'string', id: 2 }, stateValue: { type: 'TypedValue', id: 3 } },
                        },
                        Invocation: { fields: { target: { type: 'Address', id: 1 }, argument: { type: 'TypedValue', id: 2 } } },
                        DelayedInvocation: {
                          fields: {
                            isCancellationRequest: { type: 'bool', id: 10 },
                            cancellationToken: { type: 'string', id: 11 },
                            delayInMs: { type: 'int64', id: 1 },
                            target: { type: 'Address', id: 2 },
                            argument: { type: 'TypedValue', id: 3 },
                          },
                        },
                        EgressMessage: { fields: { egressNamespace: { type: 'string', id: 1 }, egressType: { type: 'string', id: 2 }, argument: { type: 'TypedValue', id: 3 } } },
                        InvocationResponse: {
                          fields: {
                            stateMutations: { rule: 'repeated', type: 'PersistedValueMutation', id: 1 },
                            outgoingMessages: { rule: 'repeated', type: 'Invocation', id: 2 },
                            delayedInvocations: { rule: 'repeated', type: 'DelayedInvocation', id: 3 },
                            outgoingEgresses: { rule: 'repeated', type: 'EgressMessage', id: 4 },
                          },
                        },
                        ExpirationSpec: {
                          nested: { ExpireMode: { values: { NONE: 0, AFTER_WRITE: 1, AFTER_INVOKE: 2 } } },
                          fields: { mode: { type: 'ExpireMode', id: 1 }, expireAfterMillis: { type: 'int64', id: 2 } },
                        },
                        PersistedValueSpec: { fields: { stateName: { type: 'string', id: 1 }, expirationSpec: { type: 'ExpirationSpec', id: 2 }, typeTypename: { type: 'string', id: 3 } } },
                        IncompleteInvocationContext: { fields: { missingValues: { rule: 'repeated', type: 'PersistedValueSpec', id: 1 } } },
                      },
                    },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(schema);
const ToFunctionType = root.lookupType('io.statefun.sdk.reqreply.ToFunction');
const FromFunctionType = root.lookupType('io.statefun.sdk.reqreply.FromFunction');

// ---- the shapes this module speaks (plain objects; bytes as Uint8Array, delays as numbers) ----

/** `namespace/name` plus id, as StateFun splits it. */
export interface RemoteAddress {
  namespace: string;
  type: string;
  id: string;
}

/** A value with its type name; `value` null when absent (has_value false). */
export interface RemoteTypedValue {
  typename: string;
  value: Uint8Array | null;
}

export interface InvocationBatch {
  target: RemoteAddress;
  /** Every registered value of the target, present or not (absent: value null). */
  state: { name: string; value: RemoteTypedValue }[];
  invocations: { caller: RemoteAddress | null; argument: RemoteTypedValue }[];
}

export type ExpireMode = 'none' | 'after-write' | 'after-invoke';

export interface RemoteValueSpec {
  name: string;
  typename: string;
  expireMode: ExpireMode;
  expireAfterMs: number;
}

export interface InvocationResult {
  kind: 'result';
  /** value null: delete. */
  stateMutations: { name: string; value: RemoteTypedValue | null }[];
  outgoingMessages: { target: RemoteAddress; argument: RemoteTypedValue }[];
  delayedInvocations: (
    | { cancel: false; delayMs: number; target: RemoteAddress; argument: RemoteTypedValue; cancellationToken: string | null }
    | { cancel: true; cancellationToken: string }
  )[];
  outgoingEgresses: { namespace: string; type: string; argument: RemoteTypedValue }[];
}

export interface IncompleteContext {
  kind: 'incomplete';
  missingValues: RemoteValueSpec[];
}

export type FunctionResponse = InvocationResult | IncompleteContext;

const EXPIRE_MODES: readonly ExpireMode[] = ['none', 'after-write', 'after-invoke'];

function malformed(why: string): ProtocolError {
  return new ProtocolError('SC_ERR_MALFORMED_FRAME', `malformed StateFun ${why}`);
}

function typedValueOut(value: RemoteTypedValue): object {
  return value.value === null ? { typename: value.typename, hasValue: false } : { typename: value.typename, hasValue: true, value: value.value };
}

function typedValueIn(message: unknown, where: string, required: boolean): RemoteTypedValue | null {
  const value = message as { typename?: string; hasValue?: boolean; value?: Uint8Array } | null | undefined;
  if (value === null || value === undefined) {
    if (required) throw malformed(`message: ${where} has no value`);
    return null;
  }
  // protobufjs gives a Buffer for bytes on the wire, and its default (not a Uint8Array) when absent.
  const raw = value.value;
  const bytes = raw instanceof Uint8Array ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength) : new Uint8Array(0);
  return { typename: value.typename ?? '', value: value.hasValue === true ? bytes : bytes.length > 0 ? bytes : null };
}

function addressIn(message: unknown, where: string): RemoteAddress {
  const address = message as Partial<RemoteAddress> | null | undefined;
  if (address === null || address === undefined || !address.namespace || !address.type) throw malformed(`message: ${where} has no address (namespace and type)`);
  return { namespace: address.namespace, type: address.type, id: address.id ?? '' };
}

function longToNumber(value: unknown, where: string): number {
  const number = typeof value === 'number' ? value : Number(value ?? 0);
  if (!Number.isSafeInteger(number)) throw malformed(`message: ${where} ${String(value)} is not a whole number of milliseconds`);
  return number;
}

// ---- ToFunction ----

export function encodeToFunction(batch: InvocationBatch): Uint8Array {
  return ToFunctionType.encode({
    invocation: {
      target: batch.target,
      state: batch.state.map((entry) => ({ stateName: entry.name, stateValue: typedValueOut(entry.value) })),
      invocations: batch.invocations.map((invocation) => ({ ...(invocation.caller === null ? {} : { caller: invocation.caller }), argument: typedValueOut(invocation.argument) })),
    },
  }).finish();
}

export function decodeToFunction(bytes: Uint8Array): InvocationBatch {
  let message: { invocation?: { target?: unknown; state?: { stateName?: string; stateValue?: unknown }[]; invocations?: { caller?: unknown; argument?: unknown }[] } };
  try {
    message = ToFunctionType.decode(bytes) as never;
  } catch (error) {
    throw malformed(`ToFunction: ${(error as Error).message}`);
  }
  const request = message.invocation;
  if (request === undefined || request === null) throw malformed('ToFunction: no invocation batch');
  const invocations = (request.invocations ?? []).map((invocation, index) => ({
    caller: invocation.caller === undefined || invocation.caller === null ? null : addressIn(invocation.caller, `invocation ${index}'s caller`),
    argument: typedValueIn(invocation.argument, `invocation ${index}`, true)!,
  }));
  if (invocations.length === 0) throw malformed('ToFunction: an invocation batch needs at least one invocation');
  return {
    target: addressIn(request.target, 'the batch target'),
    state: (request.state ?? []).map((entry, index) => ({
      name: entry.stateName ?? '',
      value: typedValueIn(entry.stateValue, `state value ${index}`, false) ?? { typename: '', value: null },
    })),
    invocations,
  };
}

// ---- FromFunction ----

export function encodeFromFunction(response: FunctionResponse): Uint8Array {
  if (response.kind === 'incomplete') {
    return FromFunctionType.encode({
      incompleteInvocationContext: {
        missingValues: response.missingValues.map((spec) => ({
          stateName: spec.name,
          typeTypename: spec.typename,
          expirationSpec: { mode: EXPIRE_MODES.indexOf(spec.expireMode), expireAfterMillis: spec.expireAfterMs },
        })),
      },
    }).finish();
  }
  return FromFunctionType.encode({
    invocationResult: {
      stateMutations: response.stateMutations.map((mutation) =>
        mutation.value === null ? { mutationType: 0, stateName: mutation.name } : { mutationType: 1, stateName: mutation.name, stateValue: typedValueOut(mutation.value) },
      ),
      outgoingMessages: response.outgoingMessages.map((message) => ({ target: message.target, argument: typedValueOut(message.argument) })),
      delayedInvocations: response.delayedInvocations.map((delayed) =>
        delayed.cancel
          ? { isCancellationRequest: true, cancellationToken: delayed.cancellationToken }
          : { delayInMs: delayed.delayMs, target: delayed.target, argument: typedValueOut(delayed.argument), ...(delayed.cancellationToken === null ? {} : { cancellationToken: delayed.cancellationToken }) },
      ),
      outgoingEgresses: response.outgoingEgresses.map((egress) => ({ egressNamespace: egress.namespace, egressType: egress.type, argument: typedValueOut(egress.argument) })),
    },
  }).finish();
}

interface DecodedFromFunction {
  invocationResult?: {
    stateMutations?: { mutationType?: number; stateName?: string; stateValue?: unknown }[];
    outgoingMessages?: { target?: unknown; argument?: unknown }[];
    delayedInvocations?: { isCancellationRequest?: boolean; cancellationToken?: string; delayInMs?: unknown; target?: unknown; argument?: unknown }[];
    outgoingEgresses?: { egressNamespace?: string; egressType?: string; argument?: unknown }[];
  };
  incompleteInvocationContext?: { missingValues?: { stateName?: string; typeTypename?: string; expirationSpec?: { mode?: number; expireAfterMillis?: unknown } }[] };
}

export function decodeFromFunction(bytes: Uint8Array): FunctionResponse {
  let message: DecodedFromFunction;
  try {
    message = FromFunctionType.decode(bytes) as never;
  } catch (error) {
    throw malformed(`FromFunction: ${(error as Error).message}`);
  }
  const incomplete = message.incompleteInvocationContext;
  if (incomplete !== undefined && incomplete !== null) {
    return {
      kind: 'incomplete',
      missingValues: (incomplete.missingValues ?? []).map((spec, index) => {
        if (!spec.stateName) throw malformed(`FromFunction: missing value ${index} has no name`);
        const mode = EXPIRE_MODES[spec.expirationSpec?.mode ?? 0];
        if (mode === undefined) throw malformed(`FromFunction: missing value ${spec.stateName} has an unknown expire mode ${spec.expirationSpec?.mode}`);
        const expireAfterMs = longToNumber(spec.expirationSpec?.expireAfterMillis, `expiry of ${spec.stateName}`);
        if (expireAfterMs < 0) throw malformed(`FromFunction: missing value ${spec.stateName} expires after ${expireAfterMs} ms`);
        return { name: spec.stateName, typename: spec.typeTypename ?? '', expireMode: mode, expireAfterMs };
      }),
    };
  }
  const result = message.invocationResult;
  if (result === undefined || result === null) throw malformed('FromFunction: neither an invocation result nor an incomplete invocation context');
  return {
    kind: 'result',
    stateMutations: (result.stateMutations ?? []).map((mutation, index) => {
      if (!mutation.stateName) throw malformed(`FromFunction: state mutation ${index} has no state name`);
      if (mutation.mutationType !== 0 && mutation.mutationType !== 1 && mutation.mutationType !== undefined) {
        throw malformed(`FromFunction: state mutation ${mutation.stateName} has an unknown type ${mutation.mutationType}`);
      }
      const modify = mutation.mutationType === 1;
      return { name: mutation.stateName, value: modify ? typedValueIn(mutation.stateValue, `state mutation ${mutation.stateName}`, true) : null };
    }),
    outgoingMessages: (result.outgoingMessages ?? []).map((outgoing, index) => ({
      target: addressIn(outgoing.target, `outgoing message ${index}`),
      argument: typedValueIn(outgoing.argument, `outgoing message ${index}`, true)!,
    })),
    delayedInvocations: (result.delayedInvocations ?? []).map((delayed, index) => {
      if (delayed.isCancellationRequest === true) {
        if (!delayed.cancellationToken) throw malformed(`FromFunction: cancellation ${index} has no cancellation token`);
        return { cancel: true as const, cancellationToken: delayed.cancellationToken };
      }
      const delayMs = longToNumber(delayed.delayInMs, `delayed message ${index}'s delay`);
      if (delayMs < 0) throw malformed(`FromFunction: delayed message ${index} has a negative delay ${delayMs} ms`);
      return {
        cancel: false as const,
        delayMs,
        target: addressIn(delayed.target, `delayed message ${index}`),
        argument: typedValueIn(delayed.argument, `delayed message ${index}`, true)!,
        cancellationToken: delayed.cancellationToken ? delayed.cancellationToken : null,
      };
    }),
    outgoingEgresses: (result.outgoingEgresses ?? []).map((egress, index) => {
      if (!egress.egressNamespace || !egress.egressType) throw malformed(`FromFunction: egress message ${index} names no egress (namespace and type)`);
      return { namespace: egress.egressNamespace, type: egress.egressType, argument: typedValueIn(egress.argument, `egress message ${index}`, true)! };
    }),
  };
}
