/** What `StatecraftNode.metrics()` returns: every shared counter summed over threads, and the main thread's own figures. */
import type { MetricName } from '../rings/metrics.js';

export interface NodeMetrics extends Record<MetricName, number> {
  /** Client connections open. */
  connections: number;
  /** Clients refused for their token (none, or not one this node takes). */
  clientsRefused: number;
  /** Events rejected and subscriptions refused for falling outside a client token's scopes. */
  requestsOutOfScope: number;
  /** Client connections refused past --client-connections-max, and subscriptions past the per-connection cap. */
  clientLimitsReached: number;
  /** Bytes waiting in overflow queues (rings full). */
  overflowBytes: number;
  /** Shard threads that have not answered for the stall time (a handler that never returns). */
  shardsStalled: number;
}
