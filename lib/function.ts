import { validateTypename, type Address } from './address.js';
import { ValidationError } from './errors.js';
import type { EgressMessage, Message, OutgoingMessage } from './message.js';
import type { Type } from './types.js';

/** The egress that receives a record for each failed invocation and each undeliverable message. */
export const DEAD_LETTERS_EGRESS = 'dead-letters';
/** Type name of dead-letter records (JSON, see `DeadLetter`). */
export const DEAD_LETTER_TYPENAME = 'statecraft.types/dead-letter';

/** Longest delay `sendAfter` accepts: one year. */
export const DELAY_MS_MAX = 365 * 24 * 3600 * 1000;
export const CANCELLATION_TOKEN_LENGTH_MAX = 1024;

/** A named, typed value an instance keeps between invocations (StateFun's `ValueSpec`). */
export interface ValueSpec<N extends string = string, T = any> {
  readonly name: N;
  readonly type: Type<T>;
  /** Expire the value this many milliseconds after it was last written. */
  readonly expireAfterWrite?: number;
  /** Expire the value this many milliseconds after the instance was last invoked. */
  readonly expireAfterCall?: number;
}

/** `context.storage` for a list of specs: one property per declared value, `null` when unset. */
export type StorageOf<S extends readonly ValueSpec[]> = {
  -readonly [P in S[number] as P['name']]: (P['type'] extends Type<infer T> ? T : never) | null;
};

export interface SendAfterOptions<T> {
  cancellationToken?: string;
  type?: Type<T>;
}

/** What a handler can do during one invocation. Everything it does takes effect only if the handler succeeds. */
export interface Context<S = Record<string, unknown>> {
  /** The address of the instance being invoked. */
  readonly self: Address;
  /** The function that sent this message, or `null` for client events and delayed messages from clients. */
  readonly caller: Address | null;
  /**
   * The instance's declared values, as properties. Reading gives the current value (or `null`); assigning
   * stages a write; assigning `null` deletes. An undeclared name throws `UndeclaredStateError`.
   */
  readonly storage: S;
  /** Sends a message to a function (value type inferred unless given) or a prebuilt message/egress record. */
  send<T>(target: Address, value: T, type?: Type<T>): void;
  send(message: OutgoingMessage | EgressMessage): void;
  /** Sends a message after `delayMs` milliseconds; a cancellation token lets this instance cancel it. */
  sendAfter<T>(delayMs: number, target: Address, value: T, options?: string | SendAfterOptions<T>): void;
  sendAfter(delayMs: number, message: OutgoingMessage, cancellationToken?: string): void;
  /** Cancels this instance's pending delayed messages sent with `cancellationToken`; a no-op if none is pending. */
  cancelDelayedMessage(cancellationToken: string): void;
  /** Emits a record to the named egress, where clients `subscribe()` to it. */
  egress<T>(name: string, value: T, type?: Type<T>): void;
}

export type Handler<S> = (context: Context<S>, message: Message) => void | Promise<void>;

export interface FunctionOptions<S extends readonly ValueSpec[]> {
  /** `namespace/name` */
  typename: string;
  /** Declared state values. */
  specs?: S;
  fn: Handler<StorageOf<S>>;
}

const FUNCTION_BRAND: unique symbol = Symbol.for('statecraft.function');
const SPEC_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** A validated function type, as exported by a functions module. */
export interface FunctionDefinition {
  readonly [FUNCTION_BRAND]: true;
  readonly typename: string;
  readonly specs: readonly ValueSpec[];
  readonly fn: Handler<any>;
}

export function isFunctionDefinition(value: unknown): value is FunctionDefinition {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[FUNCTION_BRAND] === true;
}

function validateExpiry(spec: ValueSpec, key: 'expireAfterWrite' | 'expireAfterCall', typename: string): void {
  const value = spec[key];
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new ValidationError(
      'SC_ERR_INVALID_SPEC',
      `${typename}: spec "${spec.name}" has ${key}: ${String(value)}; give a positive whole number of milliseconds.`,
    );
  }
}

