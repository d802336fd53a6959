/**
 * Where remote function types are served (issue 5): `--endpoint` flags and StateFun `module.yaml`
 * endpoint definitions, parsed into one table that resolves a function type to its URL. Sans-I/O.
 *
 *   --endpoint 'shop/*=http://127.0.0.1:8000/statefun'        every type of namespace shop
 *   --endpoint 'shop/cart=http+unix:///run/fn.sock/cart'       one type, over a unix socket
 *
 *   kind: io.statefun.endpoints.v2/http                         module.yaml (several documents allowed)
 *   spec:
 *     functions: shop/*
 *     urlPathTemplate: http://fn.shop.svc/{function.name}
 *     maxNumBatchRequests: 500
 *     transport:
 *       timeouts: { call: 1 min, connect: 10 sec, read: 10 sec, write: 10 sec }
 *
 * A definition for one type wins over one for its namespace. Other kinds of definitions in a module
 * file (ingresses, egresses of StateFun's connectors) are reported back as ignored, not errors.
 */
import { parseAllDocuments } from 'yaml';
import { ValidationError } from '../../lib/errors.js';
import { readFileSync } from 'node:fs';

export interface EndpointTimeouts {
  /** The whole call, retries and back-off included. */
  callMs: number;
  connectMs: number;
  readMs: number;
  writeMs: number;
}

export interface EndpointSpec {
  /** `namespace/*` or `namespace/name`. */
  functions: string;
  /** May contain `{function.name}`. */
  urlPathTemplate: string;
  /**
   * Most messages one request carries for one address (StateFun's default 1000). StateFun uses the same
   * number as the backlog at which it back-pressures the whole job; here what waits beyond it waits for
   * the next batch (bounded per address by --remote-backlog-max), and nothing else stops.
   */
  maxNumBatchRequests: number;
  timeouts: EndpointTimeouts;
  /** Largest request or response body, in bytes (a batch that would be larger is split). */
  payloadMaxBytes: number;
  /**
   * For https:// endpoints (PEM text): CA certificates the endpoint's certificate is checked against
   * (else the system's), and a client certificate and key this node presents (mutual TLS).
   */
  tls?: EndpointTls;
  /** Headers sent with every request (a bearer token, say). */
  headers?: Record<string, string>;
}

export interface EndpointTls {
  ca?: string;
  cert?: string;
  key?: string;
}

/** Reads a PEM file named in a flag or module file (where: for the error). */
export type ReadPem = (path: string, where: string) => string;

