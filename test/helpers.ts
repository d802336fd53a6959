/** Shared test helpers: timeouts, polling, fixtures, nodes that clean up after themselves. */
import { fileURLToPath } from 'node:url';
import type { Client, Subscription, EgressRecord } from 'statecraft';
import { counted } from './fixtures/functions.js';
import { startNode, type NodeOptions, type StatecraftNode } from 'statecraft/node';
import { EVENTS_HEADER_BYTES, Frame } from '../lib/client-protocol.js';

export function fixture(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}.js`, import.meta.url));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it holds; fails with `what` after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Resolves once the node has acknowledged `subscription` (its SUBSCRIBED frame sets `lastId`): from
 * then on every record the node appends to that egress reaches it. Await it before causing records
 * through another client or node, whose frames may overtake the SUBSCRIBE.
 */
export async function subscribed(subscription: Subscription<any>, timeoutMs = 10_000): Promise<void> {
  await eventually(() => subscription.lastId !== undefined, `the node to acknowledge the subscription to ${subscription.egress}`, timeoutMs);
}

/** Reads `count` records from a subscription (leaving it open), failing after `timeoutMs`. */
export async function take<T>(subscription: Subscription<T>, count: number, timeoutMs = 10_000): Promise<EgressRecord<T>[]> {
  const records: EgressRecord<T>[] = [];
  const deadline = Date.now() + timeoutMs;
  while (records.length < count) {
    const remaining = deadline - Date.now();
    const next = await withTimeout(subscription.next(), Math.max(1, remaining), `${count} records from egress ${subscription.egress} (got ${records.length}: ${JSON.stringify(records.map((record) => record.value))})`);
    if (next.done) throw new Error(`subscription to ${subscription.egress} ended after ${records.length} of ${count} records`);
    records.push(next.value);
  }
  return records;
}

export interface TestNode extends StatecraftNode {
  logs: string[];
}

/** A node on 127.0.0.1 with an OS-chosen port, logging into an array. */
export async function startTestNode(options: Partial<NodeOptions> & { functions: string[] }): Promise<TestNode> {
  const logs: string[] = [];
  const node = await startNode({ port: 0, host: '127.0.0.1', shards: 2, log: (line) => logs.push(line), ...options });
  return Object.assign(Object.create(node), node, { logs }) as TestNode;
}

export interface NodeProcess {
  readonly child: import('node:child_process').ChildProcess;
  readonly url: string;
  readonly port: number;
  /** Everything the process printed so far. */
  output(): string;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

const startScript = fileURLToPath(new URL('../cluster/start.js', import.meta.url));
const liveProcesses = new Set<import('node:child_process').ChildProcess>();
process.on('exit', () => killNodeProcesses());

/** SIGKILLs every node process a test started and did not stop; use in `test.after.each`. */
export function killNodeProcesses(): void {
  for (const child of liveProcesses) child.kill('SIGKILL');
  liveProcesses.clear();
}

/** The cluster secret test nodes share (STATECRAFT_CLUSTER_SECRET), unless a test gives its own. */
export const TEST_CLUSTER_SECRET = 'statecraft-test-cluster-secret-0123456789';

/**
 * Starts `node cluster/start.js` with `args`, on 127.0.0.1; resolves once it prints its ready line.
 * `env` adds to (or, with undefined, removes from) the environment; by default every node gets
 * TEST_CLUSTER_SECRET, so the nodes of a test form one cluster.
 */
export async function startNodeProcess(args: string[], timeoutMs = 30_000, env: Record<string, string | undefined> = {}): Promise<NodeProcess> {
  const { spawn } = await import('node:child_process');
  // Each node gets its own data directory (they hold the node id and a lock), removed when it exits.
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const ownDataDir = args.includes('--data-dir') ? null : mkdtempSync(`${tmpdir()}/statecraft-node-`);
  // Checkpoints go to the node's own directory unless the test names a store (a cluster shares one).
  const store = args.includes('--checkpoint-store') ? [] : ['--checkpoint-store', `file://${ownDataDir ?? args[args.indexOf('--data-dir') + 1]}/checkpoints`];
  const fullArgs = ['--host', '127.0.0.1', ...(ownDataDir ? ['--data-dir', ownDataDir] : []), ...store, ...args];
  const childEnv: Record<string, string | undefined> = { ...process.env, STATECRAFT_CLUSTER_SECRET: TEST_CLUSTER_SECRET, ...env };
  for (const [name, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[name];
  const child = spawn(process.execPath, [startScript, ...fullArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv as NodeJS.ProcessEnv });
  if (ownDataDir) child.once('exit', () => rmSync(ownDataDir, { recursive: true, force: true }));
  liveProcesses.add(child);
  let output = '';
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      liveProcesses.delete(child);
      resolve(code ?? signal ?? 'unknown');
    }),
  );
  const ready = new Promise<{ url: string; port: number }>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ready (wss?:\/\/[^\s]+:(\d+))/.exec(output);
      if (match) resolve({ url: match[1]!, port: Number(match[2]) });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    void exited.then((code) => reject(new Error(`node exited (${code}) before ready:\n${output}`)));
  });
  const { url, port } = await withTimeout(ready, timeoutMs, `node ready line; output so far:\n${output}`).catch((error) => {
    child.kill('SIGKILL');
    throw error;
  });
  return { child, url, port, output: () => output, exited, kill: (signal = 'SIGTERM') => void child.kill(signal) };
}

