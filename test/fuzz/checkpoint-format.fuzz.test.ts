// Seeded fuzzing of what a node reads back from a checkpoint store (node/checkpoint/checkpoint-format.ts):
// channel objects, object references and the slices they name (part-upload.ts sliceImages), manifests,
// LATEST, and readCommittedManifests over a whole store of mutated objects. Each read returns what the
// format documents or throws SC_ERR_STORE_CORRUPT. Where it does not today, the case is counted under a
// named gap and pinned as a skipped test. FUZZ_SEED=<n> replays one seed (see fuzz-harness.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeDecoder } from '../../lib/envelope.js';
import { KEY_GROUP_HASH } from '../../lib/key-group.js';
import { CHECKPOINT_MANIFEST_VERSION, type CheckpointManifest } from '../../node/checkpoint/checkpoint-coordinator.js';
import {
  LATEST_KEY,
  decodeChannelObject,
  encodeChannelObject,
  manifestKey,
  parseObjectRef,
  readCommittedManifests,
  readLatest,
  readManifest,
  segmentObjectKey,
  sliceRef,
} from '../../node/checkpoint/checkpoint-format.js';
import { sliceImages } from '../../node/checkpoint/part-upload.js';
import type { BlobInfo, BlobStore } from '../../node/storage/blob-store.js';
import {
  KnownGaps,
  Random,
  attempt,
  attemptAsync,
  describeError,
  expectContract,
  fail,
  injectMsgpackHugeLength,
  isContracted,
  mutateBytes,
  mutateValue,
  planSeeds,
  summary,
  wrongValue,
  type CaseLabel,
  type ErrorContract,
} from './fuzz-harness.js';
import { randomInvoke } from './fuzz-envelopes.js';

const plan = planSeeds('checkpoint-format', import.meta.url, 30, 6);
const CASES_PER_SEED = 1000;
const STORES_PER_SEED = 60;
const KEY_GROUPS = 4;
const CONTRACT: ErrorContract = { codes: ['SC_ERR_STORE_CORRUPT'] };

const gaps = new KnownGaps('checkpoint-format', []);

/** A blob store in memory (the fuzz reads what it wrote; no integrity header to check). */
class MemoryStore implements BlobStore {
  readonly objects = new Map<string, Uint8Array>();
  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.objects.set(key, bytes);
  }
  async get(key: string): Promise<Uint8Array | null> {
    return this.objects.get(key) ?? null;
  }
  async head(key: string): Promise<BlobInfo | null> {
    const bytes = this.objects.get(key);
    return bytes === undefined ? null : { key, size: bytes.length };
  }
  async exists(key: string): Promise<boolean> {
    return this.objects.has(key);
  }
  async list(prefix = ''): Promise<string[]> {
    return [...this.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
  }
  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) this.objects.delete(key);
  }
  async check(): Promise<void> {}
  async close(): Promise<void> {}
  describe(): string {
    return 'memory://fuzz';
  }
}

const encodeText = (text: string) => new TextEncoder().encode(text);
const decoder = new EnvelopeDecoder();

// ---- channel objects ----

function channelCase(label: CaseLabel, bytes: Uint8Array): void {
  const messages = expectContract(label, attempt(() => decodeChannelObject(bytes)), CONTRACT);
  if (messages === undefined) return;
  if (!Array.isArray(messages) || !messages.every((message) => message instanceof Uint8Array)) fail(label, 'accepted messages that are not byte arrays');
  // "Messages recorded in flight: invoke envelopes": recovery reads each one's key group and replays it.
  if (!messages.every((message) => attempt(() => decoder.decodeInvoke(message, 0, message.length)).ok)) fail(label, 'accepted a message that is not an invoke envelope');
}

