/**
 * Runs one StateFun invocation batch against a function definition, as the HTTP function host does:
 * state in, mutations and messages out. Sans-I/O: bytes are decoded and encoded by the caller.
 *
 * The invocations run in order, each seeing the state the previous ones left, with the very `Context`
 * an embedded function gets (lib/invocation.ts). If the batch lacks a value the function declares, none
 * of it runs: the answer is StateFun's incomplete-context reply naming the missing specs, and the
 * runtime re-sends the batch with them.
 */
import { CompiledFunction } from './compiled-function.js';
import { RemoteFunctionError } from './errors.js';
import type { FunctionDefinition } from './function.js';
import { EffectKind, Invocation, isThenable, type InvocationLimits } from './invocation.js';
import { Message } from './message.js';
import { fromRemoteAddress, fromRemoteValue, toExpiration, toRemoteAddress, toRemoteEgress, toRemoteValue } from './remote-values.js';
import type { FunctionResponse, InvocationBatch, InvocationResult, RemoteValueSpec } from './statefun-protocol.js';
import { UNCHANGED } from './state-layout.js';
import { TypedValue } from './typed-value.js';
import { isPrimitiveType, primitiveType } from './types.js';

/** Why a batch could not run: `status` is the HTTP status the host answers with. */
export class BatchError extends RemoteFunctionError {
  constructor(
    readonly status: 400 | 404 | 422,
    code: 'SC_ERR_MALFORMED_FRAME' | 'SC_ERR_UNKNOWN_FUNCTION_TYPE' | 'SC_ERR_REMOTE_HANDLER',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** The function types one host serves, compiled once. */
export class RemoteFunctionSet {
  private readonly byTypename = new Map<string, CompiledFunction>();

  constructor(definitions: readonly FunctionDefinition[]) {
    for (const definition of definitions) this.byTypename.set(definition.typename, new CompiledFunction(definition));
  }

  get typenames(): string[] {
    return [...this.byTypename.keys()];
  }

  get(typename: string): CompiledFunction | undefined {
    return this.byTypename.get(typename);
  }
}

/**
 * Runs `batch`; throws a BatchError for a batch that names a type this host does not serve, carries
 * values of the wrong type, or whose handler throws (then nothing of the batch applies).
 */
export async function runBatch(functions: RemoteFunctionSet, batch: InvocationBatch, limits: InvocationLimits, nowMs = Date.now()): Promise<FunctionResponse> {
  const typename = `${batch.target.namespace}/${batch.target.type}`;
  const compiled = functions.get(typename);
  if (compiled === undefined) {
    throw new BatchError(404, 'SC_ERR_UNKNOWN_FUNCTION_TYPE', `this host does not serve ${typename} (it serves ${functions.typenames.join(', ') || 'nothing'}); check the endpoint's functions pattern`);
  }
  const layout = compiled.layout;
  const specs = compiled.definition.specs;
  const given = new Map(batch.state.map((entry) => [entry.name, entry.value]));
  const missing: RemoteValueSpec[] = [];
  for (const spec of specs) {
    if (!given.has(spec.name)) missing.push({ name: spec.name, typename: spec.type.typename, ...toExpiration(spec) });
  }
  if (missing.length > 0) return { kind: 'incomplete', missingValues: missing };

  // The instance's record in the layout's shape (deadlines 0: the cluster keeps expiry, not the host).
  const stored: unknown[] = specs.map((spec, index) => {
    const value = given.get(spec.name)!;
    if (value.value === null) return null;
    if (value.typename !== spec.type.typename) {
      throw new BatchError(422, 'SC_ERR_REMOTE_HANDLER', `state value ${spec.name} of ${typename} is stored as ${value.typename}, but the function declares ${spec.type.typename}`);
    }
    if (!layout.storesDecoded[index]) return value.value;
    try {
      return primitiveType(value.typename)!.deserialize(value.value);
    } catch (error) {
      throw new BatchError(400, 'SC_ERR_MALFORMED_FRAME', `state value ${spec.name} of ${typename}: ${(error as Error).message}`, { cause: error });
    }
  });
  let record: unknown;
  if (stored.every((value) => value === null)) record = undefined;
  else if (layout.single) record = stored[0];
  else record = layout.hasExpiry ? [...stored, ...new Array<number>(layout.count).fill(0)] : stored;

  const result: InvocationResult = { kind: 'result', stateMutations: [], outgoingMessages: [], delayedInvocations: [], outgoingEgresses: [] };
  const changed = new Set<number>();
  for (let index = 0; index < batch.invocations.length; index++) {
    const entry = batch.invocations[index]!;
    let argument: TypedValue;
    let caller: { typename: string; id: string } | null;
    try {
      argument = fromRemoteValue(entry.argument, `invocation ${index}`);
      caller = entry.caller === null ? null : fromRemoteAddress(entry.caller, limits.idBytesMax);
    } catch (error) {
      throw new BatchError(400, 'SC_ERR_MALFORMED_FRAME', `invocation ${index} of the batch for ${typename}: ${(error as Error).message}`, { cause: error });
    }
    const message = new Message(0, typename, batch.target.id, caller?.typename ?? null, caller?.id ?? null, argument.typename, argument.value, argument.bytes);
    const current = record;
    const invocation = new Invocation(compiled, message, () => current, limits, nowMs);
    try {
      const returned = compiled.definition.fn(invocation, message);
      if (isThenable(returned)) await returned;
    } catch (error) {
      invocation.closed = true;
      const thrown = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      throw new BatchError(422, 'SC_ERR_REMOTE_HANDLER', `${typename}/${batch.target.id} threw ${thrown}`, { cause: error });
    }
    invocation.closed = true;
    if (invocation.refused !== null) {
      // Over the effects limit, the error caught by the handler: the invocation fails whole.
      throw new BatchError(422, 'SC_ERR_REMOTE_HANDLER', `${typename}/${batch.target.id} failed: ${invocation.refused.message}`, { cause: invocation.refused });
    }
    if (invocation.staged !== null) {
      invocation.staged.forEach((value, slot) => value !== UNCHANGED && changed.add(slot));
      record = layout.apply(record, invocation.staged, nowMs);
    }
    for (const effect of invocation.effects ?? []) {
      switch (effect.kind) {
        case EffectKind.Send:
          result.outgoingMessages.push({ target: toRemoteAddress(effect.targetTypename, effect.targetId), argument: toRemoteValue(effect.value!) });
          break;
        case EffectKind.SendAfter:
          result.delayedInvocations.push({
            cancel: false,
            delayMs: effect.delayMs,
            target: toRemoteAddress(effect.targetTypename, effect.targetId),
            argument: toRemoteValue(effect.value!),
            cancellationToken: effect.cancellationToken,
          });
          break;
        case EffectKind.Cancel:
          result.delayedInvocations.push({ cancel: true, cancellationToken: effect.cancellationToken! });
          break;
        case EffectKind.Egress: {
          const egress = toRemoteEgress(effect.targetTypename);
          result.outgoingEgresses.push({ namespace: egress.namespace, type: egress.type, argument: toRemoteValue(effect.value!) });
          break;
        }
      }
    }
  }
  for (const slot of [...changed].sort((a, b) => a - b)) {
    const spec = specs[slot]!;
    const value = layout.read(record, slot, nowMs);
    if (value === null) result.stateMutations.push({ name: spec.name, value: null });
    else {
      const bytes = isPrimitiveType(spec.type) ? spec.type.serialize(value as never) : (value as Uint8Array);
      result.stateMutations.push({ name: spec.name, value: { typename: spec.type.typename, value: bytes } });
    }
  }
  return result;
}
