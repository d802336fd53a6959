/**
 * The repository's root folder: the nearest folder above this file holding the project's package.json.
 * Scripts and tests run compiled from dist/, but read sources and example files (Python, YAML) from the
 * repository itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let directory = from; ; directory = dirname(directory)) {
    const manifest = join(directory, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'statecraft') return directory;
    if (dirname(directory) === directory) throw new Error(`no statecraft package.json above ${from}`);
  }
}

export const repoRoot = findRoot(dirname(fileURLToPath(import.meta.url)));