function fuzzChannel(random: Random, label: (what: string, input: Uint8Array) => CaseLabel): void {
  const messages = Array.from({ length: random.int(4) }, () => randomInvoke(random).bytes);
  const valid = encodeChannelObject(random.between(1, 1000), messages);
  const roll = random.int(3);
  if (roll === 0) {
    const mutated = mutateValue(random, { v: 1, checkpoint: random.between(1, 1000), messages });
    // Through the same msgpack as the format's (encodeChannelObject packs { v, checkpoint, messages }).
    const value = mutated.value as { checkpoint?: number; messages?: Uint8Array[] } | null;
    const bytes = typeof value === 'object' && value !== null && !Array.isArray(value) ? encodeChannelObject(value.checkpoint ?? 0, value.messages ?? []) : valid;
    channelCase(label(`channel ${mutated.kind}`, bytes), bytes);
  } else if (roll === 1) {
    const mutated = mutateBytes(random, valid);
    channelCase(label(`channel ${mutated.kind}`, mutated.bytes), mutated.bytes);
  } else {
    const bytes = injectMsgpackHugeLength(random, valid);
    channelCase(label('channel msgpack-huge-length', bytes), bytes);
  }
}

// ---- object references and their slices ----

function refCase(label: CaseLabel, ref: string, objects: Map<string, Uint8Array>): void {
  const parsed = expectContract(label, attempt(() => parseObjectRef(ref)), CONTRACT);
  if (parsed === undefined) return;
  const rebuilt = parsed.length === null ? parsed.key : `${parsed.key}#${ref.slice(ref.lastIndexOf('#') + 1)}`;
  if (rebuilt !== ref) fail(label, `parsed as ${JSON.stringify(parsed)}`);
  // Digits beyond 2^53 come out as inexact or infinite numbers; sliceImages must refuse those (below).
  const whole = (number: number) => Number.isInteger(number) && number >= 0;
  if (parsed.length !== null && Number.isFinite(parsed.offset + parsed.length) && !(whole(parsed.offset) && whole(parsed.length))) fail(label, `parsed as ${JSON.stringify(parsed)}`);
  // What a restore makes of it: a slice inside the object, or SC_ERR_STORE_CORRUPT.
  const sliced = expectContract(label, attempt(() => sliceImages([ref], objects)), CONTRACT);
  if (sliced === undefined) return;
  const object = objects.get(parsed.key)!;
  const slice = sliced[0]!;
  if (slice.buffer !== object.buffer || slice.byteOffset < object.byteOffset || slice.byteOffset + slice.length > object.byteOffset + object.length) fail(label, 'a slice outside its object');
  if (parsed.length !== null && slice.length !== parsed.length) fail(label, `a slice of ${slice.length} bytes for length ${parsed.length}`);
}

function fuzzRef(random: Random, label: (what: string, input: string) => CaseLabel, objects: Map<string, Uint8Array>): void {
  const key = random.pick([...objects.keys()]);
  const valid = random.chance(0.2) ? key : sliceRef(key, random.int(objects.get(key)!.length), random.int(40));
  let ref: string;
  let what: string;
  const roll = random.int(4);
  if (roll === 0) {
    ref = valid + random.pick(['#', '+', '#1+', '#-1+2', '#1e3+1', '#0x10+1', '# 1+1', `#${'9'.repeat(random.between(15, 400))}+1`, `#1+${'9'.repeat(30)}`, '#1+2#3+4', '\u0000']);
    what = 'ref with a suffix';
  } else if (roll === 1) {
    const at = random.int(valid.length + 1);
    ref = valid.slice(0, at) + random.text(4) + valid.slice(at + random.int(3));
    what = 'ref with text spliced in';
  } else if (roll === 2) {
    ref = valid.slice(0, random.int(valid.length + 1));
    what = 'ref truncated';
  } else {
    ref = random.text(24);
    what = 'random text';
  }
  refCase(label(what, ref), ref, objects);
}

// ---- manifests and LATEST ----

