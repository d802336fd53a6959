/**
 * A blob store in an S3 bucket (AWS S3, MinIO, s3rver, any S3-compatible server) through
 * `@aws-sdk/client-s3`. Key `a/b` is the object `<prefix>/a/b`. A single PUT is atomic in S3: a reader
 * sees the old object or the new one. Objects go up in one PUT (S3 takes up to 5 GB that way; a
 * key group's snapshot is far smaller), so no multipart upload is needed.
 *
 * Credentials come from the SDK's default provider chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 * (and AWS_SESSION_TOKEN), AWS_PROFILE with ~/.aws/credentials and ~/.aws/config, SSO, web identity,
 * container and instance roles.
 */
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { ValidationError } from '../../lib/errors.js';
import {
  BLOB_HEADER_BYTES,
  BlobStoreError,
  BlobStoreUnavailableError,
  decodeBlob,
  encodeBlob,
  isValidBucketName,
  sortKeys,
  validateBlobKey,
  validateBlobPrefix,
  type BlobInfo,
  type BlobStore,
} from './blob-store.js';

export interface S3BlobStoreOptions {
  bucket: string;
  /** Folder inside the bucket, without leading or trailing '/'; '' for the bucket's root. */
  prefix?: string;
  /** A custom endpoint such as http://127.0.0.1:9000 (MinIO, s3rver). Omit for AWS S3. */
  endpoint?: string;
  /** Defaults to AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1 (AWS redirects to the bucket's region). */
  region?: string;
  /** Path-style URLs (http://host/bucket/key); default true with a custom endpoint, false for AWS. */
  forcePathStyle?: boolean;
  /** Attempts per request, retries included (default 3). */
  maxAttempts?: number;
  /** Time to establish a connection before the attempt fails (default 5,000 ms). */
  connectTimeoutMs?: number;
  /** Time a whole request and response may take (default 300,000 ms). */
  requestTimeoutMs?: number;
  /** Keys per ListObjectsV2 page, 1–1000 (default 1000). */
  listPageSize?: number;
}

/** DeleteObjects takes at most 1,000 keys per request. */
const DELETE_BATCH = 1000;

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ECONNABORTED']);

