/**
 * A function type as one shard runs it: its compiled definition (state layout, storage proxy), its index
 * in the shard's state store, and the queues of its busy instances.
 */
import { CompiledFunction } from '../lib/compiled-function.js';
import type { FunctionDefinition } from '../lib/function.js';
import type { Message } from '../lib/message.js';

/** Messages waiting for a busy instance, in arrival order. */
export class AddressQueue {
  /** The message whose async invocation is running (a checkpoint re-queues it: its effects come later). */
  current: Message | null = null;
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

  shift(): Message {
    const message = this.items[this.head]!;
    this.items[this.head++] = undefined as unknown as Message;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return message;
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
