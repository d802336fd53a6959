/**
 * Statecraft's public API: everything applications import.
 *
 *   import { defineFunction, Types, connect } from 'statecraft';
 */
export { address, formatAddress, type Address } from './address.js';
export {
  StatecraftError,
  ValidationError,
  UndeclaredStateError,
  UnknownFunctionTypeError,
  ProtocolError,
  ConnectionError,
  ContextClosedError,
  EgressGapError,
  type ErrorCode,
} from './errors.js';
export {
  defineFunction,
  isFunctionDefinition,
  DEAD_LETTERS_EGRESS,
  DEAD_LETTER_TYPENAME,
  type Context,
  type DeadLetter,
  type FunctionDefinition,
  type FunctionOptions,
  type Handler,
  type SendAfterOptions,
  type StorageOf,
  type ValueSpec,
} from './function.js';
export {
  Message,
  OutgoingMessage,
  EgressMessage,
  messageBuilder,
  egressMessageBuilder,
  type MessageOptions,
  type EgressMessageOptions,
} from './message.js';
export { Types, type Type, type ValueOf } from './types.js';
export type { ServeOptions, FunctionHost } from './function-host.js';
export { EGRESS_NAMESPACE_DEFAULT } from './remote-values.js';
export { RemoteFunctionError } from './errors.js';
export { KEY_GROUPS_DEFAULT, KEY_GROUP_HASH, keyGroupOf } from './key-group.js';
export {
  connect,
  EgressRecord,
  type Client,
  type ConnectOptions,
  type ReconnectOptions,
  type SubscribeOptions,
  type Subscription,
} from './client.js';
export type { HeartbeatOptions } from './client-heartbeat.js';

/**
 * Serves function definitions over HTTP (StateFun's request-reply protocol) on a piscina pool; see
 * lib/function-host.ts. Loaded on first use, so clients that never serve do not load the host.
 */
export async function serve(
  functions: Parameters<typeof import('./function-host.js').serve>[0],
  options?: import('./function-host.js').ServeOptions,
): Promise<import('./function-host.js').FunctionHost> {
  const host = await import('./function-host.js');
  return host.serve(functions, options);
}
