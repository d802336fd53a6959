/**
 * The verifier's stall clock: the longest time without a client confirmation, while events are in
 * flight, counted from the moment a fault healed or the majority could go on without its victim,
 * until the next fault begins (then it is the next fault's to count).
 *
 *   arm(at, label)  a fault healed (or the majority went on): confirmations are due from `at`
 *   disarm()        a fault begins
 *   confirmed()     a confirmation arrived
 *   sample(load)    called every few ms with the events in flight
 */
export class StallClock {
  private lastConfirmAt = Date.now();
  private armedAt: number | null = null;
  private label = '';
  /** The longest stall after each arming, by label (the first arming of a fault wins the label). */
  readonly perFault: { label: string; stallMs: number }[] = [];
  maxMs = 0;
  /** The longest gap between confirmations with events in flight over the whole run (faults included). */
  gapMaxMs = 0;

  confirmed(now = Date.now()): void {
    this.lastConfirmAt = now;
  }

  arm(label: string, at = Date.now()): void {
    if (this.armedAt !== null && this.label === label) return;
    this.armedAt = at;
    this.label = label;
    this.perFault.push({ label, stallMs: 0 });
  }

  disarm(): void {
    this.armedAt = null;
  }

  sample(inFlight: number, now = Date.now()): void {
    if (inFlight === 0) {
      // Nothing is owed: an idle stretch is no stall.
      this.lastConfirmAt = now;
      return;
    }
    this.gapMaxMs = Math.max(this.gapMaxMs, now - this.lastConfirmAt);
    if (this.armedAt === null || now < this.armedAt) return;
    const stall = now - Math.max(this.lastConfirmAt, this.armedAt);
    const current = this.perFault[this.perFault.length - 1]!;
    current.stallMs = Math.max(current.stallMs, stall);
    this.maxMs = Math.max(this.maxMs, stall);
  }
}
