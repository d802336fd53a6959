/**
 * Storing a shard's part of a checkpoint, and reading key-group images back for a restore. Runs in the
 * shard's worker thread, so the main thread never touches the bytes.
 *
 * A part becomes one segment object (its key groups' images back to back: a store's cost is per object)
 * and, when messages were in flight at the cut, one channel object. The manifest names each key
 * group's slice of the segment (checkpoint-format.ts).
 */
import { StatecraftError } from '../../lib/errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { channelObjectKey, encodeChannelObject, parseObjectRef, segmentObjectKey, sliceRef } from './checkpoint-format.js';
import type { CheckpointPart } from './shard-cut.js';

/** Objects written or read at once per shard. */
const OBJECTS_IN_FLIGHT = 64;

/** Where a part went: per owned key group its object reference ('' empty, null unchanged), and its channel object. */
export interface UploadedPart {
  objects: [number, string | null][];
  /** Per key group with a new image: its instance count. */
  instances: [number, number][];
  channel: string | null;
  error: string | null;
}

/** The objects a part becomes (written under names `tag` makes unique to this writer), and what the manifest names. */
export function planUpload(part: CheckpointPart, tag: string): { objects: [number, string | null][]; channel: string | null; puts: [string, Uint8Array][] } {
  const objects: [number, string | null][] = [];
  const puts: [string, Uint8Array][] = [];
  const segmentKey = segmentObjectKey(part.checkpoint, tag);
  let segmentBytes = 0;
  for (const [, body] of part.keyGroups) if (body instanceof Uint8Array) segmentBytes += body.length;
  const segment = new Uint8Array(segmentBytes);
  let offset = 0;
  for (const [keyGroup, body] of part.keyGroups) {
    if (body === null || body === '') objects.push([keyGroup, body]);
    else {
      segment.set(body, offset);
      objects.push([keyGroup, sliceRef(segmentKey, offset, body.length)]);
      offset += body.length;
    }
  }
  if (segmentBytes > 0) puts.push([segmentKey, segment]);
  let channel: string | null = null;
  if (part.channel !== null) {
    channel = channelObjectKey(part.checkpoint, tag);
    puts.push([channel, encodeChannelObject(part.checkpoint, part.channel)]);
  }
  return { objects, channel, puts };
}

/** Writes a part's objects; never throws (a failure is in `error`). */
export async function uploadPart(store: BlobStore, tag: string, part: CheckpointPart): Promise<UploadedPart> {
  if (part.error !== null) return { objects: [], instances: [], channel: null, error: part.error };
  const { objects, channel, puts } = planUpload(part, tag);
  try {
    let next = 0;
    const worker = async () => {
      while (next < puts.length) {
        const [key, bytes] = puts[next++]!;
        await store.put(key, bytes);
      }
    };
    await Promise.all(Array.from({ length: Math.min(OBJECTS_IN_FLIGHT, puts.length) }, worker));
  } catch (error) {
    return { objects: [], instances: [], channel: null, error: `upload failed: ${(error as Error).message}` };
  }
  return { objects, instances: part.instances ?? [], channel, error: null };
}

/**
 * The images a restore loads, by their manifest references: each object once (key groups share
 * segment objects), a few at a time; the store checks each against its checksum.
 */
export async function fetchImages(store: BlobStore, refs: readonly string[]): Promise<Uint8Array[]> {
  const parsed = refs.map(parseObjectRef);
  const objectKeys = [...new Set(parsed.map((ref) => ref.key))];
  const fetched = new Map<string, Uint8Array>();
  for (let index = 0; index < objectKeys.length; index += OBJECTS_IN_FLIGHT) {
    await Promise.all(
      objectKeys.slice(index, index + OBJECTS_IN_FLIGHT).map(async (key) => {
        const bytes = await store.get(key);
        if (bytes === null) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `checkpoint object ${key} is missing`);
        fetched.set(key, bytes);
      }),
    );
  }
  return sliceImages(refs, fetched);
}

/** The image each manifest reference names, cut from its object in `objects` (fetched by key). */
export function sliceImages(refs: readonly string[], objects: ReadonlyMap<string, Uint8Array>): Uint8Array[] {
  const images: Uint8Array[] = [];
  for (const ref of refs.map(parseObjectRef)) {
    const bytes = objects.get(ref.key);
    if (bytes === undefined) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `checkpoint object ${ref.key} is missing`);
    if (ref.length === null) images.push(bytes);
    else if (ref.offset + ref.length > bytes.length) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `checkpoint object ${ref.key} is shorter than its slice ${ref.offset}+${ref.length}`);
    else images.push(bytes.subarray(ref.offset, ref.offset + ref.length));
  }
  return images;
}
