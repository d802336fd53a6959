// Recovery claims (node/checkpoint/recovery-claims.ts) against a real FileBlobStore: a claimant alone
// goes on and removes older epochs' claims; one that finds another node's claim for its epoch does not;
// its own earlier attempt does not count against it; and two claimants racing for one epoch never both
// go on, however their writes and listings interleave.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RECOVERIES_PREFIX, checkOrder, claimKey, claimRecovery, olderClaimKeys } from '../../../node/checkpoint/recovery-claims.js';
import { termId } from '../../../node/checkpoint/terms.js';
import type { BlobStore } from '../../../node/storage/blob-store.js';
import { tempStore } from './checkpointing-fakes.js';
import { withTimeout } from '../../helpers.js';

const TIMEOUT_MS = 10_000;
const cleanups: (() => Promise<void>)[] = [];
test.after.each(async () => {
  for (const cleanup of cleanups.splice(0)) await withTimeout(cleanup(), TIMEOUT_MS, 'cleanup');
});

async function store(): Promise<BlobStore> {
  const temp = await tempStore();
  cleanups.push(temp.remove);
  return temp.store;
}

/** What a recovery claim names besides its writer. */
const RECOVERY = { restore: { checkpoint: 0, term: '' }, members: ['na', 'nb'] };

test('olderClaimKeys: the claims of epochs below the one given', () => {
  const term = (number: number) => termId(number, '0000000a');
  const keys = [claimKey(3, term(1)), claimKey(9, term(2)), claimKey(10, term(3)), 'recoveries/junk', claimKey(11, term(4))];
  assert.equal(olderClaimKeys(keys, 10), [claimKey(3, term(1)), claimKey(9, term(2))]);
  assert.is(claimKey(10, term(3)), `${RECOVERIES_PREFIX}0000000010/${term(3)}.json`, 'epochs sort as text');
});

test('alone: the claimant goes on, and the claims of older epochs are removed', async () => {
  const blobs = await store();
  assert.equal(await claimRecovery(blobs, 4, termId(1, 'aaaaaaaa'), 'n1', RECOVERY), []);
  assert.equal(await claimRecovery(blobs, 5, termId(2, 'bbbbbbbb'), 'n2', RECOVERY), []);
  assert.equal(await blobs.list(RECOVERIES_PREFIX), [claimKey(5, termId(2, 'bbbbbbbb'))]);
  const claim = JSON.parse(new TextDecoder().decode((await blobs.get(claimKey(5, termId(2, 'bbbbbbbb'))))!)) as { writer: string };
  assert.is(claim.writer, 'n2');
});

test("another node's claim for the epoch: this one does not go on, and removes nothing", async () => {
  const blobs = await store();
  assert.equal(await claimRecovery(blobs, 3, termId(1, 'aaaaaaaa'), 'n3', RECOVERY), []);
  assert.equal(await claimRecovery(blobs, 4, termId(2, 'aaaaaaaa'), 'n1', RECOVERY), []);
  assert.equal(await claimRecovery(blobs, 4, termId(3, 'bbbbbbbb'), 'n2', RECOVERY), ['n1']);
  assert.equal(await claimRecovery(blobs, 4, termId(4, 'cccccccc'), 'n5', RECOVERY), ['n1', 'n2']);
  assert.is((await blobs.list(RECOVERIES_PREFIX)).length, 3, 'epoch 3 was removed by n1, who went on; the contenders removed nothing');
});

test("the claimant's own earlier attempt (another term, same node) does not count against it", async () => {
  const blobs = await store();
  assert.equal(await claimRecovery(blobs, 7, termId(1, 'aaaaaaaa'), 'n1', RECOVERY), []);
  assert.equal(await claimRecovery(blobs, 7, termId(2, 'bbbbbbbb'), 'n1', RECOVERY), []);
});

test('two claimants racing for one epoch never both go on (write, then list: they cannot both miss each other)', async () => {
  const blobs = await store();
  let contended = 0;
  for (let epoch = 1; epoch <= 40; epoch++) {
    const [a, b] = await Promise.all([claimRecovery(blobs, epoch, termId(2 * epoch, 'aaaaaaaa'), 'na', RECOVERY), claimRecovery(blobs, epoch, termId(2 * epoch, 'bbbbbbbb'), 'nb', RECOVERY)]);
    assert.ok(a.length > 0 || b.length > 0, `epoch ${epoch}: both went on`);
    if (a.length > 0 && b.length > 0) contended++;
  }
  console.log(`  ${contended} of 40 races had both claimants see each other (nobody went on: the next epoch is claimed later)`);
});

test("an order is taken only as its claimant claimed it: the same epoch, checkpoint and members, by the node it names", async () => {
  const blobs = await store();
  const restore = { checkpoint: 6, term: termId(1, '0000000a') };
  assert.equal(await claimRecovery(blobs, 4, termId(2, 'aaaaaaaa'), 'n1', { restore, members: ['n1', 'n2'] }), []);
  const order = { epoch: 4, members: ['n1', 'n2'], restore, claimant: 'n1' };
  assert.is(await checkOrder(blobs, order), null);
  assert.is(await checkOrder(blobs, { ...order, claimant: 'n2' }), 'the store holds no claim of recovery 4 by n2', 'a member that claimed nothing');
  assert.is(await checkOrder(blobs, { ...order, epoch: 5 }), 'the store holds no claim of recovery 5 by n1');
  assert.is(await checkOrder(blobs, { ...order, restore: { checkpoint: 0, term: '' } }), "it differs from n1's claim in the store (checkpoint 6 for n1, n2)", 'a rollback to nothing');
  assert.is(await checkOrder(blobs, { ...order, members: ['n2'] }), "it differs from n1's claim in the store (checkpoint 6 for n1, n2)");
  // A newer recovery went on: the older claims are removed, and so is the older order's standing.
  assert.equal(await claimRecovery(blobs, 5, termId(3, 'aaaaaaaa'), 'n2', { restore, members: ['n2'] }), []);
  assert.is(await checkOrder(blobs, order), 'the store holds no claim of recovery 4 by n1');
});

test.run();
