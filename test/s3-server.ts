/**
 * Test helper: a real S3-protocol server (s3rver 3.7) on 127.0.0.1 with an OS-chosen port, storing into
 * a fresh temporary directory, with one bucket created. `close()` stops it and removes the directory.
 *
 *   const s3 = await startS3Server();
 *   const store = new S3BlobStore({ bucket: s3.bucket, prefix: 'test', endpoint: s3.endpoint });
 *   ...
 *   await s3.close();
 *
 * s3rver runs in a child process started with `--openssl-legacy-provider`: it builds ListObjectsV2
 * continuation tokens with single DES, which OpenSSL 3 (Node 20) only offers through the legacy
 * provider; without it every truncated listing (more keys than one page) fails with a 500. The child
 * also exits when its stdin closes, removing its directory, so it never outlives the test process.
 *
 * Sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to s3rver's defaults ('S3RVER') in this process when
 * they are unset, so the SDK's default credential chain finds them.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface S3TestServer {
  /** e.g. http://127.0.0.1:41234 */
  endpoint: string;
  bucket: string;
  /** Where s3rver keeps the objects (removed by close). */
  directory: string;
  close(): Promise<void>;
}

export const S3RVER_ACCESS_KEY = 'S3RVER';

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const CHILD_FLAG = '--s3rver-child';
const CHILD_ENV = 'STATECRAFT_S3RVER_CHILD';

/**
 * The parent's module loader flags (`--import tsx` when tests run from TypeScript), and nothing else:
 * not `-e`/`-p` code, which the child would run again.
 */
function loaderArguments(): string[] {
  const kept: string[] = [];
  const withValue = new Set(['--import', '--loader', '--experimental-loader', '--require', '-r']);
  const argv = process.execArgv;
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index]!;
    if (withValue.has(argument) && index + 1 < argv.length) kept.push(argument, argv[++index]!);
    else if (/^--(import|loader|experimental-loader|require)=/.test(argument)) kept.push(argument);
  }
  return kept;
}

export async function startS3Server(options: { bucket?: string } = {}): Promise<S3TestServer> {
  if (process.env[CHILD_ENV] !== undefined) throw new Error('startS3Server called inside the s3rver child process');
  process.env.AWS_ACCESS_KEY_ID ??= S3RVER_ACCESS_KEY;
  process.env.AWS_SECRET_ACCESS_KEY ??= S3RVER_ACCESS_KEY;
  // The SDK warns once per process that its 2027 releases will need Node 22; tests need not say so.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const bucket = options.bucket ?? 'statecraft-test';
  const directory = await mkdtemp(join(tmpdir(), 'statecraft-s3rver-'));
  const child = spawn(
    process.execPath,
    [...loaderArguments(), '--openssl-legacy-provider', fileURLToPath(import.meta.url), CHILD_FLAG, directory, bucket],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, [CHILD_ENV]: '1' } },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
  const exited = new Promise<void>((done) => child.once('exit', () => done()));

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    await rm(directory, { recursive: true, force: true });
  };

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(() => reject(new Error(`s3rver did not start within ${START_TIMEOUT_MS} ms: ${stderr}`)), START_TIMEOUT_MS);
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
        const line = /^\{.*\}$/m.exec(stdout);
        if (line) {
          clearTimeout(timer);
          resolve((JSON.parse(line[0]) as { port: number }).port);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited with ${signal ?? code} before it was ready: ${stderr}`));
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }

  let closed: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    directory,
    close: () => (closed ??= stop()),
  };
}

/** The child: runs s3rver until its stdin closes. */
async function runChild(directory: string, bucket: string): Promise<void> {
  /** The part of s3rver's API used here (the package ships no types). */
  type S3rverConstructor = new (options: {
    address: string;
    port: number;
    silent: boolean;
    directory: string;
    configureBuckets: { name: string; configs: string[] }[];
  }) => { run(): Promise<{ port: number }>; close(): Promise<void> };
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = await server.run();
  // The parent closes stdin to stop us, or dies: either way remove the data and go.
  const exit = (): never => {
    rmSync(directory, { recursive: true, force: true });
    process.exit(0);
  };
  process.stdin.on('end', exit).on('error', exit).resume();
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

if (process.argv[2] === CHILD_FLAG && process.env[CHILD_ENV] === '1' && process.argv[1] === fileURLToPath(import.meta.url)) {
  runChild(process.argv[3]!, process.argv[4]!).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
