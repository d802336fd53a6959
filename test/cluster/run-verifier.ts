// Runs scripts/verify.js for a test (exactly-once.test.ts, nemesis.test.ts).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { withTimeout } from '../helpers.js';

/**
 * Runs scripts/verify.js and returns its final JSON line (`output`: how to find what it printed, when it
 * failed). On a timeout the verifier gets SIGTERM (it kills its nodes and deletes its namespaces), then
 * its whole process group SIGKILL.
 */
export async function runVerifier(args: string[], timeoutMs: number): Promise<Record<string, any>> {
  const script = fileURLToPath(new URL('../../scripts/verify.js', import.meta.url));
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // The whole output goes to a file when the run fails; the message shows the nodes' dump if there is one.
  // The verifier prints its seed and how to replay it first: it leads every failure message, a timeout's too.
  const replay = () => /^verify: seed .*$/m.exec(output)?.[0] ?? `no seed line yet; arguments: ${args.join(' ')}`;
  const explain = () => {
    const file = `${tmpdir()}/statecraft-verifier-${Date.now()}.log`;
    writeFileSync(file, output);
    const dump = output.indexOf('still unconfirmed');
    const lines = (dump >= 0 ? output.slice(dump, dump + 12_000) : output.slice(-4000)).split('\n').filter((line) => !line.startsWith('verify: ') || !line.includes(' s  sent '));
    return `${replay()}\nfull output in ${file}\n${lines.join('\n')}`;
  };
  const code = await withTimeout(exited, timeoutMs, 'the verifier').catch(async (error) => {
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // the group is gone
    }
    throw new Error(`${(error as Error).message}; ${explain()}`);
  });
  const last = output.trim().split('\n').reverse().find((line) => line.startsWith('{'));
  if (last === undefined) throw new Error(`the verifier (exit ${code}) printed no result; ${explain()}`);
  const result = JSON.parse(last) as Record<string, any>;
  if (process.env.VERBOSE) console.log(output);
  const clean = result.mismatches === 0 && (result.order_violations ?? 0) === 0 && code === 0;
  // `printed` (not enumerable: results are logged as JSON): everything it printed, for a test that reads more of it.
  Object.defineProperty(result, 'printed', { value: output, enumerable: false });
  return Object.assign(result, { exitCode: code ?? -1, output: clean ? replay() : explain() });
}
