/**
 * Doorbells: how a thread sleeps when its input rings are empty, and how producers wake it.
 *
 * Each thread has one int32 slot in a shared array. A consumer about to sleep stores PARKED, checks its
 * rings once more (a producer may have published just before), then waits with `Atomics.waitAsync`.
 * A producer that has published looks at the slot and only when it reads PARKED swaps it to AWAKE and
 * calls `Atomics.notify`, so a busy consumer costs its producers one atomic load per batch.
 *
 * On Node 20 a pending `Atomics.waitAsync` does not keep the event loop alive: the thread must hold a
 * referenced handle of its own while parked (shards keep their `parentPort` listener).
 */

const AWAKE = 0;
const PARKED = 1;

export function ringDoorbell(bells: Int32Array, thread: number): void {
  if (Atomics.load(bells, thread) === PARKED && Atomics.compareExchange(bells, thread, PARKED, AWAKE) === PARKED) {
    Atomics.notify(bells, thread, 1);
  }
}

export class Doorbell {
  constructor(
    private readonly bells: Int32Array,
    private readonly thread: number,
  ) {}

  /**
   * Parks until a producer rings, unless `hasWork()` finds work after announcing the park.
   * `timeoutMs` bounds the wait (Infinity waits for a ring).
   */
  async park(hasWork: () => boolean, timeoutMs = Infinity): Promise<void> {
    Atomics.store(this.bells, this.thread, PARKED);
    if (hasWork()) {
      Atomics.store(this.bells, this.thread, AWAKE);
      return;
    }
    const result = Atomics.waitAsync(this.bells, this.thread, PARKED, timeoutMs);
    if (result.async) await result.value;
    Atomics.store(this.bells, this.thread, AWAKE);
  }

  /** Wakes this thread's own pending park (used to stop it). */
  wake(): void {
    ringDoorbell(this.bells, this.thread);
  }
}