function validManifest(random: Random, checkpoint: number, retained: number[]): CheckpointManifest {
  return {
    version: CHECKPOINT_MANIFEST_VERSION,
    checkpoint,
    view: `view-${random.int(9)}`,
    keyGroups: KEY_GROUPS,
    hash: KEY_GROUP_HASH,
    objects: Array.from({ length: KEY_GROUPS }, (_, keyGroup) => random.pick(['', sliceRef(segmentObjectKey(checkpoint, 'n1-1-0'), keyGroup * 10, 10), `checkpoints/${checkpoint}/kg-${keyGroup}.bin`])),
    channels: random.chance(0.5) ? [`checkpoints/${checkpoint}/ch-n1-0.bin`] : [],
    retained,
  };
}

/** Why an accepted manifest breaks the shape CheckpointManifest documents, or null. */
function manifestProblem(manifest: CheckpointManifest, checkpoint: number): string | null {
  if (manifest.version !== CHECKPOINT_MANIFEST_VERSION || !Number.isSafeInteger(manifest.checkpoint)) return 'version or checkpoint';
  if (manifest.checkpoint !== checkpoint) return `checkpoint ${manifest.checkpoint} stored as ${checkpoint}'s manifest`;
  if (!Number.isSafeInteger(manifest.keyGroups) || manifest.keyGroups < 1) return `keyGroups ${manifest.keyGroups}`;
  if (!Array.isArray(manifest.objects) || manifest.objects.length !== manifest.keyGroups || !manifest.objects.every((ref) => typeof ref === 'string')) return 'objects are not one key per key group';
  if (!Array.isArray(manifest.channels) || !manifest.channels.every((key) => typeof key === 'string')) return 'channels are not keys';
  if (!Array.isArray(manifest.retained) || !manifest.retained.every((number, index, all) => Number.isSafeInteger(number) && number >= 1 && number < checkpoint && (index === 0 || number > all[index - 1]!))) return 'retained are not earlier checkpoints, oldest first';
  if (typeof manifest.view !== 'string' || typeof manifest.hash !== 'string') return 'view or hash';
  return null;
}

/** A manifest's bytes, changed in its JSON value or its bytes, or random. */
function mutatedManifest(random: Random, manifest: CheckpointManifest): { what: string; bytes: Uint8Array } {
  const roll = random.int(10);
  if (roll < 2) {
    // One of the fields a reader relies on, given a value of another kind.
    const field = random.pick(['objects', 'channels', 'retained', 'keyGroups', 'checkpoint', 'version'] as const);
    return { what: `manifest ${field} of another kind`, bytes: encodeText(JSON.stringify({ ...manifest, [field]: wrongValue(random) })) };
  }
  if (roll < 5) {
    const mutated = mutateValue(random, manifest);
    return { what: `manifest ${mutated.kind}`, bytes: encodeText(JSON.stringify(mutated.value) ?? '') };
  }
  if (roll < 9) {
    const mutated = mutateBytes(random, encodeText(JSON.stringify(manifest)));
    return { what: `manifest ${mutated.kind}`, bytes: mutated.bytes };
  }
  return { what: 'manifest random text', bytes: encodeText(random.text(30)) };
}

function mutatedLatest(random: Random, checkpoint: number): { what: string; bytes: Uint8Array } {
  const valid = encodeText(JSON.stringify({ checkpoint }));
  const roll = random.int(3);
  if (roll === 0) {
    const mutated = mutateValue(random, { checkpoint });
    return { what: `LATEST ${mutated.kind}`, bytes: encodeText(JSON.stringify(mutated.value) ?? '') };
  }
  if (roll === 1) {
    const mutated = mutateBytes(random, valid);
    return { what: `LATEST ${mutated.kind}`, bytes: mutated.bytes };
  }
  return { what: 'LATEST valid', bytes: valid };
}

/** A store-level read: what it throws must be within the contract. */
function storeReadOutcome<T>(label: CaseLabel, outcome: Awaited<ReturnType<typeof attemptAsync<T>>>): T | undefined {
  return expectContract(label, outcome, CONTRACT);
}

