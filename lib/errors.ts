/**
 * Typed errors. Every error Statecraft raises carries a stable `code` (callers branch on it, never on
 * the text) and a message that says what went wrong and what to do about it.
 */

export const ERROR_CODES = [
  'SC_ERR_INVALID_TYPENAME',
  'SC_ERR_INVALID_ID',
  'SC_ERR_INVALID_VALUE',
  'SC_ERR_VALUE_TOO_LARGE',
  'SC_ERR_INVALID_EGRESS',
  'SC_ERR_INVALID_SPEC',
  'SC_ERR_INVALID_FUNCTION',
  'SC_ERR_INVALID_OPTION',
  'SC_ERR_UNDECLARED_STATE',
  'SC_ERR_UNKNOWN_FUNCTION_TYPE',
  'SC_ERR_TYPE_MISMATCH',
  'SC_ERR_CONTEXT_CLOSED',
  'SC_ERR_MALFORMED_FRAME',
  'SC_ERR_PROTOCOL_VERSION',
  'SC_ERR_NOT_CONNECTED',
  'SC_ERR_UNAUTHORIZED',
  'SC_ERR_LIMIT_REACHED',
  'SC_ERR_CLIENT_CLOSED',
  'SC_ERR_QUEUE_FULL',
  'SC_ERR_CONNECT_FAILED',
  'SC_ERR_NODE_SHUTTING_DOWN',
  'SC_ERR_EGRESS_GAP',
  'SC_ERR_MODULE_LOAD',
  'SC_ERR_SHARD_START',
  'SC_ERR_STORE_CORRUPT',
  'SC_ERR_STORE_UNAVAILABLE',
  'SC_ERR_STORE_FAILED',
  'SC_ERR_MALFORMED_IMAGE',
  'SC_ERR_REMOTE_CALL',
  'SC_ERR_REMOTE_RESPONSE',
  'SC_ERR_REMOTE_HANDLER',
  'SC_ERR_REMOTE_BACKLOG_FULL',
  'SC_ERR_HANDLER_TIMEOUT',
  'SC_ERR_INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const errorCodes: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `value` is one of the codes above (a code that came over the wire is checked before use). */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && errorCodes.has(value);
}

export class StatecraftError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Input that can never succeed as given: fix the call. */
export class ValidationError extends StatecraftError {}

/** A storage name that the function did not declare in its `specs`. */
export class UndeclaredStateError extends StatecraftError {
  constructor(readonly stateName: string, readonly functionType: string, declared: readonly string[]) {
    super(
      'SC_ERR_UNDECLARED_STATE',
      `state "${stateName}" is not declared by function ${functionType}; ` +
        `declared: ${declared.length === 0 ? '(none)' : declared.join(', ')}. ` +
        `Add { name: '${stateName}', type: ... } to its specs.`,
    );
  }
}

/** A message or event addressed to a function type that no loaded module defines. */
export class UnknownFunctionTypeError extends StatecraftError {
  constructor(readonly functionType: string, known?: readonly string[]) {
    super(
      'SC_ERR_UNKNOWN_FUNCTION_TYPE',
      `no function of type ${functionType} is loaded on this node` +
        (known === undefined ? '' : ` (loaded: ${known.length === 0 ? 'none' : known.join(', ')})`) +
        '; check the typename or start the node with --functions <module> that defines it.',
    );
  }
}

/** The bytes on a connection do not follow the protocol: the connection is closed. */
export class ProtocolError extends StatecraftError {}

/** The client cannot currently deliver: closed by the user, or the node is gone. */
export class ConnectionError extends StatecraftError {}

/** Context methods called after the invocation finished (for example from an un-awaited promise). */
export class ContextClosedError extends StatecraftError {
  constructor(method: string, address: string) {
    super(
      'SC_ERR_CONTEXT_CLOSED',
      `context.${method}() called for ${address} after its invocation finished; ` +
        'await every promise inside the handler so its effects belong to the invocation.',
    );
  }
}

/** An async handler did not finish within the node's handler time budget: it was abandoned. */
export class HandlerTimeoutError extends StatecraftError {
  constructor(address: string, timeoutMs: number) {
    super(
      'SC_ERR_HANDLER_TIMEOUT',
      `the handler of ${address} did not finish within ${timeoutMs} ms (--handler-timeout): it was abandoned, its state writes and messages discarded, and the address went on with its next message. ` +
        'Make sure every promise it awaits settles (give network calls a timeout), or raise --handler-timeout.',
    );
  }
}

/** Egress records a subscriber asked for are no longer retained by the node. */
export class EgressGapError extends StatecraftError {}

/** A remote function could not be invoked: its endpoint failed, answered badly, or its handler threw. */
export class RemoteFunctionError extends StatecraftError {}

/** A rule inside Statecraft was broken: a bug, never an operating condition. */
export class InternalError extends StatecraftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SC_ERR_INTERNAL', `${message} (a bug in Statecraft: please report it)`, options);
  }
}

/** Asserts what must hold (TigerStyle): throws an InternalError naming the broken rule. Sans-I/O cores use it too. */
export function invariant(condition: unknown, rule: string): asserts condition {
  if (!condition) throw new InternalError(rule);
}
