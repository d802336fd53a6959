// Blob stores: the same suite against the directory store and against the S3 store on a local s3rver.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatecraftError, ValidationError } from '../../../lib/errors.js';
import {
  BLOB_HEADER_BYTES,
  BlobCorruptError,
  BlobStoreUnavailableError,
  openBlobStore,
  parseBlobStoreUrl,
  type BlobStore,
} from '../../../node/storage/blob-store.js';
import { FileBlobStore } from '../../../node/storage/file-blob-store.js';
import { S3BlobStore } from '../../../node/storage/s3-blob-store.js';
import { startS3Server, type S3TestServer } from '../../s3-server.js';

const TEST_TIMEOUT_MS = 30_000;

/** Registers `body` on `target` with a timeout (uvu has none) and a fresh store closed afterwards. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function expectError<E extends Error>(run: () => Promise<unknown>, type: new (...args: never[]) => E, code: string, includes: RegExp): Promise<E> {
  let caught: unknown;
  try {
    await run();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof type, `expected ${type.name}, got ${String(caught)}`);
  assert.is((caught as unknown as StatecraftError).code as string, code);
  assert.match((caught as Error).message, includes);
  return caught as E;
}

/** Runs `work` on `items` with at most `limit` in flight. */
async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

interface Harness {
  /** A fresh, empty store. */
  open(): Promise<BlobStore>;
  /** Replaces the stored bytes of `key` (header included) with `damage(stored)`. */
  damage(store: BlobStore, key: string, damage: (stored: Buffer) => Buffer): Promise<void>;
  /** Bytes the backend holds for `key`. */
  storedSize(store: BlobStore, key: string): Promise<number>;
}

