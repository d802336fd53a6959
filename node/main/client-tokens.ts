/**
 * Client tokens (`--client-tokens-file`): which clients may connect, and what each may do. One token
 * per line, then optional scopes; `#` starts a comment:
 *
 *   # token                          scopes (none: every type and egress)
 *   4f1c0e8a2b7d49e6a1c3f5e7d9b0a2c4   send=shop/*,billing/invoice subscribe=receipts
 *   9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a   subscribe=*
 *
 * `send=` lists the function types the token's events may go to: `namespace/*` for a namespace,
 * `namespace/type` for one type, `*` for all; `subscribe=` lists egress names, or `*`. A scope left out
 * allows nothing of its kind once the other is given (a token with only `subscribe=` cannot send).
 * Tokens are kept as SHA-256 digests and looked up by digest, so a lookup takes the same time whatever
 * the presented token shares with a real one.
 */
import { createHash } from 'node:crypto';
import { StatecraftError } from '../../lib/errors.js';

/** Shorter tokens are guessable. */
export const TOKEN_LENGTH_MIN = 16;
/** Type names whose send answer a grant remembers (the node's function types, in practice). */
const SENDABLE_REMEMBERED_MAX = 10_000;

export interface Grant {
  /** The token's position in the file (1-based line), for log lines: never the token itself. */
  readonly line: number;
  maySend(typename: string): boolean;
  maySubscribe(egress: string): boolean;
  /** What the token may do, for error messages. */
  readonly scopes: string;
}

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest('base64');

class Scopes implements Grant {
  constructor(
    readonly line: number,
    private readonly send: readonly string[] | null,
    private readonly subscribe: readonly string[] | null,
  ) {}

  get scopes(): string {
    if (this.send === null && this.subscribe === null) return 'everything';
    return `send=${(this.send ?? []).join(',') || '(nothing)'} subscribe=${(this.subscribe ?? []).join(',') || '(nothing)'}`;
  }

  /** Answers per type name, remembered: asked for every event (the gateway asks only for loaded types). */
  private readonly sendable = new Map<string, boolean>();

  maySend(typename: string): boolean {
    let allowed = this.sendable.get(typename);
    if (allowed === undefined) {
      allowed = this.decideSend(typename);
      if (this.sendable.size < SENDABLE_REMEMBERED_MAX) this.sendable.set(typename, allowed);
    }
    return allowed;
  }

  private decideSend(typename: string): boolean {
    if (this.send === null) return this.subscribe === null;
    const namespace = typename.slice(0, typename.indexOf('/') + 1);
    return this.send.some((scope) => scope === '*' || scope === typename || (scope.endsWith('/*') && scope.slice(0, -1) === namespace));
  }

  maySubscribe(egress: string): boolean {
    if (this.subscribe === null) return this.send === null;
    return this.subscribe.some((scope) => scope === '*' || scope === egress);
  }
}

export class ClientTokens {
  private constructor(private readonly grants: ReadonlyMap<string, Grant>) {}

  get size(): number {
    return this.grants.size;
  }

  /** The grant for a presented token, or null (unknown, or not a string). */
  grant(token: unknown): Grant | null {
    if (typeof token !== 'string' || token.length === 0 || token.length > 4096) return null;
    return this.grants.get(digest(token)) ?? null;
  }

  /** Parses a tokens file's text; `where` names it in errors. */
  static parse(text: string, where: string): ClientTokens {
    const grants = new Map<string, Grant>();
    const fail = (line: number, what: string): never => {
      throw new StatecraftError('SC_ERR_INVALID_OPTION', `${where} line ${line}: ${what}`);
    };
    text.split(/\r?\n/).forEach((raw, index) => {
      const line = index + 1;
      const words = raw.replace(/#.*$/, '').trim().split(/\s+/).filter(Boolean);
      if (words.length === 0) return;
      const [token, ...scopeWords] = words as [string, ...string[]];
      if (token.length < TOKEN_LENGTH_MIN) fail(line, `a token needs at least ${TOKEN_LENGTH_MIN} characters (make one with: openssl rand -hex 16)`);
      let send: string[] | null = null;
      let subscribe: string[] | null = null;
      for (const word of scopeWords) {
        const match = /^(send|subscribe)=(.+)$/.exec(word);
        if (match === null) fail(line, `"${word}" is not a scope: use send=<namespace>/*,<namespace>/<type> or subscribe=<egress>,... (or * for all)`);
        const values = match![2]!.split(',').filter(Boolean);
        if (match![1] === 'send') {
          for (const value of values) if (value !== '*' && !/^[^/\s]+\/[^/\s]+$/.test(value)) fail(line, `send=${value}: name a namespace/* or a namespace/type, or *`);
          send = [...(send ?? []), ...values];
        } else subscribe = [...(subscribe ?? []), ...values];
      }
      const key = digest(token);
      if (grants.has(key)) fail(line, `the token of line ${grants.get(key)!.line} again`);
      grants.set(key, new Scopes(line, send, subscribe));
    });
    if (grants.size === 0) throw new StatecraftError('SC_ERR_INVALID_OPTION', `${where} has no token: every client would be refused`);
    return new ClientTokens(grants);
  }
}
