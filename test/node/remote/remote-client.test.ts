// POSTing to a remote function endpoint (node/remote/remote-client.ts) against real HTTP servers on
// 127.0.0.1 and on a unix socket, each request answered as the test scripted it: retries with back-off
// on 5xx, 408, 429, dropped connections, refused connections and silence, within the call budget; no
// retry on other 4xx; which failures are SC_ERR_REMOTE_HANDLER, SC_ERR_UNKNOWN_FUNCTION_TYPE,
// SC_ERR_REMOTE_RESPONSE and SC_ERR_REMOTE_CALL; response size limits; the connection pool.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AttemptError, callEndpoint, closeRemoteConnections } from '../../../node/remote/remote-client.js';
import { ENDPOINT_DEFAULTS, EndpointTable, type EndpointTimeouts, type ResolvedEndpoint } from '../../../node/remote/remote-endpoints.js';
import { eventually, withTimeout } from '../../helpers.js';

const WAIT_MS = 10_000;

type Behaviour = (request: IncomingMessage, response: ServerResponse, body: Buffer) => void;

const answer =
  (status: number, body: string | Buffer = '', headers: Record<string, string | number> = {}): Behaviour =>
  (_request, response) =>
    response.writeHead(status, { 'content-type': 'application/octet-stream', ...headers }).end(body);
const ok = (body: string | Buffer = 'ok'): Behaviour => answer(200, body);
/** Drops the connection without an answer. */
const drop: Behaviour = (request) => request.socket.destroy();
/** Never answers (the server closes it at the end of the test). */
const silent: Behaviour = () => undefined;

/** An HTTP server whose answers are scripted per request; after the script, `otherwise`. */
class ScriptedEndpoint {
  readonly server: Server;
  readonly requests: { method: string; url: string; headers: IncomingMessage['headers']; body: Buffer }[] = [];
  readonly sockets = new Set<Socket>();
  connections = 0;
  closedConnections = 0;