/** GET a node's /cluster (or another admin path) as JSON. */
export async function adminJson<T = any>(port: number, path = '/cluster'): Promise<{ status: number; body: T }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: (await response.json()) as T };
}

/**
 * Polls every node's /cluster until `until` holds for all of them. On timeout the error says what each
 * node last reported and ends with the tail of each node's output, so a failure under load explains
 * itself instead of saying only that time ran out.
 */
export async function clusterUntil<T = any>(nodes: readonly NodeProcess[], what: string, until: (statuses: T[]) => boolean, timeoutMs: number): Promise<T[]> {
  let last: (T | string)[] = [];
  try {
    await eventually(
      async () => {
        last = await Promise.all(nodes.map((node) => adminJson<T>(node.port).then((answer) => answer.body, (error: Error) => `unreachable: ${error.message}`)));
        return last.every((status) => typeof status !== 'string') && until(last as T[]);
      },
      what,
      timeoutMs,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}; ${diagnosis(nodes, last)}`);
  }
  return last as T[];
}

/** Every node's /cluster answer (or why there is none) and the tail of its output. */
function diagnosis(nodes: readonly NodeProcess[], statuses: readonly unknown[]): string {
  const summary = statuses.map((status, index) => `  node ${index} (port ${nodes[index]!.port}): ${typeof status === 'string' ? status : JSON.stringify(statusSummary(status))}`);
  const tails = nodes.map((node, index) => `--- node ${index} (port ${node.port}), last lines:\n${node.output().trimEnd().split('\n').slice(-25).join('\n')}`);
  return `last /cluster answers:\n${summary.join('\n')}\n${tails.join('\n')}`;
}

/**
 * Waits for `promise` (sends to be confirmed, say) at most `timeoutMs`; past it, fails with every
 * node's /cluster answer and output tail, so a stall under load explains itself.
 */
export async function withinCluster<T>(nodes: readonly NodeProcess[], promise: Promise<T>, what: string, timeoutMs: number): Promise<T> {
  try {
    return await withTimeout(promise, timeoutMs, what);
  } catch (error) {
    const statuses = await Promise.all(nodes.map((node) => adminJson(node.port).then((answer) => answer.body, (failure: Error) => `unreachable: ${failure.message}`)));
    throw new Error(`${(error as Error).message}; ${diagnosis(nodes, statuses)}`);
  }
}

/** The parts of a /cluster answer that say whether a node has settled. */
function statusSummary(status: any): unknown {
  return {
    node: status?.nodeId,
    serving: status?.serving,
    viewId: status?.viewId,
    reason: status?.reason,
    view: status?.view,
    members: status?.members?.map?.((member: any) => `${member.id}:${member.state}${member.connected ? '' : ' (not connected)'}`),
    recovery: status?.recovery,
    moving: status?.handovers?.keyGroupsMoving,
    checkpoints: status?.checkpoints,
  };
}

/** Checkpoint stores made for clusters in this process, removed when it exits. */
const storeDirs: string[] = [];

/** Starts `count` node processes: the first alone, the others joining it; resolves when all are ready. */
export async function startClusterProcesses(count: number, args: string[], perNode: (index: number) => string[] = () => []): Promise<NodeProcess[]> {
  if (!args.includes('--checkpoint-store')) {
    // Every node of a cluster names the same store.
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(`${tmpdir()}/statecraft-store-`);
    if (storeDirs.length === 0) process.once('exit', () => storeDirs.forEach((path) => rmSync(path, { recursive: true, force: true })));
    storeDirs.push(dir);
    args = [...args, '--checkpoint-store', `file://${dir}`];
  }
  const first = await startNodeProcess([...args, ...perNode(0), '--node-id', 'n1']);
  const rest = await Promise.all(
    Array.from({ length: count - 1 }, (_, index) => startNodeProcess([...args, ...perNode(index + 1), '--node-id', `n${index + 2}`, '--join', `127.0.0.1:${first.port}`])),
  );
  return [first, ...rest];
}

