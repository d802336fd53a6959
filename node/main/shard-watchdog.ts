/**
 * Notices a shard thread that has stopped answering: a handler in a synchronous loop (`while (true)`)
 * holds its thread, and with it every address of its key groups, every checkpoint (it never
 * acknowledges) and every confirmation. Each shard stamps the time into its slot of a shared buffer
 * from a timer of its own event loop, which cannot run while JavaScript is stuck in its thread; the main
 * thread reads the stamps. A stalled shard is logged (once, and when it is back), counted in
 * `statecraft_shards_stalled`, and makes /health answer 503 with the reason.
 */

/** A shard silent this long is stalled (well above the longest turn or restore of a healthy one). */
export const SHARD_STALL_MS_DEFAULT = 10_000;
const CHECK_MS = 1000;

export class ShardWatchdog {
  private readonly beats: Float64Array;
  /** Stalled shards, by thread: when their silence began. */
  private readonly stalled = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    buffer: SharedArrayBuffer,
    private readonly log: (line: string) => void,
    private readonly stallMs = SHARD_STALL_MS_DEFAULT,
  ) {
    this.beats = new Float64Array(buffer);
    this.timer = setInterval(() => this.check(Date.now()), CHECK_MS);
    this.timer.unref();
  }

  /** Shards stalled at the last check. */
  get stalledCount(): number {
    return this.stalled.size;
  }

  /** What /health says while a shard is stalled. */
  problems(): string[] {
    const now = Date.now();
    return [...this.stalled].map(
      ([thread, since]) => `shard ${thread} has not answered for ${Math.round((now - since) / 1000)} s: a handler that never returns (a synchronous loop) holds it; its key groups, and every checkpoint, wait`,
    );
  }

  check(now: number): void {
    for (let index = 0; index < this.beats.length; index++) {
      const thread = index + 1;
      const last = this.beats[index]!;
      if (last === 0) continue; // not started yet
      const silentMs = now - last;
      const since = this.stalled.get(thread);
      if (silentMs >= this.stallMs && since === undefined) {
        this.stalled.set(thread, last);
        this.log(`shard ${thread} has not answered for ${Math.round(silentMs / 1000)} s: a handler that never returns (a synchronous loop)? Its key groups and every checkpoint wait; /health answers 503 until it is back`);
      } else if (silentMs < this.stallMs && since !== undefined) {
        this.stalled.delete(thread);
        this.log(`shard ${thread} answers again after ${Math.round((now - since) / 1000)} s`);
      }
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
