/** Small helpers shared by the benchmarks: medians, rate sampling, reporting. */

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
