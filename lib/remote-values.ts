/**
 * Statecraft's values and addresses as StateFun's request-reply protocol carries them, both ways.
 * Shared by the cluster's remote invoker and the HTTP function host, so the two always agree.
 *
 * - A typed value keeps its type name across the boundary; StateFun's built-in `io.statefun.types/*`
 *   values travel in their protobuf wrapper encoding (the bytes `Types.int` etc. serialise to) and are
 *   held decoded on this side, exactly as a value sent by an embedded function is.
 * - A function type `namespace/name` is StateFun's (namespace, type).
 * - An egress name `ns/type` is StateFun's egress (namespace, type); a name without '/' (`greetings`)
 *   travels under the namespace `statecraft`, and comes back as the bare name (a name in the
 *   `statecraft` namespace travels whole as the type, so every name comes back as it went).
 */
import { validateEgressName, validateId, validateTypename } from './address.js';
import { ValidationError } from './errors.js';
import type { ExpireMode, RemoteAddress, RemoteTypedValue } from './statefun-protocol.js';
import { TypedValue } from './typed-value.js';
import { primitiveType } from './types.js';

/** The egress namespace that stands for "no namespace" (a bare egress name). */
export const EGRESS_NAMESPACE_DEFAULT = 'statecraft';

export function toRemoteAddress(typename: string, id: string): RemoteAddress {
  const slash = typename.indexOf('/');
  return { namespace: typename.slice(0, slash), type: typename.slice(slash + 1), id };
}

/** A protocol address as a validated function type and id; throws a ValidationError saying which is wrong. */
export function fromRemoteAddress(address: RemoteAddress, idBytesMax?: number): { typename: string; id: string } {
  const typename = `${address.namespace}/${address.type}`;
  validateTypename(typename, 'function type');
  validateId(address.id, idBytesMax);
  return { typename, id: address.id };
}

export function toRemoteValue(value: TypedValue): RemoteTypedValue {
  return { typename: value.typename, value: value.toBytes() };
}

/** A protocol value as a TypedValue (built-in types decoded); throws a ValidationError when it is not one. */
export function fromRemoteValue(value: RemoteTypedValue, where: string): TypedValue {
  if (value.value === null) throw new ValidationError('SC_ERR_INVALID_VALUE', `${where} carries no value (has_value is false)`);
  validateTypename(value.typename, `${where}'s type name`);
  const primitive = primitiveType(value.typename);
  if (primitive === undefined) return new TypedValue(value.typename, undefined, value.value);
  return new TypedValue(value.typename, primitive.deserialize(value.value), null);
}

export function toRemoteEgress(name: string): { namespace: string; type: string } {
  const slash = name.indexOf('/');
  // `statecraft/x` keeps its whole name as the type, so it does not come back as the bare `x`.
  if (slash < 0 || name.slice(0, slash) === EGRESS_NAMESPACE_DEFAULT) return { namespace: EGRESS_NAMESPACE_DEFAULT, type: name };
  return { namespace: name.slice(0, slash), type: name.slice(slash + 1) };
}

export function fromRemoteEgress(namespace: string, type: string): string {
  const name = namespace === EGRESS_NAMESPACE_DEFAULT ? type : `${namespace}/${type}`;
  validateEgressName(name);
  return name;
}

/** StateFun's expiration of a value spec, from a spec's `expireAfterWrite` / `expireAfterCall`. */
export function toExpiration(spec: { expireAfterWrite?: number; expireAfterCall?: number }): { expireMode: ExpireMode; expireAfterMs: number } {
  if (spec.expireAfterWrite !== undefined) return { expireMode: 'after-write', expireAfterMs: spec.expireAfterWrite };
  if (spec.expireAfterCall !== undefined) return { expireMode: 'after-invoke', expireAfterMs: spec.expireAfterCall };
  return { expireMode: 'none', expireAfterMs: 0 };
}
