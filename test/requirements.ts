// Tests that need a tool outside Node (python3 with protobuf, a browser): where it is missing, a local
// run skips them and says so, but CI (CI=true, as .ci/run and the fresh-clone check set it) fails: a
// machine that should have the tool and does not must not look green.
import { spawnSync } from 'node:child_process';

/** Whether `command args` runs and exits 0 (a probe for an optional tool). */
export function probe(command: string, args: readonly string[]): boolean {
  const run = spawnSync(command, args, { stdio: 'ignore', timeout: 15_000 });
  return run.error === undefined && run.status === 0;
}

/**
 * True when the tool is there. When it is not: under CI=true throws (the test fails, saying what to
 * install); otherwise prints why the tests are skipped and returns false.
 */
export function requireTool(available: boolean, what: string, install: string): boolean {
  if (available) return true;
  const message = `${what} is missing (${install})`;
  if (process.env.CI === 'true') throw new Error(`${message}: CI must have it; .ci/run installs it`);
  console.log(`  SKIPPED: ${message}`);
  return false;
}
