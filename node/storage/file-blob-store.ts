/**
 * A blob store in a local directory: key `a/b/c` is the file `<directory>/a/b/c`.
 *
 * put writes header and payload to a temporary file in the target directory, fsyncs it, renames it over
 * the target (atomic on POSIX file systems: a reader sees the old object or the new one, never part of
 * one) and fsyncs the directory, plus the parents of any directory it had to create, so a committed
 * object survives a power cut. Temporary files are named `.sc-tmp-*`; list skips them.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, type FileHandle, open, readFile, readdir, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ValidationError } from '../../lib/errors.js';
import {
  BLOB_HEADER_BYTES,
  BLOB_TEMP_MARK,
  BlobStoreError,
  BlobStoreUnavailableError,
  blobHeader,
  decodeBlob,
  sortKeys,
  validateBlobKey,
  validateBlobPrefix,
  type BlobInfo,
  type BlobStore,
} from './blob-store.js';

export interface FileBlobStoreOptions {
  /** fsync each file and the directories that changed (default true). Off only for throwaway data. */
  fsync?: boolean;
}

/** Unlinks at most this many files at once in `delete`. */
const DELETE_CONCURRENCY = 32;

export class FileBlobStore implements BlobStore {
  readonly directory: string;
  private readonly fsync: boolean;

  constructor(directory: string, options: FileBlobStoreOptions = {}) {
    if (typeof directory !== 'string' || directory === '') {
      throw new ValidationError('SC_ERR_INVALID_OPTION', 'FileBlobStore needs a directory path, such as ./data/checkpoints');
    }
    this.directory = resolve(directory);
    this.fsync = options.fsync ?? true;
  }

  describe(): string {
    return pathToFileURL(this.directory).href;
  }

  async check(): Promise<void> {
    try {
      await mkdir(this.directory, { recursive: true });
      await access(this.directory, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (error) {
      throw new BlobStoreUnavailableError(
        `cannot use directory ${this.directory} as a blob store (${errorCode(error)}): create it, make it writable ` +
          'by this user, or give another --checkpoint-store',
        { cause: error },
      );
    }
  }

  async close(): Promise<void> {
    // nothing held open
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const path = this.pathOf(key);
    const directory = dirname(path);
    const header = blobHeader(bytes);
    for (let attempt = 1; ; attempt++) {
      let temp: string | undefined;
      try {
        const created = await mkdir(directory, { recursive: true });
        temp = join(directory, `${BLOB_TEMP_MARK}${process.pid}-${randomBytes(8).toString('hex')}`);
        const handle = await open(temp, 'wx', 0o644);
        try {
          await writeAll(handle, header);
          await writeAll(handle, bytes);
          if (this.fsync) await handle.sync();
        } finally {
          await handle.close();
        }
        await rename(temp, path);
        temp = undefined;
        if (this.fsync) await syncDirectories(directory, created);
        return;
      } catch (error) {
        if (temp !== undefined) await unlink(temp).catch(() => undefined);
        // A concurrent delete may prune the directory between mkdir and open: make it again.
        if (errorCode(error) === 'ENOENT' && attempt < 5) continue;
        throw this.failure('write', key, error);
      }
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const path = this.pathOf(key);
    let stored: Buffer;
    try {
      stored = await readFile(path);
    } catch (error) {
      if (isMissing(error) || errorCode(error) === 'EISDIR') return null; // a directory is no object
      throw this.failure('read', key, error);
    }
    return decodeBlob(stored, key, this.describe());
  }

  async head(key: string): Promise<BlobInfo | null> {
    const path = this.pathOf(key);
    try {
      const stats = await stat(path);
      if (!stats.isFile()) return null;
      return { key, size: Math.max(0, stats.size - BLOB_HEADER_BYTES) };
    } catch (error) {
      if (isMissing(error)) return null;
      throw this.failure('stat', key, error);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== null;
  }

  async list(prefix = ''): Promise<string[]> {
    validateBlobPrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash + 1); // complete segments, ending in '/'
    const partial = prefix.slice(slash + 1);
    const keys: string[] = [];
    await this.walk(join(this.directory, ...base.split('/').filter((segment) => segment !== '')), base, partial, keys);
    return sortKeys(keys);
  }

  private async walk(directory: string, keyPrefix: string, namePrefix: string, keys: string[]): Promise<void> {
    let entries;
    try {
      entries = await readdir(directory, { withFileTypes: true });
    } catch (error) {
      if (isMissing(error)) return;
      throw this.failure('list', keyPrefix === '' ? '(root)' : keyPrefix, error);
    }
    for (const entry of entries) {
      if (!entry.name.startsWith(namePrefix) || entry.name.startsWith(BLOB_TEMP_MARK)) continue;
      if (entry.isDirectory()) await this.walk(join(directory, entry.name), `${keyPrefix}${entry.name}/`, '', keys);
      else if (entry.isFile()) keys.push(keyPrefix + entry.name);
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    const paths = [...new Set(keys)].map((key) => [key, this.pathOf(key)] as const);
    const directories = new Set<string>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < paths.length) {
        const [key, path] = paths[next++]!;
        try {
          await unlink(path);
          directories.add(dirname(path));
        } catch (error) {
          if (!isMissing(error) && errorCode(error) !== 'EISDIR') throw this.failure('delete', key, error);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, paths.length) }, worker));
    await this.prune(directories);
  }

  /** Removes directories left empty, deepest first, up to (not including) the store's directory. */
  private async prune(directories: Set<string>): Promise<void> {
    const pending = [...directories].sort((a, b) => b.length - a.length);
    const done = new Set<string>();
    for (let directory of pending) {
      while (directory.startsWith(this.directory + sep) && !done.has(directory)) {
        done.add(directory);
        try {
          await rmdir(directory);
        } catch (error) {
          const code = errorCode(error);
          if (code === 'ENOENT') {
            // already gone: try its parent
          } else if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'EBUSY') {
            break;
          } else {
            throw this.failure('prune directory of', directory.slice(this.directory.length + 1), error);
          }
        }
        directory = dirname(directory);
      }
    }
  }

