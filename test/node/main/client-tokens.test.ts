// The client tokens file (node/main/client-tokens.ts): tokens, scopes, and errors that name the line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ClientTokens } from '../../../node/main/client-tokens.js';

const FULL = 'full-access-token-0123456789';
const SHOP = 'shop-sender-token-0123456789';
const READER = 'receipts-reader-token-012345';

const tokens = ClientTokens.parse(
  [
    '# token                         scopes',
    `${FULL}`,
    `${SHOP}   send=shop/*,billing/invoice   # a comment`,
    '',
    `${READER} subscribe=receipts`,
  ].join('\n'),
  'tokens.txt',
);

test('a token without scopes may do everything', () => {
  const grant = tokens.grant(FULL)!;
  assert.ok(grant.maySend('anything/at-all'));
  assert.ok(grant.maySubscribe('anything'));
  assert.is(grant.scopes, 'everything');
  assert.is(grant.line, 2);
});

test('send scopes: a namespace, one type; a token with only send= subscribes to nothing', () => {
  const grant = tokens.grant(SHOP)!;
  assert.ok(grant.maySend('shop/cart'));
  assert.ok(grant.maySend('billing/invoice'));
  assert.not.ok(grant.maySend('billing/refund'));
  assert.not.ok(grant.maySend('shopping/cart'), 'a namespace is matched whole');
  assert.not.ok(grant.maySubscribe('receipts'));
  assert.match(grant.scopes, /send=shop\/\*,billing\/invoice subscribe=\(nothing\)/);
});

test('subscribe scopes; a token with only subscribe= sends nothing', () => {
  const grant = tokens.grant(READER)!;
  assert.ok(grant.maySubscribe('receipts'));
  assert.not.ok(grant.maySubscribe('other'));
  assert.not.ok(grant.maySend('shop/cart'));
});

test('unknown tokens, and values that are not tokens, get no grant', () => {
  for (const value of [undefined, null, '', 42, 'nope', `${FULL}x`, FULL.slice(0, -1), 'x'.repeat(5000)]) assert.is(tokens.grant(value), null, String(value));
  assert.is(tokens.size, 3);
});

test('errors name the file and line and say what to do', () => {
  assert.throws(() => ClientTokens.parse('short', 'f'), /f line 1: a token needs at least 16 characters \(make one with: openssl rand -hex 16\)/);
  assert.throws(() => ClientTokens.parse(`${FULL}\n${FULL} send=a/*`, 'f'), /f line 2: the token of line 1 again/);
  assert.throws(() => ClientTokens.parse(`${FULL} write=a/*`, 'f'), /"write=a\/\*" is not a scope/);
  assert.throws(() => ClientTokens.parse(`${FULL} send=shop`, 'f'), /send=shop: name a namespace\/\* or a namespace\/type/);
  assert.throws(() => ClientTokens.parse('# nothing here\n', 'f'), /f has no token: every client would be refused/);
});

test.run();
