// Terms (node/checkpoint/terms.ts), the checkpoint store's commit point, on their own: the key and
// ordering rules over key lists, what a commit record must be to be read, readHead against a real
// FileBlobStore (empty, base only, commits, late records of an older term, a newer term sealed but not
// based, a store of the format before terms), and the fencing property — a leader that sees no newer
// term after its commit record landed is never missed by whoever began that term — in every order of
// the two writers' steps, and with two real CheckpointLeaders.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StatecraftError } from '../../../lib/errors.js';
import { readCommittedManifests } from '../../../node/checkpoint/checkpoint-format.js';
import { CheckpointLeader } from '../../../node/checkpoint/checkpoint-leader.js';
import {
  LEGACY_LATEST_KEY,
  NO_COMMIT,
  TERMS_PREFIX,
  baseKey,
  beginTerm,
  commitKey,
  decodeCommitRecord,
  deposedBy,
  encodeCommitRecord,
  headKey,
  isCheckpointRef,
  isTermId,
  newerTerm,
  newestBased,
  newestCommit,
  nextTerm,
  olderTermKeys,
  olderTermKeysOf,
  parseTermKeys,
  readHead,
  sealKey,
  setBase,
  termId,
  writeCommit,
  type CommitRecord,
} from '../../../node/checkpoint/terms.js';
import type { BlobStore } from '../../../node/storage/blob-store.js';
import { eventually, withTimeout } from '../../helpers.js';
import { tempStore } from './checkpointing-fakes.js';

const TIMEOUT_MS = 5000;
const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/** Runs `body` on a FileBlobStore in a fresh temp dir, removed afterwards whatever happens. */
async function withStore(body: (store: BlobStore) => Promise<void>): Promise<void> {
  const temp = await tempStore();
  try {
    await body(temp.store);
  } finally {
    await temp.remove();
  }
}

/** What a commit record read back must be: a StatecraftError SC_ERR_STORE_CORRUPT naming the key. */
function refused(bytes: Uint8Array | string, why: RegExp): void {
  const input = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
  const key = 'commits/t000000000001-0000000a/0000000007.json';
  try {
    const record = decodeCommitRecord(input, key);
    assert.unreachable(`${new TextDecoder().decode(input)} read as ${JSON.stringify(record)}`);
  } catch (error) {
    assert.instance(error, StatecraftError, String(error));
    assert.is((error as StatecraftError).code, 'SC_ERR_STORE_CORRUPT');
    assert.ok((error as Error).message.startsWith(`${key} is not a commit record: `), (error as Error).message);
    assert.match((error as Error).message, why);
  }
}

const T1 = termId(1, '0000000a');
const T1B = termId(1, '0000000b');
const T2 = termId(2, '00000001');
const T12 = termId(12, '00000000');

// ---- keys and ordering ----

test('term ids: number then random part, zero-padded so that they sort as numbers; keys of seals, bases and commit records', () => {
  assert.is(T1, 't000000000001-0000000a');
  assert.ok(isTermId(T1) && isTermId(T12));
  for (const bad of ['', 't1-0000000a', 't000000000001-0000000A', 't000000000001-000000a', 'x000000000001-0000000a', 7, null]) assert.not.ok(isTermId(bad), `${String(bad)}`);
  assert.ok(isTermId(termId(3)), 'a random part of 8 hex digits by default');
  assert.equal([T12, T2, T1B, T1].sort(), [T1, T1B, T2, T12], 'term 12 after term 2; the random part orders equal numbers');
  assert.is(sealKey(T1), 'terms/t000000000001-0000000a/seal.json');
  assert.is(baseKey(T1), 'terms/t000000000001-0000000a/base.json');
  assert.is(commitKey(T1, 42), 'commits/t000000000001-0000000a/0000000042.json');
  assert.ok(commitKey(T1, 9) < commitKey(T1, 10), 'commit keys list in checkpoint order');
});