const readPemFile: ReadPem = (path, where) => {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw invalid(where, `cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
};

/** A header as `Name: value` (the --endpoint-header flag and module files). */
function checkHeader(name: unknown, value: unknown, where: string): [string, string] {
  if (typeof name !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw invalid(where, `header name ${JSON.stringify(name)} is not an HTTP token`);
  if (typeof value !== 'string' || /[\r\n]/.test(value)) throw invalid(where, `header ${name} needs a one-line string value`);
  if (['content-type', 'content-length', 'host', 'connection', 'transfer-encoding'].includes(name.toLowerCase())) throw invalid(where, `header ${name} is set by the node`);
  return [name, value];
}

/** Where one function type's requests go. */
export interface ResolvedEndpoint {
  spec: EndpointSpec;
  /** `http:` or `https:`. */
  protocol: 'http:' | 'https:';
  /** For TCP: the host and port; for unix sockets, null. */
  host: string | null;
  port: number | null;
  /** For unix sockets: the socket file. */
  socketPath: string | null;
  /** Path and query to POST to. */
  path: string;
  /** For logs. */
  url: string;
}

export const ENDPOINT_DEFAULTS: Readonly<Omit<EndpointSpec, 'functions' | 'urlPathTemplate'>> = Object.freeze({
  maxNumBatchRequests: 1000,
  timeouts: Object.freeze({ callMs: 60_000, connectMs: 10_000, readMs: 10_000, writeMs: 10_000 }),
  payloadMaxBytes: 32 * 1024 * 1024,
});

const HTTP_KINDS = new Set(['io.statefun.endpoints.v2/http', 'io.statefun.endpoints.v1/http']);
const FUNCTIONS_PATTERN = /^[A-Za-z0-9_.-]+(\.[A-Za-z0-9_-]+)*\/(\*|[A-Za-z0-9_.-]+)$/;

function invalid(where: string, why: string): ValidationError {
  return new ValidationError('SC_ERR_INVALID_OPTION', `${where}: ${why}`);
}

const UNITS: Record<string, number> = {
  ms: 1, milli: 1, millis: 1, millisecond: 1, milliseconds: 1,
  s: 1000, sec: 1000, secs: 1000, second: 1000, seconds: 1000,
  m: 60_000, min: 60_000, mins: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
};

/** StateFun's durations: `1 min`, `10 sec`, `2m`, `20s`, `500ms`, `60000millisecond`; a bare number is ms. */
export function parseDuration(value: unknown, where: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return Math.round(value);
  const match = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(value) : null;
  const unit = match === null ? undefined : match[2] === '' ? 1 : UNITS[match[2]!.toLowerCase()];
  if (match === null || unit === undefined) throw invalid(where, `${JSON.stringify(value)} is not a duration (like 10 sec, 2m, 500ms)`);
  return Math.round(Number(match[1]) * unit);
}

function positiveInteger(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw invalid(where, `must be a whole number >= 1, got ${JSON.stringify(value)}`);
  return value;
}

function checkFunctions(functions: unknown, where: string): string {
  if (typeof functions !== 'string' || !FUNCTIONS_PATTERN.test(functions)) {
    throw invalid(where, `functions must be namespace/* or namespace/name, got ${JSON.stringify(functions)}`);
  }
  return functions;
}

function checkTemplate(template: unknown, where: string): string {
  if (typeof template !== 'string' || !/^(https?|https?\+unix):\/\//.test(template)) {
    throw invalid(where, `urlPathTemplate must be an http://, https://, http+unix:// or https+unix:// URL, got ${JSON.stringify(template)}`);
  }
  const unknownParameter = /\{(?!function\.name\})[^}]*\}/.exec(template);
  if (unknownParameter !== null) throw invalid(where, `urlPathTemplate has ${unknownParameter[0]}; the only parameter is {function.name}`);
  return template;
}

/** `namespace/*=url` or `namespace/name=url` (the --endpoint flag). */
export function parseEndpointFlag(text: string): EndpointSpec {
  const where = `--endpoint ${JSON.stringify(text)}`;
  const equals = text.indexOf('=');
  if (equals < 0) throw invalid(where, "give 'namespace/*=http://host:port/path' or 'namespace/name=http://…'");
  return {
    ...ENDPOINT_DEFAULTS,
    timeouts: { ...ENDPOINT_DEFAULTS.timeouts },
    functions: checkFunctions(text.slice(0, equals).trim(), where),
    urlPathTemplate: checkTemplate(text.slice(equals + 1).trim(), where),
  };
}

/** The endpoint definitions of a StateFun module file; `ignored` describes the other definitions in it. */
/**
 * StateFun's async transport names its TLS files trust_cacerts, client_cert and client_key; `headers`
 * (a map of header names to values) is Statecraft's own.
 */
function transportSecurity(transport: Record<string, unknown>, where: string, readPem: ReadPem): Pick<EndpointSpec, 'tls' | 'headers'> {
  const tls: EndpointTls = {};
  for (const [key, field] of [['trust_cacerts', 'ca'], ['client_cert', 'cert'], ['client_key', 'key']] as const) {
    const path = transport[key];
    if (path === undefined) continue;
    if (typeof path !== 'string') throw invalid(where, `transport ${key} must be a file path`);
    tls[field] = readPem(path, `${where} transport ${key}`);
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw invalid(where, 'transport client_cert and client_key go together');
  const headers = transport.headers;
  if (headers !== undefined && (headers === null || typeof headers !== 'object' || Array.isArray(headers))) throw invalid(where, 'transport headers must map header names to values');
  return {
    ...(Object.keys(tls).length === 0 ? {} : { tls }),
    ...(headers === undefined ? {} : { headers: Object.fromEntries(Object.entries(headers as Record<string, unknown>).map(([name, value]) => checkHeader(name, value, `${where} transport headers`))) }),
  };
}

/**
 * The per-endpoint flags besides --endpoint: `--endpoint-ca types=path`, `--endpoint-cert types=path`,
 * `--endpoint-key types=path`, `--endpoint-header 'types=Name: value'`; each names an endpoint given by
 * --endpoint or a module file (by its functions pattern) and adds to it.
 */
export function applyEndpointFlag(specs: EndpointSpec[], flag: 'ca' | 'cert' | 'key' | 'header', text: string, readPem: ReadPem = readPemFile): void {
  // A header's value may be a secret: errors quote its name only.
  const where = `--endpoint-${flag} ${JSON.stringify(flag === 'header' ? text.replace(/:.*$/s, ': …') : text)}`;
  const equals = text.indexOf('=');
  if (equals < 0) throw invalid(where, flag === 'header' ? "give 'namespace/*=Name: value'" : "give 'namespace/*=/path/to/file.pem'");
  const functions = text.slice(0, equals).trim();
  const spec = specs.find((candidate) => candidate.functions === functions);
  if (spec === undefined) throw invalid(where, `no endpoint serves ${functions}: give it with --endpoint or --module first (endpoints: ${specs.map((each) => each.functions).join(', ') || 'none'})`);
  const value = text.slice(equals + 1);
  if (flag === 'header') {
    const colon = value.indexOf(':');
    if (colon < 0) throw invalid(where, "a header is 'Name: value'");
    const [name, headerValue] = checkHeader(value.slice(0, colon).trim(), value.slice(colon + 1).trim(), where);
    spec.headers = { ...spec.headers, [name]: headerValue };
    return;
  }
  spec.tls = { ...spec.tls, [flag]: readPem(value.trim(), where) };
}

export function parseModuleYaml(text: string, source = 'module.yaml', readPem: ReadPem = readPemFile): { endpoints: EndpointSpec[]; ignored: string[] } {
  const endpoints: EndpointSpec[] = [];
  const ignored: string[] = [];
  const documents = parseAllDocuments(text);
  if (!Array.isArray(documents)) throw invalid(source, 'is not YAML');
  documents.forEach((document, index) => {
    const where = `${source} document ${index + 1}`;
    if (document.errors.length > 0) throw invalid(where, `is not valid YAML: ${document.errors[0]!.message}`);
    const value = document.toJS() as { kind?: unknown; spec?: Record<string, unknown> } | null;
    if (value === null || value === undefined) return; // an empty document
    if (typeof value !== 'object' || typeof value.kind !== 'string') throw invalid(where, 'needs a kind (e.g. io.statefun.endpoints.v2/http)');
    if (!HTTP_KINDS.has(value.kind)) {
      ignored.push(`${where}: ${value.kind}`);
      return;
    }
    const spec = value.spec;
    if (spec === null || typeof spec !== 'object') throw invalid(where, 'needs a spec');
    // v2 keeps timeouts under spec.transport; v1 had them under spec.timeouts.
    const transport = (spec.transport ?? {}) as Record<string, unknown>;
    const timeouts = ((value.kind.endsWith('v1/http') ? spec.timeouts : transport.timeouts) ?? {}) as Record<string, unknown>;
    const asyncTransport = transport.type === 'io.statefun.transports.v1/async';
    if (transport.type !== undefined && !asyncTransport && transport.type !== 'io.statefun.transports.v1/okhttp') {
      throw invalid(where, `transport type ${JSON.stringify(transport.type)} is not one StateFun defines (io.statefun.transports.v1/async, or none)`);
    }
    const defaults = ENDPOINT_DEFAULTS.timeouts;
    const pick = (key: string, fallback: number) => {
      const given = asyncTransport ? transport[key] : timeouts[key];
      return given === undefined ? fallback : parseDuration(given, `${where} transport ${key}`);
    };
    endpoints.push({
      functions: checkFunctions(spec.functions, where),
      urlPathTemplate: checkTemplate(spec.urlPathTemplate, where),
      maxNumBatchRequests: spec.maxNumBatchRequests === undefined ? ENDPOINT_DEFAULTS.maxNumBatchRequests : positiveInteger(spec.maxNumBatchRequests, `${where} maxNumBatchRequests`),
      timeouts: { callMs: pick('call', defaults.callMs), connectMs: pick('connect', defaults.connectMs), readMs: pick('read', defaults.readMs), writeMs: pick('write', defaults.writeMs) },
      payloadMaxBytes: asyncTransport && transport.payload_max_bytes !== undefined ? positiveInteger(transport.payload_max_bytes, `${where} payload_max_bytes`) : ENDPOINT_DEFAULTS.payloadMaxBytes,
      ...transportSecurity(transport, where, readPem),
    });
  });
  return { endpoints, ignored };
}

/** Resolves function types to endpoints: a definition for the type itself wins over its namespace's. */
export class EndpointTable {
  private readonly exact = new Map<string, EndpointSpec>();
  private readonly namespaces = new Map<string, EndpointSpec>();

  constructor(specs: readonly EndpointSpec[]) {
    for (const spec of specs) {
      const [namespace, name] = spec.functions.split('/') as [string, string];
      const table = name === '*' ? this.namespaces : this.exact;
      const key = name === '*' ? namespace : spec.functions;
      if (table.has(key)) throw invalid(`endpoint ${spec.functions}`, 'is defined twice');
      table.set(key, spec);
    }
  }

  get size(): number {
    return this.exact.size + this.namespaces.size;
  }

  /** The patterns served (`ns/*`, `ns/name`). */
  get patterns(): string[] {
    return [...this.namespaces.keys()].map((namespace) => `${namespace}/*`).concat([...this.exact.keys()]);
  }

  /** True when `typename` (namespace/name) is served remotely. */
  serves(typename: string): boolean {
    return this.specFor(typename) !== undefined;
  }

  resolve(typename: string): ResolvedEndpoint | null {
    const spec = this.specFor(typename);
    if (spec === undefined) return null;
    const name = typename.slice(typename.indexOf('/') + 1);
    const url = spec.urlPathTemplate.replaceAll('{function.name}', encodeURIComponent(name));
    const unix = /^(https?)\+unix:\/\/(\/.*?\.sock)(\/.*)?$/.exec(url);
    if (unix !== null) {
      return { spec, protocol: `${unix[1]}:` as 'http:' | 'https:', host: null, port: null, socketPath: unix[2]!, path: unix[3] ?? '/', url };
    }
    if (url.includes('+unix://')) throw invalid(`endpoint ${spec.functions}`, `${url}: a unix socket URL names a socket file ending in .sock, then the path (http+unix:///run/fn.sock/path)`);
    const parsed = new URL(url);
    const protocol = parsed.protocol as 'http:' | 'https:';
    return {
      spec,
      protocol,
      host: parsed.hostname,
      port: parsed.port === '' ? (protocol === 'https:' ? 443 : 80) : Number(parsed.port),
      socketPath: null,
      path: `${parsed.pathname}${parsed.search}`,
      url,
    };
  }

  private specFor(typename: string): EndpointSpec | undefined {
    return this.exact.get(typename) ?? this.namespaces.get(typename.slice(0, typename.indexOf('/')));
  }
}
