/**
 * Egress on the main thread: one bounded log per egress name, and subscribers reading each log with a
 * cursor. Records get consecutive ids per egress. A subscriber is pushed records while its connection
 * can take them; when it lags it keeps its cursor and catches up from the log, and if the log has
 * already dropped what it still needed it is told so with a gap notice. Retention is bounded by record
 * count and bytes per egress.
 */
import type { EgressEnvelope } from '../lib/envelope.js';

export interface EgressRecordEntry {
  readonly id: number;
  readonly typename: string;
  readonly bytes: Uint8Array;
  readonly sourceTypename: string;
  readonly sourceId: string;
}

export interface EgressSink {
  /** True when the connection has room for more records now. */
  writable(): boolean;
  sendRecords(subscription: number, records: readonly EgressRecordEntry[]): void;
  sendGap(subscription: number, fromId: number, toId: number): void;
}

export interface EgressRetention {
  recordsMax: number;
  bytesMax: number;
}

const BATCH_RECORDS_MAX = 512;

class EgressLog {
  private records: EgressRecordEntry[] = [];
  private head = 0;
  private bytes = 0;
  /** Id the next record gets. */
  nextId = 1;

  constructor(
    readonly name: string,
    private readonly retention: EgressRetention,
  ) {}

  /** Id of the oldest retained record (equals nextId when empty). */
  get firstId(): number {
    return this.nextId - (this.records.length - this.head);
  }

  append(envelope: EgressEnvelope): void {
    const entry: EgressRecordEntry = {
      id: this.nextId++,
      typename: envelope.valueTypename,
      bytes: envelope.bytes,
      sourceTypename: envelope.sourceTypename,
      sourceId: envelope.sourceId,
    };
    this.records.push(entry);
    this.bytes += entry.bytes.length;
    while (this.records.length - this.head > this.retention.recordsMax || (this.bytes > this.retention.bytesMax && this.records.length - this.head > 1)) {
      const dropped = this.records[this.head]!;
      this.records[this.head++] = undefined as unknown as EgressRecordEntry;
      this.bytes -= dropped.bytes.length;
    }
    if (this.head > 4096 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }

  /** Up to `max` records with ids from `fromId` on (fromId must be retained). */
  read(fromId: number, max: number): EgressRecordEntry[] {
    const start = this.head + (fromId - this.firstId);
    return this.records.slice(start, Math.min(this.records.length, start + max));
  }
}

class Subscription {
  paused = false;
  constructor(
    readonly id: number,
    readonly log: EgressLog,
    readonly sink: EgressSink,
    /** Id of the next record to send. */
    public cursor: number,
  ) {}
}

export class EgressHub {
  private readonly logs = new Map<string, EgressLog>();
  private readonly subscriptions = new Map<EgressSink, Map<number, Subscription>>();
  private readonly byLog = new Map<EgressLog, Set<Subscription>>();
  /** Records appended since start, per egress (for metrics). */
  appended = 0;

  constructor(private readonly retention: EgressRetention) {}

  private log(name: string): EgressLog {
    let log = this.logs.get(name);
    if (log === undefined) {
      log = new EgressLog(name, this.retention);
      this.logs.set(name, log);
      this.byLog.set(log, new Set());
    }
    return log;
  }

  append(envelope: EgressEnvelope): void {
    this.log(envelope.egress).append(envelope);
    this.appended++;
  }

  /**
   * Subscribes `sink` to `egress`. `after`: the id of the last record the subscriber has seen (resume),
   * -1 for the oldest retained record, undefined for new records only. Returns the id the subscription
   * starts after.
   */
  subscribe(sink: EgressSink, subscriptionId: number, egress: string, after?: number): number {
    const log = this.log(egress);
    const cursor = after === undefined ? log.nextId : after < 0 ? log.firstId : Math.min(after + 1, log.nextId);
    let bySink = this.subscriptions.get(sink);
    if (bySink === undefined) {
      bySink = new Map();
      this.subscriptions.set(sink, bySink);
    }
    const previous = bySink.get(subscriptionId);
    if (previous) this.byLog.get(previous.log)!.delete(previous);
    const subscription = new Subscription(subscriptionId, log, sink, cursor);
    bySink.set(subscriptionId, subscription);
    this.byLog.get(log)!.add(subscription);
    return cursor - 1;
  }

  unsubscribe(sink: EgressSink, subscriptionId: number): void {
    const subscription = this.subscriptions.get(sink)?.get(subscriptionId);
    if (subscription === undefined) return;
    this.subscriptions.get(sink)!.delete(subscriptionId);
    this.byLog.get(subscription.log)!.delete(subscription);
  }

  setPaused(sink: EgressSink, subscriptionId: number, paused: boolean): void {
    const subscription = this.subscriptions.get(sink)?.get(subscriptionId);
    if (subscription) subscription.paused = paused;
  }

  removeSink(sink: EgressSink): void {
    const bySink = this.subscriptions.get(sink);
    if (bySink === undefined) return;
    for (const subscription of bySink.values()) this.byLog.get(subscription.log)!.delete(subscription);
    this.subscriptions.delete(sink);
  }

  /**
   * Sends every subscriber what it has not seen, as far as its connection takes it. Returns true when
   * some subscriber still lags behind a writable-blocked connection (call again later).
   */
  pump(): boolean {
    let lagging = false;
    for (const subscriptions of this.byLog.values()) {
      for (const subscription of subscriptions) {
        const log = subscription.log;
        if (subscription.paused) continue;
        if (subscription.cursor < log.firstId) {
          subscription.sink.sendGap(subscription.id, subscription.cursor, log.firstId - 1);
          subscription.cursor = log.firstId;
        }
        while (subscription.cursor < log.nextId) {
          if (!subscription.sink.writable()) {
            lagging = true;
            break;
          }
          const records = log.read(subscription.cursor, BATCH_RECORDS_MAX);
          subscription.sink.sendRecords(subscription.id, records);
          subscription.cursor += records.length;
        }
      }
    }
    return lagging;
  }

  /** Records retained and next id per egress (for /metrics and tests). */
  describe(): Record<string, { firstId: number; nextId: number }> {
    const result: Record<string, { firstId: number; nextId: number }> = {};
    for (const [name, log] of this.logs) result[name] = { firstId: log.firstId, nextId: log.nextId };
    return result;
  }
}
