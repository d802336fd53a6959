/**
 * Blob stores: where checkpoints live. One interface, two implementations — a local directory
 * (`FileBlobStore`, node/storage/file-blob-store.ts) and S3 or any S3-compatible server (`S3BlobStore`,
 * node/storage/s3-blob-store.ts) — and `openBlobStore(url)` that picks one from a `--checkpoint-store` URL.
 *
 * Every object is written in a small envelope: a 48-byte header carrying the payload length and its
 * SHA-256, then the payload. `get()` verifies both, so a corrupt or truncated object is reported as a
 * `BlobCorruptError` naming the key (restore then falls back to an older checkpoint) instead of being
 * decoded as garbage. The envelope is the same in both stores, so objects can be copied between them.
 *
 * Keys are '/'-separated relative paths (`checkpoints/12/kg-0007`); see `validateBlobKey`.
 */
import { createHash } from 'node:crypto';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StatecraftError, ValidationError, type ErrorCode } from '../../lib/errors.js';

export interface BlobInfo {
  key: string;
  /** Payload bytes (without the store's integrity header). */
  size: number;
}

export interface BlobStore {
  /** Writes `bytes` under `key`, replacing any previous object. Atomic: a reader sees all of it or none. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** The payload under `key`, verified against its checksum; `null` when there is no such object. */
  get(key: string): Promise<Uint8Array | null>;
  /** Size of the object under `key` without reading or verifying it; `null` when absent. */
  head(key: string): Promise<BlobInfo | null>;
  exists(key: string): Promise<boolean>;
  /** Every key that starts with `prefix` (a plain string prefix, as in S3), sorted by UTF-8 bytes. */
  list(prefix?: string): Promise<string[]>;
  /** Deletes the objects; keys that do not exist are ignored. */
  delete(keys: readonly string[]): Promise<void>;
  /** Fails with a `BlobStoreUnavailableError` saying what to fix when the store cannot be used. */
  check(): Promise<void>;
  /** Releases connections. The store must not be used afterwards. */
  close(): Promise<void>;
  /** For logs: `file:///abs/dir` or `s3://bucket/prefix (endpoint …)`. */
  describe(): string;
}

// ---------------------------------------------------------------------------------------------------
// Errors

/** Error codes of the blob stores. */
export type BlobStoreErrorCode = Extract<ErrorCode, 'SC_ERR_STORE_CORRUPT' | 'SC_ERR_STORE_UNAVAILABLE' | 'SC_ERR_STORE_FAILED'>;

/** A blob store failure: `code` says which kind; `key` names the object when there is one. */
export class BlobStoreError extends StatecraftError {
  readonly key: string | undefined;
  constructor(code: BlobStoreErrorCode, message: string, options?: { cause?: unknown; key?: string }) {
    super(code, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.key = options?.key;
  }
}

/** An object failed its integrity check (damaged, truncated or not written by a blob store). */
export class BlobCorruptError extends BlobStoreError {
  constructor(
    readonly store: string,
    key: string,
    readonly reason: string,
    /** What to do about it. */
    advice = 'Do not use it: restore from an older checkpoint, and check the storage for damage.',
  ) {
    super('SC_ERR_STORE_CORRUPT', `object "${key}" in ${store} is corrupt: ${reason}. ${advice}`, { key });
  }
}

/** The store cannot be reached or used at all: missing bucket or directory, no access, endpoint down. */
export class BlobStoreUnavailableError extends BlobStoreError {
  constructor(message: string, options?: { cause?: unknown; key?: string }) {
    super('SC_ERR_STORE_UNAVAILABLE', message, options);
  }
}

// ---------------------------------------------------------------------------------------------------
// Keys

/**
 * Rejects anything but a '/'-separated relative path of non-empty segments: no leading '/', no '.' or
 * '..' segment, no backslash or control character, segments up to 255 bytes, keys up to 900 bytes.
 */
export function validateBlobKey(key: string, what = 'blob key'): void {
  if (typeof key !== 'string' || key.length === 0) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `${what} must be a non-empty string such as "checkpoints/12/kg-7"`);
  }
  checkSegments(key, key.split('/'), what);
}

/**
 * A list prefix: '' (everything), or a key, or the start of one; complete segments follow the key
 * rules, and the last segment may be empty ('checkpoints/') or partial ('checkpoints/1').
 */
export function validateBlobPrefix(prefix: string): void {
  if (typeof prefix !== 'string') throw new ValidationError('SC_ERR_INVALID_OPTION', 'list prefix must be a string');
  if (prefix === '') return;
  const segments = prefix.split('/');
  const partial = segments.pop()!;
  checkSegments(prefix, segments, 'list prefix');
  if (partial !== '') checkSegment(prefix, partial, 'list prefix', true);
}

/** Names starting with this are a file store's temporary files; no key segment may start with it. */
export const BLOB_TEMP_MARK = '.sc-tmp-';