function blobStoreSuite(name: string, harness: Harness, setup: { before(): Promise<void>; after(): Promise<void> }): Test {
  const tests = suite(name);
  tests.before(() => withTimeout(setup.before(), TEST_TIMEOUT_MS, `${name}: setup`));
  tests.after(() => withTimeout(setup.after(), TEST_TIMEOUT_MS, `${name}: cleanup`));

  const it = (title: string, body: (store: BlobStore) => Promise<void>, timeoutMs = TEST_TIMEOUT_MS): void => {
    tests(title, async () => {
      const store = await harness.open();
      try {
        await withTimeout(body(store), timeoutMs, `${name}: ${title}`);
      } finally {
        await store.close();
      }
    });
  };

  it('put/get round trip, head and exists; the object is stored intact with its 48-byte header', async (store) => {
    const payload = Buffer.from('hello, checkpoint');
    await store.put('checkpoints/1/kg-0001', payload);
    assert.equal(Buffer.from((await store.get('checkpoints/1/kg-0001'))!), payload);
    assert.equal(await store.head('checkpoints/1/kg-0001'), { key: 'checkpoints/1/kg-0001', size: payload.length });
    assert.ok(await store.exists('checkpoints/1/kg-0001'));
    assert.is(await harness.storedSize(store, 'checkpoints/1/kg-0001'), payload.length + BLOB_HEADER_BYTES);
    // 70,000 bytes: the size at which the SDK's default flexible checksums stored chunk framing on s3rver.
    const medium = randomBytes(70_000);
    await store.put('medium', medium);
    assert.is(await harness.storedSize(store, 'medium'), 70_000 + BLOB_HEADER_BYTES);
    assert.ok(Buffer.from((await store.get('medium'))!).equals(medium));
    await store.put('empty', new Uint8Array(0));
    assert.is((await store.get('empty'))!.length, 0);
  });

  it('get, head and exists of a missing key', async (store) => {
    assert.is(await store.get('nothing/here'), null);
    assert.is(await store.head('nothing/here'), null);
    assert.is(await store.exists('nothing/here'), false);
    await store.put('a/b', Buffer.from('x'));
    assert.is(await store.get('a'), null, 'a prefix of a key is no object');
  });

  it('overwrite replaces the object, shorter or longer', async (store) => {
    await store.put('pointer', Buffer.from('checkpoint-0000000001'));
    await store.put('pointer', Buffer.from('c2'));
    assert.is(Buffer.from((await store.get('pointer'))!).toString(), 'c2');
    await store.put('pointer', Buffer.alloc(5000, 7));
    assert.equal(Buffer.from((await store.get('pointer'))!), Buffer.alloc(5000, 7));
    assert.equal(await store.list(), ['pointer']);
  });

  it('list: prefixes are plain string prefixes; results sorted', async (store) => {
    const keys = ['cp/1/a', 'cp/1/b', 'cp/10/a', 'cp/2/a', 'other/x', 'top', 'cp/1/deep/er/z'];
    for (const key of keys) await store.put(key, Buffer.from(key));
    assert.equal(await store.list(), ['cp/1/a', 'cp/1/b', 'cp/1/deep/er/z', 'cp/10/a', 'cp/2/a', 'other/x', 'top']);
    assert.equal(await store.list('cp/1/'), ['cp/1/a', 'cp/1/b', 'cp/1/deep/er/z']);
    assert.equal(await store.list('cp/1'), ['cp/1/a', 'cp/1/b', 'cp/1/deep/er/z', 'cp/10/a']);
    assert.equal(await store.list('cp/1/a'), ['cp/1/a']);
    assert.equal(await store.list('t'), ['top']);
    assert.equal(await store.list('none/'), []);
    assert.equal(await store.list('cp/3'), []);
  });

  it('list returns every key past 1,000 (pagination)', async (store) => {
    const keys = Array.from({ length: 1_050 }, (_, index) => `many/kg-${String(index).padStart(5, '0')}`);
    const payload = Buffer.from('x');
    await inParallel(keys, 32, (key) => store.put(key, payload));
    await store.put('manyother', payload);
    const listed = await store.list('many/');
    assert.is(listed.length, keys.length);
    assert.equal(listed, keys);
    assert.is((await store.list()).length, keys.length + 1);
  }, 60_000);

  it('delete many keys (more than one batch), missing ones included', async (store) => {
    const keys = Array.from({ length: 1_020 }, (_, index) => `gone/${index % 7}/kg-${index}`);
    await inParallel(keys, 32, (key) => store.put(key, Buffer.from(key)));
    await store.put('kept/one', Buffer.from('1'));
    const missing = Array.from({ length: 30 }, (_, index) => `never/${index}`);
    await store.delete([...missing.slice(0, 15), ...keys, ...missing.slice(15), keys[0]!]);
    assert.equal(await store.list(), ['kept/one']);
    assert.is(await store.get(keys[5]!), null);
    await store.delete([]);
    await store.delete(['kept/one', 'kept/one']);
    assert.equal(await store.list(), []);
  }, 60_000);

  it('a 20 MB object round trips byte for byte', async (store) => {
    const big = randomBytes(20 * 1024 * 1024);
    await store.put('big/object', big);
    const back = await store.get('big/object');
    assert.ok(back !== null);
    assert.is(back.length, big.length);
    assert.ok(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(big), 'bytes differ');
    assert.is((await store.head('big/object'))!.size, big.length);
  }, 60_000);

  it('a corrupt, truncated or foreign object makes get throw a BlobCorruptError naming the key', async (store) => {
    const payload = randomBytes(4096);
    for (const key of ['flip/payload', 'flip/header', 'truncated', 'extended', 'foreign', 'tiny']) await store.put(key, payload);
    await harness.damage(store, 'flip/payload', (stored) => {
      stored[BLOB_HEADER_BYTES + 1000]! ^= 0x01;
      return stored;
    });
    await harness.damage(store, 'flip/header', (stored) => {
      stored[1]! ^= 0x40;
      return stored;
    });
    await harness.damage(store, 'truncated', (stored) => stored.subarray(0, stored.length - 100));
    await harness.damage(store, 'extended', (stored) => Buffer.concat([stored, Buffer.from('junk')]));
    await harness.damage(store, 'foreign', () => Buffer.from('{"not":"a statecraft blob, but long enough to hold a header......"}'));
    await harness.damage(store, 'tiny', (stored) => stored.subarray(0, 10));
    const cases: [string, RegExp][] = [
      ['flip/payload', /"flip\/payload".*SHA-256 does not match/],
      ['flip/header', /"flip\/header".*header is missing or damaged/],
      ['truncated', /"truncated".*declares 4096 payload bytes but 3996 are stored \(truncated\)/],
      ['extended', /"extended".*extra bytes/],
      ['foreign', /"foreign".*not written by a Statecraft blob store/],
      ['tiny', /"tiny".*fewer than the 48-byte header/],
    ];
    for (const [key, message] of cases) {
      const error = await expectError(() => store.get(key), BlobCorruptError, 'SC_ERR_STORE_CORRUPT', message);
      assert.is(error.key, key);
      assert.match(error.message, /restore from an older checkpoint/);
    }
    // A good object next to them still reads, and rewriting a corrupt one repairs it.
    await store.put('flip/payload', payload);
    assert.ok(Buffer.from((await store.get('flip/payload'))!).equals(payload));
  });

  it('bad keys and prefixes are rejected with a typed error before touching the store', async (store) => {
    const bad = ['', '/abs', 'a//b', 'a/', '../x', 'a/../b', './a', 'a/.', 'a\\b', 'nul\u0000', '.sc-tmp-123', 'x'.repeat(256), 'abcd/'.repeat(200) + 'e'];
    for (const key of bad) {
      await expectError(() => store.put(key, Buffer.from('x')), ValidationError, 'SC_ERR_INVALID_OPTION', /blob key|use a relative path/);
      await expectError(() => store.get(key), ValidationError, 'SC_ERR_INVALID_OPTION', /.+/);
      await expectError(() => store.head(key), ValidationError, 'SC_ERR_INVALID_OPTION', /.+/);
    }
    await expectError(() => store.delete(['fine', '../escape']), ValidationError, 'SC_ERR_INVALID_OPTION', /"\.\.\/escape" contains a "\.\." segment/);
    for (const prefix of ['/x', '../', 'a//', 'a/../b']) {
      await expectError(() => store.list(prefix), ValidationError, 'SC_ERR_INVALID_OPTION', /list prefix/);
    }
    assert.equal(await store.list('a/'), []);
    assert.equal(await store.list('.'), []);
    assert.equal(await store.list(), [], 'nothing was written');
  });

  return tests;
}

