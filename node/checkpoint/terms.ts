/**
 * Terms: how a store names its committed checkpoint so that a deposed leader's late writes can neither
 * move it back nor be announced (docs/checkpoints.md, "Terms").
 *
 * Leading checkpoints and recovering both begin a term: a store-wide number (with a random part, so two
 * writers that pick the same number still differ) sealed in the store *before* its writer reads what is
 * committed. A leader commits checkpoint c of its term by writing a commit record, then lists the terms:
 * if a newer one was sealed meanwhile, it was deposed and does not announce c. Either the newer term's
 * writer read the store after the record landed (and continues from c), or the leader saw the seal — the
 * two writes come before the two reads, so both cannot miss each other on a store that lists what it
 * wrote (S3, MinIO, a directory). No conditional write is needed.
 *
 *   terms/<term>/seal.json           { writer }: the term began; nothing older commits unseen from now on
 *   terms/<term>/base.json           CommitRecord: the checkpoint the term continues from (written before
 *                                    it commits anything; checkpoint 0 when none)
 *   commits/<term>/<c>.json          CommitRecord of checkpoint c, committed in <term> (the commit point)
 *   checkpoints/<c>/manifest-<term>.json   its manifest (checkpoint-format.ts)
 *
 * The committed checkpoint (the head) is read from the newest term that has a base: its newest commit
 * record, or its base when it committed nothing. Records of older terms that landed late are ignored.
 *
 * The key and ordering rules are plain functions over key lists (the checkpoint simulation runs them on
 * its own store); the I/O is the few functions at the end.
 */
import { randomBytes } from 'node:crypto';
import { StatecraftError } from '../../lib/errors.js';
import type { BlobStore } from '../storage/blob-store.js';

/** A committed checkpoint: its number and the term it was committed in. Checkpoint 0: none. */
export interface CheckpointRef {
  checkpoint: number;
  term: string;
}

/** What a commit names: the checkpoint, and the earlier committed ones kept with it (oldest first). */
export interface CommitRecord extends CheckpointRef {
  retained: CheckpointRef[];
}

export const NO_COMMIT: CommitRecord = Object.freeze({ checkpoint: 0, term: '', retained: Object.freeze([]) }) as unknown as CommitRecord;

export const TERMS_PREFIX = 'terms/';
export const COMMITS_PREFIX = 'commits/';
/** Where checkpoints' objects (segments, channels, manifests) live. */
export const CHECKPOINTS_PREFIX = 'checkpoints/';
/** The commit point of the format before terms: a store holding it was written by an older Statecraft. */
export const LEGACY_LATEST_KEY = 'LATEST';

const TERM_PATTERN = /^t(\d{12})-([0-9a-f]{8})$/;
const CHECKPOINT_DIGITS = 10;

export const sealKey = (term: string): string => `${TERMS_PREFIX}${term}/seal.json`;
export const baseKey = (term: string): string => `${TERMS_PREFIX}${term}/base.json`;
export const commitKey = (term: string, checkpoint: number): string => `${COMMITS_PREFIX}${term}/${String(checkpoint).padStart(CHECKPOINT_DIGITS, '0')}.json`;

export function isTermId(value: unknown): value is string {
  return typeof value === 'string' && TERM_PATTERN.test(value);
}

/** The term numbered `number`, with a random part: ids sort as (number, random part). */
export function termId(number: number, random: string = randomBytes(4).toString('hex')): string {
  return `t${String(number).padStart(12, '0')}-${random}`;
}

function termNumber(term: string): number {
  return Number(TERM_PATTERN.exec(term)![1]);
}

/** The terms named by `keys` (a listing of `terms/`), oldest first, and which of them have a base. */
export function parseTermKeys(keys: readonly string[]): { terms: string[]; based: Set<string> } {
  const terms = new Set<string>();
  const based = new Set<string>();
  for (const key of keys) {
    const match = /^terms\/([^/]+)\/(seal|base)\.json$/.exec(key);
    if (match === null || !isTermId(match[1])) continue;
    terms.add(match[1]!);
    if (match[2] === 'base') based.add(match[1]!);
  }
  return { terms: [...terms].sort(), based };
}

/** The id of a new term, above every term listed. */
export function nextTerm(terms: readonly string[], random?: string): string {
  const last = terms.at(-1);
  return termId(last === undefined ? 1 : termNumber(last) + 1, random);
}

/** The first term newer than `term`, or null. */
export function newerTerm(terms: readonly string[], term: string): string | null {
  return terms.find((other) => other > term) ?? null;
}

/** The term the head is read from: the newest with a base. */
export function newestBased(terms: readonly string[], based: ReadonlySet<string>): string | null {
  for (let index = terms.length - 1; index >= 0; index--) if (based.has(terms[index]!)) return terms[index]!;
  return null;
}

