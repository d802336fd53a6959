/**
 * Checks the layering DESIGN.md asks for: lib/ (the public API and sans-I/O cores) imports nothing of
 * node/ or cluster/; node/ (the runtime) imports lib/ but not cluster/; cluster/ may import both.
 * And that the files named below as sans-I/O cores stay cores: no `node:` module (but hashing from
 * node:crypto), no `ws`, no timers, no clock, no randomness — time and chance come in as arguments, so a
 * seed replays any run. Prints each violation with file and line; exits 1 if there is any.
 *
 *   npm run check-layers
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from './repo-root.js';

/** The sources are checked, not the build. */
const root = repoRoot;
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

/** Protocol cores and the data structures they run on (STYLE.md: sans-I/O cores, thin shells). */
export const SANS_IO_CORES: readonly string[] = [
  'lib/envelope.ts',
  'lib/client-protocol.ts',
  'lib/statefun-protocol.ts',
  'lib/key-group.ts',
  'lib/fifo-queue.ts',
  'node/checkpoint/barrier-tracker.ts',
  'node/checkpoint/checkpoint-coordinator.ts',
  'node/keygroups/key-group-state.ts',
  'node/keygroups/key-group-image.ts',
  'node/keygroups/state-store.ts',
  'node/keygroups/timer-queue.ts',
  'node/keygroups/producer-marks.ts',
  'node/keygroups/delayed-message.ts',
  'cluster/membership.ts',
  'cluster/placement.ts',
  'cluster/view-core.ts',
  'cluster/view-status.ts',
  'cluster/view-actions.ts',
  'cluster/handover-core.ts',
  'cluster/checkpoint-control.ts',
  'cluster/peer-auth.ts',
  'cluster/link-verdicts.ts',
  'cluster/route-fences.ts',
];

/** What a core may not use: I/O modules, timers, the clock, randomness. */
const CORE_FORBIDDEN: readonly [RegExp, string][] = [
  [/\b(?:setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|clearImmediate)\s*\(/, 'a timer'],
  [/\bDate\.now\s*\(|\bnew Date\s*\(\s*\)|\bperformance\.now\s*\(|\bprocess\.hrtime\b/, 'the clock'],
  [/\bMath\.random\s*\(|\brandom(?:Bytes|UUID|Int)\s*\(|\bgetRandomValues\s*\(/, 'randomness'],
];

/** The file without comments and plain string literals (so messages and docs may name anything). */
function codeOf(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"/g, (match) => (match.startsWith('/') ? match.replace(/[^\n]/g, ' ') : `''`));
}

/** Violations of the core rules in `cores` (paths relative to `base`). */
export function coreViolations(cores: readonly string[] = SANS_IO_CORES, base = root): string[] {
  const violations: string[] = [];
  for (const file of cores) {
    const path = join(base, file);
    const text = readFileSync(path, 'utf8');
    for (const match of text.matchAll(IMPORT)) {
      const specifier = match[1] ?? match[2]!;
      const line = text.slice(0, match.index).split('\n').length;
      if ((specifier.startsWith('node:') && specifier !== 'node:crypto') || specifier === 'ws') violations.push(`${file}:${line}: a sans-I/O core must not import '${specifier}'`);
    }
    const code = codeOf(text);
    code.split('\n').forEach((line, index) => {
      if (/^\s*import\s/.test(line)) return;
      for (const [pattern, what] of CORE_FORBIDDEN) if (pattern.test(line)) violations.push(`${file}:${index + 1}: a sans-I/O core must not use ${what} (take it as an argument)`);
    });
  }
  return violations;
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
  const violations = [...layerViolations(), ...coreViolations()];
  for (const violation of violations) console.error(violation);
  console.log(violations.length === 0 ? `layers ok: lib <- node <- cluster; ${SANS_IO_CORES.length} sans-I/O cores` : `${violations.length} violation(s)`);
  process.exit(violations.length === 0 ? 0 : 1);
}
