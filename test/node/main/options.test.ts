// Node options (resolveOptions): every default filled in, and every bad value refused with an
// SC_ERR_INVALID_OPTION that names the option and the range it accepts (messages pinned here).
import { availableParallelism } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ValidationError } from '../../../lib/errors.js';
import { MiB, nextPowerOfTwo, resolveOptions, type NodeOptions } from '../../../node/main/options.js';
import type { EndpointSpec } from '../../../node/remote/remote-endpoints.js';

const functions = ['./functions.js'];

/** The error resolveOptions throws for `options`; fails when it throws nothing or something else. */
function refusal(options: unknown): ValidationError {
  try {
    resolveOptions(options as NodeOptions);
  } catch (error) {
    assert.instance(error, ValidationError);
    assert.is((error as ValidationError).code, 'SC_ERR_INVALID_OPTION');
    return error as ValidationError;
  }
  assert.unreachable(`resolveOptions accepted ${JSON.stringify(options)}`);
  throw new Error('unreachable');
}

const endpoint: EndpointSpec = {
  functions: 'remote/*',
  urlPathTemplate: 'http://127.0.0.1:1/{function.name}',
  maxNumBatchRequests: 1000,
  timeouts: { callMs: 60_000, connectMs: 10_000, readMs: 10_000, writeMs: 10_000 },
  payloadMaxBytes: MiB,
};

test('defaults: every option filled in, checkpoints off', () => {
  const resolved = resolveOptions({ functions });
  assert.equal(resolved, {
    endpoints: [],
    remoteBacklogMax: 100_000,
    remoteAttemptsMax: 0,
    delayedPendingMax: 100_000,
    handlerTimeoutMs: 10_000,
    shardStallMs: 10_000,
    shards: Math.max(1, availableParallelism()),
    keyGroups: 1024,
    valueBytesMax: MiB,
    idBytesMax: 1024,
    port: 0,
    host: '127.0.0.1',
    ringBytes: 4 * MiB,
    // The value, three names of up to 255 characters and two ids, 3 bytes per character, and a header.
    envelopeBytesMax: MiB + 3 * 255 * 3 + 2 * 1024 * 3 + 64,
    egressRetainRecords: 10_000,
    egressRetainBytes: 64 * MiB,
    backlogMax: 100_000,
    clientConnectionsMax: 10_000,
    checkpoints: null,
  });
});

test('given values are kept; the default ring grows with the largest value', () => {
  const resolved = resolveOptions({
    functions,
    shards: 3,
    keyGroups: 64,
    valueBytesMax: 8 * MiB,
    idBytesMax: 100,
    port: 8080,
    host: '0.0.0.0',
    egressRetainRecords: 5,
    egressRetainBytes: 2048,
    backlogMax: 7,
    remoteBacklogMax: 9,
  });
  assert.is(resolved.shards, 3);
  assert.is(resolved.keyGroups, 64);
  assert.is(resolved.valueBytesMax, 8 * MiB);
  assert.is(resolved.idBytesMax, 100);
  assert.is(resolved.port, 8080);
  assert.is(resolved.host, '0.0.0.0');
  assert.is(resolved.ringBytes, 32 * MiB, 'four times the largest value, a power of two');
  assert.is(resolved.envelopeBytesMax, 8 * MiB + 3 * 255 * 3 + 2 * 100 * 3 + 64);
  assert.is(resolved.egressRetainRecords, 5);
  assert.is(resolved.egressRetainBytes, 2048);
  assert.is(resolved.backlogMax, 7);
  assert.is(resolved.remoteBacklogMax, 9);
  assert.is(resolveOptions({ functions, valueBytesMax: 3 * MiB }).ringBytes, 16 * MiB, 'next power of two above 4 × 3 MiB');
  assert.is(nextPowerOfTwo(12 * MiB), 16 * MiB);
});

test('no functions and no endpoints: refused, saying how to give them', () => {
  const message =
    'functions: give at least one module that exports function definitions (--functions path/to/module.js), or remote endpoints (--endpoint, --module).';
  assert.is(refusal({ functions: [] }).message, message);
  assert.is(refusal({ functions: [], endpoints: [] }).message, message);
  assert.is(refusal({}).message, message, 'functions missing');
  assert.is(refusal({ functions: './functions.js' }).message, message, 'functions not an array');
  assert.is(refusal(undefined).message, message, 'no options at all');
});

test('endpoints alone are enough, and are copied', () => {
  const endpoints = [endpoint];
  const resolved = resolveOptions({ functions: [], endpoints });
  assert.equal(resolved.endpoints, [endpoint]);
  assert.is.not(resolved.endpoints, endpoints, 'a copy: later changes by the caller do not reach the node');
});

