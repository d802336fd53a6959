/** What a shard counts, and how it publishes the counts to its row of the shared metrics (once per flush). */
import { Metric, type ThreadMetrics } from '../rings/metrics.js';

export class ShardCounters {
  invocations = 0;
  failures = 0;
  deadLetters = 0;
  delayedScheduled = 0;
  delayedFired = 0;
  delayedCancelled = 0;
  egress = 0;
  messagesIn = 0;
  duplicates = 0;
  remoteRequests = 0;
  handlerTimeouts = 0;

  /** Writes the counts, and the gauges given, to `thread`'s row (once per turn: no allocation). */
  publish(metrics: ThreadMetrics, thread: number, delayedPending: number, backlog: number, instances: number, remoteBacklog: number, held: number): void {
    metrics.set(thread, Metric.Invocations, this.invocations);
    metrics.set(thread, Metric.Failures, this.failures);
    metrics.set(thread, Metric.DeadLetters, this.deadLetters);
    metrics.set(thread, Metric.DelayedScheduled, this.delayedScheduled);
    metrics.set(thread, Metric.DelayedFired, this.delayedFired);
    metrics.set(thread, Metric.DelayedCancelled, this.delayedCancelled);
    metrics.set(thread, Metric.DelayedPending, delayedPending);
    metrics.set(thread, Metric.EgressRecords, this.egress);
    metrics.set(thread, Metric.MessagesIn, this.messagesIn);
    metrics.set(thread, Metric.DuplicatesDropped, this.duplicates);
    metrics.set(thread, Metric.Backlog, backlog);
    metrics.set(thread, Metric.Instances, instances);
    metrics.set(thread, Metric.RemoteRequests, this.remoteRequests);
    metrics.set(thread, Metric.RemoteBacklog, remoteBacklog);
    metrics.set(thread, Metric.HeldMessages, held);
    metrics.set(thread, Metric.HandlerTimeouts, this.handlerTimeouts);
  }
}