async function fuzzStore(random: Random, label: (what: string, input: Uint8Array) => CaseLabel): Promise<void> {
  const store = new MemoryStore();
  const latest = random.between(3, 40);
  const retained = [latest - 2, latest - 1].filter((number) => number >= 1);
  const changes: string[] = [];
  // The manifests: LATEST's and those it retains, any of them changed.
  for (const checkpoint of [...retained, latest]) {
    const manifest = validManifest(random, checkpoint, checkpoint === latest ? retained : []);
    let bytes: Uint8Array = encodeText(JSON.stringify(manifest));
    if (random.chance(0.5)) {
      const mutated = mutatedManifest(random, manifest);
      bytes = mutated.bytes;
      changes.push(`${checkpoint}: ${mutated.what}`);
    }
    await store.put(manifestKey(checkpoint), bytes);
    const one = label(`manifest of ${checkpoint}, ${changes.at(-1) ?? 'valid'}`, bytes);
    const read = storeReadOutcome(one, await attemptAsync(() => readManifest(store, checkpoint)));
    if (read !== undefined && read !== null && manifestProblem(read, checkpoint) !== null) fail(one, `accepted a malformed manifest: ${manifestProblem(read, checkpoint)}`);
  }
  const latestBytes = random.chance(0.7) ? { what: 'LATEST valid', bytes: encodeText(JSON.stringify({ checkpoint: latest })) } : mutatedLatest(random, latest);
  await store.put(LATEST_KEY, latestBytes.bytes);
  changes.push(latestBytes.what);
  const storeLabel = label(`store: ${changes.join('; ')}`, latestBytes.bytes);
  const readLatestOutcome = await attemptAsync(() => readLatest(store));
  const number = storeReadOutcome(storeLabel, readLatestOutcome);
  if (number !== undefined && !(Number.isSafeInteger(number) && number >= 1)) fail(storeLabel, `readLatest gave ${number}`);
  // As a node starts: LATEST and every manifest it retains; a manifest that cannot be read is logged.
  const logs: string[] = [];
  const committed = await attemptAsync(() => readCommittedManifests(store, (line) => logs.push(line)));
  const result = expectContract(storeLabel, committed, CONTRACT);
  if (result === undefined) return;
  if (result.latest !== number) fail(storeLabel, `readCommittedManifests says LATEST is ${result.latest}, readLatest ${number}`);
  for (const manifest of result.manifests) {
    if (typeof manifest !== 'object' || manifest === null) fail(storeLabel, `a committed manifest ${String(manifest)}`);
  }
}

test('channel objects, object references, manifests and LATEST: mutated and random objects are read or refused with SC_ERR_STORE_CORRUPT', async () => {
  const started = performance.now();
  let cases = 0;
  for (const seed of plan.seeds) {
    const random = new Random(seed);
    const label = (what: string, input: Uint8Array | string): CaseLabel => ({ plan, seed, index: cases++, what, input });
    // Every truncation of a channel object.
    const channel = encodeChannelObject(7, [randomInvoke(random).bytes, randomInvoke(random).bytes]);
    assert.is(decodeChannelObject(channel).length, 2);
    for (let length = 0; length < channel.length; length++) channelCase(label(`channel truncated to ${length}`, channel.slice(0, length)), channel.slice(0, length));
    const objects = new Map<string, Uint8Array>([
      [segmentObjectKey(5, 'n1-1-0'), random.bytes(100)],
      ['checkpoints/5/kg-1.bin', random.bytes(10)],
      ['a#b', random.bytes(20)],
    ]);
    for (let index = 0; index < CASES_PER_SEED; index++) {
      if (random.chance(0.5)) fuzzChannel(random, label);
      else fuzzRef(random, label, objects);
    }
    for (let index = 0; index < STORES_PER_SEED; index++) await fuzzStore(random, label);
  }
  summary('checkpoint-format', plan.seeds.length, cases, started);
  gaps.report();
});