// ---------------------------------------------------------------------------------------------------
// The directory store

let fileRoot = '';
let fileStores = 0;

const fileSuite = blobStoreSuite(
  'file blob store',
  {
    async open() {
      return new FileBlobStore(join(fileRoot, `store-${++fileStores}`));
    },
    async damage(store, key, damage) {
      const path = join((store as FileBlobStore).directory, ...key.split('/'));
      await writeFile(path, damage(await readFile(path)));
    },
    async storedSize(store, key) {
      return (await readFile(join((store as FileBlobStore).directory, ...key.split('/')))).length;
    },
  },
  {
    async before() {
      fileRoot = await mkdtemp(join(tmpdir(), 'statecraft-blob-'));
    },
    async after() {
      await rm(fileRoot, { recursive: true, force: true });
    },
  },
);

fileSuite('file: delete prunes empty directories, keeps the store directory and non-empty ones', async () => {
  const store = new FileBlobStore(join(fileRoot, 'prune'));
  await store.put('checkpoints/7/groups/kg-1', Buffer.from('1'));
  await store.put('checkpoints/7/groups/kg-2', Buffer.from('2'));
  await store.put('checkpoints/8/manifest', Buffer.from('m'));
  await store.delete(['checkpoints/7/groups/kg-1', 'checkpoints/7/groups/kg-2']);
  assert.equal(await readdir(join(store.directory, 'checkpoints')), ['8']);
  await store.delete(['checkpoints/8/manifest']);
  assert.equal(await readdir(store.directory), []);
});