test('parseTermKeys: the terms of a listing, oldest first, and which have a base; anything else ignored', () => {
  const parsed = parseTermKeys([
    baseKey(T2),
    sealKey(T12),
    sealKey(T2),
    sealKey(T1),
    baseKey(T1B), // a base without a seal still names the term
    'terms/not-a-term/seal.json',
    `terms/${T12}/other.json`,
    `terms/${T12}/base.json.tmp`,
    `terms/${T12}/nested/base.json`,
    `terms/${T12}`,
    commitKey(T12, 1),
  ]);
  assert.equal(parsed.terms, [T1, T1B, T2, T12]);
  assert.equal([...parsed.based].sort(), [T1B, T2]);
  assert.equal(parseTermKeys([]), { terms: [], based: new Set() });
});

test('nextTerm numbers above the newest listed; newerTerm finds the first newer one; newestBased the newest with a base', () => {
  assert.is(nextTerm([], 'abcdef01'), termId(1, 'abcdef01'));
  assert.is(nextTerm([T1, T2, T12], 'abcdef01'), termId(13, 'abcdef01'));
  assert.is(nextTerm([T1, T1B], '00000000'), termId(2, '00000000'), 'above both writers of number 1');
  assert.match(nextTerm([T2]), /^t000000000003-[0-9a-f]{8}$/);

  assert.is(newerTerm([T1, T1B, T2], T1), T1B, 'the same number with a higher random part is newer');
  assert.is(newerTerm([T1, T1B, T2], T1B), T2);
  assert.is(newerTerm([T1, T1B, T2], T2), null, 'itself is not newer');
  assert.is(newerTerm([T1], T2), null);

  assert.is(newestBased([T1, T2, T12], new Set([T1, T2])), T2, 'the newest term sealed only is passed over');
  assert.is(newestBased([T1, T2], new Set()), null);
  assert.is(newestBased([], new Set()), null);
});

test("newestCommit: the highest checkpoint of the term's records; headKey: its key, or the base's, or null", () => {
  const commits = [commitKey(T1, 3), commitKey(T1, 12), commitKey(T1, 9), commitKey(T2, 40), `commits/${T1}/0000000050.json.tmp`, `commits/${T1}/notes.txt`];
  assert.is(newestCommit(commits, T1), 12, 'not 40 of another term, nor names that are not records');
  assert.is(newestCommit(commits, T2), 40);
  assert.is(newestCommit(commits, T12), 0);
  assert.is(newestCommit([], T1), 0);

  assert.is(headKey([sealKey(T1), baseKey(T1), sealKey(T2)], commits), commitKey(T1, 12), 'T2 has no base: read from T1');
  assert.is(headKey([sealKey(T1), baseKey(T1), sealKey(T2), baseKey(T2)], commits), commitKey(T2, 40));
  assert.is(headKey([sealKey(T12), baseKey(T12)], commits), baseKey(T12), 'a based term that committed nothing: its base');
  assert.is(headKey([sealKey(T1)], commits), null);
});

test('olderTermKeysOf: seals, bases and commit records of older terms only', () => {
  const keys = [sealKey(T1), baseKey(T1), commitKey(T1, 3), sealKey(T1B), commitKey(T1B, 4), sealKey(T2), baseKey(T2), commitKey(T2, 5), sealKey(T12), 'terms/junk/seal.json', 'commits/junk/0000000001.json', 'checkpoints/3/manifest-t000000000001-0000000a.json', LEGACY_LATEST_KEY];
  assert.equal(olderTermKeysOf(keys, T2), [sealKey(T1), baseKey(T1), commitKey(T1, 3), sealKey(T1B), commitKey(T1B, 4)]);
  assert.equal(olderTermKeysOf(keys, T1), [], 'nothing is older than the oldest');
  assert.equal(olderTermKeysOf(keys, T1B), [sealKey(T1), baseKey(T1), commitKey(T1, 3)], 'the same number with a lower random part is older');
});

// ---- records ----

