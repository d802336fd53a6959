/**
 * An embedded function type as one shard runs it: its compiled definition (state layout, storage
 * proxy), its index in the shard's state records, and the queues of its busy instances.
 */
import { CompiledFunction } from '../../lib/compiled-function.js';
import type { FunctionDefinition } from '../../lib/function.js';
import type { StateLayout } from '../../lib/state-layout.js';
import type { AddressQueue } from './address-queue.js';

export class FunctionRuntime extends CompiledFunction {
  /** Index in the shard's state records. */
  readonly index: number;
  /** Instances with an invocation in flight (async handlers only), and what waits for them. */
  readonly busy = new Map<string, AddressQueue>();

  constructor(definition: FunctionDefinition, addType: (typename: string, layout: StateLayout) => number) {
    super(definition);
    this.index = addType(definition.typename, this.layout);
  }
}
