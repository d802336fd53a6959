// test-exclusive
// The README's three-node setup (its Security section), run on one machine: the three commands are read
// from the README and adapted only where one machine differs from three — 127.0.0.1 and OS-chosen ports
// instead of 10.0.0.x:8080, a test function module for app.js, a fresh secret file, and the test's S3
// server for the bucket. Any other flag in those commands fails the test, so the README cannot drift
// from what runs. The nodes share nothing but the secret file and the store: they form a cluster,
// count a client's events once, and a fourth node started the same way without the secret cannot join.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type Client } from 'statecraft';
import { clusterUntil, countReports, fixture, killNodeProcesses, startNodeProcess, type NodeProcess } from '../helpers.js';
import { startS3Server, type S3TestServer } from '../s3-server.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));
const cleanups: (() => unknown)[] = [];
test.after.each(async () => {
  killNodeProcesses();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The three commands of the README's "For three nodes on three machines", as argument lists after `node cluster/start.js`. */
function readmeCommands(): string[][] {
  const readme = readFileSync(README, 'utf8');
  const section = readme.slice(readme.indexOf('## Security'), readme.indexOf('## Remote functions'));
  const block = /For three nodes on three machines[\s\S]*?```sh\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, 'the README shows the three-node commands');
  const commands = block!.trim().split('\n').map((line) => line.trim().split(/\s+/));
  assert.is(commands.length, 3);
  for (const command of commands) assert.equal(command.slice(0, 2), ['node', 'cluster/start.js']);
  return commands.map((command) => command.slice(2));
}

/** A README command for one machine: each flag the README uses, mapped; anything else fails the test. */
function onOneMachine(args: string[], place: { secretFile: string; s3: S3TestServer; firstPort: number | null }): string[] {
  const adapted: string[] = [];
  for (let index = 0; index < args.length; index += 2) {
    const [flag, value] = [args[index]!, args[index + 1]!];
    switch (flag) {
      case '--functions':
        assert.is(value, 'app.js');
        adapted.push(flag, fixture('functions'));
        break;
      case '--host':
        assert.is(value, '0.0.0.0');
        adapted.push(flag, '127.0.0.1');
        break;
      case '--advertise':
        assert.match(value, /^10\.0\.0\.\d:8080$/);
        adapted.push('--port', '0'); // one machine: each node its own port, which it advertises
        break;
      case '--cluster-secret-file':
        adapted.push(flag, place.secretFile);
        break;
      case '--checkpoint-store': {
        const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(value);
        assert.ok(match, value);
        adapted.push(flag, `s3://${place.s3.bucket}/${match![2]}`, '--s3-endpoint', place.s3.endpoint);
        break;
      }
      case '--join':
        assert.is(value, '10.0.0.1:8080');
        adapted.push(flag, `127.0.0.1:${place.firstPort}`);
        break;
      default:
        assert.unreachable(`a flag this test does not map: ${flag} (update the test with the README)`);
    }
  }
  return adapted;
}

test("the README's three-node setup: one secret file and one store make a cluster that counts every event once; a node without the secret cannot join", async () => {
  const [first, second, third] = readmeCommands();
  const s3 = await startS3Server();
  cleanups.push(() => s3.close());
  const dir = mkdtempSync(join(tmpdir(), 'statecraft-readme-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const secretFile = join(dir, 'cluster-secret');
  writeFileSync(secretFile, randomBytes(32).toString('base64'), { mode: 0o600 }); // openssl rand -base64 32
  const onlyTheFile = { STATECRAFT_CLUSTER_SECRET: undefined };

  const n1 = await startNodeProcess(onOneMachine(first!, { secretFile, s3, firstPort: null }), 30_000, onlyTheFile);
  const place = { secretFile, s3, firstPort: n1.port };
  const rest = await Promise.all([second!, third!].map((args) => startNodeProcess(onOneMachine(args, place), 30_000, onlyTheFile)));
  const nodes: NodeProcess[] = [n1, ...rest];
  await clusterUntil<{ serving: boolean; view: string[] }>(nodes, 'three nodes in one view', (all) => all.every((status) => status.serving && status.view.length === 3), 30_000);

  const clients: Client[] = [];
  cleanups.push(() => Promise.all(clients.map((client) => client.close({ timeoutMs: 1000 }).catch(() => undefined))));
  const sender = await connect(nodes.map((node) => node.url));
  const watcher = await connect(nodes[2]!.url);
  clients.push(sender, watcher);
  const ids = Array.from({ length: 20 }, (_, index) => `readme-${index}`);
  await Promise.all(ids.map((id) => sender.send({ typename: 'test/counter', id }, 1)));
  const counts = await countReports(sender, watcher, ids);
  assert.equal([...counts.values()], ids.map(() => 1), 'every event counted once');

  // The same command without the secret file (and no secret otherwise): it stops and says why.
  const withoutSecret = second!.slice();
  withoutSecret.splice(withoutSecret.indexOf('--cluster-secret-file'), 2);
  const refused = await startNodeProcess(onOneMachine(withoutSecret, place), 15_000, onlyTheFile).then(
    () => null,
    (error: Error) => error,
  );
  assert.ok(refused, 'a node without the secret never became ready');
  assert.match(refused!.message, /joining a cluster needs its secret/);
});

test.run();
