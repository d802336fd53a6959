/** The function types a node runs: embedded definitions, and the patterns its endpoints serve. */
import type { EndpointTable } from '../remote/remote-endpoints.js';

export class FunctionTypes implements Iterable<string> {
  constructor(
    private readonly embedded: ReadonlySet<string>,
    private readonly endpoints: EndpointTable | null,
  ) {}

  has(typename: string): boolean {
    return this.embedded.has(typename) || (this.endpoints !== null && this.endpoints.serves(typename));
  }

  *[Symbol.iterator](): Iterator<string> {
    yield* this.embedded;
    if (this.endpoints !== null) for (const pattern of this.endpoints.patterns) if (!this.embedded.has(pattern)) yield pattern;
  }
}