// ---- defects this fuzz found, now fixed: their smallest inputs ----

// Once a bug (found by this fuzz, fixed): decodeChannelObject checks that messages are byte arrays, not that they
// are invoke envelopes, which the format documents and recovery relies on (it reads each one's key group
// at offset 4 and writes it to a shard's ring). Smallest: a channel object whose one message is empty.
test('decodeChannelObject refuses messages that are not invoke envelopes (they were once accepted)', () => {
  const input = encodeChannelObject(1, [new Uint8Array(0)]);
  const outcome = attempt(() => decodeChannelObject(input));
  assert.ok(!outcome.ok && isContracted(outcome.error, CONTRACT), `${Buffer.from(input).toString('hex')}: ${outcome.ok ? 'accepted' : describeError(outcome.error)}`);
});

// Once a bug (found by this fuzz, fixed): readManifest and readLatest call JSON.parse without a try: an object
// that is not JSON throws a SyntaxError, not SC_ERR_STORE_CORRUPT. readCommittedManifests logs a bad
// manifest and goes on only because it catches everything, but a LATEST that is not JSON (smallest: an
// empty object, 0 bytes) fails a node's start and a recovery with a plain SyntaxError.
test('readManifest and readLatest refuse what is not JSON with SC_ERR_STORE_CORRUPT (JSON.parse\'s SyntaxError once got through)', async () => {
  const store = new MemoryStore();
  await store.put(LATEST_KEY, new Uint8Array(0));
  await store.put(manifestKey(1), new Uint8Array(0));
  for (const [what, read] of [['LATEST', () => readLatest(store)], ['manifest', () => readManifest(store, 1)], ['committed manifests', () => readCommittedManifests(store, () => undefined)]] as const) {
    const outcome = await attemptAsync<unknown>(read);
    assert.ok(!outcome.ok && isContracted(outcome.error, CONTRACT), `${what} of 0 bytes: ${outcome.ok ? 'accepted' : describeError(outcome.error)}`);
  }
});

// Once a bug (found by this fuzz, fixed): parseManifest checks version, checkpoint and that objects is an array.
// It accepts objects of another length than keyGroups or holding non-strings (recovery then calls
// parseObjectRef on them: a TypeError), channels that are not keys, a checkpoint other than the one the
// key names, and retained that is not a list of earlier checkpoints: readCommittedManifests then throws a
// TypeError iterating it (retained: 5), and the checkpoint coordinator a RangeError for objects of the
// wrong length or retained out of order. Smallest: LATEST = 1 and manifest 1 with `retained: 0`.
test('readManifest refuses manifests whose objects, channels, retained or keyGroups are malformed (they were once accepted)', async () => {
  const store = new MemoryStore();
  const valid = { version: CHECKPOINT_MANIFEST_VERSION, checkpoint: 1, view: 'v', keyGroups: 2, hash: KEY_GROUP_HASH, objects: ['', ''], channels: [], retained: [] };
  const cases: Record<string, unknown>[] = [{ retained: 0 }, { objects: [''] }, { objects: [1, 2] }, { channels: [1] }, { checkpoint: 2 }, { retained: [3, 2] }];
  const failures: string[] = [];
  await store.put(LATEST_KEY, encodeText(JSON.stringify({ checkpoint: 1 })));
  for (const change of cases) {
    await store.put(manifestKey(1), encodeText(JSON.stringify({ ...valid, ...change })));
    const read = await attemptAsync(() => readManifest(store, 1));
    const committed = await attemptAsync(() => readCommittedManifests(store, () => undefined));
    const refused = !read.ok && isContracted(read.error, CONTRACT);
    if (!refused) failures.push(`${JSON.stringify(change)}: readManifest ${read.ok ? 'accepted it' : describeError(read.error)}; readCommittedManifests ${committed.ok ? 'returned' : describeError(committed.error).split('\n')[0]}`);
  }
  assert.equal(failures, []);
});

test.run();
