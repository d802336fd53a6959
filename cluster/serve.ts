#!/usr/bin/env node
/**
 * Serves a functions module over HTTP (StateFun's request-reply protocol), for nodes that point at it
 * with --endpoint or a module.yaml.
 *
 *   node cluster/serve.js --functions examples/greeter/functions.js --port 8000
 */
import { parseArgs } from 'node:util';
import { availableParallelism } from 'node:os';
import { StatecraftError } from '../lib/errors.js';
import { serve, type FunctionHost } from '../lib/function-host.js';

const HELP = `Usage: node cluster/serve.js --functions <module.js> [options]

Serves the function definitions of an ES module over HTTP, speaking Apache Flink StateFun's
request-reply protocol: a stateless deployment of your functions (state travels with each
request). The same module runs embedded in a node (--functions) or here, unchanged.
Prints one line with "ready" and the URL once it serves.

Options:
  --functions <module>   ES module exporting function definitions (repeatable, or
                         comma-separated). Required.
  --port <n>             TCP port (0: the OS chooses). Default 8000.
  --host <address>       Interface to listen on. Default 127.0.0.1.
  --unix-socket <path>   Listen on a unix socket instead of TCP.
  --threads <n>          Worker threads running batches (a piscina pool). Default: one
                         per core (${availableParallelism()} here).
  --value-bytes-max <n>  Largest value a handler may write or send. Default 1048576.
                         Give the cluster's --value-bytes-max and --id-bytes-max.
  --id-bytes-max <n>     Longest address id, in UTF-8 bytes. Default 1024.
  --body-bytes-max <n>   Largest request accepted. Default 33554432.
  --handler-timeout <ms> How long one request's handlers may run; past it the request is
                         answered 422 (the cluster dead-letters the message that hangs)
                         and its pool thread is replaced. Default 10000.
  -h, --help             Show this help.

Point a node at it:
  node cluster/start.js --endpoint 'example/*=http://127.0.0.1:8000/'
or in a StateFun module.yaml given with --module:
  kind: io.statefun.endpoints.v2/http
  spec:
    functions: example/*
    urlPathTemplate: http://127.0.0.1:8000/{function.name}

SIGTERM or SIGINT stops it: it finishes the requests it has and exits 0.
`;

function fail(message: string): never {
  process.stderr.write(`statecraft serve: ${message}\nRun with --help for the options.\n`);
  process.exit(2);
}

function integer(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) fail(`--${name} must be a whole number, got "${text}"`);
  return Number(text);
}

async function main(): Promise<void> {
  let values;
  try {
    values = parseArgs({
      options: {
        functions: { type: 'string', multiple: true },
        port: { type: 'string' },
        host: { type: 'string' },
        'unix-socket': { type: 'string' },
        threads: { type: 'string' },
        'value-bytes-max': { type: 'string' },
        'id-bytes-max': { type: 'string' },
        'body-bytes-max': { type: 'string' },
        'handler-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    fail((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const modules = (values.functions ?? []).flatMap((entry) => entry.split(',')).map((entry) => entry.trim()).filter(Boolean);
  if (modules.length === 0) fail('--functions <module.js> is required: the ES module(s) exporting your function definitions');
  const port = integer('port', values.port) ?? 8000;
  if (port > 65535) fail(`--port must be at most 65535, got ${port}`);
  let host: FunctionHost;
  try {
    host = await serve(modules, {
      port,
      ...(values.host === undefined ? {} : { host: values.host }),
      ...(values['unix-socket'] === undefined ? {} : { socketPath: values['unix-socket'] }),
      ...(values.threads === undefined ? {} : { threads: integer('threads', values.threads)! }),
      ...(values['value-bytes-max'] === undefined ? {} : { valueBytesMax: integer('value-bytes-max', values['value-bytes-max'])! }),
      ...(values['id-bytes-max'] === undefined ? {} : { idBytesMax: integer('id-bytes-max', values['id-bytes-max'])! }),
      ...(values['body-bytes-max'] === undefined ? {} : { bodyBytesMax: integer('body-bytes-max', values['body-bytes-max'])! }),
      ...(values['handler-timeout'] === undefined ? {} : { handlerTimeoutMs: integer('handler-timeout', values['handler-timeout'])! }),
    });
  } catch (error) {
    if (error instanceof StatecraftError) fail(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') fail(`${values['unix-socket'] ?? `port ${port}`} is in use; choose another${values['unix-socket'] ? ' socket path' : ' with --port (0 lets the OS choose)'}`);
    throw error;
  }
  process.stdout.write(`statecraft function host ready ${host.url} (functions: ${host.functions.join(', ')})\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stderr.write(`statecraft serve: ${signal} received, stopping\n`);
    host.close().then(
      () => process.exit(0),
      (error: Error) => {
        process.stderr.write(`statecraft serve: error while stopping: ${error.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

await main();
