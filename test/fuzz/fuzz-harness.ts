/**
 * Seeded fuzzing of the decoders that read bytes from outside the process. One seed drives one PRNG,
 * which picks valid encodings and mutates them; every call must return, or throw the error its module
 * promises (a StatecraftError with a listed code, or the module's own class), and finish quickly.
 *
 * Each fuzz file runs a fixed range of seeds plus a few fresh ones, printed before anything runs, so a
 * run that hangs or crashes can still be replayed:
 *
 *   FUZZ_SEED=<n> node dist/test/fuzz/<file>.js     that one seed only
 *   FUZZ_FRESH=<n>                                  fresh seeds per run (default: the file's own)
 *
 * A decoder that does not yet live up to its contract is not fixed here: the file names the gap in an
 * explicit list (KnownGaps), pins its smallest input as a skipped test, and the loop counts and prints
 * every case that fell into a listed gap, so the gap stays visible. Anything outside the list fails.
 */
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StatecraftError, type ErrorCode } from '../../lib/errors.js';
import { createRandom } from '../cluster/sim-network.js';

/** A call slower than this is reported as a hang (inputs are small: a decoder needs well under 1 ms). */
export const CALL_MS_MAX = 500;

// ---- seeds ----

export interface SeedPlan {
  /** Seeds this run goes through: the fixed range and the fresh ones, or only FUZZ_SEED. */
  readonly seeds: readonly number[];
  readonly replay: boolean;
  /** The command that replays `seed`. */
  command(seed: number): string;
}

/**
 * The seeds of one fuzz file: `fixed` seeds from 1, and `fresh` random ones (FUZZ_FRESH overrides),
 * printed at once; FUZZ_SEED runs only that seed.
 */
export function planSeeds(name: string, fileUrl: string, fixed: number, fresh: number): SeedPlan {
  const file = relative(process.cwd(), fileURLToPath(fileUrl));
  const command = (seed: number) => `FUZZ_SEED=${seed} node ${file}`;
  const replaySeed = process.env.FUZZ_SEED;
  if (replaySeed !== undefined && replaySeed !== '') {
    const seed = Number(replaySeed);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`FUZZ_SEED must be a whole number >= 0, got ${replaySeed}`);
    console.log(`[fuzz ${name}] replaying seed ${seed} only`);
    return { seeds: [seed], replay: true, command };
  }
  const freshCount = process.env.FUZZ_FRESH === undefined ? fresh : Number(process.env.FUZZ_FRESH);
  const freshSeeds = Array.from({ length: freshCount }, () => 1_000_000 + Math.floor(Math.random() * 2 ** 31));
  console.log(
    `[fuzz ${name}] fresh seeds this run: ${freshSeeds.join(', ') || '(none)'}; fixed seeds 1-${fixed}; ` +
      `replay one with: ${command(freshSeeds[0] ?? 1).replace(/=\d+/, '=<seed>')}`,
  );
  return { seeds: [...Array.from({ length: fixed }, (_, index) => index + 1), ...freshSeeds], replay: false, command };
}

// ---- randomness ----

export class Random {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = createRandom(seed);
  }

  /** In [0, 1). */
  float(): number {
    return this.next();
  }

  /** An integer in [0, bound). */
  int(bound: number): number {
    return Math.floor(this.next() * bound);
  }

  /** An integer in [low, high]. */
  between(low: number, high: number): number {
    return low + this.int(high - low + 1);
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    for (let index = 0; index < length; index++) bytes[index] = this.int(256);
    return bytes;
  }

  /** Short text of mixed kinds: ASCII, multi-byte, a lone surrogate, separators, control characters. */
  text(lengthMax = 12): string {
    const alphabet = ['a', 'b', 'z', '0', '9', '/', '.', '-', '_', ':', '#', '+', ' ', '\u0000', '\n', 'é', '€', '😀', '\ud800', '\u00ff'];
    let text = '';
    const length = this.int(lengthMax + 1);
    for (let index = 0; index < length; index++) text += this.pick(alphabet);
    return text;
  }
}

// ---- byte mutations ----

/** Where a valid encoding keeps a length or count, so a mutation can lie about it. */
export interface LengthField {
  offset: number;
  kind: 'u8' | 'u16' | 'u32' | 'f64';
}

export const BYTE_MUTATIONS = ['bit-flip', 'byte-set', 'truncate', 'extend', 'delete-range', 'insert-range', 'duplicate-range', 'length-field', 'random-bytes'] as const;
export type ByteMutation = (typeof BYTE_MUTATIONS)[number];

