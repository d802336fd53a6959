/**
 * The messages waiting for one busy address (an embedded instance whose async handler runs, or a remote
 * address with a request in flight), in arrival order, and what is running for it now.
 */
import { FifoQueue } from '../../lib/fifo-queue.js';
import type { Message } from '../../lib/message.js';

export class AddressQueue extends FifoQueue<Message> {
  /** The message whose async invocation is running (a checkpoint re-queues it: its effects come later). */
  current: Message | null = null;
  /** A remote function's batch in flight (a checkpoint re-queues it: its effects come later). */
  batch: Message[] | null = null;
  /** Identifies the request in flight: a recovery clears it, and the answer then applies to nothing. */
  request: object | null = null;
  /** Messages still to send one per request (a batch whose handler threw is retried message by message). */
  singles = 0;
  /** Calls of the message at the head that failed for an outage of its endpoint, in a row. */
  attempts = 0;
  /** Set while the address waits to call its endpoint again after an outage. */
  retry: NodeJS.Timeout | null = null;

  /** Forgets what runs (a recovery): a late answer or completion then applies to nothing. */
  abandon(): void {
    this.current = null;
    this.batch = null;
    this.request = null;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
  }
}

/** Function types as a shard runs them: each has its busy addresses. */
export interface BusyAddresses {
  readonly busy: Map<string, AddressQueue>;
}

/**
 * For a snapshot: per busy address of a key group `wanted` selects, what a restore must deliver again,
 * in order — the message whose invocation runs, the remote batch in flight (their effects land after
 * the cut), then what waits.
 */
export function peekWaiting(runtimes: Iterable<BusyAddresses>, keyGroupOf: (id: string) => number, wanted: (keyGroup: number) => boolean, into: (keyGroup: number, message: Message) => void): void {
  for (const runtime of runtimes) {
    for (const [id, queue] of runtime.busy) {
      const keyGroup = keyGroupOf(id);
      if (!wanted(keyGroup)) continue;
      if (queue.current !== null) into(keyGroup, queue.current);
      if (queue.batch !== null) for (const message of queue.batch) into(keyGroup, message);
      for (const message of queue) into(keyGroup, message);
    }
  }
}

/**
 * For a hand-over (nothing runs in `wanted` any more): removes the waiting messages of those key
 * groups' addresses, in order, and the addresses; returns how many messages it took.
 */
export function takeWaiting(runtimes: Iterable<BusyAddresses>, keyGroupOf: (id: string) => number, wanted: ReadonlySet<number>, into: (keyGroup: number, message: Message) => void): number {
  let taken = 0;
  for (const runtime of runtimes) {
    for (const [id, queue] of runtime.busy) {
      const keyGroup = keyGroupOf(id);
      if (!wanted.has(keyGroup)) continue;
      const waiting = queue.drain();
      for (const message of waiting) into(keyGroup, message);
      taken += waiting.length;
      queue.singles = 0;
      runtime.busy.delete(id);
    }
  }
  return taken;
}