test('commit records: encoded and decoded as they were, extra fields dropped; checkpoint 0 only as NO_COMMIT', () => {
  const record: CommitRecord = { checkpoint: 7, term: T2, retained: [{ checkpoint: 3, term: T1 }, { checkpoint: 5, term: T2 }] };
  assert.equal(decodeCommitRecord(encodeCommitRecord(record), 'k'), record);
  assert.equal(decodeCommitRecord(encode({ ...record, note: 'x', retained: [{ checkpoint: 3, term: T1, extra: 1 }] }), 'k'), { checkpoint: 7, term: T2, retained: [{ checkpoint: 3, term: T1 }] });
  assert.is(decodeCommitRecord(encodeCommitRecord(NO_COMMIT), 'k'), NO_COMMIT);
  assert.ok(isCheckpointRef({ checkpoint: 0, term: '' }) && isCheckpointRef({ checkpoint: 4, term: T1 }));
  for (const bad of [{ checkpoint: 0, term: T1 }, { checkpoint: 4, term: '' }, { checkpoint: -1, term: T1 }, { checkpoint: 1.5, term: T1 }, { checkpoint: 4 }, null, 4]) assert.not.ok(isCheckpointRef(bad), JSON.stringify(bad));
});

test('decodeCommitRecord refuses what is not a commit record with SC_ERR_STORE_CORRUPT naming the key', () => {
  refused(new Uint8Array(0), /not JSON/);
  refused('{"checkpoint": 1,', /not JSON/);
  for (const value of ['null', '5', '"text"', 'true']) refused(value, /not an object/);
  refused('[]', /no checkpoint number and term/);
  refused(JSON.stringify({ term: T1, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 3, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 3, term: 'x', retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 0, term: T1, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 0, term: '', retained: [{ checkpoint: 1, term: T1 }] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: -2, term: T1, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 2.5, term: T1, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: 2 ** 53, term: T1, retained: [] }), /no checkpoint number and term/);
  refused(JSON.stringify({ checkpoint: '3', term: T1, retained: [] }), /no checkpoint number and term/);
  const rising = /retained is not a rising list of earlier checkpoints/;
  refused(JSON.stringify({ checkpoint: 3, term: T1 }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: 2 }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [1, 2] }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [{ checkpoint: 2, term: T1 }, { checkpoint: 1, term: T1 }] }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [{ checkpoint: 1, term: T1 }, { checkpoint: 1, term: T1 }] }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [{ checkpoint: 3, term: T1 }] }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [{ checkpoint: 2, term: 'x' }] }), rising);
  refused(JSON.stringify({ checkpoint: 3, term: T1, retained: [null] }), rising);
});

// ---- the head, on a real store ----

test('readHead: NO_COMMIT on an empty store; a base alone; the newest commit of the newest based term', async () => {
  await withStore(async (store) => {
    assert.is(await readHead(store), NO_COMMIT);
    const { term, head } = await beginTerm(store, 'n1');
    assert.is(head, NO_COMMIT);
    assert.equal(parseTermKeys(await store.list(TERMS_PREFIX)), { terms: [term], based: new Set() }, 'sealed, not based');
    assert.is(await readHead(store), NO_COMMIT, 'a term sealed only is not read');
    await setBase(store, term, NO_COMMIT);
    assert.equal(await readHead(store), NO_COMMIT);
    const three: CommitRecord = { checkpoint: 3, term, retained: [] };
    const ten: CommitRecord = { checkpoint: 10, term, retained: [{ checkpoint: 3, term }] };
    // Written out of order: the head is the highest number, not the last written.
    await writeCommit(store, ten);
    await writeCommit(store, three);
    assert.equal(await readHead(store), ten);
    // The next term is based on it and commits nothing yet: its base is the head.
    const next = await beginTerm(store, 'n2');
    assert.equal(next.head, ten);
    assert.ok(next.term > term);
    const base: CommitRecord = { checkpoint: 3, term, retained: [] };
    await setBase(store, next.term, base);
    assert.equal(await readHead(store), base, 'the newest based term decides, even on an older checkpoint (a fall-back)');
  });
});

