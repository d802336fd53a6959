/**
 * What checkpoints look like in a blob store (docs/checkpoints.md):
 *
 *   checkpoints/<c>/seg-<tag>.bin          the key groups one shard wrote for checkpoint c, back to back:
 *                                          each a key-group image (node/keygroups/key-group-image.ts)
 *                                          with its unreleased egress and egress counter; the manifest
 *                                          names each key group's slice as `<object key>#<offset>+<length>`
 *   checkpoints/<c>/ch-<tag>.bin           messages one process recorded in flight at the cut
 *   checkpoints/<c>/manifest.json          CheckpointManifest (node/checkpoint/checkpoint-coordinator.ts)
 *   LATEST                                 { checkpoint }: the last committed checkpoint (the commit point)
 *
 * `<tag>` names the writer (node, thread and recovery epoch), so an upload of a previous epoch that
 * lands late never overwrites an object of a checkpoint that reused its number.
 */
import { Packr } from 'msgpackr';
import { EnvelopeDecoder } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { CHECKPOINT_MANIFEST_VERSION, type CheckpointManifest } from './checkpoint-coordinator.js';

export const LATEST_KEY = 'LATEST';

export const manifestKey = (checkpoint: number): string => `checkpoints/${checkpoint}/manifest.json`;
export const segmentObjectKey = (checkpoint: number, tag: string): string => `checkpoints/${checkpoint}/seg-${tag}.bin`;

/** A key group's place in a segment object. */
export const sliceRef = (key: string, offset: number, length: number): string => `${key}#${offset}+${length}`;

/** The object a manifest entry lives in, and the slice of it (the whole object when there is no `#`). */
export function parseObjectRef(ref: string): { key: string; offset: number; length: number | null } {
  const hash = ref.lastIndexOf('#');
  if (hash < 0) return { key: ref, offset: 0, length: null };
  const match = /^(\d+)\+(\d+)$/.exec(ref.slice(hash + 1));
  if (match === null) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `malformed object reference ${JSON.stringify(ref)} in a manifest`);
  return { key: ref.slice(0, hash), offset: Number(match[1]), length: Number(match[2]) };
}
export const channelObjectKey = (checkpoint: number, tag: string): string => `checkpoints/${checkpoint}/ch-${tag}.bin`;

const CHANNELS_VERSION = 1;
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Messages recorded in flight: invoke envelopes, in the order each channel delivered them. */
export function encodeChannelObject(checkpoint: number, messages: readonly Uint8Array[]): Uint8Array {
  return Uint8Array.prototype.slice.call(packr.pack({ v: CHANNELS_VERSION, checkpoint, messages }));
}

const channelDecoder = new EnvelopeDecoder();

/** The recorded messages of a channel object; each is checked to be an invoke envelope (recovery replays them). */
export function decodeChannelObject(bytes: Uint8Array): Uint8Array[] {
  let value: { v?: number; messages?: unknown };
  try {
    value = packr.unpack(bytes) as { v?: number; messages?: unknown };
  } catch (error) {
    throw new StatecraftError('SC_ERR_STORE_CORRUPT', `a channel object cannot be decoded: ${(error as Error).message}`);
  }
  if (value?.v !== CHANNELS_VERSION || !Array.isArray(value.messages) || !value.messages.every((message) => message instanceof Uint8Array)) {
    throw new StatecraftError('SC_ERR_STORE_CORRUPT', `not a version ${CHANNELS_VERSION} channel object`);
  }
  const messages = value.messages as Uint8Array[];
  messages.forEach((message, index) => {
    try {
      channelDecoder.decodeInvoke(message, 0, message.length);
    } catch (error) {
      throw new StatecraftError('SC_ERR_STORE_CORRUPT', `message ${index} of a channel object is not an invoke envelope: ${(error as Error).message}`);
    }
  });
  return messages;
}

export async function writeLatest(store: BlobStore, checkpoint: number): Promise<void> {
  await store.put(LATEST_KEY, new TextEncoder().encode(JSON.stringify({ checkpoint })));
}

export async function writeManifest(store: BlobStore, manifest: CheckpointManifest): Promise<void> {
  await store.put(manifestKey(manifest.checkpoint), new TextEncoder().encode(JSON.stringify(manifest)));
}