fileSuite('file: no temporary files are left behind; list skips them', async () => {
  const store = new FileBlobStore(join(fileRoot, 'temps'));
  await store.put('d/k', Buffer.from('v'));
  await store.put('d/k', Buffer.from('w'));
  assert.equal(await readdir(join(store.directory, 'd')), ['k']);
  await writeFile(join(store.directory, 'd', '.sc-tmp-999-abc'), 'half-written');
  assert.equal(await store.list(), ['d/k']);
});

fileSuite('file: readers racing a rewrite see the old or the new object, never a torn one', async () => {
  const store = new FileBlobStore(join(fileRoot, 'race'), { fsync: false });
  const versions = [Buffer.alloc(1 << 20, 1), Buffer.alloc(1 << 19, 2), Buffer.alloc(3 << 19, 3)];
  await store.put('hot', versions[0]!);
  let writing = true;
  const writer = (async () => {
    for (let round = 0; round < 30; round++) await store.put('hot', versions[round % versions.length]!);
    writing = false;
  })();
  let reads = 0;
  while (writing) {
    const bytes = Buffer.from((await store.get('hot'))!);
    assert.ok(versions.some((version) => version.equals(bytes)), 'a read saw a mix of versions');
    reads++;
  }
  await writer;
  assert.ok(reads > 0);
});

