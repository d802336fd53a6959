#!/usr/bin/env node
/**
 * Starts one Statecraft node, alone or as a member of a cluster.
 *
 *   node cluster/start.js --functions examples/greeter/functions.js --port 8080
 *   node cluster/start.js --functions examples/greeter/functions.js --port 8081 --join 127.0.0.1:8080
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { EndpointTable, applyEndpointFlag, parseEndpointFlag, parseModuleYaml, type EndpointSpec } from '../node/remote/remote-endpoints.js';
import { availableParallelism } from 'node:os';
import { startNode, type StatecraftNode } from '../node/main/start-node.js';
import { ClientTokens } from '../node/main/client-tokens.js';
import { StatecraftError } from '../lib/errors.js';
import { ClusterNode, type MembershipTuning } from './cluster-node.js';
import { openNodeIdentity, type NodeIdentity } from './node-identity.js';
import { resolveClusterSecret, type ClusterSecret } from './cluster-secret.js';
import { livePeers, readRememberedPeers, writeRememberedPeers } from './remembered-peers.js';

const HELP = `Usage: node cluster/start.js --functions <module.js> [options]

Starts a Statecraft node: shard worker threads running your functions, and a WebSocket
endpoint for clients. Prints one line with "ready" and the node's ws:// URL once it serves.

Options:
  --functions <module>        ES module exporting function definitions (repeatable, or
                              comma-separated). Required unless every type is remote.
  --port <n>                  TCP port for clients and admin HTTP (0: the OS chooses).
                              Default 8080.
  --host <address>            Interface to listen on. Default 127.0.0.1.
  --shards <n>                Shard worker threads. Default: one per core (${availableParallelism()} here).
  --key-groups <n>            Number of key groups K; fixed for the life of a cluster's
                              state. Default 1024.
  --value-bytes-max <n>       Largest value (message, state, egress record). Default 1048576.
  --id-bytes-max <n>          Longest address id in UTF-8 bytes. Default 1024.
  --ring-bytes <n>            Bytes per ring between two threads (power of two). Default 4194304.
  --egress-retain <n>         Records kept per egress for late or lagging subscribers.
                              Default 10000.
  --backlog-max <n>           Queued messages per node above which client events wait. Default 100000.
  --delayed-pending-max <n>   Delayed messages one instance may have pending; an invocation that
                              would leave more fails whole (SC_ERR_LIMIT_REACHED). Default 100000.
  --handler-timeout <ms>      How long an async handler may run; past it the invocation is
                              abandoned (effects discarded, a dead letter SC_ERR_HANDLER_TIMEOUT)
                              and its address goes on. Default 10000.
  --client-connections-max <n>
                              Client connections taken at once; more get HTTP 503 (clients
                              go to another node). Default 10000.
  --tls-cert <path>           PEM certificate chain: the port speaks TLS (wss://, https://), for
                              clients, admin and peers. SIGHUP reads it and the key again.
  --tls-key <path>            PEM private key of --tls-cert.
  --tls-ca <path>             PEM CA bundle the other nodes' certificates are checked against
                              (peers dial each other with wss://). Default: the system's CAs.
  --peer-tls-cert <path>, --peer-tls-key <path>, --peer-tls-ca <path>
                              Mutual TLS between nodes (with --tls-cert): a node presents this
                              certificate when it dials a peer, and takes a peer connection
                              only with a certificate of --peer-tls-ca. Clients need none.
  --admin-host <address>      Serve /metrics and /cluster on a listener of their own at this
                              interface (127.0.0.1, say); the client port keeps clients, peers
                              and /health. Default: all on the client port.
  --admin-port <n>            The admin listener's port (0: the OS chooses). Default 0.
  --admin-token-file <path>   Admin endpoints (/metrics, /cluster; not /health) want this token as
                              Authorization: Bearer <token>. Default: they are open.
  --client-tokens-file <path> Only clients with one of these tokens connect (connect(url, { token })),
                              each within its scopes: one token per line, then optional
                              send=<namespace>/*,<namespace>/<type> and subscribe=<egress>,...
                              Default: every client is taken.

Exactly-once (checkpoints):
  --checkpoint-store <url>    Where consistent checkpoints go: file://./dir (relative to the
                              working directory), file:///abs/dir, or s3://bucket/prefix. Every
                              node of a cluster must name the same store. "off": no checkpoints
                              (state and unreleased egress of a crashed node are lost).
                              Default file://./data/checkpoints.
  --s3-endpoint <url>         S3-compatible server for s3:// stores (MinIO, s3rver), e.g.
                              http://127.0.0.1:9000; path-style addressing. Credentials come from
                              AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS config files.
  --s3-region <region>        Region for s3:// stores. Default AWS_REGION, else us-east-1.
  --checkpoint-interval <ms>  How often the leader starts a checkpoint. Default 1000. Egress
                              records and client confirmations wait for the next commit.
  --checkpoint-retain <n>     Committed checkpoints kept in the store. Default 3.

Remote functions (StateFun's HTTP request-reply protocol; any StateFun SDK, or
node cluster/serve.js):
  --endpoint <types=url>      Serve function types over HTTP (repeatable), e.g.
                              'shop/*=http://127.0.0.1:8000/' (a namespace),
                              'shop/cart=https://fn.example.com/cart' (one type),
                              'shop/*=http+unix:///run/fn.sock/' (a unix socket). A type
                              beats its namespace. {function.name} in the URL is replaced.
  --module <module.yaml>      StateFun module file: its io.statefun.endpoints.v2/http (and
                              v1) definitions, with urlPathTemplate, maxNumBatchRequests and
                              transport timeouts (repeatable). Other kinds are ignored.
  --endpoint-ca <types=path>  PEM CA certificates an https endpoint's certificate is checked
                              against (default: the system's), e.g. 'shop/*=/etc/ca.pem'.
  --endpoint-cert <types=path>, --endpoint-key <types=path>
                              A client certificate and key the node presents to the endpoint.
  --endpoint-header <'types=Name: value'>
                              A header sent with every request (repeatable), e.g.
                              'shop/*=Authorization: Bearer …'. In a module file: transport
                              trust_cacerts, client_cert, client_key and headers.
  --remote-backlog-max <n>    Messages one remote address may have waiting for its endpoint
                              before more become dead letters. Default 100000.
  --remote-attempts-max <n>   Calls of one message that may fail for an outage of its endpoint
                              before it becomes a dead letter; until then it waits, in order,
                              and is sent again with back-off. Default 0: no limit.

Cluster:
  --join <host:port,...>      Seed nodes to join (repeatable, or comma-separated). Without
                              seeds the node forms a cluster of one that others may join.
  --node-id <id>              This node's stable id. Default: generated once and kept in
                              the data directory.
  --data-dir <path>           Where the node keeps its id (and, later, its data). One per
                              node. Default ./data/node.
  --cluster-secret-file <path>
                              The secret every node of the cluster shares: peers prove they
                              hold it before anything they send is read. Default: the
                              environment's STATECRAFT_CLUSTER_SECRET, else <data dir>/cluster-secret,
                              generated the first time a node founds a cluster (copy it to the
                              nodes that join). A node given --join needs one.
  --advertise <host:port>     The address other nodes reach this node at. Default: --host
                              and the bound port.
  --probe-interval <ms>       Failure-detector probe period. Default 200.
  --probe-timeout <ms>        Wait for a direct probe's answer before probing indirectly.
                              Default 100.
  --indirect-probes <k>       Members asked to probe on this node's behalf. Default 3.
  --suspicion-multiplier <n>  Minimum suspicion timeout, in probe periods (scaled by
                              log10 of the cluster size). Default 4.
  --stop-timeout <ms>         Longest graceful stop (SIGTERM): past it the node says what
                              it was still waiting for and exits. What it had not committed
                              is not durable; clients re-send it. Default 25000 (below the
                              30 s a Kubernetes pod gets).

  -h, --help                  Show this help.

Environment: STATECRAFT_<OPTION> (e.g. STATECRAFT_PORT=9000) sets any option not given as a flag.

Admin HTTP on the same port: GET /health, GET /metrics, GET /cluster. Peers connect to
ws://host:port/peer. With --join, "ready" is printed once the node has joined and serves.
SIGTERM or SIGINT stops the node cleanly: it stops admitting events, lets the shards finish
what they accepted, hands its key groups over (in a cluster) or takes a final checkpoint (alone,
or with every other member when the whole cluster stops at once),
delivers the last egress records and exits 0.
`;

function fail(message: string): never {
  process.stderr.write(`statecraft: ${message}\nRun with --help for the options.\n`);
  process.exit(2);
}

/** A file a flag names, or a clear exit when it cannot be read. */
function readFlagFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    fail(`--${flag} ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

function integer(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) fail(`--${name} must be a whole number, got "${text}"`);
  return Number(text);
}

const optionNames = [
  'functions',
  'port',
  'host',
  'shards',
  'key-groups',
  'value-bytes-max',
  'id-bytes-max',
  'ring-bytes',
  'egress-retain',
  'backlog-max',
  'delayed-pending-max',
  'handler-timeout',
  'client-tokens-file',
  'admin-token-file',
  'client-connections-max',
  'tls-cert',
  'tls-key',
  'tls-ca',
  'admin-host',
  'admin-port',
  'peer-tls-cert',
  'peer-tls-key',
  'peer-tls-ca',
  'join',
  'node-id',
  'data-dir',
  'cluster-secret-file',
  'advertise',
  'probe-interval',
  'probe-timeout',
  'indirect-probes',
  'suspicion-multiplier',
  'stop-timeout',
  'checkpoint-store',
  's3-endpoint',
  's3-region',
  'checkpoint-interval',
  'checkpoint-retain',
  'endpoint',
  'module',
  'remote-backlog-max',
  'remote-attempts-max',
] as const;

function hostPort(name: string, text: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text.trim());
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) fail(`--${name} takes host:port (like 127.0.0.1:8080), got "${text}"`);
  return text.trim();
}

function fromEnvironment(name: string): string | undefined {
  return process.env[`STATECRAFT_${name.toUpperCase().replace(/-/g, '_')}`];
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        functions: { type: 'string', multiple: true },
        port: { type: 'string' },
        host: { type: 'string' },
        shards: { type: 'string' },
        'key-groups': { type: 'string' },
        'value-bytes-max': { type: 'string' },
        'id-bytes-max': { type: 'string' },
        'ring-bytes': { type: 'string' },
        'egress-retain': { type: 'string' },
        'backlog-max': { type: 'string' },
        'delayed-pending-max': { type: 'string' },
        'handler-timeout': { type: 'string' },
        'client-tokens-file': { type: 'string' },
        'admin-token-file': { type: 'string' },
        'client-connections-max': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        'admin-host': { type: 'string' },
        'peer-tls-cert': { type: 'string' },
        'peer-tls-key': { type: 'string' },
        'peer-tls-ca': { type: 'string' },
        'admin-port': { type: 'string' },
        join: { type: 'string', multiple: true },
        'node-id': { type: 'string' },
        'data-dir': { type: 'string' },
        'cluster-secret-file': { type: 'string' },
        advertise: { type: 'string' },
        'probe-interval': { type: 'string' },
        'probe-timeout': { type: 'string' },
        'indirect-probes': { type: 'string' },
        'suspicion-multiplier': { type: 'string' },
        'stop-timeout': { type: 'string' },
        'checkpoint-store': { type: 'string' },
        's3-endpoint': { type: 'string' },
        's3-region': { type: 'string' },
        'checkpoint-interval': { type: 'string' },
        'checkpoint-retain': { type: 'string' },
        endpoint: { type: 'string', multiple: true },
        'endpoint-ca': { type: 'string', multiple: true },
        'endpoint-cert': { type: 'string', multiple: true },
        'endpoint-key': { type: 'string', multiple: true },
        'endpoint-header': { type: 'string', multiple: true },
        module: { type: 'string', multiple: true },
        'remote-backlog-max': { type: 'string' },
        'remote-attempts-max': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    fail((error as Error).message);
  }
  const values = parsed.values;
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const get = (name: Exclude<(typeof optionNames)[number], 'functions' | 'join' | 'endpoint' | 'module'>): string | undefined =>
    (values[name] as string | undefined) ?? fromEnvironment(name);
  const seeds = (values.join ?? (fromEnvironment('join') ? [fromEnvironment('join')!] : []))
    .flatMap((entry) => entry.split(','))
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0)
    .map((entry) => hostPort('join', entry));
  const advertiseFlag = get('advertise');
  if (advertiseFlag !== undefined) hostPort('advertise', advertiseFlag);
  const tuning: MembershipTuning = {};
  const probeInterval = integer('probe-interval', get('probe-interval'));
  const probeTimeout = integer('probe-timeout', get('probe-timeout'));
  const indirectProbes = integer('indirect-probes', get('indirect-probes'));
  const suspicionMultiplier = integer('suspicion-multiplier', get('suspicion-multiplier'));
  if (probeInterval !== undefined) tuning.probeIntervalMs = probeInterval < 10 ? fail('--probe-interval must be at least 10 ms') : probeInterval;
  if (probeTimeout !== undefined) tuning.probeTimeoutMs = probeTimeout < 1 ? fail('--probe-timeout must be at least 1 ms') : probeTimeout;
  if (indirectProbes !== undefined) tuning.indirectProbes = indirectProbes;
  if (suspicionMultiplier !== undefined) tuning.suspicionMultiplier = suspicionMultiplier < 1 ? fail('--suspicion-multiplier must be at least 1') : suspicionMultiplier;
  if ((tuning.probeTimeoutMs ?? 100) >= (tuning.probeIntervalMs ?? 200)) fail('--probe-timeout must be shorter than --probe-interval');
  const stopTimeoutMs = integer('stop-timeout', get('stop-timeout')) ?? 25_000;
  if (stopTimeoutMs < 1) fail('--stop-timeout must be at least 1 ms');

  let identity: NodeIdentity;
  try {
    identity = openNodeIdentity(get('data-dir') ?? 'data/node', get('node-id'));
  } catch (error) {
    if (error instanceof StatecraftError) fail(error.message);
    throw error;
  }
  const functions = (values.functions ?? (fromEnvironment('functions') ? [fromEnvironment('functions')!] : []))
    .flatMap((entry) => entry.split(','))
    .map((entry) => entry.trim())
    .filter((entry) => entry.length > 0);
  const endpoints: EndpointSpec[] = [];
  try {
    for (const flag of values.endpoint ?? fromEnvironment('endpoint')?.split(/\s+/).filter(Boolean) ?? []) endpoints.push(parseEndpointFlag(flag));
    for (const path of values.module ?? fromEnvironment('module')?.split(',').filter(Boolean) ?? []) {
      const module = parseModuleYaml(readFlagFile('module', path).toString('utf8'), path);
      endpoints.push(...module.endpoints);
      for (const ignored of module.ignored) process.stderr.write(`statecraft: ${path}: ignored ${ignored}\n`);
    }
    for (const flag of ['ca', 'cert', 'key', 'header'] as const) {
      for (const text of (values[`endpoint-${flag}`] as string[] | undefined) ?? []) applyEndpointFlag(endpoints, flag, text);
    }
    for (const spec of endpoints) {
      if ((spec.tls?.cert === undefined) !== (spec.tls?.key === undefined)) fail(`endpoint ${spec.functions}: --endpoint-cert and --endpoint-key go together`);
    }
    new EndpointTable(endpoints); // a type defined twice fails here, before anything starts
  } catch (error) {
    if (error instanceof StatecraftError) fail(error.message);
    throw error;
  }
  if (functions.length === 0 && endpoints.length === 0) {
    fail('--functions <module.js> is required (the ES module(s) exporting your function definitions), unless --endpoint or --module serve every type remotely');
  }

  const tlsCert = get('tls-cert');
  const tlsKey = get('tls-key');
  const tlsCaFile = get('tls-ca');
  if ((tlsCert === undefined) !== (tlsKey === undefined)) fail('--tls-cert and --tls-key go together');
  if (tlsCaFile !== undefined && tlsCert === undefined) fail('--tls-ca checks the other nodes\' certificates: it needs --tls-cert and --tls-key');
  const tlsCa = tlsCaFile === undefined ? undefined : readFlagFile('tls-ca', tlsCaFile);
  const peerFiles = (['peer-tls-cert', 'peer-tls-key', 'peer-tls-ca'] as const).map((name) => get(name));
  if (peerFiles.some((file) => file !== undefined) && peerFiles.some((file) => file === undefined)) fail('--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together');
  if (peerFiles[0] !== undefined && tlsCert === undefined) fail('mutual TLS between nodes rides the TLS port: give --tls-cert and --tls-key too');
  const mutual = peerFiles[0] === undefined ? {} : { cert: readFlagFile('peer-tls-cert', peerFiles[0]), key: readFlagFile('peer-tls-key', peerFiles[1]!), requireClientCert: true };
  const peerTls = tlsCert === undefined ? null : { ...(tlsCa === undefined ? {} : { ca: tlsCa }), ...mutual };

  if (seeds.length === 0) {
    // Started without --join: if the cluster this node was part of still runs, rejoin it instead of
    // founding a second one (which would restore every key group from the store beside it).
    const live = await livePeers(readRememberedPeers(identity.dataDir), identity.nodeId, peerTls);
    if (live.length > 0) {
      seeds.push(...live.map((peer) => peer.address));
      process.stderr.write(`statecraft: ${live.map((peer) => peer.id).join(', ')} of this node's last cluster answer: rejoining it (remembered in ${identity.dataDir}/peers.json; give --join to choose)\n`);
    }
  }
  const checkpointStore = get('checkpoint-store') ?? 'file://./data/checkpoints';
  const checkpointInterval = integer('checkpoint-interval', get('checkpoint-interval'));
  if (checkpointInterval !== undefined && checkpointInterval < 10) fail('--checkpoint-interval must be at least 10 ms');
  const checkpointRetain = integer('checkpoint-retain', get('checkpoint-retain'));
  if (checkpointRetain !== undefined && checkpointRetain < 1) fail('--checkpoint-retain must be at least 1');
  const s3Endpoint = get('s3-endpoint');
  if (s3Endpoint !== undefined && !/^https?:\/\/[^/\s]+/.test(s3Endpoint)) fail(`--s3-endpoint takes a URL like http://127.0.0.1:9000, got "${s3Endpoint}"`);
  const checkpointsOff = checkpointStore === 'off' || checkpointStore === 'none';
  if (checkpointsOff && (s3Endpoint !== undefined || checkpointInterval !== undefined)) fail('--checkpoint-store off turns checkpoints off; drop --s3-endpoint and --checkpoint-interval');

  const tokensFile = get('client-tokens-file');
  let clientTokens: ClientTokens | undefined;
  if (tokensFile !== undefined) {
    try {
      clientTokens = ClientTokens.parse(readFlagFile('client-tokens-file', tokensFile).toString('utf8'), `--client-tokens-file ${tokensFile}`);
    } catch (error) {
      if (error instanceof StatecraftError) fail(error.message);
      throw error;
    }
  }

  const adminTokenFile = get('admin-token-file');
  const adminToken = adminTokenFile === undefined ? undefined : readFlagFile('admin-token-file', adminTokenFile).toString('utf8').trim();
  if (adminToken !== undefined && adminTokenFile !== undefined) {
    if (adminToken.length < 16 || /\s/.test(adminToken)) fail(`--admin-token-file ${adminTokenFile}: the token needs at least 16 characters and no spaces (make one with: openssl rand -hex 16)`);
  }


  let secret: ClusterSecret;
  try {
    secret = resolveClusterSecret({ file: get('cluster-secret-file'), value: process.env.STATECRAFT_CLUSTER_SECRET, dataDir: identity.dataDir, joining: seeds.length > 0 });
  } catch (error) {
    identity.release();
    if (error instanceof StatecraftError) fail(error.message);
    throw error;
  }
  if (secret.warning !== null) process.stderr.write(`statecraft: warning: ${secret.warning}\n`);
  if (secret.generated) {
    process.stderr.write(`statecraft: no cluster secret given: generated one in ${secret.source}; start the nodes that join this one with --cluster-secret-file naming a copy of it\n`);
  }
  let node: StatecraftNode;
  try {
    node = await startNode({
      ...(tlsCert === undefined ? {} : { tls: { cert: tlsCert, key: tlsKey!, ...(peerFiles[2] === undefined ? {} : { clientCa: peerFiles[2] }) } }),
      ...(clientTokens === undefined ? {} : { clientTokens }),
      ...(adminToken === undefined ? {} : { adminToken }),
      clientConnectionsMax: integer('client-connections-max', get('client-connections-max')),
      ...(get('admin-host') === undefined ? {} : { adminHost: get('admin-host')!, adminPort: integer('admin-port', get('admin-port')) ?? 0 }),
      functions,
      port: integer('port', get('port')) ?? 8080,
      host: get('host') ?? '127.0.0.1',
      shards: integer('shards', get('shards')),
      keyGroups: integer('key-groups', get('key-groups')),
      valueBytesMax: integer('value-bytes-max', get('value-bytes-max')),
      idBytesMax: integer('id-bytes-max', get('id-bytes-max')),
      ringBytes: integer('ring-bytes', get('ring-bytes')),
      egressRetainRecords: integer('egress-retain', get('egress-retain')),
      backlogMax: integer('backlog-max', get('backlog-max')),
      delayedPendingMax: integer('delayed-pending-max', get('delayed-pending-max')),
      handlerTimeoutMs: integer('handler-timeout', get('handler-timeout')),
      endpoints,
      remoteBacklogMax: integer('remote-backlog-max', get('remote-backlog-max')),
      remoteAttemptsMax: integer('remote-attempts-max', get('remote-attempts-max')),
      nodeId: identity.nodeId,
      ...(checkpointsOff
        ? {}
        : {
            checkpoints: {
              store: checkpointStore,
              ...(s3Endpoint === undefined ? {} : { s3Endpoint }),
              ...(get('s3-region') === undefined ? {} : { s3Region: get('s3-region')! }),
              ...(checkpointInterval === undefined ? {} : { intervalMs: checkpointInterval }),
              ...(checkpointRetain === undefined ? {} : { retain: checkpointRetain }),
              // A node that joins gets its key groups by hand-over; the first node restores them all.
              restore: seeds.length === 0,
            },
          }),
    });
  } catch (error) {
    identity.release();
    if (error instanceof StatecraftError) fail(error.message);
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') fail(`port ${get('port') ?? 8080} is in use; choose another with --port (0 lets the OS choose)`);
    throw error;
  }
  const loopback = (host: string) => host === 'localhost' || host === '::1' || host.startsWith('127.');
  if (!loopback(node.host) && get('admin-host') === undefined && adminToken === undefined) {
    process.stderr.write(`statecraft: warning: --host ${node.host} makes /metrics and /cluster readable from the network without a token: give --admin-token-file, or --admin-host 127.0.0.1\n`);
  }
  if (get('admin-host') !== undefined) process.stderr.write(`statecraft: admin endpoints at ${node.adminUrl}\n`);
  const advertise = advertiseFlag ?? `${node.host.includes(':') ? `[${node.host}]` : node.host}:${node.port}`;
  const log = (line: string) => process.stderr.write(line + '\n');
  const cluster = new ClusterNode({
    node,
    nodeId: node.nodeId,
    address: advertise,
    seeds,
    secret: secret.secret,
    tls: peerTls,
    tuning,
    log,
    onView: (members) => writeRememberedPeers(identity.dataDir, members),
    onRefused: (reason) => {
      process.stderr.write(`statecraft: this node cannot join the cluster: ${reason}\n`);
      identity.release();
      process.exit(2);
    },
  });
  // Installed before the ready line: a SIGTERM as soon as it is printed (or while joining) stops cleanly.
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      process.stderr.write(`statecraft: ${signal} again: exiting now\n`);
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`statecraft: ${signal} received, stopping\n`);
    let step = 'handing key groups over';
    setTimeout(() => {
      process.stderr.write(`statecraft: the stop took longer than --stop-timeout ${stopTimeoutMs} ms (still ${step}): exiting now; what was not committed is not durable, and clients re-send it\n`);
      identity.release();
      process.exit(0);
    }, stopTimeoutMs).unref();
    cluster
      .leave()
      .then(() => ((step = 'closing the node: its shards, the final checkpoint, the last egress'), node.close()))
      .then(() => ((step = 'waiting for the peers to acknowledge the last frames'), cluster.close()))
      .then(
      () => {
        identity.release();
        process.stderr.write('statecraft: stopped\n');
        process.exit(0);
      },
      (error: Error) => {
        process.stderr.write(`statecraft: error while stopping: ${error.stack ?? error.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGHUP', () => {
    if (!node.secure) return void process.stderr.write('statecraft: SIGHUP: no TLS files to reload (the node runs without --tls-cert)\n');
    try {
      node.reloadTls();
      process.stderr.write(`statecraft: SIGHUP: reloaded the TLS certificate ${tlsCert} and key\n`);
    } catch (error) {
      process.stderr.write(`statecraft: SIGHUP: ${(error as Error).message}\n`);
    }
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (seeds.length > 0) process.stderr.write(`statecraft: joining through ${seeds.join(', ')} as ${node.nodeId} (${advertise})\n`);
  await cluster.whenServing();
  process.stdout.write(
    `statecraft node ready ${node.url} (node ${node.nodeId}, ${node.shards} shards, ${node.keyGroups} key groups, ` +
      `${seeds.length > 0 ? `joined through ${seeds.join(',')}` : 'cluster of one until others join'}, functions: ${node.functions.join(', ')})\n`,
  );
}

await main();