const INTERESTING_U32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
const INTERESTING_F64 = [0, -0, -1, 0.5, 1.5, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64, -(2 ** 53), Number.NaN, Infinity, -Infinity, Number.MIN_VALUE, Number.MAX_VALUE];

function writeField(bytes: Uint8Array, field: LengthField, random: Random): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = { u8: 1, u16: 2, u32: 4, f64: 8 }[field.kind];
  if (field.offset + size > bytes.length) return;
  if (field.kind === 'f64') {
    view.setFloat64(field.offset, random.pick(INTERESTING_F64), true);
    return;
  }
  const current = field.kind === 'u8' ? view.getUint8(field.offset) : field.kind === 'u16' ? view.getUint16(field.offset, true) : view.getUint32(field.offset, true);
  const max = field.kind === 'u8' ? 0xff : field.kind === 'u16' ? 0xffff : 0xffff_ffff;
  // The true value one off, or a value of note (huge, "negative" as a signed integer, zero).
  const candidates = [current + 1, current - 1, current * 2, ...INTERESTING_U32];
  const value = Math.max(0, Math.min(max, random.pick(candidates))) >>> 0;
  if (field.kind === 'u8') view.setUint8(field.offset, value & 0xff);
  else if (field.kind === 'u16') view.setUint16(field.offset, value & 0xffff, true);
  else view.setUint32(field.offset, value, true);
}

/** A copy of `bytes` changed by one mutation of `kind` (a random kind when none is given). */
export function mutateBytes(random: Random, source: Uint8Array, fields: readonly LengthField[] = [], kind?: ByteMutation): { kind: ByteMutation; bytes: Uint8Array } {
  const chosen = kind ?? random.pick(fields.length > 0 ? BYTE_MUTATIONS : BYTE_MUTATIONS.filter((name) => name !== 'length-field'));
  // A copy even of a Buffer (whose own slice() is a view: mutating it would change the valid base).
  let bytes: Uint8Array = Uint8Array.prototype.slice.call(source);
  const at = () => random.int(bytes.length + 1);
  switch (chosen) {
    case 'bit-flip': {
      const flips = random.between(1, 4);
      for (let index = 0; index < flips && bytes.length > 0; index++) bytes[random.int(bytes.length)]! ^= 1 << random.int(8);
      break;
    }
    case 'byte-set': {
      const sets = random.between(1, 3);
      for (let index = 0; index < sets && bytes.length > 0; index++) bytes[random.int(bytes.length)] = random.pick([0, 1, 0x7f, 0x80, 0xc0, 0xfe, 0xff, random.int(256)]);
      break;
    }
    case 'truncate':
      bytes = bytes.slice(0, random.int(bytes.length));
      break;
    case 'extend': {
      const tail = random.chance(0.5) ? random.bytes(random.between(1, 16)) : new Uint8Array(random.between(1, 16));
      bytes = concat(bytes, tail);
      break;
    }
    case 'delete-range': {
      const start = at();
      bytes = concat(bytes.subarray(0, start), bytes.subarray(Math.min(bytes.length, start + random.between(1, 8))));
      break;
    }
    case 'insert-range': {
      const start = at();
      bytes = concat(bytes.subarray(0, start), random.bytes(random.between(1, 8)), bytes.subarray(start));
      break;
    }
    case 'duplicate-range': {
      const start = random.int(Math.max(1, bytes.length));
      const end = Math.min(bytes.length, start + random.between(1, 32));
      bytes = concat(bytes.subarray(0, end), bytes.subarray(start, end), bytes.subarray(end));
      break;
    }
    case 'length-field':
      writeField(bytes, random.pick(fields), random);
      break;
    case 'random-bytes':
      bytes = random.bytes(random.int(random.chance(0.8) ? 64 : 600));
      break;
  }
  return { kind: chosen, bytes };
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

// ---- structured mutations (decoded values: msgpack, JSON, protobuf objects) ----

export const VALUE_MUTATIONS = ['replace-wrong-type', 'delete-field', 'add-field', 'drop-element', 'duplicate-element', 'wrap-in-array'] as const;
export type ValueMutation = (typeof VALUE_MUTATIONS)[number];

/** Values of every kind, for a field that expects another. */
export function wrongValue(random: Random): unknown {
  return random.pick<() => unknown>([
    () => null,
    () => true,
    () => 0,
    () => -1,
    () => 1.5,
    () => 2 ** 53,
    () => -(2 ** 31),
    () => 2 ** 32,
    () => Number.NaN,
    () => Infinity,
    () => '',
    () => random.text(),
    () => 'x'.repeat(300),
    () => [],
    () => [random.int(10), random.text(3)],
    () => ({}),
    () => ({ [random.text(4)]: random.int(100) }),
    () => new Uint8Array(0),
    () => random.bytes(random.between(1, 70)),
  ])();
}

type Container = unknown[] | Record<string, unknown>;

function isContainer(value: unknown): value is Container {
  return Array.isArray(value) || (typeof value === 'object' && value !== null && !(value instanceof Uint8Array));
}

function collectContainers(value: unknown, into: Container[]): void {
  if (!isContainer(value)) return;
  into.push(value);
  for (const child of Array.isArray(value) ? value : Object.values(value)) collectContainers(child, into);
}

/** A deep copy (byte arrays copied as Uint8Array). */
export function deepCopy<T>(value: T): T {
  if (value instanceof Uint8Array) return Uint8Array.prototype.slice.call(value) as T;
  if (Array.isArray(value)) return value.map(deepCopy) as T;
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, deepCopy(child)])) as T;
  return value;
}