fileSuite('file: a directory that cannot be created gives BlobStoreUnavailableError from check()', async () => {
  await writeFile(join(fileRoot, 'a-file'), 'x');
  const store = new FileBlobStore(join(fileRoot, 'a-file', 'sub'));
  await expectError(() => store.check(), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', /cannot use directory .*a-file\/sub.*ENOTDIR/);
  const fine = new FileBlobStore(join(fileRoot, 'created', 'by', 'check'));
  await fine.check();
  assert.equal(await readdir(join(fileRoot, 'created', 'by')), ['check']);
});

fileSuite('file: a key under an existing object gives a typed error naming the key', async () => {
  const store = new FileBlobStore(join(fileRoot, 'conflict'));
  await store.put('a', Buffer.from('1'));
  const error = await expectError(() => store.put('a/b', Buffer.from('2')), StatecraftError, 'SC_ERR_STORE_FAILED', /object "a\/b" .*cannot both exist/);
  assert.is((error as unknown as { key: string }).key, 'a/b');
  assert.equal(await store.list(), ['a']);
});

fileSuite('file: describe()', async () => {
  assert.is(new FileBlobStore('/var/lib/statecraft/checkpoints').describe(), 'file:///var/lib/statecraft/checkpoints');
});

// ---------------------------------------------------------------------------------------------------
// The S3 store against s3rver

let s3: S3TestServer | undefined;
let s3Stores = 0;

function s3Store(options: { prefix?: string; bucket?: string; endpoint?: string } = {}): S3BlobStore {
  return new S3BlobStore({ bucket: options.bucket ?? s3!.bucket, prefix: options.prefix ?? `run/store-${++s3Stores}`, endpoint: options.endpoint ?? s3!.endpoint });
}

const s3Suite = blobStoreSuite(
  's3 blob store',
  {
    async open() {
      return s3Store();
    },
    async damage(store, key, damage) {
      const s3store = store as S3BlobStore;
      const objectKey = `${s3store.prefix}/${key}`;
      const response = await s3store.client.send(new GetObjectCommand({ Bucket: s3store.bucket, Key: objectKey }));
      const stored = Buffer.from(await response.Body!.transformToByteArray());
      await s3store.client.send(new PutObjectCommand({ Bucket: s3store.bucket, Key: objectKey, Body: damage(stored) }));
    },
    async storedSize(store, key) {
      const s3store = store as S3BlobStore;
      const head = await s3store.client.send(new HeadObjectCommand({ Bucket: s3store.bucket, Key: `${s3store.prefix}/${key}` }));
      return head.ContentLength!;
    },
  },
  {
    async before() {
      s3 = await startS3Server();
    },
    async after() {
      await s3?.close();
    },
  },
);

s3Suite('s3: check() passes; describe() names bucket, prefix and endpoint', async () => {
  const store = s3Store({ prefix: 'a/b' });
  try {
    await withTimeout(store.check(), TEST_TIMEOUT_MS, 'check');
    assert.is(store.describe(), `s3://${s3!.bucket}/a/b (endpoint ${s3!.endpoint}, path-style)`);
    assert.ok(store.forcePathStyle);
  } finally {
    await store.close();
  }
});

s3Suite('s3: a prefix keeps stores in one bucket apart; the empty prefix is the bucket root', async () => {
  const left = s3Store({ prefix: 'apart/left' });
  const right = s3Store({ prefix: 'apart/right' });
  const root = s3Store({ prefix: '' });
  try {
    await left.put('k', Buffer.from('L'));
    await right.put('k', Buffer.from('R'));
    assert.is(Buffer.from((await left.get('k'))!).toString(), 'L');
    assert.equal(await right.list(), ['k']);
    assert.equal(await root.list('apart/'), ['apart/left/k', 'apart/right/k']);
    assert.is(Buffer.from((await root.get('apart/right/k'))!).toString(), 'R');
  } finally {
    await Promise.all([left.close(), right.close(), root.close()]);
  }
});

s3Suite('s3: a missing bucket gives BlobStoreUnavailableError that says to create it', async () => {
  const store = s3Store({ bucket: 'no-such-bucket' });
  try {
    const create = /S3 bucket "no-such-bucket" does not exist.*create it \(aws s3 mb s3:\/\/no-such-bucket --endpoint-url http/;
    await expectError(() => store.check(), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
    await expectError(() => store.get('k'), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
    await expectError(() => store.head('k'), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
    await expectError(() => store.put('k', Buffer.from('x')), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
    await expectError(() => store.list(), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
    await expectError(() => store.delete(['k']), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', create);
  } finally {
    await store.close();
  }
});

s3Suite('s3: an unreachable endpoint gives BlobStoreUnavailableError quickly', async () => {
  // A port that was just free: nothing listens there.
  const port = await new Promise<number>((done) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => done(port));
    });
  });
  const store = s3Store({ endpoint: `http://127.0.0.1:${port}` });
  try {
    const started = Date.now();
    const unreachable = new RegExp(`cannot reach S3 endpoint http://127\\.0\\.0\\.1:${port} to get "k" \\(ECONNREFUSED\\): check --s3-endpoint`);
    await expectError(() => store.get('k'), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', unreachable);
    await expectError(() => store.check(), BlobStoreUnavailableError, 'SC_ERR_STORE_UNAVAILABLE', /cannot reach S3 endpoint/);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
  } finally {
    await store.close();
  }
});

s3Suite('s3: bad options are rejected up front', async () => {
  for (const [options, message] of [
    [{ bucket: 'B' }, /not a valid bucket name/],
    [{ bucket: 'ok-bucket', prefix: 'a/../b' }, /S3 prefix "a\/\.\.\/b"/],
    [{ bucket: 'ok-bucket', endpoint: 'localhost:9000' }, /not an http:\/\/ or https:\/\/ URL/],
    [{ bucket: 'ok-bucket', listPageSize: 5000 }, /listPageSize/],
  ] as const) {
    assert.throws(() => new S3BlobStore(options), (error: unknown) => error instanceof ValidationError && message.test(error.message));
  }
  const aws = new S3BlobStore({ bucket: 'ok-bucket', prefix: '/cp/', region: 'eu-west-1' });
  assert.is(aws.describe(), 's3://ok-bucket/cp (AWS, region eu-west-1)');
  assert.is(aws.forcePathStyle, false);
  await aws.close();
});

s3Suite('s3: list pages with a small page size', async () => {
  const store = new S3BlobStore({ bucket: s3!.bucket, prefix: 'small-pages', endpoint: s3!.endpoint, listPageSize: 7 });
  try {
    const keys = Array.from({ length: 30 }, (_, index) => `k/${String(index).padStart(2, '0')}`);
    await inParallel(keys, 8, (key) => store.put(key, Buffer.from(key)));
    assert.equal(await store.list('k/'), keys);
  } finally {
    await store.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// openBlobStore

const urls = suite('openBlobStore');

urls('file:// URLs: relative to the working directory or absolute', async () => {
  assert.equal(parseBlobStoreUrl('file://./data/checkpoints', '/srv/app'), { kind: 'file', directory: '/srv/app/data/checkpoints' });
  assert.equal(parseBlobStoreUrl('file://../shared/cp', '/srv/app'), { kind: 'file', directory: '/srv/shared/cp' });
  assert.equal(parseBlobStoreUrl('file:///var/lib/statecraft/'), { kind: 'file', directory: '/var/lib/statecraft' });
  assert.equal(parseBlobStoreUrl('file:///tmp/with%20space'), { kind: 'file', directory: '/tmp/with space' });
  const relative = await openBlobStore('file://./data/checkpoints');
  assert.ok(relative instanceof FileBlobStore);
  assert.is((relative as FileBlobStore).directory, resolve(process.cwd(), 'data/checkpoints'));
  const absolute = await openBlobStore('file:///tmp/statecraft-cp', { cwd: '/elsewhere' });
  assert.is(absolute.describe(), 'file:///tmp/statecraft-cp');
});

urls('s3:// URLs with endpoint, region and path-style options', async () => {
  assert.equal(parseBlobStoreUrl('s3://my-bucket/checkpoints/prod/'), { kind: 's3', bucket: 'my-bucket', prefix: 'checkpoints/prod' });
  assert.equal(parseBlobStoreUrl('s3://my-bucket'), { kind: 's3', bucket: 'my-bucket', prefix: '' });
  const store = await openBlobStore('s3://my-bucket/cp', { endpoint: 'http://127.0.0.1:9000', region: 'eu-central-1' });
  assert.ok(store instanceof S3BlobStore);
  const s3store = store as S3BlobStore;
  assert.is(s3store.bucket, 'my-bucket');
  assert.is(s3store.prefix, 'cp');
  assert.is(s3store.region, 'eu-central-1');
  assert.ok(s3store.forcePathStyle, 'path-style with a custom endpoint');
  await store.close();
  const aws = (await openBlobStore('s3://my-bucket/cp', { region: 'us-west-2' })) as S3BlobStore;
  assert.is(aws.forcePathStyle, false);
  await aws.close();
});

urls('bad URLs give a ValidationError naming the accepted forms', async () => {
  for (const url of ['', '/plain/path', './relative', 'http://example.com/x', 'file://data/checkpoints', 'file://host/abs', 's3://Bad_Bucket/x', 's3://bucket:9000/x', 's3://user:pw@bucket/x', 's3://bucket/a/../b', 's3://bucket/x?region=1', 'minio://bucket']) {
    await expectError(() => openBlobStore(url), ValidationError, 'SC_ERR_INVALID_OPTION', /accepted forms: file:\/\/\.\/relative\/dir .*file:\/\/\/absolute\/dir, s3:\/\/bucket\/prefix/);
  }
  await expectError(() => openBlobStore('file://./cp', { endpoint: 'http://127.0.0.1:9000' }), ValidationError, 'SC_ERR_INVALID_OPTION', /--s3-endpoint was given/);
});

fileSuite.run();
s3Suite.run();
urls.run();
