/**
 * A real blob store wrapped for checkpoint tests: it records every put and delete in order, and fails
 * the next put of a chosen key (or every delete) on request, as a store that is down would.
 */
import type { BlobInfo, BlobStore } from '../../../node/storage/blob-store.js';

export class ScriptedStore implements BlobStore {
  /** `put <key>` and `delete <key>,<key>` in the order they were asked for. */
  readonly calls: string[] = [];
  /** Keys whose next put fails, with the error message. */
  private readonly failures = new Map<string, string>();
  /** When set, every delete fails with this message. */
  deleteFailure: string | null = null;

  constructor(readonly inner: BlobStore) {}

  /** The next put of `key` fails with `message` (later ones succeed). */
  failNextPut(key: string, message: string): void {
    this.failures.set(key, message);
  }

  /** The keys put so far, in order. */
  get puts(): string[] {
    return this.calls.filter((call) => call.startsWith('put ')).map((call) => call.slice(4));
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.calls.push(`put ${key}`);
    const failure = this.failures.get(key);
    if (failure !== undefined) {
      this.failures.delete(key);
      throw new Error(failure);
    }
    return this.inner.put(key, bytes);
  }
  get(key: string): Promise<Uint8Array | null> {
    return this.inner.get(key);
  }
  head(key: string): Promise<BlobInfo | null> {
    return this.inner.head(key);
  }
  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }
  list(prefix?: string): Promise<string[]> {
    return this.inner.list(prefix);
  }
  async delete(keys: readonly string[]): Promise<void> {
    this.calls.push(`delete ${[...keys].sort().join(',')}`);
    if (this.deleteFailure !== null) throw new Error(this.deleteFailure);
    return this.inner.delete(keys);
  }
  check(): Promise<void> {
    return this.inner.check();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  describe(): string {
    return this.inner.describe();
  }
}
