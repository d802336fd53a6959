/**
 * Liveness stamps of the shard threads: one float64 (Date.now()) per shard in a SharedArrayBuffer. A
 * shard stamps its slot from a timer of its own event loop, which cannot run while JavaScript is stuck
 * in its thread; the main thread's watchdog (node/main/shard-watchdog.ts) reads them.
 */

/** How often a shard stamps its slot. */
export const SHARD_BEAT_MS = 500;

/** The slots, one per shard thread, numbered 1..size. */
export function createBeatsBuffer(shards: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * shards);
}

/** A shard's side: stamps its slot now and every SHARD_BEAT_MS while its event loop turns. */
export function beatFromShard(buffer: SharedArrayBuffer, thread: number): NodeJS.Timeout {
  const beats = new Float64Array(buffer);
  const beat = () => {
    beats[thread - 1] = Date.now();
  };
  beat();
  const timer = setInterval(beat, SHARD_BEAT_MS);
  timer.unref();
  return timer;
}
