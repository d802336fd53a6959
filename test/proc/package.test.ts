// The package as users install it: `npm pack`, install the tarball into an empty project, then import
// `statecraft` and `statecraft/node` from there and run a function end to end.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const project = mkdtempSync(join(tmpdir(), 'statecraft-install-'));

test.after(() => rmSync(project, { recursive: true, force: true }));

test('an installed copy exports the client, the function API and the node', () => {
  const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', timeout: 90_000, stdio: ['ignore', 'pipe', 'pipe'] });
  // The sources are built already (npm test builds first), so skip the prepare script.
  const tarball = npm(['pack', '--ignore-scripts', '--silent', '--pack-destination', project], root).trim().split('\n').at(-1)!;
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'user-app', private: true, type: 'module' }));
  npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', join(project, tarball)], project);

  writeFileSync(
    join(project, 'functions.js'),
    `import { defineFunction, Types } from 'statecraft';
export const echo = defineFunction({ typename: 'app/echo', specs: [{ name: 'n', type: Types.int }], fn(context, message) {
  context.storage.n = (context.storage.n ?? 0) + 1;
  context.egress('out', message.asString() + ' #' + context.storage.n);
} });\n`,
  );
  writeFileSync(
    join(project, 'main.js'),
    `import { connect } from 'statecraft';
import { startNode } from 'statecraft/node';
const node = await startNode({ functions: [new URL('./functions.js', import.meta.url).pathname], port: 0, host: '127.0.0.1', shards: 1, log: () => {} });
const client = await connect(node.url);
const out = client.subscribe('out');
await client.send({ typename: 'app/echo', id: 'a' }, 'hi');
await client.send({ typename: 'app/echo', id: 'a' }, 'again');
const seen = [];
for await (const record of out) { seen.push(record.value); if (seen.length === 2) break; }
await client.close();
await node.close();
console.log(JSON.stringify(seen));\n`,
  );
  const output = execFileSync(process.execPath, ['main.js'], { cwd: project, encoding: 'utf8', timeout: 30_000 });
  assert.equal(JSON.parse(output.trim()), ['hi #1', 'again #2']);
  // The bin works from the installed copy too.
  const help = execFileSync(process.execPath, [join(project, 'node_modules/statecraft/cluster/start.js'), '--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.match(help, /--functions/);
});

test.run();
