/**
 * POSTs request-reply messages to one remote function endpoint: a keep-alive connection pool per
 * endpoint origin, per-attempt connect and read timeouts, and retries with exponential back-off (with
 * jitter) until the endpoint's call budget is spent. What retrying cannot fix (a handler that threw, a
 * type the endpoint does not serve, an oversize or refused payload) fails at once.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { RemoteFunctionError } from '../../lib/errors.js';
import type { ResolvedEndpoint } from './remote-endpoints.js';

/** Connections kept per endpoint origin and shard. */
const SOCKETS_PER_ORIGIN = 128;
const BACKOFF_FIRST_MS = 10;
const BACKOFF_MAX_MS = 2000;
/** Response bodies quoted in errors, at most. */
const REASON_BYTES_MAX = 1000;

/** One failed attempt: `retryable` when another attempt may succeed. */
export class AttemptError extends RemoteFunctionError {
  constructor(
    readonly retryable: boolean,
    code: 'SC_ERR_REMOTE_CALL' | 'SC_ERR_REMOTE_RESPONSE' | 'SC_ERR_REMOTE_HANDLER' | 'SC_ERR_UNKNOWN_FUNCTION_TYPE',
    message: string,
    /** The HTTP status, when the endpoint answered. */
    readonly status: number | null = null,
    /** The call budget ran out on failures that another attempt could fix: the endpoint is down or overloaded. */
    readonly outage = false,
  ) {
    super(code, message);
  }
}

const agents = new Map<string, HttpAgent>();

/** Pools by origin and by the endpoint's TLS settings (two endpoints on one origin may present different client certificates). */
const tlsIds = new WeakMap<object, number>();
let nextTlsId = 1;

function agentFor(endpoint: ResolvedEndpoint): HttpAgent {
  const tls = endpoint.spec.tls;
  let tlsId = 0;
  if (tls !== undefined) {
    tlsId = tlsIds.get(tls) ?? nextTlsId++;
    tlsIds.set(tls, tlsId);
  }
  const key = `${endpoint.protocol}//${endpoint.socketPath ?? `${endpoint.host}:${endpoint.port}`}#${tlsId}`;
  let agent = agents.get(key);
  if (agent === undefined) {
    const options = { keepAlive: true, maxSockets: SOCKETS_PER_ORIGIN, maxFreeSockets: SOCKETS_PER_ORIGIN, scheduling: 'lifo' as const };
    agent = endpoint.protocol === 'https:' ? new HttpsAgent({ ...options, ...(tls ?? {}) }) : new HttpAgent(options);
    agents.set(key, agent);
  }
  return agent;
}

/** Closes every pooled connection (a shard stopping). */
export function closeRemoteConnections(): void {
  for (const agent of agents.values()) agent.destroy();
  agents.clear();
}

function statusError(status: number, body: string, endpoint: ResolvedEndpoint): AttemptError {
  const reason = body.trim().slice(0, REASON_BYTES_MAX) || '(no body)';
  if (status === 422) return new AttemptError(false, 'SC_ERR_REMOTE_HANDLER', `the function at ${endpoint.url} failed: ${reason}`, status);
  if (status === 404) return new AttemptError(false, 'SC_ERR_UNKNOWN_FUNCTION_TYPE', `${endpoint.url} answered 404: ${reason}; check the endpoint's URL and the types it serves`, status);
  const retryable = status >= 500 || status === 408 || status === 429;
  return new AttemptError(retryable, 'SC_ERR_REMOTE_CALL', `${endpoint.url} answered HTTP ${status}: ${reason}`, status);
}

