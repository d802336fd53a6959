import { describe, utf8Length } from './address.js';
import { ValidationError } from './errors.js';
import { PrimitiveType, inferType, primitiveType, type Type } from './types.js';

/**
 * A value with its type name. Primitive values (`io.statefun.types/*`) are held decoded (`value`) and
 * encoded only when written into an envelope; every other value is held as its serialised `bytes`.
 */
export class TypedValue {
  constructor(
    readonly typename: string,
    /** The decoded value, for primitive types; `undefined` otherwise. */
    readonly value: unknown,
    /** The serialised value, for non-primitive types; `null` for primitives. */
    readonly bytes: Uint8Array | null,
  ) {}

  /** Bytes this value takes on the wire (exact for bytes, an upper bound for primitives). */
  get encodedLengthMax(): number {
    if (this.bytes !== null) return this.bytes.length;
    return primitiveType(this.typename)!.encodedLengthMax(this.value as never);
  }

  /** The value's serialised bytes (encodes primitives on demand). */
  toBytes(): Uint8Array {
    if (this.bytes !== null) return this.bytes;
    return primitiveType(this.typename)!.serialize(this.value as never);
  }
}

/** Types `value` with `type`, or with the inferred type when none is given; validates and serialises. */
export function toTypedValue(value: unknown, type?: Type<any>): TypedValue {
  if (value === undefined || value === null) {
    throw new ValidationError(
      'SC_ERR_INVALID_VALUE',
      `cannot send ${describe(value)}: a message needs a value.`,
    );
  }
  const resolved = type ?? inferType(value);
  if (resolved instanceof PrimitiveType) {
    resolved.validate(value);
    return new TypedValue(resolved.typename, value, null);
  }
  return new TypedValue(resolved.typename, undefined, resolved.serialize(value));
}

/** Throws a ValidationError when the value is larger than `valueBytesMax` once encoded. */
export function checkValueSize(value: TypedValue, valueBytesMax: number): void {
  let size: number;
  if (value.bytes !== null) size = value.bytes.length;
  else if (typeof value.value === 'string') {
    const text = value.value;
    size = text.length * 3 + 6 <= valueBytesMax ? 0 : utf8Length(text) + 6;
  } else return;
  if (size > valueBytesMax) {
    throw new ValidationError(
      'SC_ERR_VALUE_TOO_LARGE',
      `a ${value.typename} value of ${size} bytes exceeds the limit of ${valueBytesMax} bytes; ` +
        'store large objects elsewhere (e.g. S3) and send a reference, or raise --value-bytes-max.',
    );
  }
}