function checkSegments(key: string, segments: string[], what: string): void {
  if (key.startsWith('/') || isAbsolute(key)) throw badKey(key, what, 'is absolute');
  if (Buffer.byteLength(key) > 900) throw badKey(key, what, 'is longer than 900 bytes');
  for (const segment of segments) checkSegment(key, segment, what, false);
}

function checkSegment(key: string, segment: string, what: string, partial: boolean): void {
  if (segment === '') throw badKey(key, what, 'has an empty segment (leading, trailing or doubled "/")');
  if (!partial && (segment === '.' || segment === '..')) throw badKey(key, what, `contains a "${segment}" segment`);
  if (Buffer.byteLength(segment) > 255) throw badKey(key, what, 'has a segment longer than 255 bytes (the usual file name limit)');
  if (segment.startsWith(BLOB_TEMP_MARK)) throw badKey(key, what, `has a segment starting with "${BLOB_TEMP_MARK}" (reserved for temporary files)`);
  // eslint-disable-next-line no-control-regex
  if (/[\\\u0000-\u001f\u007f]/.test(segment)) throw badKey(key, what, 'contains a backslash or a control character');
}

function badKey(key: string, what: string, why: string): ValidationError {
  return new ValidationError(
    'SC_ERR_INVALID_OPTION',
    `${what} ${JSON.stringify(key)} ${why}; use a relative path of '/'-separated names, such as "checkpoints/12/kg-7"`,
  );
}

/** Sorts keys by their UTF-8 bytes, the order S3 lists them in. */
export function sortKeys(keys: string[]): string[] {
  return keys.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

// ---------------------------------------------------------------------------------------------------
// The integrity envelope
//
//   offset  size  field
//        0     4  magic 'SCBL'
//        4     1  format version (1)
//        5     1  checksum algorithm (1 = SHA-256)
//        6     2  header length, big-endian (48)
//        8     8  payload length, big-endian
//       16    32  SHA-256 of the payload
//       48     …  payload

export const BLOB_HEADER_BYTES = 48;
const MAGIC = 0x5343424c; // 'SCBL'
const FORMAT_VERSION = 1;
const ALGORITHM_SHA256 = 1;

/** The header to write in front of `payload`. */
export function blobHeader(payload: Uint8Array): Buffer {
  const header = Buffer.alloc(BLOB_HEADER_BYTES);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt8(FORMAT_VERSION, 4);
  header.writeUInt8(ALGORITHM_SHA256, 5);
  header.writeUInt16BE(BLOB_HEADER_BYTES, 6);
  header.writeBigUInt64BE(BigInt(payload.byteLength), 8);
  createHash('sha256').update(payload).digest().copy(header, 16);
  return header;
}

/** Header and payload in one buffer (what an S3 PUT sends). */
export function encodeBlob(payload: Uint8Array): Buffer {
  return Buffer.concat([blobHeader(payload), payload]);
}

/**
 * Checks a stored object and returns its payload (a view into `stored`, not a copy). Throws a
 * `BlobCorruptError` naming `key` and `store` when anything does not match.
 */
export function decodeBlob(stored: Uint8Array, key: string, store: string): Uint8Array {
  const bytes = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
  if (bytes.length < BLOB_HEADER_BYTES) {
    throw new BlobCorruptError(store, key, `it has ${bytes.length} bytes, fewer than the ${BLOB_HEADER_BYTES}-byte header (truncated)`);
  }
  if (bytes.readUInt32BE(0) !== MAGIC) throw new BlobCorruptError(store, key, 'its header is missing or damaged (not written by a Statecraft blob store)');
  const version = bytes.readUInt8(4);
  const algorithm = bytes.readUInt8(5);
  const headerLength = bytes.readUInt16BE(6);
  if (version !== FORMAT_VERSION || algorithm !== ALGORITHM_SHA256 || headerLength !== BLOB_HEADER_BYTES) {
    throw new BlobCorruptError(store, key, `its header has format ${version}, algorithm ${algorithm}, length ${headerLength}; this version reads format ${FORMAT_VERSION} with SHA-256 only`);
  }
  const declared = bytes.readBigUInt64BE(8);
  const actual = BigInt(bytes.length - BLOB_HEADER_BYTES);
  if (declared !== actual) {
    throw new BlobCorruptError(store, key, `its header declares ${declared} payload bytes but ${actual} are stored (${actual < declared ? 'truncated' : 'extra bytes'})`);
  }
  const payload = bytes.subarray(BLOB_HEADER_BYTES);
  const digest = createHash('sha256').update(payload).digest();
  if (!digest.equals(bytes.subarray(16, 48))) throw new BlobCorruptError(store, key, 'its SHA-256 does not match the payload');
  return payload;
}

// ---------------------------------------------------------------------------------------------------
// Opening a store from a URL

/** S3 bucket names: 3–63 characters of lowercase letters, digits, '.' and '-', starting and ending alphanumeric. */
export function isValidBucketName(bucket: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) && !bucket.includes('..');
}

