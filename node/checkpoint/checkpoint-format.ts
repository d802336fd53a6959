/**
 * What checkpoints look like in a blob store (docs/checkpoints.md):
 *
 *   checkpoints/<c>/seg-<tag>.bin          the key groups one shard wrote for checkpoint c, back to back:
 *                                          each a key-group image (node/keygroups/key-group-image.ts)
 *                                          with its unreleased egress and egress counter; the manifest
 *                                          names each key group's slice as `<object key>#<offset>+<length>`
 *   checkpoints/<c>/ch-<tag>.bin           messages one process recorded in flight at the cut
 *   checkpoints/<c>/manifest-<term>.json   CheckpointManifest (node/checkpoint/checkpoint-coordinator.ts)
 *                                          of c as the leader of <term> wrote it
 *   terms/…, commits/…                     which checkpoint is committed (node/checkpoint/terms.ts)
 *
 * `<tag>` names the writer (node, thread and recovery epoch), so an upload of a previous epoch that
 * lands late never overwrites an object of a checkpoint that reused its number; `<term>` does the same
 * for a deposed leader's manifest.
 */
import { Packr } from 'msgpackr';
import { EnvelopeDecoder } from '../../lib/envelope.js';
import { StatecraftError } from '../../lib/errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { CHECKPOINT_MANIFEST_VERSION, type CheckpointManifest } from './checkpoint-coordinator.js';
import { isTermId, type CheckpointRef, type CommitRecord } from './terms.js';

export const manifestKey = (checkpoint: number, term: string): string => `checkpoints/${checkpoint}/manifest-${term}.json`;
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

export async function writeManifest(store: BlobStore, manifest: CheckpointManifest): Promise<void> {
  await store.put(manifestKey(manifest.checkpoint, manifest.term), new TextEncoder().encode(JSON.stringify(manifest)));
}

function parseJson(bytes: Uint8Array, key: string): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} is not JSON: ${(error as Error).message}`);
  }
}

const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every((item) => typeof item === 'string');

/** Reads manifest `ref` (stored under `key`) and checks every field recovery and the coordinator use. */
function parseManifest(bytes: Uint8Array, key: string, ref: CheckpointRef): CheckpointManifest {
  const manifest = parseJson(bytes, key) as CheckpointManifest;
  const { checkpoint } = ref;
  const bad = (why: string) => new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} is not a version ${CHECKPOINT_MANIFEST_VERSION} checkpoint manifest: ${why}`);
  if (manifest === null || typeof manifest !== 'object' || manifest.version !== CHECKPOINT_MANIFEST_VERSION) throw bad('another version, or not a manifest');
  if (manifest.checkpoint !== checkpoint || manifest.term !== ref.term) throw bad(`it names checkpoint ${String(manifest.checkpoint)} of term ${String(manifest.term)}`);
  if (typeof manifest.view !== 'string' || typeof manifest.hash !== 'string') throw bad('view or hash is not a string');
  if (!Number.isSafeInteger(manifest.keyGroups) || manifest.keyGroups < 1) throw bad(`keyGroups is ${String(manifest.keyGroups)}`);
  if (!isStrings(manifest.objects) || manifest.objects.length !== manifest.keyGroups) throw bad(`objects is not ${manifest.keyGroups} object keys`);
  manifest.channels ??= [];
  manifest.retained ??= [];
  if (!isStrings(manifest.channels)) throw bad('channels is not a list of object keys');
  const retained = manifest.retained as unknown[];
  const isEarlier = (earlier: unknown, index: number): boolean => {
    const candidate = earlier as CheckpointRef | null;
    if (typeof candidate !== 'object' || candidate === null || !isTermId(candidate.term)) return false;
    const number = candidate.checkpoint;
    return Number.isSafeInteger(number) && number >= 1 && number < checkpoint && (index === 0 || number > (retained[index - 1] as CheckpointRef).checkpoint);
  };
  if (!Array.isArray(retained) || !retained.every(isEarlier)) throw bad('retained is not a rising list of earlier checkpoints');
  const instances = manifest.instances as unknown;
  if (instances !== undefined && !(Array.isArray(instances) && instances.length === manifest.keyGroups && instances.every((count) => Number.isSafeInteger(count) && (count as number) >= -1))) {
    throw bad(`instances is not ${manifest.keyGroups} counts`);
  }
  return manifest;
}

/**
 * Keys of `listing` (of `checkpoints/`) that belong to checkpoints up to `upTo` and that no manifest of
 * `retained` needs (its manifest, objects and channel objects): what retention would have deleted had
 * every earlier leader lived to do it. A leader deposed after its commit deletes nothing, so the next
 * term's leader sweeps once, after its first commit (numbers above `upTo` may be uploads in flight).
 */
export function unreferencedKeys(listing: readonly string[], retained: readonly CheckpointManifest[], upTo: number): string[] {
  const object = (key: string) => parseObjectRef(key).key;
  const keep = new Set<string>();
  for (const manifest of retained) {
    keep.add(manifestKey(manifest.checkpoint, manifest.term));
    for (const key of manifest.objects) if (key !== '') keep.add(object(key));
    for (const key of manifest.channels) keep.add(object(key));
  }
  return listing.filter((key) => {
    const match = /^checkpoints\/(\d+)\//.exec(key);
    return match !== null && Number(match[1]) <= upTo && !keep.has(key);
  });
}

/** Manifest `ref`, checked; null when it is not in the store. */
export async function readManifest(store: BlobStore, ref: CheckpointRef): Promise<CheckpointManifest | null> {
  const key = manifestKey(ref.checkpoint, ref.term);
  const bytes = await store.get(key);
  return bytes === null ? null : parseManifest(bytes, key, ref);
}

/**
 * The manifests of `head` and of the checkpoints retained with it, oldest first, head's last (`[]` when
 * nothing was ever committed). A manifest that is corrupt or missing is left out and logged; any other
 * error (the store unreachable) is thrown: a leader must not sweep what it only failed to read.
 */
export async function readCommittedManifests(store: BlobStore, head: CommitRecord, log: (line: string) => void): Promise<CheckpointManifest[]> {
  if (head.checkpoint === 0) return [];
  const manifests: CheckpointManifest[] = [];
  for (const ref of [...head.retained, head]) {
    try {
      const manifest = await readManifest(store, ref);
      if (manifest === null) log(`checkpoints: the manifest of checkpoint ${ref.checkpoint} (term ${ref.term}) is missing`);
      else manifests.push(manifest);
    } catch (error) {
      if ((error as StatecraftError).code !== 'SC_ERR_STORE_CORRUPT') throw error;
      log(`checkpoints: the manifest of checkpoint ${ref.checkpoint} (term ${ref.term}) cannot be read: ${(error as Error).message}`);
    }
  }
  return manifests;
}
