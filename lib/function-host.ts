/**
 * The HTTP function host: serves function definitions to a cluster over StateFun's request-reply
 * protocol, so function types can run in a separate, stateless deployment (state travels with each
 * request and its answer). The same module runs embedded (`--functions`) or here, unchanged.
 *
 *   import { serve } from 'statecraft';
 *   const host = await serve('./functions.js', { port: 8000 });   // a piscina pool: every core
 *   // node cluster/start.js --endpoint 'example/*=http://127.0.0.1:8000/'
 *
 * Answers: 200 with a `FromFunction` message; 400 for a request that is not a `ToFunction` message;
 * 404 for a function type this host does not serve; 413 for a body over `bodyBytesMax`; 422 when a
 * handler threw (the runtime dead-letters instead of retrying: a retry would throw again); 500 for a
 * failure of the host itself (retried).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { availableParallelism } from 'node:os';
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { Piscina } from 'piscina';
import { ValidationError } from './errors.js';
import { wholeNumberOption } from './options.js';
import type { FunctionDefinition } from './function.js';
import { loadFunctionModules, resolveModuleUrl } from './function-loader.js';
import { handleRequest, type HostTask, type HostTaskResult } from './function-host-worker.js';
import type { InvocationLimits } from './invocation.js';
import { RemoteFunctionSet } from './remote-batch.js';

export interface ServeOptions {
  /** TCP port; 0 lets the OS choose. Default 8000. Ignored with `socketPath`. */
  port?: number;
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** Listen on a unix socket instead (the cluster's endpoint: `http+unix:///path/to.sock/`). */
  socketPath?: string;
  /** Worker threads running batches; default one per core. Definitions given as objects run on this thread. */
  threads?: number;
  /** Largest value a handler may write or send, in bytes (as the cluster's --value-bytes-max). Default 1 MiB. */
  valueBytesMax?: number;
  /** Longest address id, in UTF-8 bytes. Default 1024. */
  idBytesMax?: number;
  /** Largest request body accepted, in bytes. Default 32 MiB. */
  bodyBytesMax?: number;
  /**
   * How long one request's handlers may run, in ms. Past it the request is answered 422
   * (SC_ERR_HANDLER_TIMEOUT: the cluster sends the batch again one message at a time, and dead-letters
   * the one that hangs) and the pool thread running it is terminated and replaced: a handler in a
   * synchronous loop cannot hold a thread for good. Default 10,000.
   */
  handlerTimeoutMs?: number;
}

export interface FunctionHost {
  /** `http://host:port/` or `http+unix:///path.sock/`: give it to `--endpoint`. */
  readonly url: string;
  readonly port: number | null;
  readonly functions: readonly string[];
  /** Requests answered, by status. */
  readonly answered: Readonly<Record<number, number>>;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;
/** How long close() lets requests being answered finish. */
const CLOSE_GRACE_MS = 5000;

/** A socket file left by a host that was killed: nobody answers on it, so it is removed (a live one is kept: listen then fails). */
async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) rmSync(path, { force: true });
}

function checkCount(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  return wholeNumberOption(name, value, fallback, min, max, 'serve');
}

/**
 * Serves functions over HTTP. `functions` names ES modules exporting definitions (paths, file URLs or
 * package names: each pool thread imports them), or is an array of definitions (run on this thread).
 */