  private pathOf(key: string): string {
    validateBlobKey(key);
    return join(this.directory, ...key.split('/'));
  }

  private failure(operation: string, key: string, error: unknown): BlobStoreError {
    const code = errorCode(error);
    const where = `object "${key}" in ${this.describe()}`;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new BlobStoreUnavailableError(
        `cannot ${operation} ${where} (${code}): make the directory writable by this user or give another --checkpoint-store`,
        { cause: error, key },
      );
    }
    if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
      return new BlobStoreError(
        'SC_ERR_STORE_FAILED',
        `cannot ${operation} ${where} (${code}): a key and a longer key under it ("a" and "a/b") cannot both exist in a directory store`,
        { cause: error, key },
      );
    }
    const hint = code === 'ENOSPC' || code === 'EDQUOT' ? ': the disk is full; free space or lower --checkpoint-retain' : '';
    return new BlobStoreError('SC_ERR_STORE_FAILED', `cannot ${operation} ${where} (${code ?? String(error)})${hint}`, { cause: error, key });
  }
}

/** Writes every byte of `bytes` at the file's current end (a single write may be partial). */
async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.byteLength; ) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.byteLength - offset);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    offset += bytesWritten;
  }
}

/** fsyncs `directory` and, when mkdir created directories, the parent of each one created. */
async function syncDirectories(directory: string, created: string | undefined): Promise<void> {
  const directories = [directory];
  if (created !== undefined) {
    const top = dirname(created);
    for (let current = directory; current !== top && dirname(current) !== current; ) {
      current = dirname(current);
      directories.push(current);
    }
  }
  for (const path of directories) {
    let handle;
    try {
      handle = await open(path, 'r');
      await handle.sync();
    } catch (error) {
      // Some platforms and file systems cannot fsync a directory; the rename is still atomic there.
      const code = errorCode(error);
      if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'EBADF') throw error;
    } finally {
      await handle?.close();
    }
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
