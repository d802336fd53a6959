// State of remote function types as a shard keeps it: registered specs, expiry modes, driven with explicit times.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RemoteStateLayout } from '../../../node/remote/remote-state.js';

const INT = 'io.statefun.types/int';
const bytes = (...values: number[]) => new Uint8Array(values);

test('a request carries every registered value, unset ones without a value, in registration order', () => {
  const layout = new RemoteStateLayout();
  assert.ok(layout.register([{ name: 'a', typename: INT, expireMode: 'none', expireAfterMs: 0 }, { name: 'b', typename: 'x/json', expireMode: 'none', expireAfterMs: 0 }]));
  assert.not.ok(layout.register([{ name: 'a', typename: INT, expireMode: 'none', expireAfterMs: 0 }]), 'the same spec again changes nothing');
  const record = layout.apply(undefined, [{ name: 'b', value: { typename: 'x/json', value: bytes(1, 2) } }], 0);
  assert.equal(layout.requestState(record, 0), [
    { name: 'a', value: { typename: INT, value: null } },
    { name: 'b', value: { typename: 'x/json', value: bytes(1, 2) } },
  ]);
  assert.is(layout.apply(record, [{ name: 'b', value: null }], 0), undefined, 'deleting the last value removes the instance');
});

test('after-write expiry moves only on write; after-invoke expiry moves on every batch', () => {
  const layout = new RemoteStateLayout();
  layout.register([
    { name: 'w', typename: INT, expireMode: 'after-write', expireAfterMs: 100 },
    { name: 'i', typename: INT, expireMode: 'after-invoke', expireAfterMs: 100 },
  ]);
  assert.ok(layout.hasExpiry);
  let record = layout.apply(undefined, [{ name: 'w', value: { typename: INT, value: bytes(1) } }, { name: 'i', value: { typename: INT, value: bytes(2) } }], 1000);
  record = layout.apply(record, [], 1080); // a batch that writes nothing
  const at1150 = layout.requestState(record, 1150);
  assert.is(at1150[0]!.value.value, null, 'w expired 100 ms after its write');
  assert.equal(at1150[1]!.value.value, bytes(2), 'i was refreshed by the batch at 1080');
  assert.is(layout.requestState(record, 1181)[1]!.value.value, null, 'and expires 100 ms after it');
  assert.is(layout.expire(record, 1181), undefined, 'the sweep drops an instance whose values all expired');
  const kept = layout.expire(record, 1150) as unknown[];
  assert.equal(kept.length, 4, 'the sweep drops only the expired value');
});

test('a value keeps the type name it was written with; a value of a spec not registered (after a restore) is kept', () => {
  const layout = new RemoteStateLayout();
  const record = [...['old', 'a/v1', bytes(9), 0], ...['n', INT, bytes(1), 0]];
  layout.register([{ name: 'n', typename: 'a/v2', expireMode: 'none', expireAfterMs: 0 }]);
  assert.equal(layout.requestState(record, 0), [{ name: 'n', value: { typename: INT, value: bytes(1) } }]);
  const next = layout.apply(record, [{ name: 'n', value: { typename: 'a/v2', value: bytes(3) } }], 0) as unknown[];
  assert.equal(next.slice(0, 4), ['old', 'a/v1', bytes(9), 0]);
  assert.equal(next.slice(4), ['n', 'a/v2', bytes(3), 0]);
});

test.run();
