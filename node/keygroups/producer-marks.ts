/**
 * Which client events a key group has applied, per client session: the highest sequence number seen
 * and a window of the 512 below it (a bitmap), as an anti-replay window does. An event is new when it is
 * above the highest, or inside the window and not yet seen; it is a repeat when seen, or older than the
 * window. The window tolerates events of one session arriving out of order (they may take different
 * paths while a key group moves between nodes); a plain "last sequence" would drop the overtaken ones.
 */
export const PRODUCER_WINDOW = 512;
const WORDS = PRODUCER_WINDOW / 32;

export class ProducerMark {
  /** When its session last sent an event here (ms, the caller's clock; 0: not since it came in an image). */
  usedMs = 0;

  /** Bit i (i = 0..511) set: sequence `highest - i` was applied. */
  constructor(
    public highest: number,
    readonly seen: Uint32Array = new Uint32Array(WORDS),
  ) {}

  /** Records `seq`; false when it was applied already (or is too old to tell). */
  accept(seq: number): boolean {
    if (seq > this.highest) {
      this.shift(seq - this.highest);
      this.highest = seq;
      this.seen[0]! |= 1;
      return true;
    }
    const offset = this.highest - seq;
    if (offset >= PRODUCER_WINDOW) return false;
    const word = offset >>> 5;
    const bit = 1 << (offset & 31);
    if ((this.seen[word]! & bit) !== 0) return false;
    this.seen[word]! |= bit;
    return true;
  }

  /** Merges another copy of the same session's mark (a hand-over meeting marks kept here). */
  merge(other: ProducerMark): void {
    if (other.highest > this.highest) {
      this.shift(other.highest - this.highest);
      this.highest = other.highest;
    }
    const offset = this.highest - other.highest;
    for (let index = 0; index < PRODUCER_WINDOW - offset; index++) {
      const from = index;
      if ((other.seen[from >>> 5]! & (1 << (from & 31))) === 0) continue;
      const to = index + offset;
      this.seen[to >>> 5]! |= 1 << (to & 31);
    }
  }

  /** Moves the window up by `by` sequence numbers. */
  private shift(by: number): void {
    const seen = this.seen;
    if (by >= PRODUCER_WINDOW) {
      seen.fill(0);
      return;
    }
    const words = by >>> 5;
    const bits = by & 31;
    for (let index = WORDS - 1; index >= 0; index--) {
      const source = index - words;
      let value = source >= 0 ? seen[source]! << bits : 0;
      if (bits !== 0 && source - 1 >= 0) value |= seen[source - 1]! >>> (32 - bits);
      seen[index] = value >>> 0;
    }
  }
}
