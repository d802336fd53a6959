/**
 * State of a remote function type's instances, as one shard keeps it. A remote function declares its
 * values by answering a request with StateFun's incomplete-context reply; the specs registered that way
 * (name, type name, expiry) say what every later request carries.
 *
 * An instance's record is a flat array, four slots per value that is set:
 *   [name, typename, bytes, deadline, name, typename, bytes, deadline, ...]   (deadline: epoch ms, 0 = none)
 * Plain data, so hand-overs and checkpoints carry it as they carry embedded records. A value of a spec
 * not (yet) registered — after a restore, before the first request re-registers it — is kept as it is.
 */
import type { RemoteTypedValue, RemoteValueSpec } from '../../lib/statefun-protocol.js';
import type { RecordLayout } from '../keygroups/state-store.js';

type RemoteRecord = (string | Uint8Array | number)[];

export class RemoteStateLayout implements RecordLayout {
  private readonly specs = new Map<string, RemoteValueSpec>();
  hasExpiry = false;

  get registered(): readonly RemoteValueSpec[] {
    return [...this.specs.values()];
  }

  spec(name: string): RemoteValueSpec | undefined {
    return this.specs.get(name);
  }

  /** Registers the specs a function asked for; false when none of them is new or changed. */
  register(specs: readonly RemoteValueSpec[]): boolean {
    let changed = false;
    for (const spec of specs) {
      const known = this.specs.get(spec.name);
      if (known !== undefined && known.typename === spec.typename && known.expireMode === spec.expireMode && known.expireAfterMs === spec.expireAfterMs) continue;
      this.specs.set(spec.name, { ...spec });
      changed = true;
      if (spec.expireMode !== 'none' && spec.expireAfterMs > 0) this.hasExpiry = true;
    }
    return changed;
  }

  /** Every registered value of an instance for a request: its bytes, or absent when unset or expired. */
  requestState(record: unknown, nowMs: number): { name: string; value: RemoteTypedValue }[] {
    const state: { name: string; value: RemoteTypedValue }[] = [];
    const values = record as RemoteRecord | undefined;
    for (const spec of this.specs.values()) {
      let bytes: Uint8Array | null = null;
      // The type name the value was written with: if the function now declares another, it sees so.
      let typename = spec.typename;
      if (values !== undefined) {
        for (let slot = 0; slot < values.length; slot += 4) {
          if (values[slot] !== spec.name) continue;
          const deadline = values[slot + 3] as number;
          if (deadline === 0 || deadline > nowMs) {
            bytes = values[slot + 2] as Uint8Array;
            typename = values[slot + 1] as string;
          }
          break;
        }
      }
      state.push({ name: spec.name, value: { typename, value: bytes } });
    }
    return state;
  }

  /**
   * The record after a batch: `mutations` applied (value null deletes), expired values dropped, deadlines
   * of after-write values written now and of every after-invoke value set. `undefined` when none is left.
   */
  apply(record: unknown, mutations: readonly { name: string; value: RemoteTypedValue | null }[], nowMs: number): unknown {
    if (mutations.length === 0 && !this.hasExpiry) return record;
    const next: RemoteRecord = [];
    const written = new Map(mutations.map((mutation) => [mutation.name, mutation.value]));
    const values = (record as RemoteRecord | undefined) ?? [];
    for (let slot = 0; slot < values.length; slot += 4) {
      const name = values[slot] as string;
      if (written.has(name)) continue;
      const deadline = values[slot + 3] as number;
      if (deadline !== 0 && deadline <= nowMs) continue;
      const spec = this.specs.get(name);
      const refreshed = spec !== undefined && spec.expireMode === 'after-invoke' && spec.expireAfterMs > 0 ? nowMs + spec.expireAfterMs : deadline;
      next.push(name, values[slot + 1]!, values[slot + 2]!, refreshed);
    }
    for (const [name, value] of written) {
      if (value === null || value.value === null) continue;
      const spec = this.specs.get(name);
      const deadline = spec !== undefined && spec.expireMode !== 'none' && spec.expireAfterMs > 0 ? nowMs + spec.expireAfterMs : 0;
      // A copy: the decoded value is a view into the whole answer's buffer, which it would keep alive.
      next.push(name, value.typename, value.value.slice(), deadline);
    }
    return next.length === 0 ? undefined : next;
  }

  expire(record: unknown, nowMs: number): unknown {
    const values = record as RemoteRecord;
    let expired = false;
    for (let slot = 3; slot < values.length; slot += 4) {
      const deadline = values[slot] as number;
      if (deadline !== 0 && deadline <= nowMs) expired = true;
    }
    if (!expired) return record;
    const next: RemoteRecord = [];
    for (let slot = 0; slot < values.length; slot += 4) {
      const deadline = values[slot + 3] as number;
      if (deadline === 0 || deadline > nowMs) next.push(values[slot]!, values[slot + 1]!, values[slot + 2]!, deadline);
    }
    return next.length === 0 ? undefined : next;
  }
}
