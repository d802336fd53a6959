/**
 * How one function type's values are kept for an instance (its record), and how an invocation's staged
 * writes and expiry turn one record into the next. Shared by shards and the HTTP function host.
 *
 * The record's shape depends on the specs:
 *   - one spec, no expiry:     the stored value itself               (no wrapper object at all)
 *   - otherwise, no expiry:    [v0, v1, ...]                         (null = unset)
 *   - with expiry:             [v0, ..., vN-1, d0, ..., dN-1]        (d = deadline in epoch ms, 0 = none)
 * Stored values are JS primitives for StateFun's primitive types and serialised bytes for every other
 * type (so a handler can never mutate stored state behind the runtime's back).
 */
import { isPrimitiveType } from './types.js';
import type { ValueSpec } from './function.js';

/** Marks a staged slot that the invocation did not write. */
export const UNCHANGED: unique symbol = Symbol('unchanged');
export type Staged = unknown[]; // per spec: UNCHANGED, null (delete) or the stored representation

export class StateLayout {
  readonly count: number;
  readonly single: boolean;
  readonly hasExpiry: boolean;
  readonly hasCallExpiry: boolean;
  readonly writeTtlMs: readonly number[];
  readonly callTtlMs: readonly number[];
  readonly storesDecoded: readonly boolean[];
  readonly names: readonly string[];
  readonly indexByName: ReadonlyMap<string, number>;

  constructor(readonly specs: readonly ValueSpec[]) {
    this.count = specs.length;
    this.writeTtlMs = specs.map((spec) => spec.expireAfterWrite ?? 0);
    this.callTtlMs = specs.map((spec) => spec.expireAfterCall ?? 0);
    this.hasCallExpiry = this.callTtlMs.some((ttl) => ttl > 0);
    this.hasExpiry = this.hasCallExpiry || this.writeTtlMs.some((ttl) => ttl > 0);
    this.single = this.count === 1 && !this.hasExpiry;
    this.storesDecoded = specs.map((spec) => isPrimitiveType(spec.type));
    this.names = specs.map((spec) => spec.name);
    this.indexByName = new Map(this.names.map((name, index) => [name, index]));
  }

  /** The stored representation of value `index`, or null when unset or expired. */
  read(record: unknown, index: number, nowMs: number): unknown {
    if (record === undefined) return null;
    if (this.single) return record;
    const values = record as unknown[];
    const value = values[index];
    if (value === null || value === undefined) return null;
    if (this.hasExpiry) {
      const deadline = values[this.count + index] as number;
      if (deadline !== 0 && deadline <= nowMs) return null;
    }
    return value;
  }

  /**
   * The record after an invocation: staged writes applied, expired values dropped, call-expiry deadlines
   * refreshed. Returns `record` itself when nothing changes, `undefined` when every value is unset.
   */
  apply(record: unknown, staged: Staged | null, nowMs: number): unknown {
    if (staged === null && !this.hasCallExpiry) return record;
    if (this.single) {
      const value = staged![0];
      if (value === UNCHANGED) return record;
      return value === null ? undefined : value;
    }
    const count = this.count;
    const next: unknown[] =
      record === undefined ? new Array(this.hasExpiry ? 2 * count : count).fill(null) : (record as unknown[]).slice();
    if (this.hasExpiry && record !== undefined) {
      for (let index = 0; index < count; index++) {
        const deadline = next[count + index] as number;
        if (deadline !== 0 && deadline <= nowMs) {
          next[index] = null;
          next[count + index] = 0;
        }
      }
    }
    if (staged !== null) {
      for (let index = 0; index < count; index++) {
        const value = staged[index];
        if (value === UNCHANGED) continue;
        next[index] = value;
        if (this.hasExpiry) {
          const ttl = this.writeTtlMs[index]! || this.callTtlMs[index]!;
          next[count + index] = value === null || ttl === 0 ? 0 : nowMs + ttl;
        }
      }
    }
    let any = false;
    for (let index = 0; index < count; index++) {
      if (next[index] === null) continue;
      any = true;
      const ttl = this.callTtlMs[index]!;
      if (ttl !== 0) next[count + index] = nowMs + ttl;
    }
    return any ? next : undefined;
  }

  /** The record with expired values dropped (`undefined` when none is left), or the record itself. */
  expire(record: unknown, nowMs: number): unknown {
    if (!this.hasExpiry) return record;
    const values = record as unknown[];
    const count = this.count;
    let expired = 0;
    let live = 0;
    for (let index = 0; index < count; index++) {
      if (values[index] === null) continue;
      const deadline = values[count + index] as number;
      if (deadline !== 0 && deadline <= nowMs) expired++;
      else live++;
    }
    if (expired === 0) return record;
    if (live === 0) return undefined;
    const next = values.slice();
    for (let index = 0; index < count; index++) {
      const deadline = next[count + index] as number;
      if (next[index] !== null && deadline !== 0 && deadline <= nowMs) {
        next[index] = null;
        next[count + index] = 0;
      }
    }
    return next;
  }
}

