import { Packr } from 'msgpackr';
import { validateTypename, describe } from './address.js';
import { ValidationError } from './errors.js';
import { writeUtf8, readUtf8, encodeUtf8, decodeUtf8 } from './utf8.js';
import { utf8Length } from './address.js';

/**
 * A value type: a type name (`namespace/name`, unique across languages) and its serialiser.
 * Values cross threads, nodes and languages as (type name, bytes).
 */
export interface Type<T> {
  readonly typename: string;
  serialize(value: T): Uint8Array;
  deserialize(bytes: Uint8Array): T;
}

/** The JS value type a `Type` carries. */
export type ValueOf<X> = X extends Type<infer T> ? T : never;

/**
 * StateFun's primitive types: `io.statefun.types/*` names, each value encoded as StateFun's protobuf
 * wrapper message (`IntWrapper { sfixed32 value = 1; }` and so on, proto3: a default value encodes as no
 * bytes). Values of these types are kept decoded in memory and written straight into envelopes.
 */
export class PrimitiveType<T extends number | string | boolean> implements Type<T> {
  /** @internal */
  readonly storesDecoded = true;

  /** @internal */
  constructor(
    readonly typename: string,
    /** @internal */ readonly check: (value: unknown) => value is T,
    private readonly expected: string,
    /** @internal */ readonly encodedLengthMax: (value: T) => number,
    /** @internal */ readonly writeTo: (target: Uint8Array, offset: number, value: T) => number,
    /** @internal */ readonly readFrom: (source: Uint8Array, offset: number, length: number) => T,
  ) {}

  /** @internal Throws a ValidationError unless `value` is a value of this type. */
  validate(value: unknown): void {
    if (!this.check(value)) {
      throw new ValidationError(
        'SC_ERR_INVALID_VALUE',
        `${describe(value)} is not a valid ${this.typename} value: expected ${this.expected}.`,
      );
    }
  }

  serialize(value: T): Uint8Array {
    this.validate(value);
    const buffer = new Uint8Array(this.encodedLengthMax(value));
    const end = this.writeTo(buffer, 0, value);
    return end === buffer.length ? buffer : buffer.slice(0, end);
  }

  deserialize(bytes: Uint8Array): T {
    return this.readFrom(bytes, 0, bytes.length);
  }
}

// ---- protobuf wrapper codec: field 1 only, unknown fields skipped ----

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

const float64 = new Float64Array(1);
const float64Bytes = new Uint8Array(float64.buffer);
const float32 = new Float32Array(1);
const float32Bytes = new Uint8Array(float32.buffer);

function malformed(typename: string, why: string): ValidationError {
  return new ValidationError('SC_ERR_INVALID_VALUE', `malformed ${typename} value: ${why}.`);
}

function readVarint(source: Uint8Array, state: { offset: number }, end: number, typename: string): number {
  // Exact up to 2^53; longer varints (64-bit negatives) only need to be skipped, never used as lengths.
  let result = 0;
  let scale = 1;
  for (let bytes = 0; bytes < 10; bytes++) {
    if (state.offset >= end) throw malformed(typename, 'truncated varint');
    const byte = source[state.offset++]!;
    result += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return result;
    scale *= 128;
  }
  throw malformed(typename, 'varint longer than 10 bytes');
}

/** Finds the last field 1 of `wireType`; returns its payload offset (and length for LEN), or -1 when absent. */
function findField1(
  source: Uint8Array,
  offset: number,
  length: number,
  wireType: number,
  typename: string,
): { offset: number; length: number } | null {
  const end = offset + length;
  const state = { offset };
  let found: { offset: number; length: number } | null = null;
  while (state.offset < end) {
    const key = readVarint(source, state, end, typename);
    const field = key >>> 3;
    const wire = key & 7;
    let payloadLength: number;
    switch (wire) {
      case WIRE_VARINT: {
        const start = state.offset;
        readVarint(source, state, end, typename);
        payloadLength = state.offset - start;
        state.offset = start;
        break;
      }
      case WIRE_FIXED64:
        payloadLength = 8;
        break;
      case WIRE_LENGTH_DELIMITED:
        payloadLength = readVarint(source, state, end, typename);
        break;
      case WIRE_FIXED32:
        payloadLength = 4;
        break;
      default:
        throw malformed(typename, `unsupported wire type ${wire}`);
    }
    if (state.offset + payloadLength > end) throw malformed(typename, 'truncated field');
    if (field === 1) {
      if (wire !== wireType) throw malformed(typename, `field 1 has wire type ${wire}, expected ${wireType}`);
      found = { offset: state.offset, length: payloadLength };
    }
    state.offset += payloadLength;
  }
  return found;
}

