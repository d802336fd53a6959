/**
 * A function type as one shard runs it: its compiled definition (state layout, storage proxy), its index
 * in the shard's state store, and the queues of its busy instances.
 */
import { CompiledFunction } from '../../lib/compiled-function.js';
import type { FunctionDefinition } from '../../lib/function.js';
import type { Message } from '../../lib/message.js';

/** Messages waiting for a busy instance, in arrival order. */
export class AddressQueue {
  /** The message whose async invocation is running (a checkpoint re-queues it: its effects come later). */
  current: Message | null = null;
  /** A remote function's batch in flight (a checkpoint re-queues it: its effects come later). */
  batch: Message[] | null = null;
  /** Identifies the request in flight: a recovery clears it, and the answer then applies to nothing. */
  request: object | null = null;
  /** Messages still to send one per request (a batch whose handler threw is retried message by message). */
  singles = 0;
  private items: Message[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(message: Message): void {
    this.items.push(message);
  }

  /** The waiting messages, oldest first (a snapshot's copy). */
  toArray(): Message[] {
    return this.items.slice(this.head);
  }

  /** Puts messages back at the front, in their order. */
  unshiftAll(messages: readonly Message[]): void {
    this.items = [...messages, ...this.items.slice(this.head)];
    this.head = 0;
  }

  /** Takes up to `count` messages from the front. */
  take(count: number): Message[] {
    const taken = this.items.slice(this.head, this.head + count);
    this.head += taken.length;
    this.compact();
    return taken;
  }

  shift(): Message {
    const message = this.items[this.head]!;
    this.items[this.head++] = undefined as unknown as Message;
    this.compact();
    return message;
  }

  /** Drops the taken front once it is most of the array. */
  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

export class FunctionRuntime extends CompiledFunction {
  /** Instances with an invocation in flight (async handlers only), and what waits for them. */
  readonly busy = new Map<string, AddressQueue>();

  constructor(
    readonly index: number,
    definition: FunctionDefinition,
  ) {
    super(definition);
  }
}
