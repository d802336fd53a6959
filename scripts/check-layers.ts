/**
 * Checks the layering DESIGN.md asks for: lib/ (the public API and sans-I/O cores) imports nothing of
 * node/ or cluster/; node/ (the runtime) imports lib/ but not cluster/; cluster/ may import both.
 * Prints each violation with file and line; exits 1 if there is any.
 *
 *   npm run check-layers
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** For each layer, the layers its modules may import. */
const allowed: Record<string, readonly string[]> = {
  lib: ['lib'],
  node: ['lib', 'node'],
  cluster: ['lib', 'node', 'cluster'],
};
/** Package imports that resolve into a layer. */
const packageLayers: Record<string, string> = { statecraft: 'lib', 'statecraft/node': 'node' };

function sources(directory: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(directory)) {
    const path = join(directory, entry);
    if (statSync(path).isDirectory()) found.push(...sources(path));
    else if (entry.endsWith('.ts') && !entry.endsWith('.d.ts')) found.push(path);
  }
  return found;
}

const IMPORT = /(?:^|\s)(?:import|export)\s(?:[^'"]*?\sfrom\s)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

export function layerViolations(): string[] {
  const violations: string[] = [];
  for (const layer of Object.keys(allowed)) {
    for (const file of sources(join(root, layer))) {
      const text = readFileSync(file, 'utf8');
      for (const match of text.matchAll(IMPORT)) {
        const specifier = match[1] ?? match[2]!;
        let target: string | undefined = packageLayers[specifier];
        if (specifier.startsWith('.')) target = relative(root, resolve(dirname(file), specifier)).split(/[\\/]/)[0];
        if (target === undefined || !(target in allowed)) continue; // node: builtins and npm packages
        if (!allowed[layer]!.includes(target)) {
          const line = text.slice(0, match.index).split('\n').length;
          violations.push(`${relative(root, file)}:${line}: ${layer}/ must not import ${target}/ ('${specifier}')`);
        }
      }
    }
  }
  return violations;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const violations = layerViolations();
  for (const violation of violations) console.error(violation);
  console.log(violations.length === 0 ? 'layers ok: lib <- node <- cluster' : `${violations.length} layer violation(s)`);
  process.exit(violations.length === 0 ? 0 : 1);
}
