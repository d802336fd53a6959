// test-exclusive
// TLS on the node's port (issue 14, item 2): with a CA and certificates made by openssl in the test,
// two real nodes form a cluster over wss:// (peers check each other's certificate against the CA), a
// client with the CA sends and reads egress over wss://, admin answers over https://, a client without
// the CA is refused, and SIGHUP takes a renewed certificate without a restart.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Client, type StatecraftError } from 'statecraft';
import { eventually, fixture, killNodeProcesses, startClusterProcesses, subscribed, take, type NodeProcess } from '../helpers.js';
import { counted } from '../fixtures/functions.js';
import { probe, requireTool } from '../requirements.js';
import { WebSocket } from 'ws';

const hasOpenssl = probe('openssl', ['version']);
const dir = mkdtempSync(join(tmpdir(), 'statecraft-tls-'));
const clients: Client[] = [];
let nodes: NodeProcess[] = [];

const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });

/** A certificate for 127.0.0.1 signed by the test CA `ca`, written to `name`.pem and `name`.key. */
function issue(name: string, ca = 'ca'): void {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=127.0.0.1');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'san.ext');
}

function makeCa(name: string): void {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=statecraft-test-${name}`);
}

/** The HTTP status a WebSocket upgrade to the peer path gets, or 101 when it is taken. */
function peerUpgrade(port: number, options: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`wss://127.0.0.1:${port}/peer`, { perMessageDeflate: false, ...options });
    socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
    socket.once('open', () => {
      socket.terminate();
      resolve(101);
    });
    socket.once('error', reject);
  });
}

/** The serial number of the certificate a TLS server at `port` presents now. */
function servedSerial(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.end();
    });
    socket.on('error', reject);
  });
}

function httpsGet(port: number, path: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request({ host: '127.0.0.1', port, path, ca }, (response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString()));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

test.after.each(async () => {
  for (const client of clients.splice(0)) await client.close({ timeoutMs: 1000 }).catch(() => undefined);
  killNodeProcesses();
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('TLS on every path: peers over wss:// checked against the CA, a client with the CA, admin over https; a client without the CA is refused; SIGHUP takes a renewed certificate', async () => {
  if (!requireTool(hasOpenssl, 'openssl (to make the test CA)', 'apt-get install openssl')) return;
  makeCa('ca');
  issue('node');
  const ca = readFileSync(join(dir, 'ca.pem'));
  const tls = ['--tls-cert', join(dir, 'node.pem'), '--tls-key', join(dir, 'node.key'), '--tls-ca', join(dir, 'ca.pem')];
  nodes = await startClusterProcesses(2, ['--functions', fixture('functions'), '--port', '0', '--shards', '1', '--key-groups', '64', ...tls]);
  assert.ok(nodes.every((node) => node.url.startsWith('wss://127.0.0.1:')), nodes.map((node) => node.url).join(' '));

  // The two nodes reached each other over wss:// (the peer path is on the TLS port): one view of two.
  const status = async (node: NodeProcess) => JSON.parse((await httpsGet(node.port, '/cluster', ca)).body) as { serving: boolean; view: string[] };
  await eventually(async () => (await Promise.all(nodes.map(status))).every((each) => each.serving && each.view.length === 2), 'the nodes form one view over TLS', 20_000);

  // A client with the CA, through both nodes: events reach counters on either node, egress comes back.
  const client = await connect(nodes.map((node) => node.url), { ca });
  clients.push(client);
  const counts = client.subscribe('counts', { type: counted });
  await subscribed(counts);
  const ids = Array.from({ length: 8 }, (_, index) => `tls-${index}`);
  await Promise.all(ids.map((id) => client.send({ typename: 'test/counter', id }, 1)));
  const records = await take(counts, ids.length);
  assert.equal(records.map((record) => record.value.id).sort(), [...ids].sort());

  // Without the CA the node's certificate is not trusted.
  const refused = await connect(nodes[0]!.url, { connectTimeoutMs: 3000 }).then(
    () => null,
    (error: StatecraftError) => error,
  );
  assert.is(refused?.code, 'SC_ERR_CONNECT_FAILED');
  assert.match(refused!.message, /certificate/);
  // Plain HTTP on the TLS port gets nowhere.
  const plain = await fetch(`http://127.0.0.1:${nodes[0]!.port}/health`).then(
    (response) => response.status,
    () => 'failed',
  );
  assert.is(plain, 'failed');
  assert.is((await httpsGet(nodes[0]!.port, '/health', ca)).status, 200);

  // A renewed certificate: new files, SIGHUP, and new connections see it.
  const before = await servedSerial(nodes[0]!.port, ca);
  issue('node');
  nodes[0]!.kill('SIGHUP');
  await eventually(() => /SIGHUP: reloaded the TLS certificate/.test(nodes[0]!.output()), 'the node reloads its certificate');
  const after = await servedSerial(nodes[0]!.port, ca);
  assert.is.not(after, before, 'the renewed certificate is served');
  // The cluster and the client go on.
  await client.send({ typename: 'test/counter', id: 'after-renewal' }, 1);
  assert.is((await take(counts, 1))[0]!.value.id, 'after-renewal');
  assert.ok((await status(nodes[1]!)).serving);
});

test('mutual TLS between nodes: a node presents its peer certificate when it dials; a peer connection without a certificate of the peer CA is refused before the upgrade; clients need none', async () => {
  if (!requireTool(hasOpenssl, 'openssl (to make the test CA)', 'apt-get install openssl')) return;
  makeCa('peer-ca');
  issue('peer', 'peer-ca');
  const ca = readFileSync(join(dir, 'ca.pem'));
  const file = (name: string) => join(dir, name);
  const tls = ['--tls-cert', file('node.pem'), '--tls-key', file('node.key'), '--tls-ca', file('ca.pem'), '--peer-tls-cert', file('peer.pem'), '--peer-tls-key', file('peer.key'), '--peer-tls-ca', file('peer-ca.pem')];
  nodes = await startClusterProcesses(2, ['--functions', fixture('functions'), '--port', '0', '--shards', '1', '--key-groups', '64', ...tls]);
  const status = async (node: NodeProcess) => JSON.parse((await httpsGet(node.port, '/cluster', ca)).body) as { serving: boolean; view: string[] };
  await eventually(async () => (await Promise.all(nodes.map(status))).every((each) => each.serving && each.view.length === 2), 'the nodes form one view over mutual TLS', 20_000);
  const port = nodes[0]!.port;
  assert.is(await peerUpgrade(port, { ca }), 403, 'no client certificate');
  assert.is(await peerUpgrade(port, { ca, cert: readFileSync(file('node.pem')), key: readFileSync(file('node.key')) }), 403, 'a certificate of another CA');
  assert.is(await peerUpgrade(port, { ca, cert: readFileSync(file('peer.pem')), key: readFileSync(file('peer.key')) }), 101, 'a certificate of the peer CA gets to the handshake (and must still prove the secret)');
  assert.match(nodes[0]!.output(), /refused a connection from .*no certificate of the peers' CA/);
  // An application client presents no certificate and is served.
  const client = await connect(nodes[0]!.url, { ca });
  clients.push(client);
  await client.send({ typename: 'test/counter', id: 'mtls' }, 1);
});

test.run();