function isInt32(value: unknown): value is number {
  return typeof value === 'number' && (value | 0) === value && !Object.is(value, -0);
}
function isSafeInteger(value: unknown): value is number {
  return Number.isSafeInteger(value);
}
function isNumber(value: unknown): value is number {
  return typeof value === 'number';
}
function isBoolean(value: unknown): value is boolean {
  return typeof value === 'boolean';
}
function isString(value: unknown): value is string {
  return typeof value === 'string';
}

function writeFixed32(target: Uint8Array, offset: number, bits: number): number {
  target[offset] = 0x0d; // field 1, wire type 5
  target[offset + 1] = bits & 0xff;
  target[offset + 2] = (bits >>> 8) & 0xff;
  target[offset + 3] = (bits >>> 16) & 0xff;
  target[offset + 4] = (bits >>> 24) & 0xff;
  return offset + 5;
}

function readFixed32(source: Uint8Array, offset: number): number {
  return source[offset]! | (source[offset + 1]! << 8) | (source[offset + 2]! << 16) | (source[offset + 3]! << 24);
}

const intType = new PrimitiveType<number>(
  'io.statefun.types/int',
  isInt32,
  'a 32-bit signed integer',
  () => 5,
  (target, offset, value) => (value === 0 ? offset : writeFixed32(target, offset, value)),
  (source, offset, length) => {
    if (length === 5 && source[offset] === 0x0d) return readFixed32(source, offset + 1);
    const field = findField1(source, offset, length, WIRE_FIXED32, 'io.statefun.types/int');
    return field === null ? 0 : readFixed32(source, field.offset);
  },
);

const floatType = new PrimitiveType<number>(
  'io.statefun.types/float',
  isNumber,
  'a number (stored as a 32-bit float)',
  () => 5,
  (target, offset, value) => {
    float32[0] = value;
    const bits = float32Bytes[0]! | (float32Bytes[1]! << 8) | (float32Bytes[2]! << 16) | (float32Bytes[3]! << 24);
    return bits === 0 ? offset : writeFixed32(target, offset, bits);
  },
  (source, offset, length) => {
    const field = findField1(source, offset, length, WIRE_FIXED32, 'io.statefun.types/float');
    if (field === null) return 0;
    for (let index = 0; index < 4; index++) float32Bytes[index] = source[field.offset + index]!;
    return float32[0]!;
  },
);

function writeFixed64Field(target: Uint8Array, offset: number): number {
  target[offset] = 0x09; // field 1, wire type 1
  for (let index = 0; index < 8; index++) target[offset + 1 + index] = float64Bytes[index]!;
  return offset + 9;
}

const doubleType = new PrimitiveType<number>(
  'io.statefun.types/double',
  isNumber,
  'a number',
  () => 9,
  (target, offset, value) => {
    if (value === 0 && !Object.is(value, -0)) return offset;
    float64[0] = value;
    return writeFixed64Field(target, offset);
  },
  (source, offset, length) => {
    const field = findField1(source, offset, length, WIRE_FIXED64, 'io.statefun.types/double');
    if (field === null) return 0;
    for (let index = 0; index < 8; index++) float64Bytes[index] = source[field.offset + index]!;
    return float64[0]!;
  },
);

const scratch64 = new DataView(new ArrayBuffer(8));

const longType = new PrimitiveType<number>(
  'io.statefun.types/long',
  isSafeInteger,
  'a safe integer (|n| <= 2^53 - 1)',
  () => 9,
  (target, offset, value) => {
    if (value === 0) return offset;
    scratch64.setBigInt64(0, BigInt(value), true);
    target[offset] = 0x09; // field 1, wire type 1
    for (let index = 0; index < 8; index++) target[offset + 1 + index] = scratch64.getUint8(index);
    return offset + 9;
  },
  (source, offset, length) => {
    const field = findField1(source, offset, length, WIRE_FIXED64, 'io.statefun.types/long');
    if (field === null) return 0;
    for (let index = 0; index < 8; index++) scratch64.setUint8(index, source[field.offset + index]!);
    const value = scratch64.getBigInt64(0, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw malformed('io.statefun.types/long', `${value} is beyond ±(2^53 - 1) and cannot be a JS number; read rawValueBytes instead`);
    }
    return Number(value);
  },
);

