/**
 * Key groups: the unit of placement, snapshot and hand-over.
 *
 *   keyGroup(id) = murmur3_x86_32(utf8(id), seed 0) mod K
 *
 * The hash is MurmurHash3 x86 32-bit over the UTF-8 bytes of the address id, seed 0, read as an unsigned
 * 32-bit integer. K (the number of key groups, default 1024) is fixed when a cluster's state is first
 * created. Both are part of the wire and storage format: changing either moves every address.
 * Only the id is hashed (as in StateFun), so all function types sharing an id live together.
 */

export const KEY_GROUPS_DEFAULT = 1024;
export const KEY_GROUPS_MAX = 65536;
export const KEY_GROUP_HASH = 'murmur3_x86_32/seed0/utf8';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

let scratch = new Uint8Array(256);
const encoder = new TextEncoder();

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

function mixH(h: number, k: number): number {
  h ^= mixK(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** MurmurHash3 x86 32-bit of `bytes[start, start+length)`, seed 0. */
export function murmur3Bytes(bytes: Uint8Array, start = 0, length = bytes.length - start): number {
  let h = 0;
  const blocksEnd = start + (length & ~3);
  let index = start;
  for (; index < blocksEnd; index += 4) {
    const k = bytes[index]! | (bytes[index + 1]! << 8) | (bytes[index + 2]! << 16) | (bytes[index + 3]! << 24);
    h = mixH(h, k);
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[index + 2]! << 16;
    if (tail >= 2) k ^= bytes[index + 1]! << 8;
    k ^= bytes[index]!;
    h ^= mixK(k);
  }
  return finish(h, length);
}

/** MurmurHash3 of the UTF-8 bytes of `text`; ASCII strings are hashed without encoding them. */
export function murmur3String(text: string): number {
  const length = text.length;
  let h = 0;
  let index = 0;
  const blocksEnd = length & ~3;
  for (; index < blocksEnd; index += 4) {
    const c0 = text.charCodeAt(index);
    const c1 = text.charCodeAt(index + 1);
    const c2 = text.charCodeAt(index + 2);
    const c3 = text.charCodeAt(index + 3);
    if ((c0 | c1 | c2 | c3) >= 0x80) return murmur3NonAscii(text);
    h = mixH(h, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = 0;
    let high = 0;
    if (tail === 3) {
      const c = text.charCodeAt(index + 2);
      high |= c;
      k ^= c << 16;
    }
    if (tail >= 2) {
      const c = text.charCodeAt(index + 1);
      high |= c;
      k ^= c << 8;
    }
    const c = text.charCodeAt(index);
    high |= c;
    if (high >= 0x80) return murmur3NonAscii(text);
    k ^= c;
    h ^= mixK(k);
  }
  return finish(h, length);
}

function murmur3NonAscii(text: string): number {
  if (scratch.length < text.length * 3) scratch = new Uint8Array(text.length * 3);
  const { written } = encoder.encodeInto(text, scratch);
  return murmur3Bytes(scratch, 0, written);
}

/** The key group of an address id, for `keyGroups` key groups. */
export function keyGroupOf(id: string, keyGroups: number): number {
  return murmur3String(id) % keyGroups;
}