/** A deep copy of `value` with one structural change somewhere inside (the root replaced at times). */
export function mutateValue(random: Random, value: unknown): { kind: ValueMutation; value: unknown } {
  const root = deepCopy(value);
  const containers: Container[] = [];
  collectContainers(root, containers);
  if (containers.length === 0 || random.chance(0.03)) return { kind: 'replace-wrong-type', value: wrongValue(random) };
  const container = random.pick(containers);
  const kind = random.pick(VALUE_MUTATIONS);
  if (Array.isArray(container)) {
    const index = random.int(container.length + 1);
    switch (kind) {
      case 'replace-wrong-type':
      case 'add-field':
        if (container.length === 0 || kind === 'add-field') container.splice(index, 0, wrongValue(random));
        else container[index % container.length] = wrongValue(random);
        break;
      case 'delete-field':
      case 'drop-element':
        container.splice(index % Math.max(1, container.length), 1);
        break;
      case 'duplicate-element':
        if (container.length > 0) container.splice(index, 0, deepCopy(container[index % container.length]));
        break;
      case 'wrap-in-array':
        if (container.length > 0) container[index % container.length] = [container[index % container.length]];
        break;
    }
  } else {
    const keys = Object.keys(container);
    const key = keys.length > 0 ? random.pick(keys) : 'x';
    switch (kind) {
      case 'replace-wrong-type':
      case 'duplicate-element':
        container[key] = wrongValue(random);
        break;
      case 'delete-field':
      case 'drop-element':
        delete container[key];
        break;
      case 'add-field':
        container[random.chance(0.5) ? random.text(6) : '__proto__x'] = wrongValue(random);
        break;
      case 'wrap-in-array':
        container[key] = [container[key]];
        break;
    }
  }
  return { kind, value: root };
}

/**
 * msgpack headers announcing far more than follows (array32, map32, bin32, str32, ext32), written over
 * or into an encoding at a random place: the "huge length field" of a msgpack body.
 */
export function injectMsgpackHugeLength(random: Random, source: Uint8Array): Uint8Array {
  const header = random.pick([0xdd, 0xdf, 0xc6, 0xdb, 0xc9]);
  const count = random.pick([0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 0x0100_0000]);
  const bytes = Uint8Array.of(header, count >>> 24, (count >>> 16) & 0xff, (count >>> 8) & 0xff, count & 0xff);
  const at = random.int(source.length + 1);
  return random.chance(0.5) ? concat(source.subarray(0, at), bytes, source.subarray(at)) : concat(source.subarray(0, at), bytes, source.subarray(Math.min(source.length, at + 5)));
}

// ---- the oracle ----

/** What a decoder may throw: StatecraftErrors with these codes, and instances of these classes. */
export interface ErrorContract {
  codes: readonly ErrorCode[];
  classes?: readonly (abstract new (...args: never[]) => Error)[];
}

export function isContracted(error: unknown, contract: ErrorContract): boolean {
  if (error instanceof StatecraftError && contract.codes.includes(error.code)) return true;
  return (contract.classes ?? []).some((type) => error instanceof type);
}