/** One POST; resolves with the 200 body, rejects with an AttemptError. */
export function postOnce(endpoint: ResolvedEndpoint, body: Uint8Array, budgetMs: number): Promise<Uint8Array> {
  const spec = endpoint.spec;
  const limit = spec.payloadMaxBytes;
  return new Promise<Uint8Array>((resolve, reject) => {
    let settled = false;
    let request: ClientRequest;
    const timers: NodeJS.Timeout[] = [];
    const finish = (error: AttemptError | null, result?: Uint8Array) => {
      if (settled) return;
      settled = true;
      for (const timer of timers) clearTimeout(timer);
      if (error !== null) {
        request.destroy();
        reject(error);
      } else resolve(result!);
    };
    const send = endpoint.protocol === 'https:' ? httpsRequest : httpRequest;
    request = send({
      method: 'POST',
      agent: agentFor(endpoint),
      ...(endpoint.socketPath !== null ? { socketPath: endpoint.socketPath } : { host: endpoint.host!, port: endpoint.port! }),
      path: endpoint.path,
      headers: { ...spec.headers, 'content-type': 'application/octet-stream', 'content-length': body.length },
    });
    timers.push(setTimeout(() => finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url} did not answer within the call budget`)), Math.max(1, budgetMs)));
    request.on('socket', (socket) => {
      if (!socket.connecting) return;
      const timer = setTimeout(() => finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `could not connect to ${endpoint.url} within ${spec.timeouts.connectMs} ms`)), spec.timeouts.connectMs);
      timers.push(timer);
      socket.once('connect', () => clearTimeout(timer));
    });
    // Idle time on the socket while writing the request or waiting for (or reading) the answer.
    request.setTimeout(Math.max(spec.timeouts.readMs, spec.timeouts.writeMs), () =>
      finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url} went silent for ${Math.max(spec.timeouts.readMs, spec.timeouts.writeMs)} ms (read/write timeout)`)),
    );
    request.on('error', (error: NodeJS.ErrnoException) =>
      finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url}: ${error.code ?? ''} ${error.message}`.replace(/\s+/g, ' '))),
    );
    request.on('response', (response: IncomingMessage) => {
      const declared = Number(response.headers['content-length'] ?? -1);
      const status = response.statusCode ?? 0;
      if (status === 200 && declared > limit) {
        finish(new AttemptError(false, 'SC_ERR_REMOTE_RESPONSE', `${endpoint.url} answered with ${declared} bytes, over the endpoint's limit of ${limit} (payload_max_bytes); nothing of it was applied`));
        return;
      }
      const chunks: Buffer[] = [];
      let length = 0;
      response.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > limit) {
          finish(new AttemptError(false, 'SC_ERR_REMOTE_RESPONSE', `${endpoint.url} answered with more than ${limit} bytes (payload_max_bytes); nothing of it was applied`));
          return;
        }
        if (status === 200 || length <= REASON_BYTES_MAX * 4) chunks.push(chunk);
      });
      response.on('end', () => {
        const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        if (status === 200) {
          if (declared >= 0 && bytes.length !== declared) finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url} closed the answer after ${bytes.length} of ${declared} bytes`));
          else finish(null, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
        } else finish(statusError(status, bytes.toString('utf8'), endpoint));
      });
      response.on('aborted', () => finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url} closed the connection mid-answer`)));
      response.on('error', (error) => finish(new AttemptError(true, 'SC_ERR_REMOTE_CALL', `${endpoint.url} closed the connection mid-answer: ${error.message}`)));
    });
    request.end(body);
  });
}

export interface CallOutcome {
  body: Uint8Array;
  attempts: number;
}

/**
 * POSTs until an attempt succeeds, an attempt fails for good, or the call budget (the endpoint's call
 * timeout) is spent; the last attempt's error says why it gave up. `onAttempt` counts requests.
 */
export async function callEndpoint(endpoint: ResolvedEndpoint, body: Uint8Array, onAttempt: () => void = () => undefined): Promise<CallOutcome> {
  const deadline = Date.now() + endpoint.spec.timeouts.callMs;
  for (let attempt = 1; ; attempt++) {
    onAttempt();
    try {
      return { body: await postOnce(endpoint, body, deadline - Date.now()), attempts: attempt };
    } catch (error) {
      const failure = error as AttemptError;
      const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      if (!failure.retryable || Date.now() + backoff >= deadline) {
        throw new AttemptError(false, failure.code as never, failure.retryable ? `${failure.message} (gave up after ${attempt} attempts in ${endpoint.spec.timeouts.callMs} ms)` : failure.message, failure.status, failure.retryable);
      }
      await new Promise((resolve) => setTimeout(resolve, backoff));
    }
  }
}
