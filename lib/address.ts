import { ValidationError } from './errors.js';

/** A function instance: its type (`namespace/name`) and its id. */
export interface Address {
  readonly typename: string;
  readonly id: string;
}

/** Limits on names that are part of the wire format (the envelope stores their lengths). */
export const TYPENAME_BYTES_MAX = 255;
/** Default limit on an id's UTF-8 length; a node may lower it, never raise it above `ID_BYTES_WIRE_MAX`. */
export const ID_BYTES_MAX_DEFAULT = 1024;
export const ID_BYTES_WIRE_MAX = 0xffff;

// namespace: dotted segments; name: one segment. Both start with a letter or digit.
const TYPENAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const EGRESS_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.\/-]{0,127}$/;

/** Bytes a string takes in UTF-8 (as TextEncoder writes it), without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && index + 1 < text.length && (text.charCodeAt(index + 1) & 0xfc00) === 0xdc00) {
      // surrogate pair: 4 bytes for 2 UTF-16 units
      bytes += 2;
      index++;
    } else bytes += 2; // 3 bytes, also for a lone surrogate: the encoder writes U+FFFD in its place
  }
  return bytes;
}

/** Type names seen valid: a program uses a handful, and every send checks one (the regex is costly). */
const validTypenames = new Set<string>();
const VALID_TYPENAMES_CACHED_MAX = 1024;

export function isTypename(typename: unknown): typename is string {
  if (typeof typename !== 'string') return false;
  if (validTypenames.has(typename)) return true;
  if (typename.length > TYPENAME_BYTES_MAX || !TYPENAME_PATTERN.test(typename)) return false;
  if (validTypenames.size < VALID_TYPENAMES_CACHED_MAX) validTypenames.add(typename);
  return true;
}

/** Throws a `ValidationError` unless `typename` has the form `namespace/name`. */
export function validateTypename(typename: unknown, what = 'typename'): asserts typename is string {
  if (!isTypename(typename)) {
    throw new ValidationError(
      'SC_ERR_INVALID_TYPENAME',
      `${what} ${JSON.stringify(typename)} is not of the form namespace/name ` +
        `(letters, digits, '.', '_', '-'; at most ${TYPENAME_BYTES_MAX} bytes), e.g. "example/greeter".`,
    );
  }
}

/** Throws a `ValidationError` unless `id` is a non-empty string of at most `idBytesMax` UTF-8 bytes. */
export function validateId(id: unknown, idBytesMax = ID_BYTES_MAX_DEFAULT): asserts id is string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new ValidationError(
      'SC_ERR_INVALID_ID',
      `address id must be a non-empty string, got ${describe(id)}.`,
    );
  }
  if (id.length > idBytesMax || (id.length * 3 > idBytesMax && utf8Length(id) > idBytesMax)) {
    throw new ValidationError(
      'SC_ERR_INVALID_ID',
      `address id is ${utf8Length(id)} bytes long; the limit is ${idBytesMax} bytes (UTF-8). Use a shorter id, e.g. a hash of it.`,
    );
  }
}

export function validateAddress(address: unknown, idBytesMax = ID_BYTES_MAX_DEFAULT): asserts address is Address {
  if (address === null || typeof address !== 'object') {
    throw new ValidationError(
      'SC_ERR_INVALID_TYPENAME',
      `an address must be an object { typename, id }, got ${describe(address)}.`,
    );
  }
  const candidate = address as Partial<Address>;
  validateTypename(candidate.typename, 'address typename');
  validateId(candidate.id, idBytesMax);
}

export function validateEgressName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !EGRESS_PATTERN.test(name)) {
    throw new ValidationError(
      'SC_ERR_INVALID_EGRESS',
      `egress name ${JSON.stringify(name)} must be 1-128 characters of letters, digits, '.', '_', '-', '/', starting with a letter or digit.`,
    );
  }
}

/** Builds a validated address. */
export function address(typename: string, id: string): Address {
  validateTypename(typename);
  validateId(id);
  return { typename, id };
}

export function formatAddress(address: Address): string {
  return `${address.typename}/${address.id}`;
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'object') return value.constructor?.name ?? 'object';
  return `${typeof value} ${String(value)}`;
}
