// Where a node's cluster secret comes from (cluster/cluster-secret.ts): a file, the environment, the
// data directory, or generated there by a founding node; a joining node without one is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SECRET_FILE, resolveClusterSecret } from '../../cluster/cluster-secret.js';

let dir = '';
test.before.each(() => void (dir = mkdtempSync(join(tmpdir(), 'statecraft-secret-'))));
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

test('a file comes first, trimmed; a file others can read is warned about', () => {
  const file = join(dir, 'secret');
  writeFileSync(file, '  file-secret-0123456789\n', { mode: 0o600 });
  const resolved = resolveClusterSecret({ file, value: 'env-secret-0123456789', dataDir: dir, joining: true });
  assert.is(resolved.secret.toString(), 'file-secret-0123456789');
  assert.is(resolved.warning, null);
  chmodSync(file, 0o644);
  assert.match(resolveClusterSecret({ file, dataDir: dir, joining: true }).warning ?? '', /can be read by other users.*chmod 600/);
});

test('then the environment, then the data directory', () => {
  assert.is(resolveClusterSecret({ value: 'env-secret-0123456789', dataDir: dir, joining: true }).source, 'STATECRAFT_CLUSTER_SECRET');
  writeFileSync(join(dir, SECRET_FILE), 'stored-secret-0123456789\n', { mode: 0o600 });
  const stored = resolveClusterSecret({ dataDir: dir, joining: true });
  assert.is(stored.secret.toString(), 'stored-secret-0123456789');
  assert.not.ok(stored.generated);
});

test('a founding node without one generates it (0600), and finds the same one next time', () => {
  const first = resolveClusterSecret({ dataDir: dir, joining: false });
  assert.ok(first.generated);
  assert.is(first.source, join(dir, SECRET_FILE));
  assert.is(statSync(first.source).mode & 0o777, 0o600);
  assert.ok(first.secret.length >= 32);
  assert.is(readFileSync(first.source, 'utf8').trim(), first.secret.toString());
  const again = resolveClusterSecret({ dataDir: dir, joining: false });
  assert.not.ok(again.generated);
  assert.ok(again.secret.equals(first.secret));
});

test('errors say what to do: a joining node without one, a short one, a missing file', () => {
  assert.throws(() => resolveClusterSecret({ dataDir: dir, joining: true }), /joining a cluster needs its secret: give --cluster-secret-file/);
  assert.throws(() => resolveClusterSecret({ value: 'short', dataDir: dir, joining: false }), /5 bytes; it needs at least 16 \(make one with: openssl rand/);
  assert.throws(() => resolveClusterSecret({ file: join(dir, 'missing'), dataDir: dir, joining: false }), /--cluster-secret-file .*missing: cannot read it \(ENOENT\)/);
});

test.run();