/** The highest checkpoint committed in `term`, from a listing of `commits/<term>/`, or 0. */
export function newestCommit(keys: readonly string[], term: string): number {
  const prefix = `${COMMITS_PREFIX}${term}/`;
  let newest = 0;
  for (const key of keys) {
    if (!key.startsWith(prefix)) continue;
    const match = /^(\d{10})\.json$/.exec(key.slice(prefix.length));
    if (match !== null) newest = Math.max(newest, Number(match[1]));
  }
  return newest;
}

/**
 * The key of the head's record, from listings of `terms/` and `commits/` (at least the newest based
 * term's part of it): that term's newest commit record, or its base; null when no term has a base.
 */
export function headKey(termKeys: readonly string[], commitKeys: readonly string[]): string | null {
  const { terms, based } = parseTermKeys(termKeys);
  const term = newestBased(terms, based);
  if (term === null) return null;
  const newest = newestCommit(commitKeys, term);
  return newest === 0 ? baseKey(term) : commitKey(term, newest);
}

/** The keys of `keys` that belong to terms older than `term` (seals, bases, commit records). */
export function olderTermKeysOf(keys: readonly string[], term: string): string[] {
  return keys.filter((key) => {
    const owner = /^(?:terms|commits)\/([^/]+)\//.exec(key)?.[1];
    return owner !== undefined && isTermId(owner) && owner < term;
  });
}

// ---- records ----

function corrupt(key: string, why: string): StatecraftError {
  return new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} is not a commit record: ${why}. The store was damaged or written by something else; restore it from a backup or point --checkpoint-store elsewhere.`);
}

const isRef = (value: unknown): value is CheckpointRef =>
  typeof value === 'object' && value !== null && Number.isSafeInteger((value as CheckpointRef).checkpoint) && (value as CheckpointRef).checkpoint >= 1 && isTermId((value as CheckpointRef).term);

/** A checkpoint reference as a peer may send it: a committed checkpoint and its term, or {0, ''} for none. */
export function isCheckpointRef(value: unknown): value is CheckpointRef {
  if (typeof value !== 'object' || value === null) return false;
  const { checkpoint, term } = value as CheckpointRef;
  return (checkpoint === 0 && term === '') || isRef(value);
}

export function encodeCommitRecord(record: CommitRecord): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ checkpoint: record.checkpoint, term: record.term, retained: record.retained.map(({ checkpoint, term }) => ({ checkpoint, term })) }));
}

/** A commit record or base read back; `checkpoint` is the one its key names (0 for a base of nothing). */
export function decodeCommitRecord(bytes: Uint8Array, key: string): CommitRecord {
  let value: Partial<CommitRecord> | null;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes)) as Partial<CommitRecord> | null;
  } catch (error) {
    throw corrupt(key, `not JSON (${(error as Error).message})`);
  }
  if (typeof value !== 'object' || value === null) throw corrupt(key, 'not an object');
  if (value.checkpoint === 0 && value.term === '' && Array.isArray(value.retained) && value.retained.length === 0) return NO_COMMIT;
  const retained: unknown = value.retained;
  if (!isRef(value)) throw corrupt(key, 'no checkpoint number and term');
  const { checkpoint, term } = value;
  if (!Array.isArray(retained) || !retained.every((ref: unknown, index) => isRef(ref) && ref.checkpoint < checkpoint && (index === 0 || ref.checkpoint > (retained[index - 1] as CheckpointRef).checkpoint))) {
    throw corrupt(key, 'retained is not a rising list of earlier checkpoints');
  }
  return { checkpoint, term, retained: (retained as CheckpointRef[]).map((ref) => ({ checkpoint: ref.checkpoint, term: ref.term })) };
}

// ---- I/O ----

/** Reads of the head that find the record they listed gone (a newer term's leader swept it meanwhile) before giving up. */
const HEAD_READS_MAX = 5;

/** The committed checkpoint: the newest commit of the newest term with a base (NO_COMMIT when none). */
export async function readHead(store: BlobStore): Promise<CommitRecord> {
  for (let attempt = 1; ; attempt++) {
    const head = await readHeadOnce(store);
    if (head !== null) return head;
    if (attempt === HEAD_READS_MAX) throw new StatecraftError('SC_ERR_STORE_FAILED', `the head's record in ${store.describe()} vanished between listing and reading ${HEAD_READS_MAX} times; try again`);
  }
}

