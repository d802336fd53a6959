/**
 * A function definition prepared to run: its state layout and the `context.storage` proxy handler,
 * built once from its specs. Shards (node/shard/function-runtime.ts) and the HTTP function host both run
 * invocations against one of these.
 */
import { UndeclaredStateError } from './errors.js';
import type { FunctionDefinition } from './function.js';
import { StateLayout } from './state-layout.js';

/** What the storage proxy needs from an invocation. */
export interface StateAccess {
  readState(index: number): unknown;
  writeState(index: number, value: unknown): void;
}

interface StorageTarget {
  access: StateAccess;
}

export class CompiledFunction {
  readonly layout: StateLayout;
  private readonly storageHandler: ProxyHandler<StorageTarget>;

  constructor(readonly definition: FunctionDefinition) {
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