const boolType = new PrimitiveType<boolean>(
  'io.statefun.types/bool',
  isBoolean,
  'true or false',
  () => 2,
  (target, offset, value) => {
    if (!value) return offset;
    target[offset] = 0x08; // field 1, varint
    target[offset + 1] = 1;
    return offset + 2;
  },
  (source, offset, length) => {
    if (length === 2 && source[offset] === 0x08) return source[offset + 1] !== 0;
    const field = findField1(source, offset, length, WIRE_VARINT, 'io.statefun.types/bool');
    if (field === null) return false;
    for (let index = 0; index < field.length; index++) if ((source[field.offset + index]! & 0x7f) !== 0) return true;
    return false;
  },
);

/** Strings up to this many UTF-16 units get the 3-bytes-per-unit bound; longer ones are measured. */
const STRING_BOUND_CHEAP_MAX = 16;

const stringType = new PrimitiveType<string>(
  'io.statefun.types/string',
  isString,
  'a string',
  // 3 bytes per UTF-16 unit is a cheap bound for short strings only: for long ones it would triple the
  // room reserved in a ring, and a value within valueBytesMax could be refused as too large for it.
  (value) => 1 + 5 + (value.length <= STRING_BOUND_CHEAP_MAX ? value.length * 3 : utf8Length(value)),
  (target, offset, value) => {
    if (value.length === 0) return offset;
    target[offset] = 0x0a; // field 1, length-delimited
    // Reserve a 1-byte length for short strings, 5 bytes otherwise, then fix up.
    if (value.length * 3 < 0x80) {
      const written = writeUtf8(target, offset + 2, value);
      target[offset + 1] = written;
      return offset + 2 + written;
    }
    const byteLength = utf8Length(value);
    let cursor = offset + 1;
    let remaining = byteLength;
    while (remaining >= 0x80) {
      target[cursor++] = (remaining & 0x7f) | 0x80;
      remaining >>>= 7;
    }
    target[cursor++] = remaining;
    const written = writeUtf8(target, cursor, value);
    return cursor + written;
  },
  (source, offset, length) => {
    if (length === 0) return '';
    if (source[offset] === 0x0a && length >= 2 && source[offset + 1]! < 0x80 && source[offset + 1] === length - 2) {
      return readString(source, offset + 2, length - 2);
    }
    const field = findField1(source, offset, length, WIRE_LENGTH_DELIMITED, 'io.statefun.types/string');
    if (field === null) return '';
    return readString(source, field.offset, field.length);
  },
);

/** UTF-8 from an untrusted value: invalid bytes are the value's fault (a ValidationError), not a crash. */
function readString(source: Uint8Array, offset: number, length: number): string {
  try {
    return readUtf8(source, offset, length);
  } catch {
    throw malformed('io.statefun.types/string', 'its bytes are not valid UTF-8; encode strings as UTF-8');
  }
}

/** A type whose values are kept as serialised bytes (so a handler never mutates stored state by accident). */
class SerializedType<T> implements Type<T> {
  constructor(
    readonly typename: string,
    private readonly serializer: (value: T) => Uint8Array,
    private readonly deserializer: (bytes: Uint8Array) => T,
  ) {
    validateTypename(typename, 'type name');
  }

  serialize(value: T): Uint8Array {
    if (value === undefined) {
      throw new ValidationError('SC_ERR_INVALID_VALUE', `undefined is not a ${this.typename} value; use null to clear state.`);
    }
    let bytes: Uint8Array;
    try {
      bytes = this.serializer(value);
    } catch (error) {
      throw new ValidationError('SC_ERR_INVALID_VALUE', `cannot serialise ${describe(value)} as ${this.typename}: ${(error as Error).message}`, { cause: error });
    }
    if (!(bytes instanceof Uint8Array)) {
      throw new ValidationError('SC_ERR_INVALID_VALUE', `the serializer of ${this.typename} returned ${describe(bytes)}; it must return a Uint8Array or Buffer.`);
    }
    return bytes;
  }

  deserialize(bytes: Uint8Array): T {
    try {
      return this.deserializer(bytes);
    } catch (error) {
      throw new ValidationError('SC_ERR_INVALID_VALUE', `cannot deserialise ${bytes.length} bytes as ${this.typename}: ${(error as Error).message}`, { cause: error });
    }
  }
}

export const JSON_TYPENAME = 'statecraft.types/json';
export const BYTES_TYPENAME = 'statecraft.types/bytes';
export const MSGPACK_TYPENAME = 'statecraft.types/msgpack';

// useRecords: false — record structures are per-Packr state and would not decode in another thread or node.
const msgpack = new Packr({ useRecords: false, moreTypes: true });

