/**
 * The node's HTTP port: admin endpoints (GET /health, GET /metrics; the cluster layer adds /cluster)
 * and WebSocket upgrades — clients on `/`, anything else offered to the cluster layer (peers).
 *
 * With TLS files (--tls-cert, --tls-key) the port speaks TLS: https:// and wss://, for clients, admin
 * and peers alike; `reloadTls()` reads the files again (a renewed certificate) without a restart.
 *
 * With an admin listener of its own (--admin-host, --admin-port), the node runs two of these: the
 * port for clients and peers (with /health, for load balancers) and the admin one (/health, /metrics,
 * /cluster, no upgrades).
 *
 * With an admin token, every admin endpoint but /health wants `Authorization: Bearer <token>` (401
 * otherwise): /health stays open for load balancers and says only whether the node serves, and why not.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import { StatecraftError } from '../../lib/errors.js';
import { KEY_GROUP_HASH } from '../../lib/key-group.js';
import type { ClusterHooks } from './cluster-port.js';
import type { Gateway } from './gateway.js';
import type { NodeMetrics } from './node-metrics.js';
import type { TlsFiles } from './options.js';
import { refuseUpgrade } from '../../lib/upgrade-refusal.js';

/** What admin HTTP needs of the main thread. */
export interface AdminHost {
  readonly closing: boolean;
  readonly nodeId: string;
  readonly keyGroups: number;
  readonly cluster: ClusterHooks | null;
  readonly gateway: Pick<Gateway, 'handleUpgrade'> | null;
  /** Checkpoints on: what this node coordinated (null: checkpoints off). */
  readonly checkpointing: { readonly totals: { committed: number; failed: number; dropped: number }; readonly figures: { ageSeconds: number; consecutiveFailures: number } } | null;
  metricsNow(): NodeMetrics;
  /** Why the node is not healthy (empty: it is). */
  problems(): string[];
}

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();


