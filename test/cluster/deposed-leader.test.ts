// test-exclusive
// test-timeout-ms: 240000
// A deposed leader's late commit (issue 12): the checkpoint leader is paused (SIGSTOP) with its commit
// record on the way to the store, a new leader recovers and commits, then the old record lands and the
// old leader runs again. Real processes, a real S3 protocol server (s3rver), and between the leader and
// the store a TCP proxy that holds the leader's commit request as a slow network would.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type Client } from '../../lib/index.js';
import { commitKey, readHead, type CommitRecord } from '../../node/checkpoint/terms.js';
import { S3BlobStore } from '../../node/storage/s3-blob-store.js';
import { adminJson, clusterUntil, countReports, eventually, fixture, killNodeProcesses, startNodeProcess, withTimeout, type NodeProcess } from '../helpers.js';
import { startS3Server, type S3TestServer } from '../s3-server.js';

const PREFIX = 'deposed';
const base = ['--functions', fixture('functions'), '--port', '0', '--shards', '1', '--key-groups', '64', '--probe-interval', '100', '--probe-timeout', '40', '--checkpoint-interval', '100'];
const clients: Client[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  killNodeProcesses();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/**
 * A TCP proxy to `upstream` that forwards both ways, except that once `holdNext(pattern)` is armed, the
 * connection whose request line matches is held from that request on: its bytes wait here until
 * `release()`. `holdNext` resolves with the request line once the whole request (its headers and
 * Content-Length bytes of body) is here, so the sender may be paused then without cutting it short.
 * The store's server closes a keep-alive connection idle for 5 s, which a long hold outlasts on a
 * loaded machine: a held request whose upstream connection closed goes out on a new one.
 */
class HoldingProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private pattern: RegExp | null = null;
  private holding: { buffered: Buffer[]; resume: () => Socket } | null = null;
  private onHeld: ((line: string) => void) | null = null;

  private constructor(private readonly upstreamPort: number) {
    this.server = createServer((client) => this.pipe(client));
  }

  static async start(upstreamPort: number): Promise<HoldingProxy> {
    const proxy = new HoldingProxy(upstreamPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  holdNext(pattern: RegExp): Promise<string> {
    this.pattern = pattern;
    return new Promise((resolve) => (this.onHeld = resolve));
  }

  release(): void {
    const holding = this.holding;
    this.holding = null;
    if (holding === null) return;
    const upstream = holding.resume();
    for (const chunk of holding.buffered) upstream.write(chunk);
  }

  async close(): Promise<void> {
    this.release();
    // A request left half-sent (its sender killed) would keep the store's server from closing.
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }

  private pipe(client: Socket): void {
    let held = false;
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    const connectUpstream = (): Socket => {
      const socket = createConnection(this.upstreamPort, '127.0.0.1');
      this.sockets.add(socket);
      socket.on('data', (chunk: Buffer) => client.write(chunk));
      // While a request is held its upstream may close (idle): release() opens another.
      socket.on('close', () => held || end()).on('error', () => held || end());
      return socket;
    };
    let upstream = connectUpstream();
    this.sockets.add(client);
    let heldLine: string | null = null;
    const buffered: Buffer[] = [];
    const resume = (): Socket => {
      held = false;
      if (upstream.destroyed) upstream = connectUpstream();
      return upstream;
    };
    client.on('data', (chunk: Buffer) => {
      if (!held && this.pattern !== null) {
        const line = /^(PUT|POST|GET|HEAD|DELETE) \S+/m.exec(chunk.toString('latin1'))?.[0];
        if (line !== undefined && this.pattern.test(line)) {
          held = true;
          heldLine = line;
          this.pattern = null;
          this.holding = { buffered, resume };
        }
      }
      if (held) buffered.push(chunk);
      else upstream.write(chunk);
      if (heldLine !== null && requestComplete(Buffer.concat(buffered))) {
        const line = heldLine;
        heldLine = null;
        this.onHeld?.(line);
      }
    });
    client.on('close', end).on('error', end);
  }
}

/** Whether `bytes` hold a whole HTTP request: headers, then Content-Length bytes of body (or a chunked body's last chunk). */
function requestComplete(bytes: Buffer): boolean {
  const headerEnd = bytes.indexOf('\r\n\r\n');
  if (headerEnd < 0) return false;
  const headers = bytes.subarray(0, headerEnd).toString('latin1');
  if (/^transfer-encoding:\s*chunked/im.test(headers)) return bytes.indexOf('\r\n0\r\n\r\n', headerEnd) >= 0 || bytes.subarray(headerEnd + 4).toString('latin1').startsWith('0\r\n\r\n');
  const length = Number(/^content-length:\s*(\d+)/im.exec(headers)?.[1] ?? 0);
  return bytes.length >= headerEnd + 4 + length;
}

/** Reads the head every 25 ms; fails the test (through `stop()`) if it ever goes back. */
function watchHead(store: S3BlobStore): { history: CommitRecord[]; stop(): Promise<void> } {
  const history: CommitRecord[] = [];
  let running = true;
  let wentBack: string | null = null;
  const loop = (async () => {
    while (running) {
      try {
        const head = await readHead(store);
        const last = history.at(-1);
        if (last !== undefined && head.checkpoint < last.checkpoint) wentBack ??= `the head went back from ${last.checkpoint} (${last.term}) to ${head.checkpoint} (${head.term})`;
        if (last === undefined || last.checkpoint !== head.checkpoint || last.term !== head.term) history.push(head);
      } catch (error) {
        // A read racing a sweep retries inside readHead; anything else is worth seeing.
        wentBack ??= `reading the head failed: ${(error as Error).message}`;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  return {
    history,
    stop: async () => {
      running = false;
      await loop;
      assert.is(wentBack, null, wentBack ?? '');
    },
  };
}

test('a leader paused with its commit on the way: a new leader recovers and commits, the late record changes nothing, nothing is announced twice or lost', async () => {
  const s3: S3TestServer = await startS3Server();
  cleanups.push(() => s3.close());
  const proxy = await HoldingProxy.start(Number(new URL(s3.endpoint).port));
  cleanups.push(() => proxy.close());
  const storeArgs = (endpoint: string) => ['--checkpoint-store', `s3://${s3.bucket}/${PREFIX}`, '--s3-endpoint', endpoint];
  // n1 (the smallest id: it leads checkpoints) reaches the store through the proxy.
  const n1 = await startNodeProcess([...base, ...storeArgs(proxy.endpoint), '--node-id', 'n1']);
  const others = await Promise.all(['n2', 'n3'].map((id) => startNodeProcess([...base, ...storeArgs(s3.endpoint), '--node-id', id, '--join', `127.0.0.1:${n1.port}`])));
  const nodes: NodeProcess[] = [n1, ...others];
  await clusterUntil(nodes, 'the cluster of 3 settles', (statuses) => statuses.every((status) => status.serving && status.view.length === 3), 30_000);
  await eventually(async () => (await adminJson(n1.port)).body.checkpoints.leader !== null, 'n1 leads checkpoints', 20_000);

  const store = new S3BlobStore({ bucket: s3.bucket, prefix: PREFIX, endpoint: s3.endpoint });
  cleanups.push(() => store.close());
  const watcher = watchHead(store);
  cleanups.push(() => watcher.stop().catch(() => undefined)); // a failed test must not leave it reading
  // Events through n2 and n3 all along; each resolves once a committed checkpoint covers it.
  const sender = await connect([others[0]!.url, others[1]!.url], { reconnect: { delayMs: 50, delayMaxMs: 300 } });
  clients.push(sender);
  const ids = Array.from({ length: 40 }, (_, index) => `deposed-${index}`);
  const sends: Promise<void>[] = [];
  let sending = true;
  let rounds = 0;
  const traffic = (async () => {
    while (sending) {
      // A client that failed throws here: the events already sent reject with the reason, reported below.
      try {
        for (const id of ids) {
          const sent = sender.send({ typename: 'test/counter', id }, 1);
          // Awaited below; if the test fails first, the client's close rejects it, and that must not end the process before the failure is reported.
          sent.catch(() => undefined);
          sends.push(sent);
        }
      } catch {
        return;
      }
      rounds++;
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  })();
  cleanups.push(async () => {
    sending = false; // a failed test must not leave it sending
    await traffic;
  });
  await eventually(() => rounds >= 10, 'traffic runs');

  // The next commit record n1 writes is held on the way; n1 is paused at once.
  const line = await withTimeout(proxy.holdNext(/^PUT \S*\/commits\//), 20_000, 'n1 writes a commit record');
  n1.kill('SIGSTOP');
  const match = /\/commits\/([^/]+)\/(\d+)\.json/.exec(line);
  assert.ok(match !== null, `the held request names a commit record: ${line}`);
  const [, heldTerm, heldNumber] = match!;
  const held = { term: heldTerm!, checkpoint: Number(heldNumber) };
  // n2 and n3 recover without it and commit in a newer term.
  let lastReadError = '';
  await eventually(
    async () => {
      // A read that fails (the store's server busy on a loaded machine) is tried again; the last error is reported.
      const head = await readHead(store).catch((error: Error) => ((lastReadError = error.message), null));
      return head !== null && head.term > held.term && head.checkpoint >= held.checkpoint;
    },
    `a newer term commits at or past checkpoint ${held.checkpoint}`,
    60_000,
  ).catch((error: Error) => {
    throw new Error(`${error.message}${lastReadError === '' ? '' : `; the last read of the head failed: ${lastReadError}`}`);
  });
  const before = await readHead(store);
  // The old record lands, late; then n1 runs again and checks for a newer term.
  proxy.release();
  await eventually(() => store.exists(commitKey(held.term, held.checkpoint)).catch(() => false), 'the held commit record lands', 10_000);
  n1.kill('SIGCONT');
  await eventually(() => new RegExp(`began after this leader's term ${held.term}.*checkpoint ${held.checkpoint} is not announced`).test(n1.output()), 'n1 finds it was deposed and does not announce', 20_000);
  const after = await readHead(store);
  assert.ok(after.checkpoint >= before.checkpoint && after.term >= before.term, `the late record moved the head from ${before.checkpoint} (${before.term}) to ${after.checkpoint} (${after.term})`);

  sending = false;
  await traffic;
  await withTimeout(Promise.all(sends), 60_000, 'every event committed').catch(async (error: Error) => {
    const statuses = await Promise.all(nodes.map(async (node) => JSON.stringify((await adminJson(node.port).catch(() => ({ body: 'unreachable' }))).body).slice(0, 1500)));
    throw new Error(`${error.message}\n${nodes.map((node, index) => `--- n${index + 1}: ${statuses[index]}\n${node.output().slice(-3000)}`).join('\n')}`);
  });
  const found = await countReports(sender, await connect([others[1]!.url]).then((client) => (clients.push(client), client)), ids);
  assert.equal([...found.values()], ids.map(() => rounds), `each counter has exactly its ${rounds} increments`);
  await watcher.stop();
  assert.ok(watcher.history.length >= 3, `the head moved: ${watcher.history.map((head) => head.checkpoint).join(', ')}`);
});

test.run();