const jsonTypes = new Map<string, Type<unknown>>();
const bytesType: Type<Uint8Array> = new SerializedType<Uint8Array>(
  BYTES_TYPENAME,
  (value) => {
    if (!(value instanceof Uint8Array)) throw new TypeError(`expected a Uint8Array, got ${describe(value)}`);
    return value.slice();
  },
  (bytes) => bytes.slice(),
);

/**
 * The built-in types. Primitive ones carry StateFun's type names and encodings, so embedded and remote
 * (any-language) functions exchange them unchanged.
 */
export const Types = {
  /** `io.statefun.types/int`: a 32-bit signed integer. */
  int: intType,
  /** `io.statefun.types/long`: a 64-bit signed integer, as a JS number within ±(2^53 - 1). */
  long: longType,
  /** `io.statefun.types/float`: a 32-bit float. */
  float: floatType,
  /** `io.statefun.types/double`: a 64-bit float (any JS number). */
  double: doubleType,
  /** `io.statefun.types/bool` */
  bool: boolType,
  /** The same type as `bool`, by its TypeScript name. */
  boolean: boolType,
  /** `io.statefun.types/string` */
  string: stringType,
  /** Raw bytes, `statecraft.types/bytes` (StateFun has no standard name for them). */
  bytes: bytesType,
  /**
   * JSON text in UTF-8, as StateFun's `jsonType(typename)` encodes it. Name your own JSON types
   * (`Types.json<Order>('shop/order')`); the default name is `statecraft.types/json`.
   */
  json<T = unknown>(typename: string = JSON_TYPENAME): Type<T> {
    let type = jsonTypes.get(typename);
    if (type === undefined) {
      type = new SerializedType<unknown>(
        typename,
        (value) => {
          const text = JSON.stringify(value);
          if (text === undefined) throw new TypeError('JSON.stringify returned undefined');
          return encodeUtf8(text);
        },
        (bytes) => JSON.parse(decodeUtf8(bytes)),
      );
      jsonTypes.set(typename, type);
    }
    return type as Type<T>;
  },
  /** MessagePack (msgpackr): faster than JSON and keeps `Date`, `Map`, `Set`, typed arrays and `bigint`. */
  msgpack<T = unknown>(typename: string = MSGPACK_TYPENAME): Type<T> {
    return new SerializedType<T>(
      typename,
      (value) => msgpack.pack(value),
      (bytes) => msgpack.unpack(bytes) as T,
    );
  },
  /** A user-defined type with its own serialiser. */
  custom<T>(typename: string, serialize: (value: T) => Uint8Array, deserialize: (bytes: Uint8Array) => T): Type<T> {
    return new SerializedType<T>(typename, serialize, deserialize);
  },
} as const;

const primitivesByName = new Map<string, PrimitiveType<number | string | boolean>>(
  [intType, longType, floatType, doubleType, boolType, stringType].map((type) => [type.typename, type as PrimitiveType<number | string | boolean>]),
);

/** @internal The primitive type with this name, if it is one. */
export function primitiveType(typename: string): PrimitiveType<number | string | boolean> | undefined {
  return primitivesByName.get(typename);
}

export function isPrimitiveType(type: Type<unknown>): type is PrimitiveType<number | string | boolean> {
  return type instanceof PrimitiveType;
}

/** Types of values whose type the caller did not give, decided by the value's JS type. */
export function inferType(value: unknown): Type<unknown> {
  switch (typeof value) {
    case 'string':
      return stringType as Type<unknown>;
    case 'boolean':
      return boolType as Type<unknown>;
    case 'number':
      if (isInt32(value)) return intType as Type<unknown>;
      if (Number.isSafeInteger(value)) return longType as Type<unknown>;
      return doubleType as Type<unknown>;
    case 'object':
      if (value === null) break;
      if (value instanceof Uint8Array) return bytesType as Type<unknown>;
      return Types.json();
    default:
      break;
  }
  throw new ValidationError(
    'SC_ERR_INVALID_VALUE',
    `cannot send ${describe(value)}: give a value (string, number, boolean, Uint8Array or a JSON-serialisable object) or pass its type explicitly.`,
  );
}

/** Decodes a value of a known built-in type name (primitives, JSON, bytes); `undefined` for others. */
export function decodeKnown(typename: string, bytes: Uint8Array): unknown {
  const primitive = primitivesByName.get(typename);
  if (primitive !== undefined) return primitive.deserialize(bytes);
  if (typename === JSON_TYPENAME) return Types.json().deserialize(bytes);
  if (typename === BYTES_TYPENAME) return bytes;
  if (typename === MSGPACK_TYPENAME) return msgpack.unpack(bytes);
  return undefined;
}
