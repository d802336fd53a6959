// The package as users install it: from a packed tarball and from a folder. Each installed copy is
// imported (`statecraft`, `statecraft/node`) and runs a function end to end, and a TypeScript project
// using it type-checks with an ordinary NodeNext tsconfig: the package ships its build (dist/), never
// its sources, so the user's compiler options never meet our .ts files.
// test-timeout-ms: 240000
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../../scripts/repo-root.js';

const root = repoRoot;
const scratch = mkdtempSync(join(tmpdir(), 'statecraft-install-'));

test.after(() => rmSync(scratch, { recursive: true, force: true }));

const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', timeout: 90_000, stdio: ['ignore', 'pipe', 'pipe'] });

/** An empty ES-module project with `@types/node` (as any Node TypeScript project has), Statecraft installed from `source`. */
function project(name: string, source: string): string {
  const directory = join(scratch, name);
  mkdirSync(directory);
  writeFileSync(join(directory, 'package.json'), JSON.stringify({ name: `user-${name}`, private: true, type: 'module' }));
  npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', source], directory);
  mkdirSync(join(directory, 'node_modules', '@types'), { recursive: true });
  symlinkSync(join(root, 'node_modules', '@types', 'node'), join(directory, 'node_modules', '@types', 'node'), 'dir');
  return directory;
}

const functionsJs = `import { defineFunction, Types } from 'statecraft';
export const echo = defineFunction({ typename: 'app/echo', specs: [{ name: 'n', type: Types.int }], fn(context, message) {
  context.storage.n = (context.storage.n ?? 0) + 1;
  context.egress('out', message.asString() + ' #' + context.storage.n);
} });
`;

const mainJs = `import { connect } from 'statecraft';
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
console.log(JSON.stringify(seen));
`;

/** A user's TypeScript: functions, a client, a node, the public types; checked, not run. */
const appTs = `import { connect, defineFunction, Types, StatecraftError, type Client, type Context, type Message } from 'statecraft';
import { startNode, openBlobStore, type NodeOptions, type StatecraftNode, type NodeMetrics } from 'statecraft/node';

interface Cart { items: string[] }
const CartType = Types.json<Cart>('shop/cart-state');

export const cart = defineFunction({
  typename: 'shop/cart',
  specs: [{ name: 'cart', type: CartType }],
  async fn(context: Context, message: Message) {
    const cart = (context.storage.cart as Cart | undefined) ?? { items: [] };
    cart.items.push(message.asString());
    context.storage.cart = cart;
    context.sendAfter(1000, { typename: 'shop/reminder', id: context.self.id }, cart.items.length, 'remind');
  },
});

export async function run(options: NodeOptions): Promise<number> {
  const node: StatecraftNode = await startNode(options);
  const client: Client = await connect(node.url);
  try {
    await client.send({ typename: 'shop/cart', id: 'u1' }, 'apple');
  } catch (error) {
    if (error instanceof StatecraftError) console.error(error.code);
  }
  const metrics: NodeMetrics = node.metrics();
  const store = await openBlobStore('file:///tmp/statecraft-typecheck');
  await store.close();
  await client.close();
  await node.close();
  return metrics.Invocations;
}
`;

/**
 * What `tsc --init` writes, with its "For nodejs" lines on (lib esnext, types node) and the strictest
 * checks it offers; skipLibCheck off, so every declaration file of the package is checked too.
 */
const strictest = JSON.stringify({
  compilerOptions: {
    module: 'nodenext',
    target: 'esnext',
    lib: ['esnext'],
    types: ['node'],
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    noUncheckedSideEffectImports: true,
    moduleDetection: 'force',
    skipLibCheck: false,
    noEmit: true,
  },
});
/** An older, plain one: ES2022 and its default lib (no ES2024 API such as Atomics.waitAsync). */
const es2022 = JSON.stringify({ compilerOptions: { module: 'nodenext', target: 'es2022', types: ['node'], strict: true, skipLibCheck: false, noEmit: true } });

function typecheck(directory: string): void {
  writeFileSync(join(directory, 'app.ts'), appTs);
  for (const [name, tsconfig] of [['strictest', strictest], ['es2022', es2022]] as const) {
    writeFileSync(join(directory, 'tsconfig.json'), tsconfig);
    try {
      execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', directory], { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string };
      assert.unreachable(`the user's project does not type-check with the ${name} tsconfig:\n${stdout ?? ''}${stderr ?? ''}`);
    }
  }
}

test('the packed tarball ships the build only; installed, it runs a function end to end, its bin works, and a NodeNext project type-checks against it', () => {
  // The sources are built already (npm test builds first), so skip the prepare script.
  const tarball = npm(['pack', '--ignore-scripts', '--silent', '--pack-destination', scratch], root).trim().split('\n').at(-1)!;
  const directory = project('tarball', join(scratch, tarball));
  const installed = join(directory, 'node_modules', 'statecraft');
  assert.ok(existsSync(join(installed, 'dist', 'lib', 'index.d.ts')));
  const shipped = (folder: string): string[] => readdirSync(folder, { withFileTypes: true, recursive: true }).filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
  const sources = shipped(installed).filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'));
  assert.equal(sources, [], 'no TypeScript sources in the package');
  writeFileSync(join(directory, 'functions.js'), functionsJs);
  writeFileSync(join(directory, 'main.js'), mainJs);
  const output = execFileSync(process.execPath, ['main.js'], { cwd: directory, encoding: 'utf8', timeout: 30_000 });
  assert.equal(JSON.parse(output.trim()), ['hi #1', 'again #2']);
  const help = execFileSync(join(directory, 'node_modules', '.bin', 'statecraft'), ['--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.match(help, /--functions/);
  const serveHelp = execFileSync(join(directory, 'node_modules', '.bin', 'statecraft-serve'), ['--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.match(serveHelp, /--functions/);
  typecheck(directory);
});

test('installed from a folder (the repository itself), a NodeNext project type-checks against it and runs a function', () => {
  const directory = project('folder', root);
  writeFileSync(join(directory, 'functions.js'), functionsJs);
  writeFileSync(join(directory, 'main.js'), mainJs);
  const output = execFileSync(process.execPath, ['main.js'], { cwd: directory, encoding: 'utf8', timeout: 30_000 });
  assert.equal(JSON.parse(output.trim()), ['hi #1', 'again #2']);
  typecheck(directory);
});

test.run();
