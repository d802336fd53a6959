// A shard's part of a checkpoint as store objects (node/checkpoint/part-upload.ts): one segment object
// with every changed key group's image back to back, referenced by slice; unchanged and empty key
// groups named without an object; the recorded channel messages in their own object; and the images
// read back by their references, each object fetched once. Against a real directory store.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EnvelopeDecoder, invokeLengthMax, writeInvoke } from '../../../lib/envelope.js';
import type { StatecraftError } from '../../../lib/errors.js';
import { toTypedValue } from '../../../lib/typed-value.js';
import { decodeChannelObject, parseObjectRef } from '../../../node/checkpoint/checkpoint-format.js';
import { fetchImages, planUpload, sliceImages, uploadPart } from '../../../node/checkpoint/part-upload.js';
import type { CheckpointPart } from '../../../node/checkpoint/shard-cut.js';
import { openBlobStore, type BlobStore } from '../../../node/storage/blob-store.js';

const directory = mkdtempSync(join(tmpdir(), 'statecraft-part-upload-'));
let store: BlobStore;

test.before(async () => {
  store = await openBlobStore(`file://${directory}`, { fsync: false });
});

test.after(async () => {
  await store.close();
  rmSync(directory, { recursive: true, force: true });
});

const bytes = (...values: number[]) => Uint8Array.from(values);
/** An invoke envelope carrying `value` (channel objects hold these). */
function envelope(value: number): Uint8Array {
  const typed = toTypedValue(value);
  const buffer = new Uint8Array(invokeLengthMax('test/sink', 'x', null, null, typed));
  return buffer.subarray(0, writeInvoke(buffer, 0, 0, 'test/sink', 'x', null, null, typed));
}
const decoder = new EnvelopeDecoder();
const valuesOf = (messages: Uint8Array[]) => messages.map((message) => decoder.decodeInvoke(message, 0, message.length).asInt());

const part: CheckpointPart = {
  checkpoint: 7,
  epoch: 2,
  keyGroups: [
    [0, bytes(1, 2, 3)],
    [1, null],
    [2, ''],
    [3, bytes(9, 8, 7, 6)],
  ],
  channel: [envelope(42), envelope(44)],
  error: null,
};

test('planUpload: one segment with the images back to back, slices in the manifest, unchanged and empty named as such, a channel object', () => {
  const plan = planUpload(part, 'n1-t1-g2');
  assert.equal(
    plan.objects.map(([keyGroup, ref]) => [keyGroup, ref === null || ref === '' ? ref : parseObjectRef(ref)]),
    [
      [0, { key: 'checkpoints/7/seg-n1-t1-g2.bin', offset: 0, length: 3 }],
      [1, null],
      [2, ''],
      [3, { key: 'checkpoints/7/seg-n1-t1-g2.bin', offset: 3, length: 4 }],
    ],
  );
  assert.equal(plan.puts.map(([key]) => key), ['checkpoints/7/seg-n1-t1-g2.bin', 'checkpoints/7/ch-n1-t1-g2.bin']);
  assert.equal([...plan.puts[0]![1]], [1, 2, 3, 9, 8, 7, 6]);
  assert.is(plan.channel, 'checkpoints/7/ch-n1-t1-g2.bin');
  assert.equal(valuesOf(decodeChannelObject(plan.puts[1]![1])), [42, 44]);
  const nothing = planUpload({ ...part, keyGroups: [[0, null], [1, '']], channel: null }, 'n1-t1-g2');
  assert.equal(nothing.puts, [], 'no object when nothing changed');
  assert.is(nothing.channel, null);
});

test('sliceImages: each reference cut from its object; a missing object or a short one is SC_ERR_STORE_CORRUPT', () => {
  const plan = planUpload(part, 'tag');
  const objects = new Map(plan.puts);
  const refs = plan.objects.flatMap(([, ref]) => (typeof ref === 'string' && ref !== '' ? [ref] : []));
  assert.equal(sliceImages(refs, objects).map((image) => [...image]), [[1, 2, 3], [9, 8, 7, 6]]);
  assert.throws(() => sliceImages(['checkpoints/7/seg-other.bin#0+3'], objects), (error: StatecraftError) => error.code === 'SC_ERR_STORE_CORRUPT' && /missing/.test(error.message));
  assert.throws(() => sliceImages([`${plan.puts[0]![0]}#5+9`], objects), (error: StatecraftError) => error.code === 'SC_ERR_STORE_CORRUPT' && /shorter than its slice 5\+9/.test(error.message));
});

test('uploadPart writes the objects to the store and fetchImages reads the images back; a failed part is passed on as it is', async () => {
  const uploaded = await uploadPart(store, 'n2-t1-g2', part);
  assert.is(uploaded.error, null);
  const refs = uploaded.objects.flatMap(([, ref]) => (typeof ref === 'string' && ref !== '' ? [ref] : []));
  assert.equal((await fetchImages(store, refs)).map((image) => [...image]), [[1, 2, 3], [9, 8, 7, 6]]);
  assert.equal(decodeChannelObject((await store.get(uploaded.channel!))!).length, 2);
  const failed = await uploadPart(store, 'n2-t1-g2', { ...part, error: 'key group 3 could not be encoded' });
  assert.equal(failed, { objects: [], instances: [], channel: null, error: 'key group 3 could not be encoded' });
  try {
    await fetchImages(store, ['checkpoints/9/seg-none.bin#0+1']);
    assert.unreachable('a missing object fails the fetch');
  } catch (error) {
    assert.is((error as StatecraftError).code, 'SC_ERR_STORE_CORRUPT');
  }
});

test.run();
