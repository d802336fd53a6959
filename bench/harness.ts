/** Small helpers shared by the benchmarks: medians, rate sampling, reporting, the client driver. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const driverPath = fileURLToPath(new URL('./client-driver.js', import.meta.url));

/**
 * Runs bench/client-driver.js (`mode`, against `url`, with `args`) in its own process; resolves with
 * its final JSON line.
 */
export function driveClient(mode: string, url: string, args: string[], env: Record<string, string> = {}): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const driver = spawn(process.execPath, [driverPath, mode, url, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let output = '';
    driver.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    driver.once('exit', (code) => {
      const last = output.trim().split('\n').map((line) => JSON.parse(line)).find((line) => line.done);
      if (code !== 0 || !last) reject(new Error(`driver exited with ${code}: ${output}`));
      else resolve(last);
    });
  });
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function percentile(sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Samples a monotonically growing counter every `windowMs` for `windows` windows (after `warmupMs`);
 * returns the per-second rate of each window.
 */
export async function sampleRates(counter: () => number, options: { warmupMs: number; windowMs: number; windows: number }): Promise<number[]> {
  await sleep(options.warmupMs);
  const rates: number[] = [];
  let previous = counter();
  let previousAt = performance.now();
  for (let window = 0; window < options.windows; window++) {
    await sleep(options.windowMs);
    const now = performance.now();
    const value = counter();
    rates.push(((value - previous) * 1000) / (now - previousAt));
    previous = value;
    previousAt = now;
  }
  return rates;
}

/** Runs `body` repeatedly for about `durationMs` in this thread; returns operations per second. */
export function rateOf(body: (iterations: number) => void, durationMs: number, batch = 10_000): number {
  const start = performance.now();
  let done = 0;
  while (performance.now() - start < durationMs) {
    body(batch);
    done += batch;
  }
  return (done * 1000) / (performance.now() - start);
}

export function format(rate: number): string {
  return Math.round(rate).toLocaleString('en-US');
}

export function quiet(): (line: string) => void {
  return () => undefined;
}
