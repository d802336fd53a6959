/**
 * The client side of the ingress and latency benchmarks, run as its own process.
 *
 *   node bench/client-driver.js throughput <url> <events> [window] [ids]
 *       sends as fast as the window allows; prints one JSON line per second and a final one
 *   node bench/client-driver.js latency <url> <events per second> <seconds>
 *       sends paced events to bench/echo carrying the send time; prints latency percentiles (ms)
 *   node bench/client-driver.js ws-echo <url> <events per second> <seconds> <echo server url>
 *       the same pacing and batching over a bare ws socket to an echo server: the transport's own latency
 */
import { connect, Types, type Address } from 'statecraft';

const [mode, url, a, b, c] = process.argv.slice(2);
// BENCH_CLIENT_TOKEN: a client token, for a node that takes tokens (client-ingress --token).
const client = await connect(url!, { window: 20_000, ...(process.env.BENCH_CLIENT_TOKEN ? { token: process.env.BENCH_CLIENT_TOKEN } : {}) });

function report(line: object): void {
  process.stdout.write(JSON.stringify(line) + '\n');
}

if (mode === 'throughput') {
  const total = Number(a);
  const window = Number(b ?? 20_000);
  const idCount = Number(c ?? 100_000);
  const addresses: Address[] = Array.from({ length: idCount }, (_, index) => ({ typename: 'bench/count', id: `c${index}` }));
  let sent = 0;
  let accepted = 0;
  let failed = 0;
  const onAccepted = () => void accepted++;
  const onFailed = () => void failed++;
  const started = performance.now();
  let lastReport = started;
  let lastAccepted = 0;
  while (sent < total) {
    while (client.pending < window && sent < total) {
      client.send(addresses[sent % idCount]!, 1, Types.int).then(onAccepted, onFailed);
      sent++;
    }
    await new Promise((resolve) => setImmediate(resolve));
    const now = performance.now();
    if (now - lastReport >= 1000) {
      report({ accepted_per_s: Math.round(((accepted - lastAccepted) * 1000) / (now - lastReport)) });
      lastReport = now;
      lastAccepted = accepted;
    }
  }
  await client.drained();
  const seconds = (performance.now() - started) / 1000;
  report({ done: true, sent, accepted, failed, seconds, accepted_per_s: Math.round(accepted / seconds) });
} else if (mode === 'latency' || mode === 'ws-echo') {
  // Paced sends carrying the send time; the first second is warm-up and is left out of the figures.
  const rate = Number(a);
  const seconds = Number(b) + 1;
  const total = Math.round(rate * seconds);
  const started = performance.now();
  const warmupEnds = started + 1000;
  const latencies: number[] = [];
  let received = 0;
  let finish!: () => void;
  const allReceived = new Promise<void>((resolve) => (finish = resolve));
  const onReceipt = (sentAt: number) => {
    if (sentAt >= warmupEnds) latencies.push(performance.now() - sentAt);
    if (++received >= total) finish();
  };
  let sendOne: (index: number) => void;
  if (mode === 'latency') {
    const echo = client.subscribe<number>('echo', { type: Types.double });
    void (async () => {
      for await (const record of echo) onReceipt(record.value);
    })();
    // BENCH_ECHO_IDS_FILE: the ids to send to (one per line), e.g. only ids another node owns.
    const ids = process.env.BENCH_ECHO_IDS_FILE
      ? (await import('node:fs')).readFileSync(process.env.BENCH_ECHO_IDS_FILE, 'utf8').split('\n').filter(Boolean)
      : Array.from({ length: 1000 }, (_, index) => `e${index}`);
    const addresses: Address[] = ids.map((id) => ({ typename: 'bench/echo', id }));
    sendOne = (index) => void client.send(addresses[index % addresses.length]!, performance.now(), Types.double);
  } else {
    // Baseline: the same pacing over a bare `ws` socket to an echo server (c is its URL).
    const { WebSocket } = await import('ws');
    const socket = new WebSocket(c!, { perMessageDeflate: false });
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    // Like the client, batch what is due in one tick into one frame.
    let batch: number[] = [];
    socket.on('message', (data: Buffer) => {
      for (let offset = 0; offset < data.length; offset += 8) onReceipt(data.readDoubleLE(offset));
    });
    sendOne = () => {
      if (batch.length === 0) queueMicrotask(() => {
        socket.send(new Float64Array(batch));
        batch = [];
      });
      batch.push(performance.now());
    };
  }
  let sent = 0;
  // Pace in 1 ms ticks: send what the schedule says is due.
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) * rate) / 1000));
    for (; sent < due; sent++) sendOne(sent);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.race([allReceived, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  latencies.sort((x, y) => x - y);
  const at = (fraction: number) => latencies[Math.min(latencies.length - 1, Math.floor(fraction * latencies.length))]!;
  report({ done: true, rate, sent, received, measured: latencies.length, p50_ms: at(0.5), p90_ms: at(0.9), p99_ms: at(0.99), max_ms: latencies.at(-1) });
}
await client.close();
process.exit(0);
