/**
 * Loads `--functions` modules: ES modules whose exports include function definitions (the result of
 * `defineFunction`), directly or in arrays. Every shard loads the same modules, so each thread has its
 * own copy of the handlers.
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { StatecraftError } from './errors.js';
import { isFunctionDefinition, type FunctionDefinition } from './function.js';

/** A module specifier as given by the user, resolved to a URL any thread can import. */
export function resolveModuleUrl(specifier: string, cwd = process.cwd()): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)) return specifier; // already a URL
  if (specifier.startsWith('.') || isAbsolute(specifier) || specifier.includes('/') || specifier.endsWith('.js')) {
    return pathToFileURL(isAbsolute(specifier) ? specifier : resolve(cwd, specifier)).href;
  }
  return specifier; // a package name
}

function collect(value: unknown, into: FunctionDefinition[], depth = 0): void {
  if (isFunctionDefinition(value)) into.push(value);
  else if (Array.isArray(value) && depth === 0) for (const item of value) collect(item, into, depth + 1);
}

export async function loadFunctionModules(moduleUrls: readonly string[]): Promise<FunctionDefinition[]> {
  const definitions: FunctionDefinition[] = [];
  const origin = new Map<string, string>();
  for (const url of moduleUrls) {
    let namespace: Record<string, unknown>;
    try {
      namespace = (await import(url)) as Record<string, unknown>;
    } catch (error) {
      throw new StatecraftError(
        'SC_ERR_MODULE_LOAD',
        `cannot load functions module ${url}: ${(error as Error).message}. Give --functions a path to an ES module (.js; compile TypeScript first).`,
        { cause: error },
      );
    }
    const found: FunctionDefinition[] = [];
    for (const value of Object.values(namespace)) collect(value, found);
    if (found.length === 0) {
      throw new StatecraftError(
        'SC_ERR_MODULE_LOAD',
        `functions module ${url} exports no function definitions; export the result of defineFunction({ typename, fn }).`,
      );
    }
    for (const definition of found) {
      const previous = origin.get(definition.typename);
      if (previous !== undefined) {
        if (definitions.includes(definition)) continue; // the same definition exported twice
        throw new StatecraftError(
          'SC_ERR_MODULE_LOAD',
          `function type ${definition.typename} is defined twice (in ${previous} and ${url}); each type needs one definition.`,
        );
      }
      origin.set(definition.typename, url);
      definitions.push(definition);
    }
  }
  return definitions;
}