test('readHead: a late commit record of an older term is ignored; a newer term sealed but not based changes nothing', async () => {
  await withStore(async (store) => {
    const older = await beginTerm(store, 'a');
    await setBase(store, older.term, NO_COMMIT);
    const five: CommitRecord = { checkpoint: 5, term: older.term, retained: [] };
    await writeCommit(store, five);
    const newer = await beginTerm(store, 'b');
    await setBase(store, newer.term, newer.head);
    assert.equal(await readHead(store), five, "the newer term's base");
    await writeCommit(store, { checkpoint: 6, term: older.term, retained: [{ checkpoint: 5, term: older.term }] });
    assert.equal(await readHead(store), five, 'checkpoint 6 of the older term landed late: ignored');
    const sealedOnly = await beginTerm(store, 'c');
    assert.equal(sealedOnly.head, five);
    await writeCommit(store, { checkpoint: 9, term: sealedOnly.term, retained: [] }); // out of protocol: no base yet
    assert.equal(await readHead(store), five, 'a term without a base is not read, whatever it holds');
    assert.is(await deposedBy(store, newer.term), sealedOnly.term, 'but it deposes the based term');
  });
});

test('readHead: a store of the format before terms (LATEST, no terms/) is SC_ERR_STORE_CORRUPT saying so; LATEST beside terms is ignored', async () => {
  await withStore(async (store) => {
    await store.put(LEGACY_LATEST_KEY, encode({ checkpoint: 4 }));
    try {
      await readHead(store);
      assert.unreachable('read a store of the older format');
    } catch (error) {
      assert.instance(error, StatecraftError);
      assert.is((error as StatecraftError).code, 'SC_ERR_STORE_CORRUPT');
      assert.is(
        (error as Error).message,
        `${store.describe()} holds checkpoints of an older Statecraft format (LATEST, no terms/): this version cannot read them. Start with an empty --checkpoint-store, or run the version that wrote it.`,
      );
    }
    assert.is(await beginTerm(store, 'n1').then(() => 'began', (error: StatecraftError) => error.code), 'SC_ERR_STORE_CORRUPT', 'beginTerm reads the head after sealing');
    const [term] = parseTermKeys(await store.list(TERMS_PREFIX)).terms;
    await setBase(store, term!, NO_COMMIT);
    assert.is(await readHead(store), NO_COMMIT, 'once a term is based, LATEST is not looked at');
  });
});

test("readHead: a base or commit record that is not one is SC_ERR_STORE_CORRUPT; another term's corrupt record is not read", async () => {
  await withStore(async (store) => {
    const { term } = await beginTerm(store, 'n1');
    await setBase(store, term, NO_COMMIT);
    await store.put(commitKey(term, 2), new TextEncoder().encode('{"checkpoint": 2'));
    await assertCorrupt(readHead(store), commitKey(term, 2));
    const next = await beginTerm(store, 'n2').catch(() => null);
    assert.is(next, null, 'beginTerm reads the head after sealing: it fails the same way');
    const { terms } = parseTermKeys(await store.list(TERMS_PREFIX));
    const newest = terms.at(-1)!;
    assert.ok(newest > term, 'the seal was written before the read failed');
    await setBase(store, newest, NO_COMMIT);
    assert.is(await readHead(store), NO_COMMIT, "the corrupt record is an older term's now");
    await store.put(baseKey(newest), new Uint8Array(0));
    await assertCorrupt(readHead(store), baseKey(newest));
  });
});

async function assertCorrupt(reading: Promise<unknown>, key: string): Promise<void> {
  try {
    const value = await reading;
    assert.unreachable(`read as ${JSON.stringify(value)}`);
  } catch (error) {
    assert.instance(error, StatecraftError, String(error));
    assert.is((error as StatecraftError).code, 'SC_ERR_STORE_CORRUPT');
    assert.ok((error as Error).message.startsWith(`${key} is not a commit record`), (error as Error).message);
  }
}

