/** What `StatecraftNode.metrics()` returns: every shared counter summed over threads, and the main thread's own figures. */
import type { MetricName } from '../rings/metrics.js';

export interface NodeMetrics extends Record<MetricName, number> {
  /** Client connections open. */
  connections: number;
  /** Bytes waiting in overflow queues (rings full). */
  overflowBytes: number;
}
