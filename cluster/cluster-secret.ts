/**
 * The cluster secret every node of a cluster shares: peers prove they hold it before anything else
 * they send is read (peer-auth.ts). Where it comes from, first found wins:
 *   1. `--cluster-secret-file <path>` (or STATECRAFT_CLUSTER_SECRET_FILE): the file's content;
 *   2. STATECRAFT_CLUSTER_SECRET: the value itself;
 *   3. `<data dir>/cluster-secret`, written (mode 0600) with 32 random bytes the first time a node
 *      founds a cluster without one; the other nodes are then started with
 *      `--cluster-secret-file` naming a copy of it.
 * A node that joins (`--join`) with none of these cannot prove anything: it stops at once and says so.
 * Leading and trailing whitespace is not part of a secret (files end in a newline).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { StatecraftError } from '../lib/errors.js';
import { SECRET_BYTES_MIN } from './peer-auth.js';

export const SECRET_FILE = 'cluster-secret';

export interface ClusterSecret {
  secret: Buffer;
  /** Where it came from, for the log (never the secret itself). */
  source: string;
  /** It was generated just now into the data directory. */
  generated: boolean;
  /** A warning for the operator (a secret file other users can read), or null. */
  warning: string | null;
}

export interface SecretSources {
  /** `--cluster-secret-file`. */
  file?: string | undefined;
  /** STATECRAFT_CLUSTER_SECRET. */
  value?: string | undefined;
  dataDir: string;
  /** The node joins through seeds: a secret made up now could prove nothing to them. */
  joining: boolean;
}

const GENERATE_HINT = 'openssl rand -base64 32 > cluster-secret';

function checked(text: string, where: string): Buffer {
  const secret = Buffer.from(text.trim(), 'utf8');
  if (secret.length < SECRET_BYTES_MIN) {
    throw new StatecraftError('SC_ERR_INVALID_OPTION', `the cluster secret in ${where} is ${secret.length} bytes; it needs at least ${SECRET_BYTES_MIN} (make one with: ${GENERATE_HINT})`);
  }
  return secret;
}

function readSecretFile(path: string, where: string): { secret: Buffer; warning: string | null } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new StatecraftError('SC_ERR_INVALID_OPTION', `${where}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  let warning: string | null = null;
  try {
    if ((statSync(path).mode & 0o077) !== 0) warning = `the cluster secret file ${path} can be read by other users of this machine: chmod 600 it`;
  } catch {
    // Read a moment ago: a file that vanished since has nothing to warn about.
  }
  return { secret: checked(text, where), warning };
}

export function resolveClusterSecret(sources: SecretSources): ClusterSecret {
  if (sources.file !== undefined) {
    const { secret, warning } = readSecretFile(sources.file, `--cluster-secret-file ${sources.file}`);
    return { secret, source: sources.file, generated: false, warning };
  }
  if (sources.value !== undefined) return { secret: checked(sources.value, 'STATECRAFT_CLUSTER_SECRET'), source: 'STATECRAFT_CLUSTER_SECRET', generated: false, warning: null };
  const stored = join(sources.dataDir, SECRET_FILE);
  let exists = true;
  try {
    statSync(stored);
  } catch {
    exists = false;
  }
  if (exists) {
    const { secret, warning } = readSecretFile(stored, stored);
    return { secret, source: stored, generated: false, warning };
  }
  if (sources.joining) {
    throw new StatecraftError(
      'SC_ERR_INVALID_OPTION',
      'joining a cluster needs its secret: give --cluster-secret-file <path> (or STATECRAFT_CLUSTER_SECRET). A node that founded a cluster without one wrote it to <its data dir>/cluster-secret; copy that file here.',
    );
  }
  const text = randomBytes(32).toString('base64url') + '\n';
  // 'wx': two nodes racing on one directory cannot both write (the data-directory lock stops that anyway).
  writeFileSync(stored, text, { mode: 0o600, flag: 'wx' });
  return { secret: checked(text, stored), source: stored, generated: true, warning: null };
}
