// Link verdicts (cluster/link-verdicts.ts), sans-I/O: which members a bridge or one-way cut leaves out,
// when a node reports a cut link and withdraws it, and that nodes given the same reports agree.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LINK_DOWN_MS, LINK_UP_MS, LinkVerdicts, isLinksMessage, leaveOut } from '../../cluster/link-verdicts.js';

test('leaveOut: the member on the most cut links first, then the larger id; only members of the view count', () => {
  assert.equal(leaveOut(['a', 'b', 'c'], []), []);
  assert.equal(leaveOut(['a', 'b', 'c'], [['a', 'b']]), ['b'], 'a bridge a–b: the larger id goes, a (the leader) stays');
  assert.equal(leaveOut(['a', 'b', 'c'], [['b', 'a']]), ['b'], 'the same whichever side reported it');
  assert.equal(leaveOut(['a', 'b', 'c', 'd'], [['a', 'b'], ['a', 'c']]), ['a'], 'a is cut from two: it goes alone');
  assert.equal(leaveOut(['a', 'b', 'c', 'd', 'e'], [['a', 'b'], ['c', 'd']]), ['b', 'd']);
  assert.equal(leaveOut(['a', 'b', 'c'], [['a', 'x']]), [], 'x is not in the view');
});

const links = (down: string[], all = ['b', 'c']) => all.map((id) => ({ id, alive: true, connected: !down.includes(id) }));

test(`a link is reported after ${LINK_DOWN_MS} ms down (the member alive), withdrawn after ${LINK_UP_MS} ms up; a member not alive is membership's to judge`, () => {
  const node = new LinkVerdicts('a', 1);
  assert.not.ok(node.observe(links(['b']), 0));
  assert.not.ok(node.observe(links(['b']), LINK_DOWN_MS - 1));
  assert.is(node.outgoing(), null, 'nothing to say');
  assert.ok(node.observe(links(['b']), LINK_DOWN_MS));
  assert.equal(node.down, ['b']);
  const message = node.outgoing()!;
  assert.equal(message.reports.map((report) => [report.reporter, report.down]), [['a', ['b']]]);
  // Up again: still reported for a while (a flapping link does not flip the verdict each time).
  assert.not.ok(node.observe(links([]), LINK_DOWN_MS + 100));
  assert.not.ok(node.observe(links(['b']), LINK_DOWN_MS + 200), 'down again: still reported');
  assert.not.ok(node.observe(links([]), LINK_DOWN_MS + 300));
  assert.ok(node.observe(links([]), LINK_DOWN_MS + 300 + LINK_UP_MS));
  assert.equal(node.down, []);
  assert.equal(node.outgoing()!.reports[0]!.down, [], 'the withdrawal goes out once');
  assert.is(node.outgoing(), null);
  // A member membership no longer holds alive is not reported, however long its link is down.
  const other = new LinkVerdicts('a', 1);
  other.observe([{ id: 'b', alive: false, connected: false }], 0);
  assert.not.ok(other.observe([{ id: 'b', alive: false, connected: false }], 10 * LINK_DOWN_MS));
});

test('reports flood: the newest version per reporter wins, a node is the authority on its own, and nodes with the same reports agree', () => {
  const a = new LinkVerdicts('a', 1);
  const b = new LinkVerdicts('b', 1);
  const c = new LinkVerdicts('c', 1);
  a.observe(links(['b']), 0);
  a.observe(links(['b']), LINK_DOWN_MS);
  b.observe(links(['a'], ['a', 'c']), 0);
  b.observe(links(['a'], ['a', 'c']), LINK_DOWN_MS);
  // a and b cannot talk: each floods through c.
  const fromA = a.outgoing()!;
  const fromB = b.outgoing()!;
  assert.ok(c.receive(fromA));
  assert.ok(c.receive(fromB));
  assert.not.ok(c.receive(fromA), 'nothing new');
  const fromC = c.outgoing()!;
  assert.ok(a.receive(fromC));
  assert.ok(b.receive(fromC));
  const alive = () => true;
  for (const node of [a, b, c]) assert.equal(node.verdict(['a', 'b', 'c'], alive), ['b']);
  // A forged or stale report about a does not override a's own.
  assert.not.ok(b.receive({ type: 'links', reports: [{ reporter: 'b', version: 1e15, down: ['c'] }] }));
  // A member that is not alive (membership's to judge) neither reports nor is left out.
  assert.equal(c.verdict(['a', 'b', 'c'], (id) => id !== 'a'), []);
  // b's link heals: its withdrawal (a newer version) reaches c; a's report still stands until a withdraws.
  b.observe(links([], ['a', 'c']), LINK_DOWN_MS + 1);
  b.observe(links([], ['a', 'c']), LINK_DOWN_MS + 1 + LINK_UP_MS);
  c.receive(b.outgoing()!);
  assert.equal(c.verdict(['a', 'b', 'c'], alive), ['b']);
  a.observe(links([]), LINK_DOWN_MS + 1);
  a.observe(links([]), LINK_DOWN_MS + 1 + LINK_UP_MS);
  c.receive(a.outgoing()!);
  assert.equal(c.verdict(['a', 'b', 'c'], alive), []);
});

test('a restarted node outranks its earlier reports; malformed messages are not links messages', () => {
  const before = new LinkVerdicts('a', 1000);
  before.observe(links(['b']), 0);
  before.observe(links(['b']), LINK_DOWN_MS);
  const after = new LinkVerdicts('a', 2000);
  after.observe(links(['c']), 0);
  after.observe(links(['c']), LINK_DOWN_MS);
  const c = new LinkVerdicts('c', 1);
  c.receive(after.outgoing()!);
  assert.not.ok(c.receive(before.outgoing()!), 'the earlier process reports less recent news');
  assert.equal(c.verdict(['a', 'b', 'c'], () => true), ['c']);
  for (const bad of [null, 5, { type: 'ping' }, { type: 'links' }, { type: 'links', reports: [{ reporter: 'a', version: 1.5, down: [] }] }, { type: 'links', reports: [{ reporter: 'a', version: 1, down: [3] }] }]) {
    assert.not.ok(isLinksMessage(bad), JSON.stringify(bad));
  }
  assert.ok(isLinksMessage({ type: 'links', reports: [] }));
});

test.run();