test('beginTerm seals a term above every listed one, naming its writer, before it reads the head', async () => {
  await withStore(async (store) => {
    await store.put(sealKey(T12), encode({ writer: 'elsewhere' }));
    await store.put(sealKey(T2), encode({ writer: 'elsewhere' }));
    const { term, head } = await beginTerm(store, 'node-7');
    assert.match(term, /^t000000000013-[0-9a-f]{8}$/);
    assert.is(head, NO_COMMIT);
    const seal = JSON.parse(new TextDecoder().decode((await store.get(sealKey(term)))!)) as { writer: string; sealedAt: string };
    assert.is(seal.writer, 'node-7');
    assert.ok(!Number.isNaN(Date.parse(seal.sealedAt)), seal.sealedAt);
    assert.not.ok(await store.exists(baseKey(term)), 'no base until setBase');
  });
});

test('olderTermKeys lists the seals, bases and commit records of older terms in the store, nothing of its own or newer ones', async () => {
  await withStore(async (store) => {
    for (const term of [T1, T1B, T2, T12]) {
      await store.put(sealKey(term), encode({}));
      await setBase(store, term, NO_COMMIT);
      await writeCommit(store, { checkpoint: 1, term, retained: [] });
    }
    await store.put('checkpoints/1/manifest-t000000000001-0000000a.json', encode({}));
    await store.put('terms/junk/seal.json', encode({}));
    const older = await olderTermKeys(store, T2);
    assert.equal(older.sort(), [sealKey(T1), baseKey(T1), commitKey(T1, 1), sealKey(T1B), baseKey(T1B), commitKey(T1B, 1)].sort());
    await store.delete(older);
    assert.equal(await readHead(store), { checkpoint: 1, term: T12, retained: [] }, 'the head does not need them');
  });
});

// ---- fencing ----

test('fencing, step by step: a newer term sealed after A based deposes A; a record A writes after B read the head is ignored once B is based', async () => {
  await withStore(async (store) => {
    const a = await beginTerm(store, 'a');
    await setBase(store, a.term, NO_COMMIT);
    const one: CommitRecord = { checkpoint: 1, term: a.term, retained: [] };
    await writeCommit(store, one);
    assert.is(await deposedBy(store, a.term), null, 'alone: 1 is committed');
    assert.equal(await readHead(store), one);
    // B begins: sealed, then reads the head (1, A's record landed before).
    const b = await beginTerm(store, 'b');
    assert.equal(b.head, one, 'a commit A wrote before B began is B\'s head');
    assert.is(await deposedBy(store, a.term), b.term, 'A is deposed by B from the seal on');
    assert.is(await deposedBy(store, b.term), null);
    // A, cut off, writes 2 after B read the head; B bases its term on what it read.
    const two: CommitRecord = { checkpoint: 2, term: a.term, retained: [{ checkpoint: 1, term: a.term }] };
    await writeCommit(store, two);
    assert.equal(await readHead(store), two, 'until B is based, A\'s term is still the newest based');
    assert.is(await deposedBy(store, a.term), b.term, 'but A sees B after its write: 2 is never announced');
    await setBase(store, b.term, b.head);
    assert.equal(await readHead(store), one, 'once B is based, A\'s late record is ignored');
    await writeCommit(store, { checkpoint: 3, term: a.term, retained: [] });
    assert.equal(await readHead(store), one, 'and so is any later one');
  });
});