export async function serve(functions: string | URL | readonly (string | URL)[] | readonly FunctionDefinition[], options: ServeOptions = {}): Promise<FunctionHost> {
  const limits: InvocationLimits = {
    valueBytesMax: checkCount('valueBytesMax', options.valueBytesMax, MiB, 1, 512 * MiB),
    idBytesMax: checkCount('idBytesMax', options.idBytesMax, 1024, 1, 65_536),
  };
  const bodyBytesMax = checkCount('bodyBytesMax', options.bodyBytesMax, 32 * MiB, 1024, 2048 * MiB);
  const handlerTimeoutMs = checkCount('handlerTimeoutMs', options.handlerTimeoutMs, 10_000, 1, 24 * 3_600_000);
  const timedOut = (): HostTaskResult => ({
    status: 422,
    code: 'SC_ERR_HANDLER_TIMEOUT',
    message: `a handler of this batch did not finish within ${handlerTimeoutMs} ms (handlerTimeoutMs): it was abandoned${pool === null ? '' : ' and the thread running it replaced'}`,
  });
  const list = (Array.isArray(functions) ? functions : [functions]) as readonly (string | URL | FunctionDefinition)[];
  if (list.length === 0) throw new ValidationError('SC_ERR_INVALID_OPTION', 'serve: give a functions module (or definitions) to serve.');

  // On this thread an async handler that never settles is abandoned (a synchronous loop cannot be: give threads).
  const inTime = (result: Promise<HostTaskResult>): Promise<HostTaskResult> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<HostTaskResult>((resolve) => (timer = setTimeout(() => resolve(timedOut()), handlerTimeoutMs)));
    return Promise.race([result, late]).finally(() => clearTimeout(timer));
  };
  let run: (body: Uint8Array) => Promise<HostTaskResult>;
  let typenames: string[];
  let pool: Piscina | null = null;
  if (list.every((item) => typeof item === 'string' || item instanceof URL)) {
    const moduleUrls = list.map((item) => (item instanceof URL ? item.href : resolveModuleUrl(item as string)));
    // Loaded here too: a bad module fails now, with its error, instead of in every request.
    const set = new RemoteFunctionSet(await loadFunctionModules(moduleUrls));
    typenames = set.typenames;
    const threads = checkCount('threads', options.threads, availableParallelism(), 0, 256);
    if (threads === 0) run = (body) => inTime(handleRequest(set, body, limits));
    else {
      const workers = new Piscina({ filename: new URL('./function-host-worker.js', import.meta.url).href, minThreads: threads, maxThreads: threads, idleTimeout: 60_000 });
      pool = workers;
      // Aborting a running task terminates its thread; piscina starts another in its place.
      run = (body) =>
        (workers.run({ moduleUrls, limits, body } satisfies HostTask, { signal: AbortSignal.timeout(handlerTimeoutMs) }) as Promise<HostTaskResult>).catch((error: Error) => {
          if (error?.name === 'AbortError') return timedOut();
          throw error;
        });
    }
  } else {
    const set = new RemoteFunctionSet(list as readonly FunctionDefinition[]);
    typenames = set.typenames;
    run = (body) => inTime(handleRequest(set, body, limits));
  }

  const answered: Record<number, number> = {};
  const answer = (response: ServerResponse, status: number, type: string, body: Uint8Array | string) => {
    answered[status] = (answered[status] ?? 0) + 1;
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    response.writeHead(status, { 'content-type': type, 'content-length': bytes.length });
    response.end(bytes);
  };
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== 'POST') {
      if (request.method === 'GET') answer(response, 200, 'text/plain', `Statecraft function host: serves ${typenames.join(', ')}. POST StateFun ToFunction messages here.\n`);
      else answer(response, 405, 'text/plain', 'POST a StateFun ToFunction message (application/octet-stream).\n');
      request.resume();
      return;
    }
    const declared = Number(request.headers['content-length'] ?? 0);
    if (declared > bodyBytesMax) {
      response.setHeader('connection', 'close');
      answer(response, 413, 'text/plain', `SC_ERR_VALUE_TOO_LARGE: the request has ${declared} bytes; this host accepts at most ${bodyBytesMax} (bodyBytesMax).\n`);
      // Closed once the answer is out, so the client reads the 413 rather than a reset.
      response.once('finish', () => request.destroy());
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    let refused = false;
    request.on('data', (chunk: Buffer) => {
      if (refused) return;
      length += chunk.length;
      if (length > bodyBytesMax) {
        refused = true;
        response.setHeader('connection', 'close');
        answer(response, 413, 'text/plain', `SC_ERR_VALUE_TOO_LARGE: the request has more than ${bodyBytesMax} bytes (bodyBytesMax).\n`);
        response.once('finish', () => request.destroy());
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      if (refused) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
      run(body).then(
        (result) => {
          if (result.status === 200) answer(response, 200, 'application/octet-stream', result.body);
          else answer(response, result.status, 'text/plain', `${result.code}: ${result.message}\n`);
        },
        (error: unknown) => answer(response, 500, 'text/plain', `SC_ERR_INTERNAL: ${String((error as Error)?.message ?? error)}\n`),
      );
    });
    request.on('error', () => undefined); // a client gone mid-body: nothing to answer
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  if (options.socketPath !== undefined) await removeStaleSocket(options.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (options.socketPath !== undefined) server.listen(options.socketPath, resolve);
    else server.listen(checkCount('port', options.port, 8000, 0, 65_535), options.host ?? '127.0.0.1', resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : null;
  const host = options.host ?? '127.0.0.1';
  const url = options.socketPath !== undefined ? `http+unix://${options.socketPath}/` : `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    functions: typenames,
    answered,
    close() {
      closing ??= (async () => {
        // Stop accepting, let requests being answered finish (a few seconds at most), then cut the rest.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        await closed;
        clearTimeout(cut);
        await pool?.destroy();
      })();
      return closing;
    },
  };
}
