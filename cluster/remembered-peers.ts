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
import { request as httpsRequest } from 'node:https';
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

/** A node's /health answer over TLS, its certificate checked against `ca` (fetch takes no CA). */
function healthOverTls(address: string, ca: Uint8Array | undefined): Promise<{ nodeId?: unknown }> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(`https://${address}/health`, { timeout: PROBE_TIMEOUT_MS, ...(ca === undefined ? {} : { ca: Buffer.from(ca) }) }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { nodeId?: unknown });
        } catch (error) {
          reject(error);
        }
      });
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end();
  });
}

/** The remembered peers that answer as themselves now (other members of a running cluster). `tls`: the nodes' ports speak TLS. */
export async function livePeers(peers: readonly RememberedPeer[], selfId: string, tls: { ca?: Uint8Array } | null = null): Promise<RememberedPeer[]> {
  const answers = await Promise.all(
    peers
      .filter((peer) => peer.id !== selfId)
      .map(async (peer) => {
        try {
          // /health names the node whether it serves (200) or not (503), and wants no admin token.
          const body =
            tls === null
              ? ((await (await fetch(`http://${peer.address}/health`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) })).json()) as { nodeId?: unknown })
              : await healthOverTls(peer.address, tls.ca);
          // Another process may have the port now: only the member itself counts.
          return body.nodeId === peer.id ? peer : null;
        } catch {
          return null;
        }
      }),
  );
  return answers.filter((peer): peer is RememberedPeer => peer !== null);
}
