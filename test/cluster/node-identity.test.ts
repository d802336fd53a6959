// A node's id and its data-directory lock (cluster/node-identity.ts), in temp dirs: the generated id is
// kept and reused, --node-id is validated and kept, a LOCK held by a live process (a real child process)
// refuses the directory with a message that says what to do, and a LOCK left by a dead process or
// unreadable as a pid is taken over.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openNodeIdentity, validateNodeId } from '../../cluster/node-identity.js';
import { StatecraftError } from '../../lib/errors.js';
import { withTimeout } from '../helpers.js';

const directories: string[] = [];
const children: ChildProcess[] = [];

test.after.each(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const directory = mkdtempSync(join(tmpdir(), 'statecraft-identity-'));
  directories.push(directory);
  return directory;
}

/** A process that stays alive until the test ends. */
function liveProcess(): number {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await withTimeout(new Promise((resolve) => child.once('exit', resolve)), 10_000, 'a short-lived process');
  return child.pid!;
}

function refused(act: () => unknown, text: string | RegExp): void {
  try {
    act();
  } catch (error) {
    assert.instance(error, StatecraftError);
    assert.is((error as StatecraftError).code, 'SC_ERR_INVALID_OPTION');
    assert.match((error as Error).message, text);
    return;
  }
  assert.unreachable('expected SC_ERR_INVALID_OPTION');
}

test('without --node-id an id is generated once, kept in the data directory and reused after a restart', () => {
  const directory = dataDir();
  const first = openNodeIdentity(directory);
  assert.match(first.nodeId, /^node-[0-9a-f]{8}$/);
  assert.is(first.dataDir, directory);
  assert.is(readFileSync(join(directory, 'node-id'), 'utf8'), `${first.nodeId}\n`);
  assert.is(readFileSync(join(directory, 'LOCK'), 'utf8'), String(process.pid));
  first.release();
  assert.is(existsSync(join(directory, 'LOCK')), false, 'release removes the lock');
  const again = openNodeIdentity(directory);
  assert.is(again.nodeId, first.nodeId);
  again.release();
});

test('a missing data directory is created, parents included; one that cannot be is refused with the reason', () => {
  const directory = join(dataDir(), 'a', 'b');
  openNodeIdentity(directory).release();
  assert.ok(existsSync(join(directory, 'node-id')));
  const file = join(dataDir(), 'plain-file');
  writeFileSync(file, 'x');
  refused(() => openNodeIdentity(join(file, 'node')), `cannot create the data directory ${join(file, 'node')}`);
});

test('--node-id is validated and kept: a later start without it is the same node', () => {
  const directory = dataDir();
  openNodeIdentity(directory, 'alpha-1').release();
  assert.is(openNodeIdentity(directory).nodeId, 'alpha-1');
  assert.is(openNodeIdentity(directory, 'beta:2').nodeId, 'beta:2', 'an explicit id replaces the kept one');
  assert.is(readFileSync(join(directory, 'node-id'), 'utf8'), 'beta:2\n');
  for (const bad of ['', '-x', 'has space', 'x'.repeat(129), 'a/b']) {
    refused(() => validateNodeId(bad), `node id "${bad}" must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit.`);
  }
  refused(() => openNodeIdentity(dataDir(), 'no spaces please'), 'node id "no spaces please" must be');
  assert.is(validateNodeId('x'.repeat(128)), 'x'.repeat(128));
});

test('a kept id that is not valid (the file was edited) is refused rather than used', () => {
  const directory = dataDir();
  writeFileSync(join(directory, 'node-id'), 'not valid!\n');
  refused(() => openNodeIdentity(directory), 'node id "not valid!" must be');
});

test('a LOCK held by a live process refuses the directory, naming the pid and what to do; the LOCK is left alone', () => {
  const directory = dataDir();
  const pid = liveProcess();
  writeFileSync(join(directory, 'LOCK'), `${pid}\n`);
  refused(() => openNodeIdentity(directory), `the data directory ${directory} is in use by another node (pid ${pid}): give each node its own --data-dir.`);
  assert.is(readFileSync(join(directory, 'LOCK'), 'utf8'), `${pid}\n`);
  assert.is(existsSync(join(directory, 'node-id')), false, 'nothing else was written');
});

test('a LOCK left by a process that is gone is taken over', async () => {
  const directory = dataDir();
  writeFileSync(join(directory, 'LOCK'), String(await deadPid()));
  const identity = openNodeIdentity(directory);
  assert.is(readFileSync(join(directory, 'LOCK'), 'utf8'), String(process.pid));
  identity.release();
});

test('a LOCK that does not hold a number is taken over', () => {
  const directory = dataDir();
  writeFileSync(join(directory, 'LOCK'), 'garbage');
  openNodeIdentity(directory).release();
});

// Source bug, pinned: an empty LOCK (a crash or power cut between creating the file and writing the pid
// into it; writeFileSync truncates first) reads as pid 0, and process.kill(0, 0) succeeds (it signals
// the caller's own process group), so the directory counts as "in use by another node (pid 0)" on every
// start until someone deletes the file by hand. The same goes for a negative number. Only a positive pid
// can name a holder.
test.skip('an empty LOCK (left by a crash while it was written) is taken over', () => {
  const directory = dataDir();
  writeFileSync(join(directory, 'LOCK'), '');
  openNodeIdentity(directory).release();
});

test('the lock guards against other processes only: the same process may open its directory again', () => {
  const directory = dataDir();
  const first = openNodeIdentity(directory);
  const second = openNodeIdentity(directory);
  assert.is(second.nodeId, first.nodeId);
  second.release();
});

test.run();