export class S3BlobStore implements BlobStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string | undefined;
  readonly region: string;
  readonly forcePathStyle: boolean;
  /** The SDK client (for tools and tests that need raw access). */
  readonly client: S3Client;
  private readonly listPageSize: number;
  private bucketChecked = false;

  constructor(options: S3BlobStoreOptions) {
    const bad = (message: string): ValidationError => new ValidationError('SC_ERR_INVALID_OPTION', message);
    if (typeof options?.bucket !== 'string' || !isValidBucketName(options.bucket)) {
      throw bad(`S3 bucket ${JSON.stringify(options?.bucket)} is not a valid bucket name (3–63 lowercase letters, digits, '.' and '-')`);
    }
    const prefix = (options.prefix ?? '').replace(/^\/+/, '').replace(/\/+$/, '');
    if (prefix !== '') validateBlobKey(prefix, 'S3 prefix');
    if (options.endpoint !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(options.endpoint);
      } catch {
        url = undefined;
      }
      if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
        throw bad(`S3 endpoint ${JSON.stringify(options.endpoint)} is not an http:// or https:// URL, such as http://127.0.0.1:9000`);
      }
    }
    const listPageSize = options.listPageSize ?? 1000;
    if (!Number.isInteger(listPageSize) || listPageSize < 1 || listPageSize > 1000) throw bad(`listPageSize must be an integer from 1 to 1000, got ${listPageSize}`);
    this.bucket = options.bucket;
    this.prefix = prefix;
    this.endpoint = options.endpoint;
    this.region = options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
    this.forcePathStyle = options.forcePathStyle ?? options.endpoint !== undefined;
    this.listPageSize = listPageSize;
    const config: S3ClientConfig = {
      region: this.region,
      forcePathStyle: this.forcePathStyle,
      maxAttempts: options.maxAttempts ?? 3,
      requestHandler: {
        connectionTimeout: options.connectTimeoutMs ?? 5_000,
        requestTimeout: options.requestTimeoutMs ?? 300_000,
        throwOnRequestTimeout: true,
      },
      // Checksums. Since early 2025 the SDK defaults to "flexible checksums" (WHEN_SUPPORTED): it adds
      // a CRC32 to every upload, and for bodies it cannot hash up front (streams) it sends them in
      // aws-chunked encoding with a trailing checksum. Servers that do not understand that encoding
      // store the framing inside the object. Measured against s3rver 3.7 with a 70,000-byte object:
      //   default, stream body (ContentLength given) -> 70,045 bytes stored (chunk framing), corrupt
      //   default, stream body without length        -> request fails in the SDK
      //   default, Buffer body                       -> 70,000 bytes (CRC32 sent as a header)
      //   WHEN_REQUIRED, Buffer or stream body       -> 70,000 bytes, intact
      // So: WHEN_REQUIRED for requests and responses, and always a Buffer body. This is the SDK's
      // behaviour before 2025 and works with AWS S3 too: operations whose API requires a checksum
      // (DeleteObjects) still get one, a Buffer body is signed with its SHA-256
      // (x-amz-content-sha256), which AWS S3 verifies on upload, and every object carries its own
      // SHA-256 that get() verifies end to end (see blob-store.ts).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (options.endpoint !== undefined) config.endpoint = options.endpoint;
    else config.followRegionRedirects = true;
    this.client = new S3Client(config);
  }

  describe(): string {
    const location = `s3://${this.bucket}${this.prefix === '' ? '' : `/${this.prefix}`}`;
    return this.endpoint === undefined
      ? `${location} (AWS, region ${this.region})`
      : `${location} (endpoint ${this.endpoint}${this.forcePathStyle ? ', path-style' : ''})`;
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.bucketChecked = true;
    } catch (error) {
      throw this.failure('check bucket', undefined, error, true);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const objectKey = this.objectKey(key);
    const body = encodeBlob(bytes);
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream' }),
      );
    } catch (error) {
      throw this.failure('put', key, error);
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const objectKey = this.objectKey(key);
    let stored: Uint8Array;
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      if (response.Body === undefined) throw new BlobStoreError('SC_ERR_STORE_FAILED', 'the response has no body', { key });
      stored = await response.Body.transformToByteArray();
    } catch (error) {
      if (errorName(error) === 'NoSuchKey') return null;
      throw this.failure('get', key, error);
    }
    return decodeBlob(stored, key, this.describe());
  }

  async head(key: string): Promise<BlobInfo | null> {
    const objectKey = this.objectKey(key);
    try {
      const response = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { key, size: Math.max(0, (response.ContentLength ?? 0) - BLOB_HEADER_BYTES) };
    } catch (error) {
      if (httpStatus(error) === 404) {
        // HEAD responses have no body, so a missing bucket looks like a missing key: rule it out once.
        if (!this.bucketChecked) await this.check();
        return null;
      }
      throw this.failure('head', key, error);
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== null;
  }

  async list(prefix = ''): Promise<string[]> {
    validateBlobPrefix(prefix);
    const root = this.prefix === '' ? '' : `${this.prefix}/`;
    const keys: string[] = [];
    let token: string | undefined;
    do {
      let response;
      try {
        response = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: root + prefix, MaxKeys: this.listPageSize, ContinuationToken: token }),
        );
      } catch (error) {
        throw this.failure('list', prefix === '' ? '(all)' : `${prefix}*`, error);
      }
      for (const object of response.Contents ?? []) {
        if (object.Key !== undefined && object.Key.startsWith(root)) keys.push(object.Key.slice(root.length));
      }
      token = response.IsTruncated ? response.NextContinuationToken : undefined;
      if (response.IsTruncated && token === undefined) {
        throw new BlobStoreError('SC_ERR_STORE_FAILED', `S3 list of ${this.describe()} returned a truncated page without a continuation token; the server does not implement ListObjectsV2 correctly`);
      }
    } while (token !== undefined);
    return sortKeys(keys);
  }

  async delete(keys: readonly string[]): Promise<void> {
    const unique = [...new Set(keys)];
    const objectKeys = unique.map((key) => this.objectKey(key));
    for (let start = 0; start < objectKeys.length; start += DELETE_BATCH) {
      const batch = objectKeys.slice(start, start + DELETE_BATCH);
      let response;
      try {
        response = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch (error) {
        throw this.failure('delete', `${unique[start]}${batch.length > 1 ? ` and ${batch.length - 1} more` : ''}`, error);
      }
      // Deleting a missing key succeeds in S3; anything reported here is a real failure.
      const errors = (response.Errors ?? []).filter((entry) => entry.Code !== 'NoSuchKey');
      if (errors.length > 0) {
        const first = errors[0]!;
        throw new BlobStoreError(
          'SC_ERR_STORE_FAILED',
          `S3 could not delete ${errors.length} object(s) in ${this.describe()}, first "${first.Key}": ${first.Code} ${first.Message ?? ''}`.trim(),
          first.Key === undefined ? undefined : { key: first.Key },
        );
      }
    }
  }

  private objectKey(key: string): string {
    validateBlobKey(key);
    return this.prefix === '' ? key : `${this.prefix}/${key}`;
  }

  /** Turns an SDK error into a typed one that says what to do. */
  private failure(operation: string, key: string | undefined, error: unknown, bucketLevel = false): BlobStoreError {
    const name = errorName(error);
    const status = httpStatus(error);
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    const where = this.describe();
    const options = { cause: error, ...(key === undefined ? {} : { key }) };
    const detail = `${name ?? 'Error'}${status === undefined ? '' : ` ${status}`}: ${(error as Error | undefined)?.message ?? String(error)}`;
    if (name === 'NoSuchBucket' || (bucketLevel && status === 404)) {
      return new BlobStoreUnavailableError(
        `S3 bucket "${this.bucket}" does not exist (${where}): create it (aws s3 mb s3://${this.bucket}` +
          `${this.endpoint === undefined ? '' : ` --endpoint-url ${this.endpoint}`}) or fix the bucket in --checkpoint-store`,
        options,
      );
    }
    if ((code !== undefined && NETWORK_CODES.has(code)) || name === 'TimeoutError' || name === 'RequestTimeout') {
      return new BlobStoreUnavailableError(
        `cannot reach S3 ${this.endpoint === undefined ? `in region ${this.region}` : `endpoint ${this.endpoint}`} to ${operation}` +
          `${key === undefined ? '' : ` "${key}"`} (${code ?? name}): check --s3-endpoint, that the server is running, and the network`,
        options,
      );
    }
    if (name === 'CredentialsProviderError') {
      return new BlobStoreUnavailableError(
        `no AWS credentials found for ${where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials`,
        options,
      );
    }
    if (name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'AccessDenied' || name === 'Forbidden' || status === 403) {
      return new BlobStoreUnavailableError(
        `S3 refused to ${operation}${key === undefined ? '' : ` "${key}"`} in ${where} (${detail}): check the credentials ` +
          '(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and that they may GetObject, PutObject, DeleteObject and ListBucket',
        options,
      );
    }
    if (name === 'PermanentRedirect' || name === 'AuthorizationHeaderMalformed' || status === 301) {
      return new BlobStoreUnavailableError(`S3 bucket "${this.bucket}" is in another region than ${this.region}: set --s3-region (${detail})`, options);
    }
    return new BlobStoreError('SC_ERR_STORE_FAILED', `S3 ${operation}${key === undefined ? '' : ` of "${key}"`} in ${where} failed (${detail})`, options);
  }
}

function errorName(error: unknown): string | undefined {
  return (error as { name?: string } | undefined)?.name;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}