  constructor(
    private readonly script: Behaviour[],
    private readonly otherwise: Behaviour = ok(),
  ) {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks);
        this.requests.push({ method: request.method!, url: request.url!, headers: request.headers, body });
        (this.script.shift() ?? this.otherwise)(request, response, body);
      });
    });
    this.server.on('connection', (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.once('close', () => {
        this.closedConnections++;
        this.sockets.delete(socket);
      });
    });
  }

  listen(where: { port: 0 } | { path: string }): Promise<void> {
    return new Promise((resolve) => ('path' in where ? this.server.listen(where.path, resolve) : this.server.listen(0, '127.0.0.1', resolve)));
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

const servers: ScriptedEndpoint[] = [];
const directories: string[] = [];

test.after.each(async () => {
  closeRemoteConnections();
  for (const server of servers.splice(0)) await withTimeout(server.close(), WAIT_MS, 'closing a test server');
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

async function endpoint(script: Behaviour[], options: { otherwise?: Behaviour; timeouts?: Partial<EndpointTimeouts>; payloadMaxBytes?: number; unix?: boolean } = {}) {
  const server = new ScriptedEndpoint(script, options.otherwise);
  servers.push(server);
  let template: string;
  if (options.unix) {
    const directory = mkdtempSync(join(tmpdir(), 'statecraft-rc-'));
    directories.push(directory);
    const path = join(directory, 'fn.sock');
    await server.listen({ path });
    template = `http+unix://${path}/statefun/{function.name}`;
  } else {
    await server.listen({ port: 0 });
    template = `http://127.0.0.1:${server.port}/statefun/{function.name}`;
  }
  const resolved = resolve(template, options);
  return { server, resolved };
}

function resolve(template: string, options: { timeouts?: Partial<EndpointTimeouts>; payloadMaxBytes?: number } = {}): ResolvedEndpoint {
  const table = new EndpointTable([
    {
      ...ENDPOINT_DEFAULTS,
      functions: 'fn/*',
      urlPathTemplate: template,
      payloadMaxBytes: options.payloadMaxBytes ?? ENDPOINT_DEFAULTS.payloadMaxBytes,
      timeouts: { callMs: 5000, connectMs: 1000, readMs: 2000, writeMs: 2000, ...options.timeouts },
    },
  ]);
  return table.resolve('fn/greeter')!;
}

/** Calls and returns how it went: the outcome or the error, attempts counted by onAttempt, time taken. */
async function call(resolved: ResolvedEndpoint, body: Uint8Array = Buffer.from('request')) {
  let attempts = 0;
  const started = performance.now();
  try {
    const outcome = await withTimeout(
      callEndpoint(resolved, body, () => attempts++),
      WAIT_MS,
      'callEndpoint',
    );
    return { outcome, error: null, attempts, elapsedMs: performance.now() - started };
  } catch (error) {
    assert.instance(error, AttemptError, `an AttemptError, not ${String(error)}`);
    return { outcome: null, error: error as AttemptError, attempts, elapsedMs: performance.now() - started };
  }
}

test('a 200 answer: one POST of the body to the endpoint path, its bytes handed back', async () => {
  const { server, resolved } = await endpoint([ok('the answer')]);
  const result = await call(resolved, Buffer.from('a batch'));
  assert.is(result.error, null);
  assert.is(Buffer.from(result.outcome!.body).toString(), 'the answer');
  assert.is(result.outcome!.attempts, 1);
  assert.is(result.attempts, 1);
  const request = server.requests[0]!;
  assert.is(request.method, 'POST');
  assert.is(request.url, '/statefun/greeter');
  assert.is(request.headers['content-type'], 'application/octet-stream');
  assert.is(request.headers['content-length'], '7');
  assert.is(request.body.toString(), 'a batch');
});

test('500, 503, 408 and 429 are retried with growing back-off until the endpoint answers', async () => {
  const { server, resolved } = await endpoint([answer(500), answer(503), answer(408), answer(429), ok()]);
  const result = await call(resolved);
  assert.is(result.error, null);
  assert.is(result.outcome!.attempts, 5);
  assert.is(result.attempts, 5, 'onAttempt counts every request');
  assert.is(server.requests.length, 5);
  assert.ok(server.requests.every((request) => request.body.toString() === 'request'), 'the same body each time');
  // Back-off 10, 20, 40, 80 ms, each with jitter down to half: at least 75 ms in all.
  assert.ok(result.elapsedMs >= 75, `four back-offs took ${Math.round(result.elapsedMs)} ms`);
});

test('a dropped connection and an answer cut short are retried', async () => {
  const cutShort: Behaviour = (_request, response) => {
    response.writeHead(200, { 'content-length': 100 });
    response.write(Buffer.alloc(40));
    setTimeout(() => response.socket?.destroy(), 20);
  };
  const { resolved } = await endpoint([drop, cutShort, ok('whole')]);
  const result = await call(resolved);
  assert.is(result.error, null, result.error?.message);
  assert.is(result.outcome!.attempts, 3);
  assert.is(Buffer.from(result.outcome!.body).toString(), 'whole');
});

test('a refused connection is retried until the call budget is spent; the error says so and why', async () => {
  const server = new ScriptedEndpoint([]);
  await server.listen({ port: 0 });
  const port = server.port;
  await server.close(); // nothing listens there now
  const resolved = resolve(`http://127.0.0.1:${port}/statefun/{function.name}`, { timeouts: { callMs: 300 } });
  const result = await call(resolved);
  assert.ok(result.error);
  assert.is(result.error.code, 'SC_ERR_REMOTE_CALL');
  assert.is(result.error.retryable, false, 'the call as a whole is over');
  assert.is(result.error.status, null);
  assert.match(result.error.message, /ECONNREFUSED/);
  assert.match(result.error.message, new RegExp(`\\(gave up after ${result.attempts} attempts in 300 ms\\)$`));
  assert.ok(result.attempts >= 3, `${result.attempts} attempts in 300 ms`);
  assert.ok(result.elapsedMs >= 150 && result.elapsedMs < 1000, `gave up after ${Math.round(result.elapsedMs)} ms`);
});

test('a 5xx that persists: given up within the call budget, with the status and the body', async () => {
  const { server, resolved } = await endpoint([], { otherwise: answer(503, 'overloaded'), timeouts: { callMs: 400 } });
  const result = await call(resolved);
  assert.ok(result.error);
  assert.is(result.error.code, 'SC_ERR_REMOTE_CALL');
  assert.is(result.error.status, 503);
  assert.match(result.error.message, /answered HTTP 503: overloaded \(gave up after \d+ attempts in 400 ms\)$/);
  assert.is(server.requests.length, result.attempts);
  assert.ok(result.attempts >= 3);
  assert.ok(result.elapsedMs < 1000, `${Math.round(result.elapsedMs)} ms`);
});

test('other 4xx answers (and a redirect) fail at once as SC_ERR_REMOTE_CALL with the status', async () => {
  for (const status of [400, 401, 403, 413, 302]) {
    const { server, resolved } = await endpoint([answer(status, `no: ${status}`)]);
    const result = await call(resolved);
    assert.ok(result.error, `status ${status}`);
    assert.is(result.error.code, 'SC_ERR_REMOTE_CALL');
    assert.is(result.error.status, status);
    assert.is(result.error.retryable, false);
    assert.is(result.error.message, `${resolved.url} answered HTTP ${status}: no: ${status}`);
    assert.is(server.requests.length, 1, `${status} is not retried`);
  }
});

test('422 is the function failing (SC_ERR_REMOTE_HANDLER), 404 a type not served (SC_ERR_UNKNOWN_FUNCTION_TYPE); neither is retried', async () => {
  const handler = await endpoint([answer(422, 'fn/greeter/alice threw TypeError: x is undefined')]);
  const failed = await call(handler.resolved);
  assert.is(failed.error!.code, 'SC_ERR_REMOTE_HANDLER');
  assert.is(failed.error!.status, 422);
  assert.is(failed.error!.message, `the function at ${handler.resolved.url} failed: fn/greeter/alice threw TypeError: x is undefined`);
  assert.is(handler.server.requests.length, 1);
  const unknown = await endpoint([answer(404, '')]);
  const missing = await call(unknown.resolved);
  assert.is(missing.error!.code, 'SC_ERR_UNKNOWN_FUNCTION_TYPE');
  assert.is(missing.error!.message, `${unknown.resolved.url} answered 404: (no body); check the endpoint's URL and the types it serves`);
  assert.is(unknown.server.requests.length, 1);
});

test('an error body is quoted up to 1,000 characters', async () => {
  const { resolved } = await endpoint([answer(400, 'x'.repeat(1000) + 'y'.repeat(3000))]);
  const result = await call(resolved);
  assert.ok(result.error!.message.endsWith(`: ${'x'.repeat(1000)}`), result.error!.message.slice(-40));
});

test('an endpoint that goes silent: each attempt ends after the read timeout and is retried', async () => {
  const { server, resolved } = await endpoint([silent, ok('late but fine')], { timeouts: { readMs: 150, writeMs: 150, callMs: 5000 } });
  const result = await call(resolved);
  assert.is(result.error, null, result.error?.message);
  assert.is(result.outcome!.attempts, 2);
  assert.is(server.requests.length, 2);
  assert.ok(result.elapsedMs >= 140, `${Math.round(result.elapsedMs)} ms`);
});

test('silence past the call budget ends the call at the budget', async () => {
  const { resolved } = await endpoint([], { otherwise: silent, timeouts: { readMs: 10_000, writeMs: 10_000, callMs: 300 } });
  const result = await call(resolved);
  assert.is(result.error!.code, 'SC_ERR_REMOTE_CALL');
  assert.is(result.error!.message, `${resolved.url} did not answer within the call budget (gave up after 1 attempts in 300 ms)`);
  assert.ok(result.elapsedMs >= 290 && result.elapsedMs < 1500, `${Math.round(result.elapsedMs)} ms`);
});

test('silence with a read timeout shorter than the budget: several attempts, then the budget ends it', async () => {
  const { server, resolved } = await endpoint([], { otherwise: silent, timeouts: { readMs: 100, writeMs: 100, callMs: 700 } });
  const result = await call(resolved);
  assert.is(result.error!.code, 'SC_ERR_REMOTE_CALL');
  assert.match(result.error!.message, /(went silent for 100 ms \(read\/write timeout\)|did not answer within the call budget) \(gave up after \d+ attempts in 700 ms\)$/);
  assert.ok(result.attempts >= 3, `${result.attempts} attempts`);
  assert.is(server.requests.length, result.attempts);
  assert.ok(result.elapsedMs < 2000, `${Math.round(result.elapsedMs)} ms`);
});

test('answers over payloadMaxBytes fail at once as SC_ERR_REMOTE_RESPONSE, declared or not; one of exactly the limit is taken', async () => {
  const declared = await endpoint([answer(200, Buffer.alloc(5000), { 'content-length': 5000 })], { payloadMaxBytes: 1000 });
  const tooLong = await call(declared.resolved);
  assert.is(tooLong.error!.code, 'SC_ERR_REMOTE_RESPONSE');
  assert.is(tooLong.error!.retryable, false);
  assert.match(tooLong.error!.message, 'answered with 5000 bytes, over the endpoint\'s limit of 1000 (payload_max_bytes); nothing of it was applied');
  assert.is(declared.server.requests.length, 1);

  const streamed: Behaviour = (_request, response) => {
    response.writeHead(200); // chunked: no declared length
    response.write(Buffer.alloc(600));
    setTimeout(() => response.end(Buffer.alloc(600)), 20);
  };
  const undeclared = await endpoint([streamed], { payloadMaxBytes: 1000 });
  const grew = await call(undeclared.resolved);
  assert.is(grew.error!.code, 'SC_ERR_REMOTE_RESPONSE');
  assert.match(grew.error!.message, 'answered with more than 1000 bytes (payload_max_bytes)');
  assert.is(undeclared.server.requests.length, 1);

  const exact = await endpoint([answer(200, Buffer.alloc(1000, 1))], { payloadMaxBytes: 1000 });
  const fits = await call(exact.resolved);
  assert.is(fits.error, null);
  assert.is(fits.outcome!.body.length, 1000);
});

// Source bug, pinned: the response size limit is checked before the status, so a 5xx whose error page is
// larger than payload_max_bytes becomes SC_ERR_REMOTE_RESPONSE ("nothing of it was applied") and is not
// retried, although the same 503 with a short body is. Only the 200 body is a payload; an error body is
// only quoted (at most 1,000 characters). Unskip once statusError decides for non-200 answers.
test.skip('a 503 whose error page is larger than payloadMaxBytes is still retried as a 503', async () => {
  const { server, resolved } = await endpoint([answer(503, '<html>' + 'x'.repeat(2000) + '</html>'), ok()], { payloadMaxBytes: 1000 });
  const result = await call(resolved);
  assert.is(result.error, null, result.error?.message);
  assert.is(server.requests.length, 2);
});

test('over a unix socket: answers, retries and failures as over TCP', async () => {
  const { server, resolved } = await endpoint([answer(503), ok('over the socket'), answer(422, 'boom')], { unix: true });
  assert.is(resolved.socketPath !== null && resolved.host === null, true, 'resolved to a socket path');
  assert.is(resolved.path, '/statefun/greeter');
  const first = await call(resolved);
  assert.is(Buffer.from(first.outcome!.body).toString(), 'over the socket');
  assert.is(first.outcome!.attempts, 2);
  const second = await call(resolved);
  assert.is(second.error!.code, 'SC_ERR_REMOTE_HANDLER');
  assert.is(server.requests.map((request) => request.url).join(), '/statefun/greeter,/statefun/greeter,/statefun/greeter');
});

test('a unix socket with nobody listening is retried until the budget is spent', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'statecraft-rc-'));
  directories.push(directory);
  const resolved = resolve(`http+unix://${join(directory, 'none.sock')}/x`, { timeouts: { callMs: 200 } });
  const result = await call(resolved);
  assert.is(result.error!.code, 'SC_ERR_REMOTE_CALL');
  assert.match(result.error!.message, /ENOENT.*\(gave up after \d+ attempts in 200 ms\)$/);
  assert.ok(result.attempts >= 2);
});

test('calls reuse one pooled keep-alive connection; closeRemoteConnections closes it and the next call opens a new one', async () => {
  const { server, resolved } = await endpoint([]);
  for (let index = 0; index < 3; index++) assert.is((await call(resolved)).error, null);
  assert.is(server.connections, 1, 'one connection for three calls in turn');
  closeRemoteConnections();
  await eventually(() => server.closedConnections === 1, 'the pooled connection closed', WAIT_MS);
  assert.is((await call(resolved)).error, null);
  assert.is(server.connections, 2);
});

test.run();
