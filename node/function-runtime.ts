/**
 * A function type as one shard runs it: its definition, its state layout, the queues of its busy
 * instances, and the `context.storage` proxy handler built once from its specs.
 */
import { UndeclaredStateError } from '../lib/errors.js';
import type { FunctionDefinition } from '../lib/function.js';
import type { Message } from '../lib/message.js';
import { StateLayout } from './state-store.js';

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

/** What the storage proxy needs from an invocation. */
export interface StateAccess {
  readState(index: number): unknown;
  writeState(index: number, value: unknown): void;
}

interface StorageTarget {
  access: StateAccess;
}

export class FunctionRuntime {
  readonly layout: StateLayout;
  /** Instances with an invocation in flight (async handlers only), and what waits for them. */
  readonly busy = new Map<string, AddressQueue>();
  private readonly storageHandler: ProxyHandler<StorageTarget>;

  constructor(
    readonly index: number,
    readonly definition: FunctionDefinition,
  ) {
    this.layout = new StateLayout(definition.specs);
    this.storageHandler = makeStorageHandler(this.layout.indexByName, this.layout.names, definition.typename);
  }

  get typename(): string {
    return this.definition.typename;
  }

  storageFor(access: StateAccess): object {
    return new Proxy({ access }, this.storageHandler);
  }
}

function makeStorageHandler(
  indexByName: ReadonlyMap<string, number>,
  names: readonly string[],
  typename: string,
): ProxyHandler<StorageTarget> {
  const undeclared = (name: string) => new UndeclaredStateError(name, typename, names);
  const snapshot = (target: StorageTarget) => {
    const values: Record<string, unknown> = {};
    names.forEach((name, index) => (values[name] = target.access.readState(index)));
    return values;
  };
  return {
    get(target, property) {
      if (typeof property === 'symbol') return undefined;
      const index = indexByName.get(property);
      if (index !== undefined) return target.access.readState(index);
      // Looked up by `await`, JSON.stringify and console.log: answer them instead of throwing.
      if (property === 'then' || property === 'constructor') return undefined;
      if (property === 'toJSON') return () => snapshot(target);
      throw undeclared(property);
    },
    set(target, property, value) {
      const index = typeof property === 'string' ? indexByName.get(property) : undefined;
      if (index === undefined) throw undeclared(String(property));
      target.access.writeState(index, value);
      return true;
    },
    deleteProperty(target, property) {
      const index = typeof property === 'string' ? indexByName.get(property) : undefined;
      if (index === undefined) throw undeclared(String(property));
      target.access.writeState(index, null);
      return true;
    },
    has(_target, property) {
      return typeof property === 'string' && indexByName.has(property);
    },
    ownKeys() {
      return [...names];
    },
    getOwnPropertyDescriptor(target, property) {
      const index = typeof property === 'string' ? indexByName.get(property) : undefined;
      if (index === undefined) return undefined;
      return { value: target.access.readState(index), writable: true, enumerable: true, configurable: true };
    },
    defineProperty(_target, property) {
      throw undeclared(String(property));
    },
    setPrototypeOf() {
      return false;
    },
  };
}
