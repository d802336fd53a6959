import { validateTypename, validateId, validateEgressName, type Address } from './address.js';
import type { ProducerMark } from './envelope.js';
import { ValidationError } from './errors.js';
import { TypedValue, toTypedValue } from './typed-value.js';
import { Types, decodeKnown, primitiveType, type Type } from './types.js';

/**
 * A message delivered to a function. Familiar from StateFun's SDKs: test the value's type with `is…()`
 * and read it with `as…()` or `as(type)`.
 */
export class Message {
  /** @internal */
  constructor(
    /** @internal */ readonly keyGroup: number,
    readonly targetTypename: string,
    readonly targetId: string,
    /** @internal */ readonly callerTypename: string | null,
    /** @internal */ readonly callerId: string | null,
    /** The type name of the carried value, e.g. `io.statefun.types/string`. */
    readonly valueTypeName: string,
    /** @internal The decoded value for primitive types, else undefined. */
    readonly decoded: unknown,
    /** @internal The serialised value for non-primitive types, else null. */
    readonly bytes: Uint8Array | null,
    /** @internal A client event's producer mark (its session and per-key-group sequence), else null. */
    readonly producer: ProducerMark | null = null,
  ) {}

  get targetAddress(): Address {
    return { typename: this.targetTypename, id: this.targetId };
  }

  /** The value's bytes in its type's encoding. */
  get rawValueBytes(): Uint8Array {
    return this.bytes ?? primitiveType(this.valueTypeName)!.serialize(this.decoded as never);
  }

  /** @internal */
  get typedValue(): TypedValue {
    return new TypedValue(this.valueTypeName, this.decoded, this.bytes);
  }

  is(type: Type<unknown>): boolean {
    return type.typename === this.valueTypeName;
  }

  /** The value as `type`; throws `SC_ERR_TYPE_MISMATCH` when the message carries another type. */
  as<T>(type: Type<T>): T {
    if (type.typename !== this.valueTypeName) {
      throw new ValidationError(
        'SC_ERR_TYPE_MISMATCH',
        `message to ${this.targetTypename}/${this.targetId} carries a ${this.valueTypeName} value, not ${type.typename}; check with message.is(type) first.`,
      );
    }
    if (this.bytes === null) return this.decoded as T;
    return type.deserialize(this.bytes);
  }

  /** The value decoded by its type name when it is a built-in type (primitives, JSON, bytes); otherwise its bytes. */
  get value(): unknown {
    if (this.bytes === null) return this.decoded;
    const known = decodeKnown(this.valueTypeName, this.bytes);
    return known === undefined ? this.bytes : known;
  }

  isString(): boolean {
    return this.valueTypeName === Types.string.typename;
  }
  asString(): string {
    return this.as(Types.string);
  }
  isInt(): boolean {
    return this.valueTypeName === Types.int.typename;
  }
  asInt(): number {
    return this.as(Types.int);
  }
  isLong(): boolean {
    return this.valueTypeName === Types.long.typename;
  }
  asLong(): number {
    return this.as(Types.long);
  }
  isFloat(): boolean {
    return this.valueTypeName === Types.float.typename;
  }
  asFloat(): number {
    return this.as(Types.float);
  }
  isDouble(): boolean {
    return this.valueTypeName === Types.double.typename;
  }
  asDouble(): number {
    return this.as(Types.double);
  }
  isBoolean(): boolean {
    return this.valueTypeName === Types.bool.typename;
  }
  asBoolean(): boolean {
    return this.as(Types.bool);
  }
}

/** A message to a function, built ahead of `context.send(message)` (StateFun style). */
export class OutgoingMessage {
  /** @internal */
  constructor(
    readonly target: Address,
    /** @internal */ readonly typedValue: TypedValue,
  ) {}
}

/** A record for a named egress, built ahead of `context.send(record)` (StateFun style). */
export class EgressMessage {
  /** @internal */
  constructor(
    readonly egress: string,
    /** @internal */ readonly typedValue: TypedValue,
  ) {}
}

export interface MessageOptions<T> {
  /** Target function type, `namespace/name`. */
  typename: string;
  /** Target id. */
  id: string;
  value: T;
  /** The value's type; inferred for strings, numbers, booleans, bytes and JSON objects when omitted. */
  valueType?: Type<T>;
}

/** Builds a message to a function, as StateFun's `messageBuilder`. */
export function messageBuilder<T>(options: MessageOptions<T>): OutgoingMessage {
  validateTypename(options.typename, 'target typename');
  validateId(options.id);
  return new OutgoingMessage({ typename: options.typename, id: options.id }, toTypedValue(options.value, options.valueType));
}

export interface EgressMessageOptions<T> {
  /** Egress name (StateFun calls it the egress typename). */
  typename: string;
  value: T;
  valueType?: Type<T>;
}

/** Builds an egress record, as StateFun's `egressMessageBuilder`. */
export function egressMessageBuilder<T>(options: EgressMessageOptions<T>): EgressMessage {
  validateEgressName(options.typename);
  return new EgressMessage(options.typename, toTypedValue(options.value, options.valueType));
}
