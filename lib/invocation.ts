/**
 * One invocation of one instance: the `Context` a handler sees. Nothing a handler does takes effect
 * while it runs: state writes are staged and messages collected as effects, in program order. The
 * runtime (a shard, or the HTTP function host) applies them all when the handler succeeds, or none of
 * them when it throws (atomicity).
 */
import { validateAddress, validateEgressName, validateId, validateTypename, type Address } from './address.js';
import { ContextClosedError, ValidationError } from './errors.js';
import {
  CANCELLATION_TOKEN_LENGTH_MAX,
  DELAY_MS_MAX,
  type Context,
  type SendAfterOptions,
} from './function.js';
import { EgressMessage, OutgoingMessage, type Message } from './message.js';
import { TypedValue, checkValueSize, toTypedValue } from './typed-value.js';
import { PrimitiveType, type Type } from './types.js';
import type { CompiledFunction, StateAccess } from './compiled-function.js';
import { UNCHANGED, type Staged } from './state-layout.js';

export const EffectKind = {
  Send: 0,
  SendAfter: 1,
  Cancel: 2,
  Egress: 3,
} as const;
export type EffectKind = (typeof EffectKind)[keyof typeof EffectKind];

/** One thing a handler asked for. `target` is a function typename, or the egress name for Egress. */
export class Effect {
  constructor(
    readonly kind: EffectKind,
    readonly targetTypename: string,
    readonly targetId: string,
    readonly value: TypedValue | null,
    readonly delayMs: number,
    readonly cancellationToken: string | null,
  ) {}
}

/** True when a handler returned a thenable; reading `then` runs handler code (a getter), so it may throw. */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}

export interface InvocationLimits {
  readonly valueBytesMax: number;
  readonly idBytesMax: number;
}

/**
 * Messages, delayed messages, cancellations and egress records one invocation may ask for, together.
 * One loop scheduling a million delayed messages would otherwise grow a shard by gigabytes before the
 * handler returns; past this the invocation fails whole (see Invocation.refused).
 */
export const EFFECTS_PER_INVOCATION_MAX = 100_000;

const NOT_LOADED: unique symbol = Symbol('not loaded');

export class Invocation<R extends CompiledFunction = CompiledFunction> implements Context<Record<string, unknown>>, StateAccess {
  effects: Effect[] | null = null;
  staged: Staged | null = null;
  closed = false;
  /**
   * Set when the handler asked for more than EFFECTS_PER_INVOCATION_MAX effects: the call that went
   * over threw it, and the invocation fails with it even if the handler caught it (nothing applies).
   */
  refused: ValidationError | null = null;
  private loaded: unknown = NOT_LOADED;
  private storageProxy: object | null = null;
  private selfAddress: Address | null = null;

  constructor(
    readonly runtime: R,
    readonly message: Message,
    /** Loads the instance's record from the state store (called at most once, on first state access). */
    private readonly load: (invocation: Invocation<R>) => unknown,
    readonly limits: InvocationLimits,
    readonly nowMs: number,
  ) {}

  /** The record as loaded, if the handler touched state (else the store was never read). */
  get record(): unknown {
    return this.loaded === NOT_LOADED ? undefined : this.loaded;
  }

  get touchedState(): boolean {
    return this.loaded !== NOT_LOADED;
  }

  get self(): Address {
    if (this.selfAddress === null) this.selfAddress = { typename: this.message.targetTypename, id: this.message.targetId };
    return this.selfAddress;
  }

  get caller(): Address | null {
    const message = this.message;
    return message.callerTypename === null ? null : { typename: message.callerTypename, id: message.callerId! };
  }

  get storage(): Record<string, unknown> {
    this.ensureOpen('storage');
    if (this.storageProxy === null) this.storageProxy = this.runtime.storageFor(this);
    return this.storageProxy as Record<string, unknown>;
  }

  readState(index: number): unknown {
    this.ensureOpen('storage');
    const layout = this.runtime.layout;
    let stored: unknown;
    const staged = this.staged === null ? UNCHANGED : this.staged[index];
    if (staged !== UNCHANGED) stored = staged;
    else {
      if (this.loaded === NOT_LOADED) this.loaded = this.load(this);
      stored = layout.read(this.loaded, index, this.nowMs);
    }
    if (stored === null) return null;
    if (layout.storesDecoded[index]) return stored;
    return layout.specs[index]!.type.deserialize(stored as Uint8Array);
  }

  writeState(index: number, value: unknown): void {
    this.ensureOpen('storage');
    const layout = this.runtime.layout;
    let stored: unknown = null;
    if (value !== null && value !== undefined) {
      const type = layout.specs[index]!.type as Type<unknown>;
      if (type instanceof PrimitiveType) {
        type.validate(value);
        stored = value;
      } else {
        stored = type.serialize(value);
      }
      checkValueSize(new TypedValue(type.typename, type instanceof PrimitiveType ? value : undefined, type instanceof PrimitiveType ? null : (stored as Uint8Array)), this.limits.valueBytesMax);
    }
    if (this.loaded === NOT_LOADED) this.loaded = this.load(this);
    if (this.staged === null) this.staged = new Array(layout.count).fill(UNCHANGED);
    this.staged[index] = stored;
  }