// The claim of terms.ts: A commits c by writing its record, then listing the terms; B seals, then
// reads the head. Whatever the order of those four steps, when A announces c (it saw no newer term),
// B read c.
test('fencing in every order of the steps: when A announces its commit, the term B begins continues from it', async () => {
  type Step = 'A writes' | 'A lists' | 'B seals' | 'B reads';
  const orders: Step[][] = [];
  const place = (a: Step[], b: Step[], order: Step[]) => {
    if (a.length === 0 && b.length === 0) orders.push(order);
    if (a.length > 0) place(a.slice(1), b, [...order, a[0]!]);
    if (b.length > 0) place(a, b.slice(1), [...order, b[0]!]);
  };
  place(['A writes', 'A lists'], ['B seals', 'B reads'], []);
  assert.is(orders.length, 6);
  const outcomes: string[] = [];
  for (const order of orders) {
    await withStore(async (store) => {
      const a = await beginTerm(store, 'a');
      await setBase(store, a.term, NO_COMMIT);
      const record: CommitRecord = { checkpoint: 1, term: a.term, retained: [] };
      const bTerm = nextTerm([a.term]);
      let announced: boolean | null = null;
      let bHead: CommitRecord | null = null;
      for (const step of order) {
        if (step === 'A writes') await writeCommit(store, record);
        else if (step === 'A lists') announced = (await deposedBy(store, a.term)) === null;
        else if (step === 'B seals') await store.put(sealKey(bTerm), encode({ writer: 'b' }));
        else bHead = await readHead(store);
      }
      await setBase(store, bTerm, bHead!);
      const head = await readHead(store);
      outcomes.push(`${order.join(', ')}: ${announced ? 'announced' : 'deposed'}, B continues from ${bHead!.checkpoint}`);
      if (announced) assert.is(bHead!.checkpoint, 1, `${order.join(', ')}: A announced 1 but B read ${JSON.stringify(bHead)}`);
      assert.equal(head, bHead, 'the head is what B read');
    });
  }
  // Both outcomes occur, and a deposed A's checkpoint may or may not be in B's history.
  assert.equal(outcomes.map((line) => line.split(': ')[1]).sort(), [
    'announced, B continues from 1',
    'deposed, B continues from 0',
    'deposed, B continues from 1',
    'deposed, B continues from 1',
    'deposed, B continues from 1',
    'deposed, B continues from 1',
  ]);
});

test('fencing with two real leaders: A is deposed at its next commit by B, which continues from A\'s last announced checkpoint', async () => {
  await withStore(async (store) => {
    const leaders: CheckpointLeader[] = [];
    const outcomes: string[] = [];
    const lead = async (name: string) => {
      const { term, head } = await beginTerm(store, name);
      await setBase(store, term, head);
      const starts: number[] = [];
      const leader = new CheckpointLeader({
        store,
        keyGroups: 1,
        intervalMs: 10,
        retain: 3,
        ackTimeoutMs: TIMEOUT_MS,
        participants: [name],
        view: name,
        term,
        committed: await readCommittedManifests(store, head, () => undefined),
        lastCheckpoint: head.checkpoint,
        start: (_participant, checkpoint) => starts.push(checkpoint),
        outcome: (_participants, checkpoint, committed) => outcomes.push(`${name} ${checkpoint} ${committed}`),
        log: () => undefined,
      });
      leaders.push(leader);
      return { leader, term, head, starts };
    };
    const commit = async (side: Awaited<ReturnType<typeof lead>>, name: string, checkpoint: number) => {
      await eventually(() => side.starts.includes(checkpoint), `${name} starts ${checkpoint}`, TIMEOUT_MS);
      side.leader.acknowledged(name, checkpoint, new Map([[0, `checkpoints/${checkpoint}/seg-${name}.bin`]]), []);
      await eventually(() => outcomes.some((line) => line.startsWith(`${name} ${checkpoint} `)), `the outcome of ${name}'s ${checkpoint}`, TIMEOUT_MS);
    };
    try {
      const a = await lead('a');
      await commit(a, 'a', 1);
      assert.equal(outcomes, ['a 1 true']);
      const b = await lead('b');
      assert.is(b.head.checkpoint, 1, "B continues from A's 1");
      await commit(a, 'a', 2);
      assert.equal(outcomes, ['a 1 true', 'a 2 false'], "A's 2 is not announced");
      assert.is(a.leader.stats.deposedBy, b.term);
      assert.ok(await store.exists(commitKey(a.term, 2)), 'its record landed');
      assert.equal(await readHead(store), b.head, "the head is B's base, not A's 2");
      await commit(b, 'b', 2);
      assert.equal(outcomes.at(-1), 'b 2 true', 'B numbers from its head and commits');
      assert.equal(await readHead(store), { checkpoint: 2, term: b.term, retained: [{ checkpoint: 1, term: a.term }] });
    } finally {
      for (const leader of leaders) await withTimeout(leader.stop('the test ends'), TIMEOUT_MS, 'leader stop');
    }
  });
});

test.run();