export function describeError(error: unknown): string {
  if (error instanceof StatecraftError) return `${error.name} ${error.code}: ${error.message.slice(0, 300)}`;
  if (error instanceof Error) return `${error.name}: ${error.message.slice(0, 300)}\n${error.stack?.split('\n').slice(1, 6).join('\n')}`;
  return `a thrown ${typeof error}: ${String(error).slice(0, 200)}`;
}

export function hex(bytes: Uint8Array, max = 160): string {
  const shown = Buffer.from(bytes.subarray(0, max)).toString('hex');
  return bytes.length > max ? `${shown}… (${bytes.length} bytes)` : `${shown} (${bytes.length} bytes)`;
}

export type Outcome<T> = { ok: true; value: T; ms: number } | { ok: false; error: unknown; ms: number };

/** Runs `call`, timing it; never throws. */
export function attempt<T>(call: () => T): Outcome<T> {
  const started = performance.now();
  try {
    const value = call();
    return { ok: true, value, ms: performance.now() - started };
  } catch (error) {
    return { ok: false, error, ms: performance.now() - started };
  }
}

export async function attemptAsync<T>(call: () => Promise<T>): Promise<Outcome<T>> {
  const started = performance.now();
  try {
    const value = await call();
    return { ok: true, value, ms: performance.now() - started };
  } catch (error) {
    return { ok: false, error, ms: performance.now() - started };
  }
}

/** One fuzz case, for the failure message: where it came from and how to replay it. */
export interface CaseLabel {
  plan: SeedPlan;
  seed: number;
  index: number;
  /** The valid encoding it started from and the mutation applied. */
  what: string;
  input: Uint8Array | string;
}

export class FuzzFailure extends Error {}

/** Fails the case: the message names seed, case, mutation and input, and prints the replay command. */
export function fail(label: CaseLabel, problem: string): never {
  const input = typeof label.input === 'string' ? JSON.stringify(label.input.slice(0, 300)) : hex(label.input);
  const message =
    `seed ${label.seed}, case ${label.index} (${label.what}): ${problem}\n` +
    `  input: ${input}\n` +
    `  replay: ${label.plan.command(label.seed)}`;
  console.error(`[fuzz] FAILED ${message}`);
  throw new FuzzFailure(message);
}

/** Checks timing and the error contract of one outcome; returns the value when the call returned. */
export function expectContract<T>(label: CaseLabel, outcome: Outcome<T>, contract: ErrorContract): T | undefined {
  if (outcome.ms > CALL_MS_MAX) fail(label, `took ${outcome.ms.toFixed(1)} ms (limit ${CALL_MS_MAX} ms): a hang`);
  if (outcome.ok) return outcome.value;
  if (!isContracted(outcome.error, contract)) fail(label, `threw an error outside its contract: ${describeError(outcome.error)}`);
  return undefined;
}

// ---- known gaps ----

/** A decoder's known shortfall: its name, the skipped test that pins it, and how to recognise a case of it. */
export interface KnownGap {
  name: string;
  skippedTest: string;
}

/**
 * The explicit list of gaps a fuzz loop tolerates. A case is let through only when the file's own check
 * names one of these; `report` prints how often each was hit, so the gap never goes quiet.
 */
export class KnownGaps {
  private readonly hits = new Map<string, number>();
  private readonly byName: Map<string, KnownGap>;

  constructor(
    private readonly fuzzName: string,
    gaps: readonly KnownGap[],
  ) {
    this.byName = new Map(gaps.map((gap) => [gap.name, gap]));
  }

  /** Counts a case that fell into gap `name` (which must be listed). */
  hit(name: string): void {
    if (!this.byName.has(name)) throw new Error(`"${name}" is not in the known-gap list of ${this.fuzzName}`);
    this.hits.set(name, (this.hits.get(name) ?? 0) + 1);
  }

  count(name: string): number {
    return this.hits.get(name) ?? 0;
  }

  report(): void {
    if (this.byName.size === 0) return;
    const lines = [...this.byName.values()].map((gap) => `  ${gap.name}: ${this.count(gap.name)} case(s) (pinned by the skipped test "${gap.skippedTest}")`);
    console.log(`[fuzz ${this.fuzzName}] known gaps, tolerated by name:\n${lines.join('\n')}`);
  }
}

/** Reports the loop's size and time on one line. */
export function summary(name: string, seeds: number, cases: number, startedMs: number): void {
  console.log(`[fuzz ${name}] ${cases} cases over ${seeds} seeds in ${((performance.now() - startedMs) / 1000).toFixed(2)} s`);
}