/**
 * Defines a function type. Export the result from a module and start a node with `--functions module.js`.
 *
 * ```ts
 * export const greeter = defineFunction({
 *   typename: 'example/greeter',
 *   specs: [{ name: 'seen', type: Types.int }],
 *   fn(context, message) {
 *     const seen = (context.storage.seen ?? 0) + 1;
 *     context.storage.seen = seen;
 *     context.egress('greetings', `Hello ${message.asString()} #${seen}`);
 *   },
 * });
 * ```
 */
export function defineFunction<const S extends readonly ValueSpec[] = []>(options: FunctionOptions<S>): FunctionDefinition {
  if (options === null || typeof options !== 'object') {
    throw new ValidationError('SC_ERR_INVALID_FUNCTION', 'defineFunction expects { typename, specs?, fn }.');
  }
  validateTypename(options.typename, 'function typename');
  const typename = options.typename;
  if (typeof options.fn !== 'function') {
    throw new ValidationError('SC_ERR_INVALID_FUNCTION', `${typename}: fn must be a function (context, message) => void | Promise<void>.`);
  }
  const specs = (options.specs ?? []) as readonly ValueSpec[];
  if (!Array.isArray(specs)) {
    throw new ValidationError('SC_ERR_INVALID_SPEC', `${typename}: specs must be an array of { name, type }.`);
  }
  const seen = new Set<string>();
  for (const spec of specs) {
    if (spec === null || typeof spec !== 'object' || typeof spec.name !== 'string' || !SPEC_NAME_PATTERN.test(spec.name)) {
      throw new ValidationError(
        'SC_ERR_INVALID_SPEC',
        `${typename}: spec name ${JSON.stringify((spec as ValueSpec | null)?.name)} must be an identifier (letters, digits, '_', at most 128).`,
      );
    }
    if (seen.has(spec.name)) {
      throw new ValidationError('SC_ERR_INVALID_SPEC', `${typename}: spec "${spec.name}" is declared twice.`);
    }
    seen.add(spec.name);
    const type = spec.type as Partial<Type<unknown>> | undefined;
    if (!type || typeof type.typename !== 'string' || typeof type.serialize !== 'function' || typeof type.deserialize !== 'function') {
      throw new ValidationError(
        'SC_ERR_INVALID_SPEC',
        `${typename}: spec "${spec.name}" needs a type such as Types.int, Types.json('ns/name') or Types.custom(...).`,
      );
    }
    validateExpiry(spec, 'expireAfterWrite', typename);
    validateExpiry(spec, 'expireAfterCall', typename);
    if (spec.expireAfterWrite !== undefined && spec.expireAfterCall !== undefined) {
      throw new ValidationError(
        'SC_ERR_INVALID_SPEC',
        `${typename}: spec "${spec.name}" sets both expireAfterWrite and expireAfterCall; choose one.`,
      );
    }
  }
  return Object.freeze({
    [FUNCTION_BRAND]: true as const,
    typename,
    specs: Object.freeze(specs.map((spec) => Object.freeze({ ...spec }))),
    fn: options.fn as Handler<any>,
  });
}

/** The JSON value of a dead-letter record (type `statecraft.types/dead-letter`, egress `dead-letters`). */
export interface DeadLetter {
  /** The instance whose invocation failed, or the address that could not be reached. */
  address: Address;
  caller: Address | null;
  /** Type name of the message's value. */
  messageType: string;
  /** Stable error code, e.g. `SC_ERR_UNKNOWN_FUNCTION_TYPE`, or `SC_ERR_HANDLER` for an error the handler threw. */
  code: string;
  /** The error's class name (`TypeError`, ...). */
  error: string;
  reason: string;
  /** ISO-8601 time of the failure. */
  at: string;
}
