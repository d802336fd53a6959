/**
 * Per-thread counters in a SharedArrayBuffer: each thread writes only its own row (plain stores, once
 * per turn); the main thread reads every row for /metrics and benchmarks. Values are float64 so they
 * never wrap; a reader may see a value one turn old, never a torn one that matters for a counter.
 */

export const Metric = {
  Invocations: 0,
  Failures: 1,
  DeadLetters: 2,
  DelayedScheduled: 3,
  DelayedFired: 4,
  DelayedCancelled: 5,
  DelayedPending: 6,
  EgressRecords: 7,
  Instances: 8,
  MessagesIn: 9,
  Backlog: 10,
  EventsAccepted: 11,
  EventsRejected: 12,
  /** Client events a key group had applied already (re-sent after a reconnect): dropped. */
  DuplicatesDropped: 13,
  /** Requests sent to remote function endpoints (retries and missing-state rounds included). */
  RemoteRequests: 14,
  /** Messages waiting for a remote function's request in flight, over all its addresses. */
  RemoteBacklog: 15,
  /** Messages of key groups held at their shard (the node has no majority): they run when it serves again. */
  HeldMessages: 16,
  /** Async handlers abandoned past the handler time budget (--handler-timeout). */
  HandlerTimeouts: 17,
} as const;
export type MetricName = keyof typeof Metric;
const METRICS_PER_THREAD = 18;

export function createMetricsBuffer(threads: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * METRICS_PER_THREAD * threads);
}

export class ThreadMetrics {
  private readonly values: Float64Array;

  constructor(buffer: SharedArrayBuffer, private readonly threads: number) {
    this.values = new Float64Array(buffer);
  }

  set(thread: number, metric: number, value: number): void {
    this.values[thread * METRICS_PER_THREAD + metric] = value;
  }

  get(thread: number, metric: number): number {
    return this.values[thread * METRICS_PER_THREAD + metric]!;
  }

  total(metric: number): number {
    let sum = 0;
    for (let thread = 0; thread < this.threads; thread++) sum += this.get(thread, metric);
    return sum;
  }

  /** Every metric summed over threads, by name. */
  totals(): Record<MetricName, number> {
    const result = {} as Record<MetricName, number>;
    for (const [name, index] of Object.entries(Metric)) result[name as MetricName] = this.total(index);
    return result;
  }
}