  send(targetOrMessage: Address | OutgoingMessage | EgressMessage, value?: unknown, type?: Type<any>): void {
    this.ensureOpen('send');
    if (targetOrMessage instanceof OutgoingMessage) {
      this.pushSend(EffectKind.Send, targetOrMessage.target, targetOrMessage.typedValue, 0, null);
    } else if (targetOrMessage instanceof EgressMessage) {
      checkValueSize(targetOrMessage.typedValue, this.limits.valueBytesMax);
      this.push(new Effect(EffectKind.Egress, targetOrMessage.egress, '', targetOrMessage.typedValue, 0, null));
    } else {
      validateAddress(targetOrMessage, this.limits.idBytesMax);
      this.pushSend(EffectKind.Send, targetOrMessage, toTypedValue(value, type), 0, null);
    }
  }

  sendAfter(
    delayMs: number,
    targetOrMessage: Address | OutgoingMessage,
    valueOrToken?: unknown,
    options?: string | SendAfterOptions<any>,
  ): void {
    this.ensureOpen('sendAfter');
    if (typeof delayMs !== 'number' || !(delayMs >= 0) || delayMs > DELAY_MS_MAX) {
      throw new ValidationError(
        'SC_ERR_INVALID_VALUE',
        `sendAfter delay ${String(delayMs)} must be a number of milliseconds between 0 and ${DELAY_MS_MAX} (one year).`,
      );
    }
    let target: Address;
    let value: TypedValue;
    let token: string | undefined;
    if (targetOrMessage instanceof OutgoingMessage) {
      target = targetOrMessage.target;
      value = targetOrMessage.typedValue;
      token = valueOrToken as string | undefined;
    } else {
      validateAddress(targetOrMessage, this.limits.idBytesMax);
      target = targetOrMessage;
      const sendOptions = typeof options === 'string' ? { cancellationToken: options } : (options ?? {});
      value = toTypedValue(valueOrToken, sendOptions.type);
      token = sendOptions.cancellationToken;
    }
    if (token !== undefined && token !== null) validateToken(token);
    this.pushSend(EffectKind.SendAfter, target, value, Math.ceil(delayMs), token ?? null);
  }

  cancelDelayedMessage(cancellationToken: string): void {
    this.ensureOpen('cancelDelayedMessage');
    validateToken(cancellationToken);
    this.push(new Effect(EffectKind.Cancel, '', '', null, 0, cancellationToken));
  }

  egress(name: string, value: unknown, type?: Type<any>): void {
    this.ensureOpen('egress');
    validateEgressName(name);
    const typed = toTypedValue(value, type);
    checkValueSize(typed, this.limits.valueBytesMax);
    this.push(new Effect(EffectKind.Egress, name, '', typed, 0, null));
  }

  private pushSend(kind: EffectKind, target: Address, value: TypedValue, delayMs: number, token: string | null): void {
    validateTypename(target.typename, 'target typename');
    validateId(target.id, this.limits.idBytesMax);
    checkValueSize(value, this.limits.valueBytesMax);
    this.push(new Effect(kind, target.typename, target.id, value, delayMs, token));
  }

  private push(effect: Effect): void {
    if (this.refused !== null) throw this.refused;
    if (this.effects === null) this.effects = [effect];
    else if (this.effects.length < EFFECTS_PER_INVOCATION_MAX) this.effects.push(effect);
    else {
      this.refused ??= new ValidationError(
        'SC_ERR_LIMIT_REACHED',
        `${this.message.targetTypename}/${this.message.targetId} asked for more than ${EFFECTS_PER_INVOCATION_MAX} messages, delayed messages, cancellations and egress records in one invocation: none of them is sent and its state is unchanged. Spread the work over several invocations (for example a message to itself that carries on).`,
      );
      this.effects = null; // nothing of it will apply: let the memory go
      throw this.refused;
    }
  }

  private ensureOpen(method: string): void {
    if (this.closed) throw new ContextClosedError(method, `${this.message.targetTypename}/${this.message.targetId}`);
  }
}

function validateToken(token: unknown): asserts token is string {
  if (typeof token !== 'string' || token.length === 0 || token.length > CANCELLATION_TOKEN_LENGTH_MAX) {
    throw new ValidationError(
      'SC_ERR_INVALID_VALUE',
      `a cancellation token must be a non-empty string of at most ${CANCELLATION_TOKEN_LENGTH_MAX} characters, got ${JSON.stringify(token)}.`,
    );
  }
}
