// Per-address state records and their expiry, driven with explicit times.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StateStore } from '../../../node/keygroups/state-store.js';
import { StateLayout, UNCHANGED } from '../../../lib/state-layout.js';
import { Types } from '../../../lib/types.js';

test('one spec without expiry: the record is the value itself', () => {
  const layout = new StateLayout([{ name: 'n', type: Types.int }]);
  assert.ok(layout.single);
  assert.is(layout.apply(undefined, [5], 0), 5);
  assert.is(layout.apply(5, [UNCHANGED], 0), 5);
  assert.is(layout.apply(5, [null], 0), undefined, 'deleting the only value removes the instance');
  assert.is(layout.read(7, 0, 0), 7);
  assert.is(layout.read(undefined, 0, 0), null);
});

test('expire after write: the deadline moves only on write', () => {
  const layout = new StateLayout([
    { name: 'a', type: Types.string, expireAfterWrite: 100 },
    { name: 'b', type: Types.string },
  ]);
  let record = layout.apply(undefined, ['x', 'y'], 1000);
  assert.is(layout.read(record, 0, 1099), 'x');
  assert.is(layout.read(record, 0, 1100), null);
  record = layout.apply(record, [UNCHANGED, 'y2'], 1050); // writing b does not refresh a
  assert.is(layout.read(record, 0, 1100), null);
  assert.is(layout.read(record, 1, 5000), 'y2', 'b never expires');
  record = layout.expire(record, 1200);
  assert.is(layout.read(record, 0, 1200), null);
  assert.is(layout.read(record, 1, 1200), 'y2');
  assert.is(layout.expire(record, 1300), record, 'nothing left to expire');
});

test('expire after call: every invocation refreshes it, reading or not', () => {
  const layout = new StateLayout([{ name: 'a', type: Types.int, expireAfterCall: 100 }]);
  let record = layout.apply(undefined, [1], 0);
  record = layout.apply(record, null, 90); // a call that touched no state
  assert.is(layout.read(record, 0, 150), 1);
  assert.is(layout.read(record, 0, 190), null);
  assert.is(layout.apply(record, null, 200), undefined, 'an expired record is dropped at the next call');
});

test('the store sweeps expired instances and counts instances', () => {
  const layouts = [new StateLayout([{ name: 'a', type: Types.int, expireAfterWrite: 10 }]), new StateLayout([{ name: 'n', type: Types.int }])];
  const store = new StateStore(16, layouts);
  for (let index = 0; index < 100; index++) {
    store.set(index % 16, 0, `e${index}`, layouts[0]!.apply(undefined, [index], index < 50 ? 0 : 100));
    store.set(index % 16, 1, `k${index}`, 1);
  }
  assert.is(store.size, 200);
  assert.is(store.sweep(0, 16, 50), 50);
  assert.is(store.size, 150);
  assert.is(store.get(1, 0, 'e1'), undefined);
  assert.ok(store.get(1, 1, 'k1') !== undefined);
  store.set(1, 1, 'k1', undefined);
  assert.is(store.size, 149);
});

test.run();