function parseJson(bytes: Uint8Array, key: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} is not JSON: ${(error as Error).message}`);
  }
}

const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every((item) => typeof item === 'string');

/** Reads manifest `checkpoint` (stored under `key`) and checks every field recovery and the coordinator use. */
function parseManifest(bytes: Uint8Array, key: string, checkpoint: number): CheckpointManifest {
  const manifest = parseJson(bytes, key) as CheckpointManifest;
  const bad = (why: string) => new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} is not a version ${CHECKPOINT_MANIFEST_VERSION} checkpoint manifest: ${why}`);
  if (manifest === null || typeof manifest !== 'object' || manifest.version !== CHECKPOINT_MANIFEST_VERSION) throw bad('another version, or not a manifest');
  if (manifest.checkpoint !== checkpoint) throw bad(`it names checkpoint ${String(manifest.checkpoint)}`);
  if (typeof manifest.view !== 'string' || typeof manifest.hash !== 'string') throw bad('view or hash is not a string');
  if (!Number.isSafeInteger(manifest.keyGroups) || manifest.keyGroups < 1) throw bad(`keyGroups is ${String(manifest.keyGroups)}`);
  if (!isStrings(manifest.objects) || manifest.objects.length !== manifest.keyGroups) throw bad(`objects is not ${manifest.keyGroups} object keys`);
  manifest.channels ??= [];
  manifest.retained ??= [];
  if (!isStrings(manifest.channels)) throw bad('channels is not a list of object keys');
  const retained = manifest.retained as unknown[];
  if (!Array.isArray(retained) || !retained.every((earlier, index) => Number.isSafeInteger(earlier) && (earlier as number) >= 1 && (earlier as number) < checkpoint && (index === 0 || (earlier as number) > (retained[index - 1] as number)))) {
    throw bad('retained is not a rising list of earlier checkpoints');
  }
  return manifest;
}

export async function readManifest(store: BlobStore, checkpoint: number): Promise<CheckpointManifest | null> {
  const key = manifestKey(checkpoint);
  const bytes = await store.get(key);
  return bytes === null ? null : parseManifest(bytes, key, checkpoint);
}

/** The last committed checkpoint's number (0: none). */
export async function readLatest(store: BlobStore): Promise<number> {
  const bytes = await store.get(LATEST_KEY);
  if (bytes === null) return 0;
  const value = parseJson(bytes, LATEST_KEY) as { checkpoint?: unknown } | null;
  if (value === null || !Number.isSafeInteger(value?.checkpoint) || (value.checkpoint as number) < 1) throw new StatecraftError('SC_ERR_STORE_CORRUPT', `${LATEST_KEY} does not name a checkpoint`);
  return value.checkpoint as number;
}

/**
 * LATEST, and the committed manifests retained with it, oldest first, LATEST's last (`[]` when nothing
 * was ever committed). A manifest that cannot be read (corrupt, missing) is left out.
 */
export async function readCommittedManifests(store: BlobStore, log: (line: string) => void): Promise<{ latest: number; manifests: CheckpointManifest[] }> {
  const latest = await readLatest(store);
  if (latest === 0) return { latest, manifests: [] };
  const manifests: CheckpointManifest[] = [];
  let newest: CheckpointManifest | null = null;
  try {
    newest = await readManifest(store, latest);
  } catch (error) {
    log(`checkpoints: the manifest of checkpoint ${latest} (LATEST) cannot be read: ${(error as Error).message}`);
  }
  let retained = newest?.retained ?? [];
  if (newest === null) {
    // Without LATEST's manifest its list of retained ones is gone too: look for older manifests.
    retained = (await store.list('checkpoints/'))
      .map((key) => /^checkpoints\/(\d+)\/manifest\.json$/.exec(key)?.[1])
      .filter((number): number is string => number !== undefined)
      .map(Number)
      .filter((number) => number < latest)
      .sort((a, b) => a - b);
  }
  for (const checkpoint of retained) {
    try {
      const manifest = await readManifest(store, checkpoint);
      if (manifest !== null) manifests.push(manifest);
    } catch (error) {
      log(`checkpoints: the manifest of checkpoint ${checkpoint} cannot be read: ${(error as Error).message}`);
    }
  }
  if (newest !== null) manifests.push(newest);
  return { latest, manifests };
}
