/**
 * Runs every test file in its own process with a timeout (uvu has neither), a few at a time, and
 * prints one summary line: `N passed, N failed` (and `, N skipped` when tests are skipped). Exits non-zero
 * when anything failed or nothing ran.
 *
 *   node scripts/run-tests.js [filter ...]     only files whose path contains a filter
 *   TEST_CONCURRENCY=1 TEST_TIMEOUT_MS=300000  defaults 2 and 120000; a file can ask for more with a
 *                                              `// test-timeout-ms: N` line, and to run alone with a
 *                                              `// test-exclusive` line
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import { repoRoot } from './repo-root.js';

/** The compiled tree (dist/): tests run as .js from there, with the repository as working directory. */
const root = fileURLToPath(new URL('..', import.meta.url));
const testDirectory = join(root, 'test');
const filters = process.argv.slice(2);
const concurrency = Number(process.env.TEST_CONCURRENCY ?? 2);
const defaultTimeoutMs = Number(process.env.TEST_TIMEOUT_MS ?? 120_000);

function findTests(directory: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(directory).sort()) {
    const path = join(directory, entry);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (entry.endsWith('.test.js')) found.push(path);
  }
  return found;
}

interface Result {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  durationMs: number;
  output: string;
  note: string;
}

function timeoutFor(file: string): number {
  const match = /test-timeout-ms:\s*(\d+)/.exec(readFileSync(file, 'utf8'));
  return match ? Number(match[1]) : defaultTimeoutMs;
}

function runFile(file: string): Promise<Result> {
  const started = Date.now();
  const timeoutMs = timeoutFor(file);
  return new Promise((resolve) => {
    // Own process group, so a timeout kills the test and every process it started.
    const child = spawn(process.execPath, [file], { cwd: repoRoot, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        process.kill(-child.pid!, 'SIGKILL'); // leftovers of a test that forgot to clean up
      } catch {
        // none left
      }
      const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const passed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
      // uvu's Total leaves skipped tests out already.
      let failed = total - passed;
      let note = '';
      if (timedOut) {
        note = `timed out after ${timeoutMs} ms`;
        failed = Math.max(failed, 1);
      } else if (code !== 0) {
        note = `exited with ${signal ?? code}`;
        failed = Math.max(failed, 1);
      } else if (total === 0) {
        note = 'ran no test';
        failed = Math.max(failed, 1);
      }
      resolve({ file, passed, failed, skipped, durationMs: Date.now() - started, output, note });
    });
  });
}

const files = findTests(testDirectory).filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)));
const queue = [...files];
const results: Result[] = [];

// A file with a `// test-exclusive` line runs alone: multi-process suites whose timing matters (kills,
// failure detection) would otherwise share the two cores with another suite.
let running = 0;
let exclusiveRunning = false;
let waiters: (() => void)[] = [];
async function acquire(exclusive: boolean): Promise<void> {
  while (exclusiveRunning || (exclusive && running > 0)) await new Promise<void>((resolve) => waiters.push(resolve));
  running++;
  if (exclusive) exclusiveRunning = true;
}
function release(exclusive: boolean): void {
  running--;
  if (exclusive) exclusiveRunning = false;
  const woken = waiters;
  waiters = [];
  for (const wake of woken) wake();
}

async function worker(): Promise<void> {
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    const exclusive = /^\/\/ test-exclusive/m.test(readFileSync(file, 'utf8'));
    await acquire(exclusive);
    const result = await runFile(file).finally(() => release(exclusive));
    results.push(result);
    const name = relative(root, file);
    const status = result.failed > 0 ? 'FAIL' : 'ok  ';
    const skipped = result.skipped > 0 ? `, ${result.skipped} skipped` : '';
    process.stdout.write(`${status} ${name}  ${result.passed} passed, ${result.failed} failed${skipped} (${(result.durationMs / 1000).toFixed(1)} s)${result.note ? ' — ' + result.note : ''}\n`);
    if (result.failed > 0) process.stdout.write(result.output.replace(/^/gm, '    | ') + '\n');
  }
}

await Promise.all(Array.from({ length: Math.max(1, concurrency) }, () => worker()));
const passed = results.reduce((sum, result) => sum + result.passed, 0);
const failed = results.reduce((sum, result) => sum + result.failed, 0);
const skipped = results.reduce((sum, result) => sum + result.skipped, 0);
process.stdout.write(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}\n`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
