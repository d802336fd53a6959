// Remote function endpoints: --endpoint flags and StateFun module.yaml definitions, resolved per type.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ValidationError } from '../../../lib/errors.js';
import { ENDPOINT_DEFAULTS, EndpointTable, parseDuration, parseEndpointFlag, parseModuleYaml } from '../../../node/remote/remote-endpoints.js';

test('--endpoint: a namespace or one type, resolved with {function.name}; a type beats its namespace', () => {
  const table = new EndpointTable([
    parseEndpointFlag('shop/*=http://127.0.0.1:8000/statefun/{function.name}'),
    parseEndpointFlag('shop/cart=https://carts.example:8443/cart?v=2'),
    parseEndpointFlag('py/*=http+unix:///run/fn.sock/functions'),
  ]);
  assert.is(table.size, 3);
  const user = table.resolve('shop/user')!;
  assert.equal({ protocol: user.protocol, host: user.host, port: user.port, path: user.path }, { protocol: 'http:', host: '127.0.0.1', port: 8000, path: '/statefun/user' });
  const cart = table.resolve('shop/cart')!;
  assert.equal({ protocol: cart.protocol, host: cart.host, port: cart.port, path: cart.path }, { protocol: 'https:', host: 'carts.example', port: 8443, path: '/cart?v=2' });
  const python = table.resolve('py/greeter')!;
  assert.equal({ socketPath: python.socketPath, path: python.path, host: python.host }, { socketPath: '/run/fn.sock', path: '/functions', host: null });
  assert.is(table.resolve('other/fn'), null);
  assert.ok(table.serves('shop/anything') && !table.serves('shopping/cart'));
  assert.equal(user.spec.timeouts, ENDPOINT_DEFAULTS.timeouts);
  assert.is(user.spec.maxNumBatchRequests, 1000);
});

test('module.yaml: v2 and v1 endpoint definitions, both transports, several documents; other kinds are reported, not fatal', () => {
  const yaml = `
kind: io.statefun.endpoints.v2/http
spec:
  functions: shop/*
  urlPathTemplate: http://fn.shop.svc:8080/{function.name}
  maxNumBatchRequests: 500
  transport:
    timeouts:
      call: 1 min
      connect: 5 sec
      read: 10 sec
      write: 2s
---
kind: io.statefun.endpoints.v2/http
spec:
  functions: shop/payments
  urlPathTemplate: https://payments.example/{function.name}
  transport:
    type: io.statefun.transports.v1/async
    call: 2m
    connect: 20s
    pool_ttl: 15s
    pool_size: 1024
    payload_max_bytes: 1048576
---
kind: io.statefun.endpoints.v1/http
spec:
  functions: legacy/*
  urlPathTemplate: http://legacy:9000/
  timeouts:
    call: 30000millisecond
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: shop/orders
`;
  const { endpoints, ignored } = parseModuleYaml(yaml, 'module.yaml');
  assert.is(endpoints.length, 3);
  assert.equal(endpoints[0], {
    functions: 'shop/*',
    urlPathTemplate: 'http://fn.shop.svc:8080/{function.name}',
    maxNumBatchRequests: 500,
    timeouts: { callMs: 60_000, connectMs: 5_000, readMs: 10_000, writeMs: 2_000 },
    payloadMaxBytes: ENDPOINT_DEFAULTS.payloadMaxBytes,
  });
  assert.equal(endpoints[1]!.timeouts, { callMs: 120_000, connectMs: 20_000, readMs: 10_000, writeMs: 10_000 });
  assert.is(endpoints[1]!.payloadMaxBytes, 1_048_576);
  assert.is(endpoints[2]!.timeouts.callMs, 30_000);
  assert.equal(ignored, ['module.yaml document 4: io.statefun.kafka.v1/ingress']);
  const table = new EndpointTable(endpoints);
  assert.is(table.resolve('shop/payments')!.url, 'https://payments.example/payments');
  assert.is(table.resolve('shop/cart')!.url, 'http://fn.shop.svc:8080/cart');
});

test('durations in StateFun notation', () => {
  const cases: [unknown, number][] = [['1 min', 60_000], ['10 sec', 10_000], ['2m', 120_000], ['20s', 20_000], ['500ms', 500], ['60000millisecond', 60_000], ['2minutes', 120_000], ['1second', 1000], [250, 250], ['1.5s', 1500]];
  for (const [text, ms] of cases) assert.is(parseDuration(text, 'test'), ms, String(text));
});

test('bad definitions are typed errors that say what to write', () => {
  const bad: [() => unknown, RegExp][] = [
    [() => parseEndpointFlag('shop/*'), /namespace\/\*=http/],
    [() => parseEndpointFlag('shop=http://x/'), /functions must be namespace\/\* or namespace\/name/],
    [() => parseEndpointFlag('shop/*=ftp://x/'), /urlPathTemplate must be an http/],
    [() => parseEndpointFlag('shop/*=http://x/{function.namespace}'), /only parameter is \{function.name\}/],
    [() => parseModuleYaml('kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://x/\n  maxNumBatchRequests: 0\n'), /maxNumBatchRequests: must be a whole number >= 1/],
    [() => parseModuleYaml('kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://x/\n  transport:\n    timeouts:\n      call: soon\n'), /"soon" is not a duration/],
    [() => parseModuleYaml('kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://x/\n  transport:\n    type: grpc\n'), /transport type "grpc"/],
    [() => parseModuleYaml('spec: {}\n'), /needs a kind/],
    [() => parseModuleYaml('kind: [unclosed\n'), /not valid YAML/],
    [() => new EndpointTable([parseEndpointFlag('a/*=http://x/'), parseEndpointFlag('a/*=http://y/')]), /defined twice/],
  ];
  for (const [run, message] of bad) {
    try {
      run();
      assert.unreachable(String(message));
    } catch (error) {
      assert.instance(error, ValidationError, String(error));
      assert.is((error as ValidationError).code, 'SC_ERR_INVALID_OPTION');
      assert.match((error as Error).message, message);
    }
  }
});

test.run();