export interface OpenBlobStoreOptions {
  /** Base for `file://./relative` paths; defaults to `process.cwd()`. */
  cwd?: string;
  /** `file://` only: fsync files and directories on put (default true). */
  fsync?: boolean;
  /** `s3://` only: a custom endpoint such as `http://127.0.0.1:9000` (MinIO, s3rver); path-style by default. */
  endpoint?: string;
  /** `s3://` only: the region; defaults to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1. */
  region?: string;
  /** `s3://` only: path-style addressing; defaults to true with a custom endpoint, false without. */
  forcePathStyle?: boolean;
}

const ACCEPTED_FORMS =
  'accepted forms: file://./relative/dir (relative to the working directory), file:///absolute/dir, s3://bucket/prefix ' +
  '(with --s3-endpoint / --s3-region for S3-compatible servers)';

/** Parsed form of a store URL (exported for tests and `--help` checks). */
export type BlobStoreLocation =
  | { kind: 'file'; directory: string }
  | { kind: 's3'; bucket: string; prefix: string };

export function parseBlobStoreUrl(url: string, cwd = process.cwd()): BlobStoreLocation {
  const bad = (why: string): ValidationError =>
    new ValidationError('SC_ERR_INVALID_OPTION', `checkpoint store ${JSON.stringify(url)} ${why}; ${ACCEPTED_FORMS}`);
  if (typeof url !== 'string' || url.trim() === '') throw bad('is empty');
  if (url.startsWith('file://')) {
    const rest = url.slice('file://'.length);
    if (rest.startsWith('/')) {
      let directory: string;
      try {
        directory = fileURLToPath(url);
      } catch (error) {
        throw bad(`is not a valid file URL (${(error as Error).message})`);
      }
      return { kind: 'file', directory: resolve(directory) };
    }
    if (rest === '.' || rest === '..' || rest.startsWith('./') || rest.startsWith('../')) {
      if (/[?#]/.test(rest)) throw bad('has a query or fragment');
      let decoded: string;
      try {
        decoded = decodeURIComponent(rest);
      } catch {
        throw bad('has a malformed %-escape');
      }
      return { kind: 'file', directory: resolve(cwd, decoded) };
    }
    throw bad('has a host or a bare relative path after file://; start relative paths with ./ and absolute ones with /');
  }
  if (url.startsWith('s3://')) {
    // The URL parser would resolve '.' and '..' segments away: refuse them before it sees them.
    const path = url.slice('s3://'.length).split(/[?#]/)[0]!;
    if (path.split('/').some((segment) => /^(\.|%2e){1,2}$/i.test(segment))) throw bad('has a "." or ".." segment');
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw bad('is not a valid URL');
    }
    if (parsed.username !== '' || parsed.password !== '' || parsed.port !== '' || parsed.search !== '' || parsed.hash !== '') {
      throw bad('has credentials, a port, a query or a fragment (give the endpoint with --s3-endpoint, credentials through AWS_* variables)');
    }
    const bucket = parsed.hostname;
    if (!isValidBucketName(bucket)) throw bad(`names bucket "${bucket}", which is not a valid S3 bucket name`);
    let prefix: string;
    try {
      prefix = decodeURIComponent(parsed.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
    } catch {
      throw bad('has a malformed %-escape');
    }
    if (prefix !== '') {
      try {
        validateBlobKey(prefix, 'S3 prefix');
      } catch (error) {
        throw bad(`has a bad prefix: ${(error as Error).message}`);
      }
    }
    return { kind: 's3', bucket, prefix };
  }
  throw bad('has an unknown scheme');
}

/**
 * Opens the store a `--checkpoint-store` URL names. The S3 client is only loaded for `s3://` URLs.
 * Does not contact the store: call `check()` for that.
 */
export async function openBlobStore(url: string, options: OpenBlobStoreOptions = {}): Promise<BlobStore> {
  const location = parseBlobStoreUrl(url, options.cwd);
  if (location.kind === 'file') {
    if (options.endpoint !== undefined) {
      throw new ValidationError('SC_ERR_INVALID_OPTION', `--s3-endpoint was given but the checkpoint store ${url} is a directory; use s3://bucket/prefix or drop --s3-endpoint`);
    }
    const { FileBlobStore } = await import('./file-blob-store.js');
    return new FileBlobStore(location.directory, options.fsync === undefined ? {} : { fsync: options.fsync });
  }
  const { S3BlobStore } = await import('./s3-blob-store.js');
  return new S3BlobStore({
    bucket: location.bucket,
    prefix: location.prefix,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.region === undefined ? {} : { region: options.region }),
    ...(options.forcePathStyle === undefined ? {} : { forcePathStyle: options.forcePathStyle }),
  });
}