/** null: the record listed was gone when read. */
async function readHeadOnce(store: BlobStore): Promise<CommitRecord | null> {
  const termKeys = await store.list(TERMS_PREFIX);
  const { terms, based } = parseTermKeys(termKeys);
  const term = newestBased(terms, based);
  if (term === null) {
    if (await store.exists(LEGACY_LATEST_KEY)) {
      throw new StatecraftError(
        'SC_ERR_STORE_CORRUPT',
        `${store.describe()} holds checkpoints of an older Statecraft format (LATEST, no terms/): this version cannot read them. Start with an empty --checkpoint-store, or run the version that wrote it.`,
      );
    }
    // Checkpoint objects without any term at all: the commit records were deleted or lost (a term is
    // sealed before anything of it is written). Starting empty here would silently drop every instance
    // the objects hold; refusing keeps them for a restore.
    const objects = termKeys.length === 0 ? await store.list(CHECKPOINTS_PREFIX) : [];
    if (objects.length > 0) {
      throw new StatecraftError(
        'SC_ERR_STORE_CORRUPT',
        `${store.describe()} holds ${objects.length} checkpoint objects (${objects[0]}, ...) but no commit records (${TERMS_PREFIX}, ${COMMITS_PREFIX}): they were deleted or lost, so it cannot tell which checkpoint is committed. Nothing was changed. Restore ${TERMS_PREFIX} and ${COMMITS_PREFIX} from a backup; to start empty on purpose, give an empty --checkpoint-store or delete ${CHECKPOINTS_PREFIX} as well.`,
      );
    }
    return NO_COMMIT;
  }
  const commitKeys = await store.list(`${COMMITS_PREFIX}${term}/`);
  const key = headKey(termKeys, commitKeys)!;
  const bytes = await store.get(key);
  if (bytes === null) return null;
  const record = decodeCommitRecord(bytes, key);
  // A commit record names its own key's checkpoint and term; a base names a checkpoint of an earlier term.
  const newest = newestCommit(commitKeys, term);
  if (newest !== 0 ? record.checkpoint !== newest || record.term !== term : record.checkpoint !== 0 && record.term >= term) {
    throw new StatecraftError('SC_ERR_STORE_CORRUPT', `${key} names checkpoint ${record.checkpoint} of term ${record.term || '(none)'}, not what its key says; the store was damaged or written by something else: restore it from a backup or point --checkpoint-store elsewhere.`);
  }
  return record;
}

/**
 * Begins a term: seals it, then reads the head (sealing first is what fences older leaders). The term
 * has no base yet: `setBase` once its writer knows what it continues from.
 */
export async function beginTerm(store: BlobStore, writer: string): Promise<{ term: string; head: CommitRecord }> {
  const { terms } = parseTermKeys(await store.list(TERMS_PREFIX));
  const term = nextTerm(terms);
  await store.put(sealKey(term), new TextEncoder().encode(JSON.stringify({ writer, sealedAt: new Date().toISOString() })));
  return { term, head: await readHead(store) };
}

/** The checkpoint `term` continues from: from now on the head is read from this term (if it is the newest based). */
export async function setBase(store: BlobStore, term: string, base: CommitRecord): Promise<void> {
  await store.put(baseKey(term), encodeCommitRecord(base));
}

/** Writes the commit record of `record.checkpoint` in `record.term`: the commit point. */
export async function writeCommit(store: BlobStore, record: CommitRecord): Promise<void> {
  await store.put(commitKey(record.term, record.checkpoint), encodeCommitRecord(record));
}

/** Who sealed `term` (the node id in its seal), or null when the seal is gone or unreadable. */
export async function sealWriter(store: BlobStore, term: string): Promise<string | null> {
  return writerOf(store, sealKey(term));
}

/** The `writer` named in the JSON object under `key` (a seal, a recovery claim), or null when it is gone or unreadable. */
export async function writerOf(store: BlobStore, key: string): Promise<string | null> {
  const bytes = await store.get(key).catch(() => null);
  if (bytes === null) return null;
  try {
    const writer = (JSON.parse(new TextDecoder().decode(bytes)) as { writer?: unknown } | null)?.writer;
    return typeof writer === 'string' ? writer : null;
  } catch {
    return null;
  }
}

/** A term newer than `term`, if one was sealed: whoever sealed it may not have seen what `term` commits. */
export async function deposedBy(store: BlobStore, term: string): Promise<string | null> {
  return newerTerm(parseTermKeys(await store.list(TERMS_PREFIX)).terms, term);
}

/** Keys of terms older than `term` and of their commit records: garbage once `term` has committed. */
export async function olderTermKeys(store: BlobStore, term: string): Promise<string[]> {
  return olderTermKeysOf([...(await store.list(TERMS_PREFIX)), ...(await store.list(COMMITS_PREFIX))], term);
}
