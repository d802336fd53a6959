/**
 * UTF-8 string codecs for the hot path. Short ASCII strings (type names, ids) are the common case: a plain
 * loop beats the native encoder's call overhead for them; anything else goes to TextEncoder/TextDecoder.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const ASCII_LOOP_MAX = 48;

/** Writes `text` at `offset`; returns the number of bytes written. The caller guarantees room for 3 bytes per UTF-16 unit. */
export function writeUtf8(target: Uint8Array, offset: number, text: string): number {
  const length = text.length;
  if (length <= ASCII_LOOP_MAX) {
    let index = 0;
    for (; index < length; index++) {
      const code = text.charCodeAt(index);
      if (code >= 0x80) break;
      target[offset + index] = code;
    }
    if (index === length) return length;
  }
  return encoder.encodeInto(text, target.subarray(offset)).written;
}

/** Decodes `length` bytes at `offset`; throws a TypeError on invalid UTF-8. */
export function readUtf8(source: Uint8Array, offset: number, length: number): string {
  if (length <= 16) {
    // Short strings: build from char codes, bail out at the first non-ASCII byte.
    let text = '';
    for (let index = 0; index < length; index++) {
      const byte = source[offset + index]!;
      if (byte >= 0x80) return decoder.decode(source.subarray(offset, offset + length));
      text += String.fromCharCode(byte);
    }
    return text;
  }
  return decoder.decode(source.subarray(offset, offset + length));
}

export function encodeUtf8(text: string): Uint8Array {
  return encoder.encode(text);
}

export function decodeUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * `text` cut to at most `maxBytes` bytes of UTF-8, on a character boundary, ending with `suffix` when it
 * was cut. For limits counted in bytes (WebSocket close reasons: 123): slicing UTF-16 units or bytes
 * can split a character, and a split character encodes longer than the limit.
 */
export function truncateUtf8(text: string, maxBytes: number, suffix = '…'): string {
  if (text.length * 3 <= maxBytes) return text;
  // Each UTF-16 unit encodes to at least one byte, so this prefix decides whether the text fits, and any
  // cut below maxBytes falls before its last unit (which may be half of a surrogate pair).
  const head = text.length > maxBytes ? text.slice(0, maxBytes + 1) : text;
  const bytes = encoder.encode(head);
  if (head === text && bytes.length <= maxBytes) return text;
  let cut = Math.max(0, maxBytes - encoder.encode(suffix).length);
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--; // back off continuation bytes
  return decoder.decode(bytes.subarray(0, cut)) + suffix;
}

/**
 * Decodes short, frequently repeated strings (type names) to one shared string instance, so decoding a
 * known name allocates nothing and later Map lookups hit a string whose hash is already computed.
 * Bounded: at most `entriesMax` names are kept.
 */
export class InternedStrings {
  private readonly byHash = new Map<number, { bytes: Uint8Array; text: string }>();

  constructor(private readonly entriesMax = 4096) {}

  read(source: Uint8Array, offset: number, length: number): string {
    let hash = length;
    for (let index = 0; index < length; index++) hash = (Math.imul(hash, 31) + source[offset + index]!) | 0;
    const hit = this.byHash.get(hash);
    if (hit !== undefined && hit.bytes.length === length) {
      let same = true;
      for (let index = 0; index < length; index++) {
        if (hit.bytes[index] !== source[offset + index]) {
          same = false;
          break;
        }
      }
      if (same) return hit.text;
    }
    const text = readUtf8(source, offset, length);
    if (this.byHash.size < this.entriesMax) {
      this.byHash.set(hash, { bytes: source.slice(offset, offset + length), text });
    }
    return text;
  }
}
