// TLS and headers toward remote function endpoints (issue 14, item 2): against a real https server on
// 127.0.0.1 that wants a client certificate signed by the test CA (made by openssl here), a request with
// the endpoint's CA, client certificate, key and headers goes through; without the client certificate,
// or without the CA, it fails as a call error. module.yaml's transport takes StateFun's trust_cacerts,
// client_cert and client_key, and headers.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AttemptError, closeRemoteConnections, postOnce } from '../../../node/remote/remote-client.js';
import { EndpointTable, applyEndpointFlag, parseEndpointFlag, parseModuleYaml, type EndpointSpec } from '../../../node/remote/remote-endpoints.js';
import { probe, requireTool } from '../../requirements.js';

const hasOpenssl = probe('openssl', ['version']);
const dir = mkdtempSync(join(tmpdir(), 'statecraft-remote-tls-'));
const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const pem = (name: string) => readFileSync(join(dir, name), 'utf8');
let server: Server | null = null;
const seen: { authorized: boolean; authorization: string | undefined }[] = [];

function issue(name: string, cn: string): void {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', 'san.ext');
}

test.after(async () => {
  closeRemoteConnections();
  if (server !== null) await new Promise((resolve) => server!.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

function spec(url: string, extra: Partial<EndpointSpec>): EndpointSpec {
  return { ...parseEndpointFlag(`remote/*=${url}`), ...extra };
}

test('an https endpoint that wants a client certificate: with the CA, certificate, key and headers the call goes through; without them it fails', async () => {
  if (!requireTool(hasOpenssl, 'openssl (to make the test CA)', 'apt-get install openssl')) return;
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=remote-test-ca');
  issue('server', '127.0.0.1');
  issue('client', 'statecraft-node');
  server = createServer({ cert: pem('server.pem'), key: pem('server.key'), ca: pem('ca.pem'), requestCert: true, rejectUnauthorized: true }, (request, response) => {
    seen.push({ authorized: (request.socket as TLSSocket).authorized, authorization: request.headers.authorization });
    request.resume();
    request.on('end', () => response.writeHead(200, { 'content-type': 'application/octet-stream' }).end('pong'));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(server.address() as { port: number }).port}/fn`;

  const full = new EndpointTable([spec(url, { tls: { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key') }, headers: { authorization: 'Bearer remote-secret' } })]).resolve('remote/x')!;
  const answer = await postOnce(full, Buffer.from('ping'), 5000);
  assert.is(Buffer.from(answer).toString(), 'pong');
  assert.equal(seen, [{ authorized: true, authorization: 'Bearer remote-secret' }]);

  const noClientCert = new EndpointTable([spec(url, { tls: { ca: pem('ca.pem') } })]).resolve('remote/x')!;
  const refused = await postOnce(noClientCert, Buffer.from('ping'), 5000).then(() => null, (error: AttemptError) => error);
  assert.ok(refused instanceof AttemptError, 'the server refuses a node without a client certificate');
  assert.is(refused!.code, 'SC_ERR_REMOTE_CALL');

  const noCa = new EndpointTable([spec(url, {})]).resolve('remote/x')!;
  const untrusted = await postOnce(noCa, Buffer.from('ping'), 5000).then(() => null, (error: AttemptError) => error);
  assert.is(untrusted?.code, 'SC_ERR_REMOTE_CALL');
  assert.match(untrusted!.message, /certificate/);
  assert.is(seen.length, 1, 'neither failed call reached the function');
});

test("module.yaml: StateFun's trust_cacerts, client_cert and client_key, and headers; the flags add the same to an endpoint", () => {
  const files: Record<string, string> = { '/ca.pem': 'CA', '/cert.pem': 'CERT', '/key.pem': 'KEY' };
  const readPem = (path: string) => files[path] ?? (() => { throw new Error(`no ${path}`); })();
  const yaml = [
    'kind: io.statefun.endpoints.v2/http',
    'spec:',
    '  functions: shop/*',
    '  urlPathTemplate: https://fn.example.com/{function.name}',
    '  transport:',
    '    type: io.statefun.transports.v1/async',
    '    trust_cacerts: /ca.pem',
    '    client_cert: /cert.pem',
    '    client_key: /key.pem',
    '    headers:',
    '      Authorization: Bearer abc',
  ].join('\n');
  const [endpoint] = parseModuleYaml(yaml, 'module.yaml', readPem).endpoints;
  assert.equal(endpoint!.tls, { ca: 'CA', cert: 'CERT', key: 'KEY' });
  assert.equal(endpoint!.headers, { Authorization: 'Bearer abc' });
  assert.throws(() => parseModuleYaml(yaml.replace('    client_key: /key.pem\n', ''), 'module.yaml', readPem), /client_cert and client_key go together/);
  assert.throws(() => parseModuleYaml(yaml.replace('Authorization: Bearer abc', 'Host: elsewhere'), 'module.yaml', readPem), /header Host is set by the node/);

  const specs = [parseEndpointFlag('pay/*=https://pay.example.com/')];
  applyEndpointFlag(specs, 'ca', 'pay/*=/ca.pem', readPem);
  applyEndpointFlag(specs, 'header', 'pay/*=X-Api-Key: s3cret', readPem);
  assert.equal(specs[0]!.tls, { ca: 'CA' });
  assert.equal(specs[0]!.headers, { 'X-Api-Key': 's3cret' });
  assert.throws(() => applyEndpointFlag(specs, 'header', 'other/*=X-Api-Key: s3cret', readPem), /no endpoint serves other\/\*/);
  const error = (() => {
    try {
      applyEndpointFlag(specs, 'header', 'pay/*=Bad Name: s3cret', readPem);
    } catch (caught) {
      return caught as Error;
    }
    return null;
  })();
  assert.ok(error !== null && !error.message.includes('s3cret'), `errors do not quote a header's value: ${error?.message}`);
});

test.run();
