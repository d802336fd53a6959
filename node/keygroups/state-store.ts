/**
 * In-memory state of a shard's instances, per key group and function type.
 *
 * An idle instance costs one Map entry (its id) plus its record, whose shape the function type's layout
 * decides (lib/state-layout.ts for embedded functions, node/remote/remote-state.ts for remote ones). An
 * instance whose values are all unset has no entry.
 */

/** What the store needs to know of a function type's records: how to drop their expired values. */
export interface RecordLayout {
  readonly hasExpiry: boolean;
  /** The record with expired values dropped (`undefined` when none is left), or the record itself. */
  expire(record: unknown, nowMs: number): unknown;
}

export class StateStore {
  /** [keyGroup][function index] → id → record */
  private readonly groups: (Map<string, unknown>[] | undefined)[];
  /** Number of instances with state. */
  size = 0;

  constructor(
    readonly keyGroups: number,
    /** Per function index; remote function types are appended as they are first seen. */
    private readonly layouts: readonly RecordLayout[],
  ) {
    this.groups = new Array(keyGroups).fill(undefined);
  }

  get(keyGroup: number, functionIndex: number, id: string): unknown {
    return this.groups[keyGroup]?.[functionIndex]?.get(id);
  }

  set(keyGroup: number, functionIndex: number, id: string, record: unknown): void {
    let tables = this.groups[keyGroup];
    if (record === undefined) {
      if (tables?.[functionIndex]?.delete(id)) this.size--;
      return;
    }
    if (tables === undefined) {
      tables = this.layouts.map(() => new Map<string, unknown>());
      this.groups[keyGroup] = tables;
    }
    // A function type added after this key group's tables were made (a remote type seen later).
    const table = tables[functionIndex] ?? (tables[functionIndex] = new Map<string, unknown>());
    const before = table.size;
    table.set(id, record);
    this.size += table.size - before;
  }

  /** A key group's records as they are (do not modify): per function index, id → record. */
  peekKeyGroup(keyGroup: number): Map<string, unknown>[] | undefined {
    return this.groups[keyGroup];
  }

  /** Removes and returns a key group's records: per function index, id → record (undefined if none). */
  takeKeyGroup(keyGroup: number): Map<string, unknown>[] | undefined {
    const tables = this.groups[keyGroup];
    if (tables === undefined) return undefined;
    this.groups[keyGroup] = undefined;
    for (const table of tables) this.size -= table.size;
    return tables;
  }

  /**
   * Drops expired values in key groups [from, from + count) (wrapping); returns the number of
   * instances removed. Called a few key groups at a time, so a sweep never stalls the shard.
   */
  sweep(from: number, count: number, nowMs: number): number {
    let removed = 0;
    for (let step = 0; step < count; step++) {
      const tables = this.groups[(from + step) % this.keyGroups];
      if (tables === undefined) continue;
      for (let functionIndex = 0; functionIndex < tables.length; functionIndex++) {
        const layout = this.layouts[functionIndex]!;
        if (!layout.hasExpiry) continue;
        const table = tables[functionIndex];
        if (table === undefined) continue;
        for (const [id, record] of table) {
          const next = layout.expire(record, nowMs);
          if (next === record) continue;
          if (next === undefined) {
            table.delete(id);
            this.size--;
            removed++;
          } else table.set(id, next);
        }
      }
    }
    return removed;
  }
}
