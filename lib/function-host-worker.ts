/**
 * A piscina worker of the HTTP function host: decodes one `ToFunction` request, runs its batch against
 * the functions module (imported once per worker), and encodes the `FromFunction` answer. The host's
 * main thread only moves bytes between sockets and this pool, so one host uses every core.
 */
import { loadFunctionModules } from './function-loader.js';
import type { InvocationLimits } from './invocation.js';
import { BatchError, RemoteFunctionSet, runBatch } from './remote-batch.js';
import { decodeToFunction, encodeFromFunction } from './statefun-protocol.js';

export interface HostTask {
  moduleUrls: string[];
  limits: InvocationLimits;
  body: Uint8Array;
}

/** 200 with the encoded answer, or an error status with a text body saying why. */
export type HostTaskResult = { status: 200; body: Uint8Array } | { status: 400 | 404 | 422 | 500; code: string; message: string };

let loaded: { key: string; functions: Promise<RemoteFunctionSet> } | null = null;

function functionsOf(moduleUrls: string[]): Promise<RemoteFunctionSet> {
  const key = moduleUrls.join('\n');
  if (loaded === null || loaded.key !== key) {
    loaded = { key, functions: loadFunctionModules(moduleUrls).then((definitions) => new RemoteFunctionSet(definitions)) };
  }
  return loaded.functions;
}

export async function handleRequest(functions: RemoteFunctionSet, body: Uint8Array, limits: InvocationLimits): Promise<HostTaskResult> {
  try {
    const batch = decodeToFunction(body);
    const response = await runBatch(functions, batch, limits);
    return { status: 200, body: encodeFromFunction(response) };
  } catch (error) {
    if (error instanceof BatchError) return { status: error.status, code: error.code, message: error.message };
    const known = error as { code?: unknown; message?: unknown };
    if (known.code === 'SC_ERR_MALFORMED_FRAME') return { status: 400, code: 'SC_ERR_MALFORMED_FRAME', message: String(known.message) };
    return { status: 500, code: 'SC_ERR_INTERNAL', message: `the function host failed: ${String((error as Error)?.stack ?? error)}` };
  }
}

export default async function run(task: HostTask): Promise<HostTaskResult> {
  return handleRequest(await functionsOf(task.moduleUrls), task.body, task.limits);
}
