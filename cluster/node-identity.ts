/**
 * A node's stable id and its data directory. The id is `--node-id` when given; otherwise it is
 * generated once and kept in `<data dir>/node-id`, so a restarted node rejoins as itself. A `LOCK` file
 * with the owner's pid keeps two running nodes from sharing one directory (and so one id).
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { StatecraftError } from '../lib/errors.js';

const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

export interface NodeIdentity {
  nodeId: string;
  dataDir: string;
  /** Removes the lock (on shutdown). */
  release(): void;
}

export function validateNodeId(id: string): string {
  if (!NODE_ID_PATTERN.test(id)) {
    throw new StatecraftError('SC_ERR_INVALID_OPTION', `node id "${id}" must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit.`);
  }
  return id;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function openNodeIdentity(dataDir: string, explicitId?: string): NodeIdentity {
  const directory = resolve(dataDir);
  try {
    mkdirSync(directory, { recursive: true });
  } catch (error) {
    throw new StatecraftError('SC_ERR_INVALID_OPTION', `cannot create the data directory ${directory}: ${(error as Error).message}`);
  }
  const lockPath = join(directory, 'LOCK');
  let holder: number | null = null;
  try {
    holder = Number(readFileSync(lockPath, 'utf8').trim());
  } catch {
    holder = null;
  }
  if (holder !== null && Number.isInteger(holder) && holder !== process.pid && processAlive(holder)) {
    throw new StatecraftError('SC_ERR_INVALID_OPTION', `the data directory ${directory} is in use by another node (pid ${holder}): give each node its own --data-dir.`);
  }
  writeFileSync(lockPath, String(process.pid));

  const idPath = join(directory, 'node-id');
  let nodeId: string;
  if (explicitId !== undefined) {
    nodeId = validateNodeId(explicitId);
    writeFileSync(idPath, nodeId + '\n');
  } else {
    let stored: string | null = null;
    try {
      stored = readFileSync(idPath, 'utf8').trim();
    } catch {
      stored = null;
    }
    nodeId = stored ? validateNodeId(stored) : `node-${randomUUID().slice(0, 8)}`;
    if (!stored) writeFileSync(idPath, nodeId + '\n');
  }
  return {
    nodeId,
    dataDir: directory,
    release: () => rmSync(lockPath, { force: true }),
  };
}
