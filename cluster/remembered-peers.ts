/**
 * The members a node last saw in its view, kept in `<data dir>/peers.json`, so that a node restarted
 * without `--join` rejoins its cluster instead of founding a second one beside it.
 *
 * A node that founds a cluster restores every key group from the checkpoint store. If its cluster is
 * still running (the node was killed and is started again with its original command line), that would
 * split it in two, both writing the same store. So a node started without seeds first asks the members
 * it remembers, at the addresses it remembers: any that answers `/health` as that member is a seed.
 * Only when none answers (the whole cluster is down: a full restart) does it found the cluster.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface RememberedPeer {
  id: string;
  address: string;
}

const FILE = 'peers.json';
const PROBE_TIMEOUT_MS = 1000;

export function readRememberedPeers(dataDir: string): RememberedPeer[] {
  try {
    const value = JSON.parse(readFileSync(join(dataDir, FILE), 'utf8')) as { peers?: unknown };
    if (!Array.isArray(value.peers)) return [];
    return value.peers.filter((peer): peer is RememberedPeer => typeof peer?.id === 'string' && typeof peer?.address === 'string');
  } catch {
    return [];
  }
}

/** Replaces the file atomically (a crash mid-write leaves the previous list). */
export function writeRememberedPeers(dataDir: string, peers: readonly RememberedPeer[]): void {
  const path = join(dataDir, FILE);
  writeFileSync(`${path}.tmp`, JSON.stringify({ peers }, null, 2));
  renameSync(`${path}.tmp`, path);
}

/** The remembered peers that answer as themselves now (other members of a running cluster). */
export async function livePeers(peers: readonly RememberedPeer[], selfId: string): Promise<RememberedPeer[]> {
  const answers = await Promise.all(
    peers
      .filter((peer) => peer.id !== selfId)
      .map(async (peer) => {
        try {
          // /health names the node whether it serves (200) or not (503), and wants no admin token.
          const response = await fetch(`http://${peer.address}/health`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
          const body = (await response.json()) as { nodeId?: unknown };
          // Another process may have the port now: only the member itself counts.
          return body.nodeId === peer.id ? peer : null;
        } catch {
          return null;
        }
      }),
  );
  return answers.filter((peer): peer is RememberedPeer => peer !== null);
}
