/**
 * The seeds a seeded simulation runs: a fixed range, the same every run, so a regression stays caught;
 * plus a few fresh seeds, new every run, so CI keeps exploring. The fresh ones are printed before they
 * run, so a failure among them can be replayed even if the run is killed. A replayed seed runs alone.
 *
 *   SIM_FRESH_SEEDS=n   n fresh seeds per range (default: 5% of the fixed range, from 2 to 16; 0: none)
 */
import { randomInt } from 'node:crypto';

/** Fresh seeds come from here up, far above every fixed range. */
const FRESH_SEEDS_FROM = 2 ** 31;

export interface SeedOptions {
  /** What the run is called in the printed lines. */
  name: string;
  first: number;
  count: number;
  /** The seed being replayed, or null. */
  replay: number | null;
  /** How to replay one seed, e.g. `CHECKPOINT_SEED=<seed> node dist/test/…` with `<seed>` in it. */
  replayCommand: string;
}

export function seedsFor(options: SeedOptions): number[] {
  if (options.replay !== null) return [options.replay];
  const fixed = Array.from({ length: options.count }, (_, index) => options.first + index);
  const wanted = process.env.SIM_FRESH_SEEDS === undefined ? Math.min(16, Math.max(2, Math.round(options.count * 0.05))) : Number(process.env.SIM_FRESH_SEEDS);
  const fresh = Array.from({ length: wanted }, () => FRESH_SEEDS_FROM + randomInt(2 ** 30));
  if (fresh.length > 0) console.log(`  ${options.name}: fresh seeds ${fresh.join(', ')} (replay one: ${options.replayCommand})`);
  return [...fixed, ...fresh];
}

/** The replay command for `seed`. */
export function replayLine(options: Pick<SeedOptions, 'replayCommand'>, seed: number): string {
  return options.replayCommand.replace('<seed>', String(seed));
}