function readTls(files: TlsFiles): { cert: Buffer; key: Buffer; ca?: Buffer } {
  const read = (what: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new StatecraftError('SC_ERR_INVALID_OPTION', `the TLS ${what} ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
  };
  return { cert: read('certificate', files.cert), key: read('key', files.key), ...(files.clientCa === undefined ? {} : { ca: read('client CA', files.clientCa) }) };
}

export class AdminHttp {
  private readonly server: Server;
  /** The admin token's digest (compared digest to digest, in constant time), or null: no token. */
  private readonly tokenDigest: Buffer | null;
  /** Admin requests refused for a missing or wrong token. */
  refused = 0;
  /** Where the server listens, once it does. */
  address: { host: string; port: number } | null = null;

  constructor(
    private readonly main: AdminHost,
    adminToken: string | null = null,
    private readonly tls: TlsFiles | null = null,
    /** What this listener serves: admin endpoints (/metrics, /cluster) and upgrades (clients, peers); /health always. Null adminAt: both. */
    private readonly role: { admin: boolean; upgrades: boolean; adminAt: string | null } = { admin: true, upgrades: true, adminAt: null },
  ) {
    this.tokenDigest = adminToken === null ? null : digest(adminToken);
    const handler = (request: IncomingMessage, response: ServerResponse) => this.serve(request, response);
    if (tls === null) this.server = createServer(handler);
    else {
      try {
        // Peers with mutual TLS present certificates of clientCa: asked of every connection, checked on
        // the peer path only (peer-network.ts); clients without one are served as before.
        this.server = createTlsServer({ ...readTls(tls), ...(tls.clientCa === undefined ? {} : { requestCert: true, rejectUnauthorized: false }) }, handler);
      } catch (error) {
        if (error instanceof StatecraftError) throw error;
        throw new StatecraftError('SC_ERR_INVALID_OPTION', `the TLS certificate ${tls.cert} and key ${tls.key} do not make a TLS server: ${(error as Error).message}`);
      }
    }
    this.server.on('upgrade', (request, socket, head) => {
      if (!this.role.upgrades) {
        refuseUpgrade(socket, 404);
        return;
      }
      if (main.closing) {
        refuseUpgrade(socket, 503);
        return;
      }
      const path = (request.url ?? '/').split('?')[0];
      const refusal = path === '/' || path === '' ? (main.cluster?.refusesClients() ?? null) : null;
      if (refusal !== null) {
        refuseUpgrade(socket, 503, { error: refusal, nodeId: main.nodeId });
        return;
      }
      if (path === '/' || path === '') main.gateway!.handleUpgrade(request, socket, head);
      else if (!main.cluster?.upgrade(request, socket, head)) refuseUpgrade(socket, 404);
    });
  }

  async listen(port: number, host: string): Promise<void> {
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const bound = server.address();
    if (bound === null || typeof bound === 'string') throw new StatecraftError('SC_ERR_INTERNAL', 'the server has no TCP address');
    this.address = { host, port: bound.port };
  }

  /** Whether the port speaks TLS. */
  get secure(): boolean {
    return this.tls !== null;
  }

  /** `http://host:port` (https with TLS), once it listens. */
  get origin(): string {
    const { host, port } = this.address!;
    return `${this.secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** Reads the TLS files again (a renewed certificate): new connections use them; a bad pair keeps the old. */
  reloadTls(): void {
    if (this.tls === null) throw new StatecraftError('SC_ERR_INVALID_OPTION', 'this node has no TLS files to reload (start it with --tls-cert and --tls-key)');
    try {
      (this.server as TlsServer).setSecureContext(readTls(this.tls));
    } catch (error) {
      if (error instanceof StatecraftError) throw error;
      throw new StatecraftError('SC_ERR_INVALID_OPTION', `the TLS certificate ${this.tls.cert} and key ${this.tls.key} were not taken (the old ones stay): ${(error as Error).message}`);
    }
  }

  /** Stops accepting connections; resolves once the server is closed (after closeConnections). */
  close(): Promise<void> {
    if (!this.server.listening) return Promise.resolve();
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  closeConnections(): void {
    this.server.closeAllConnections();
  }

  private authorized(request: IncomingMessage): boolean {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '');
    return match !== null && timingSafeEqual(digest(match[1]!), this.tokenDigest!);
  }

  private serve(request: IncomingMessage, response: ServerResponse): void {
    const main = this.main;
    const path = (request.url ?? '/').split('?')[0];
    if (!this.role.admin && path !== '/health') {
      response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `admin endpoints are served at ${this.role.adminAt} (--admin-host), not on the client port`, paths: ['/health', 'ws:// (clients)'] }));
      return;
    }
    if (this.tokenDigest !== null && path !== '/health' && !this.authorized(request)) {
      this.refused++;
      response
        .writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="statecraft admin"' })
        .end(JSON.stringify({ error: 'this node\'s admin endpoints want its admin token: Authorization: Bearer <token> (the node\'s --admin-token-file)' }));
      return;
    }
    // The cluster layer answers first: /cluster, and /health while the node is not serving.
    if (main.cluster?.http(request, response)) return;
    if (request.method === 'GET' && path === '/health') {
      const problems = main.closing ? [] : main.problems();
      const status = main.closing ? 'stopping' : problems.length > 0 ? 'unhealthy' : 'ok';
      const body = JSON.stringify({ status, nodeId: main.nodeId, ...(problems.length > 0 ? { problems } : {}) });
      response.writeHead(status === 'ok' ? 200 : 503, { 'content-type': 'application/json' }).end(body);
      return;
    }
    if (request.method === 'GET' && path === '/metrics') {
      const metrics = main.metricsNow();
      const lines = Object.entries(metrics).map(([name, value]) => `statecraft_${snakeCase(name)} ${value}`);
      lines.push(`statecraft_key_groups ${main.keyGroups}`);
      lines.push(`statecraft_admin_requests_refused_total ${this.refused}`);
      lines.push(`# key group hash: ${KEY_GROUP_HASH}`);
      const checkpoints = main.checkpointing?.totals;
      if (checkpoints !== undefined) {
        // Counted by the node while it leads; summed over the cluster's nodes they count each checkpoint once.
        lines.push(`statecraft_checkpoints_committed_total ${checkpoints.committed}`);
        lines.push(`statecraft_checkpoints_failed_total ${checkpoints.failed}`);
        lines.push(`statecraft_checkpoints_dropped_total ${checkpoints.dropped}`);
        const figures = main.checkpointing!.figures;
        lines.push(`statecraft_checkpoint_age_seconds ${figures.ageSeconds}`);
        lines.push(`statecraft_checkpoint_failures_consecutive ${figures.consecutiveFailures}`);
      }
      if (main.cluster) lines.push(...main.cluster.metrics());
      response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(lines.join('\n') + '\n');
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not found', paths: ['/health', '/metrics', '/cluster', 'ws:// (clients)'] }));
  }
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter, index: number) => (index === 0 ? '' : '_') + letter.toLowerCase());
}