// ---- the client protocol by hand, for frames the real client would not send ----

/** An invoke envelope as a client writes it, with an optional producer mark. */
export async function clientEnvelope(typename: string, id: string, value: unknown, producer: { session: string; seq: number } | null = null): Promise<Uint8Array> {
  const { invokeLengthMax, writeInvoke } = await import('../lib/envelope.js');
  const { toTypedValue } = await import('../lib/typed-value.js');
  const typed = toTypedValue(value);
  const buffer = new Uint8Array(invokeLengthMax(typename, id, null, null, typed, producer));
  return buffer.slice(0, writeInvoke(buffer, 0, 0, typename, id, null, null, typed, producer));
}

/**
 * A frame of `headerBytes` (for the caller to fill) followed by each envelope as [u32 length][bytes]:
 * the layout of the client protocol's EVENTS and RECORDS frames and the peer protocol's ENVELOPES.
 */
export function lengthPrefixedFrame(headerBytes: number, envelopes: readonly Uint8Array[]): Buffer {
  const frame = Buffer.alloc(headerBytes + envelopes.reduce((sum, bytes) => sum + 4 + bytes.length, 0));
  let cursor = headerBytes;
  for (const bytes of envelopes) {
    frame.writeUInt32LE(bytes.length, cursor);
    frame.set(bytes, cursor + 4);
    cursor += 4 + bytes.length;
  }
  return frame;
}

/** An EVENTS frame: events numbered firstSeq, firstSeq + 1, ... */
export function eventsFrame(firstSeq: number, envelopes: Uint8Array[]): Buffer {
  const frame = lengthPrefixedFrame(EVENTS_HEADER_BYTES, envelopes);
  frame[0] = Frame.Events;
  frame.writeDoubleLE(firstSeq, 1);
  frame.writeUInt32LE(envelopes.length, 9);
  return frame;
}

/** A raw client connection after HELLO/WELCOME; `frames` collects what the node sends. */
export async function rawClientConnection(url: string, producerId = `raw-${Math.random()}`) {
  const { default: WebSocket } = await import('ws');
  const { Frame, PROTOCOL_VERSION, decodeControl, encodeControl } = await import('../lib/client-protocol.js');
  const socket = new WebSocket(url, { perMessageDeflate: false });
  const frames: Buffer[] = [];
  const closed = new Promise<[number, string]>((resolve) => socket.once('close', (code, reason) => resolve([code, reason.toString()])));
  socket.on('message', (data: Buffer) => frames.push(data));
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  socket.send(encodeControl(Frame.Hello, { version: PROTOCOL_VERSION, producerId, client: 'test' }));
  await eventually(() => frames.length > 0, 'WELCOME');
  const welcome = decodeControl<import('../lib/client-protocol.js').Welcome>(frames.shift()!);
  return { socket, welcome, frames, closed };
}

/**
 * Each test/counter's current count, as it reports it on request (the string 'report' makes it emit its
 * count to `count-reports`): sent through `through`, read on `watcher` (may be the same client).
 */
export async function countReports(through: Client, watcher: Client, ids: string[], timeoutMs = 20_000): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const subscription = watcher.subscribe('count-reports', { type: counted });
  await subscribed(subscription);
  await Promise.all(ids.map((id) => through.send({ typename: 'test/counter', id }, 'report')));
  await withTimeout(
    (async () => {
      for await (const record of subscription) {
        seen.set(record.value.id, record.value.count);
        if (ids.every((id) => seen.has(id))) break;
      }
    })(),
    timeoutMs,
    `counts of ${ids.length} counters (got ${seen.size})`,
  );
  return seen;
}