// [option, bad value, minimum, maximum]
const ranges: [keyof NodeOptions, unknown, number, number][] = [
  ['shards', 0, 1, 256],
  ['shards', 257, 1, 256],
  ['shards', 1.5, 1, 256],
  ['shards', '2', 1, 256],
  ['keyGroups', 0, 1, 65536],
  ['keyGroups', 65537, 1, 65536],
  ['valueBytesMax', 15, 16, 256 * MiB],
  ['valueBytesMax', 256 * MiB + 1, 16, 256 * MiB],
  ['idBytesMax', 0, 1, 65535],
  ['idBytesMax', 65536, 1, 65535],
  ['port', -1, 0, 65535],
  ['port', 65536, 0, 65535],
  ['port', Number.NaN, 0, 65535],
  ['ringBytes', 32 * 1024, 64 * 1024, 1024 * MiB],
  ['ringBytes', 2048 * MiB, 64 * 1024, 1024 * MiB],
  ['egressRetainRecords', 0, 1, 10_000_000],
  ['egressRetainBytes', 1023, 1024, 16 * 1024 * MiB],
  ['backlogMax', 0, 1, 100_000_000],
  ['backlogMax', 2.5, 1, 100_000_000],
  ['remoteBacklogMax', 0, 1, 100_000_000],
];

test('each numeric option out of range or not a whole number: the message names it and its range', () => {
  for (const [name, value, min, max] of ranges) {
    const error = refusal({ functions, [name]: value });
    assert.is(error.message, `${name} must be a whole number from ${min} to ${max}, got ${String(value)}.`, `${name} = ${String(value)}`);
  }
});

test('ringBytes not a power of two', () => {
  assert.is(refusal({ functions, ringBytes: 100_000 }).message, 'ringBytes must be a power of two, got 100000.');
  assert.is(refusal({ functions, ringBytes: 3 * MiB }).message, `ringBytes must be a power of two, got ${3 * MiB}.`);
});

test('rings too small for the largest value: the message says the size to use', () => {
  // A 1 MiB ring takes records of up to 512 KiB; a 1 MiB value needs 2 × (its envelope) + 16 rounded up.
  const error = refusal({ functions, valueBytesMax: MiB, ringBytes: MiB });
  assert.is(error.message, `ringBytes ${MiB} is too small for values of ${MiB} bytes; use at least ${4 * MiB}.`);
  // The suggested size is accepted.
  assert.is(resolveOptions({ functions, valueBytesMax: MiB, ringBytes: 4 * MiB }).ringBytes, 4 * MiB);
  // Long ids count too: with 64 KiB ids a 256 KiB ring is too small even for tiny values.
  const ids = refusal({ functions, valueBytesMax: 16, idBytesMax: 65535, ringBytes: 256 * 1024 });
  assert.match(ids.message, /^ringBytes 262144 is too small for values of 16 bytes; use at least 1048576\.$/);
});

test('checkpoints: defaults, store options passed through only when given', () => {
  const plain = resolveOptions({ functions, checkpoints: { store: 'file://./data/checkpoints' } }).checkpoints;
  assert.equal(plain, { url: 'file://./data/checkpoints', storeOptions: {}, intervalMs: 1000, retain: 3, ackTimeoutMs: 10_000, restore: true });
  const full = resolveOptions({
    functions,
    checkpoints: { store: 's3://bucket/prefix', s3Endpoint: 'http://127.0.0.1:9000', s3Region: 'eu-west-1', fsync: false, intervalMs: 10, retain: 1000, ackTimeoutMs: 100, restore: false },
  }).checkpoints;
  assert.equal(full, {
    url: 's3://bucket/prefix',
    storeOptions: { endpoint: 'http://127.0.0.1:9000', region: 'eu-west-1', fsync: false },
    intervalMs: 10,
    retain: 1000,
    ackTimeoutMs: 100,
    restore: false,
  });
});

test('checkpoints: bad interval, retain or ack timeout named with their range', () => {
  const store = 'file://./data/checkpoints';
  const cases: [string, unknown, number, number][] = [
    ['intervalMs', 9, 10, 3_600_000],
    ['intervalMs', 3_600_001, 10, 3_600_000],
    ['intervalMs', 100.5, 10, 3_600_000],
    ['retain', 0, 1, 1000],
    ['retain', 1001, 1, 1000],
    ['ackTimeoutMs', 99, 100, 3_600_000],
    ['ackTimeoutMs', 3_600_001, 100, 3_600_000],
  ];
  for (const [name, value, min, max] of cases) {
    const error = refusal({ functions, checkpoints: { store, [name]: value } });
    assert.is(error.message, `checkpoints.${name} must be a whole number from ${min} to ${max}, got ${String(value)}.`, `${name} = ${String(value)}`);
  }
});

test('the first bad option is reported, in a fixed order', () => {
  // shards is checked before keyGroups, both before the ring size.
  assert.match(refusal({ functions, shards: 0, keyGroups: 0, ringBytes: 3 }).message, /^shards must/);
  assert.match(refusal({ functions, keyGroups: 0, ringBytes: 3 }).message, /^keyGroups must/);
});

test.run();
