// The billing and greeter examples, end to end on a real node: every card's story, cancellation, and the
// scripts the README tells users to run.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connect, type Client } from 'statecraft';
import { BillingEventType, SubscriptionCommandType, type BillingEvent, type SubscriptionCommand } from '../../examples/billing/functions.js';
import { killNodeProcesses, startNodeProcess, startTestNode, take, withTimeout, type TestNode } from '../helpers.js';

const billingModule = fileURLToPath(new URL('../../examples/billing/functions.js', import.meta.url));
const greeterModule = fileURLToPath(new URL('../../examples/greeter/functions.js', import.meta.url));
const example = (path: string) => fileURLToPath(new URL(`../../examples/${path}`, import.meta.url));

let node: TestNode;
let client: Client;

test.before(async () => {
  node = await startTestNode({ functions: [billingModule] });
  client = await connect(node.url);
});
test.after(async () => {
  await client?.close();
  await node?.close();
  killNodeProcesses();
});

function subscribe(user: string, card: string, extra: Partial<SubscriptionCommand> = {}) {
  const command = { action: 'subscribe', plan: 'pro', amountCents: 1200, card, intervalSeconds: 0.3, retryBaseMs: 40, attemptsMax: 3, ...extra } as SubscriptionCommand;
  return client.send({ typename: 'billing/subscription', id: user }, command, SubscriptionCommandType);
}

/** Collects `billing` events for the given users until `done` says enough. */
async function collect(users: string[], done: (events: BillingEvent[]) => boolean, start: () => Promise<void>): Promise<BillingEvent[]> {
  const subscription = client.subscribe<BillingEvent>('billing', { type: BillingEventType });
  const events: BillingEvent[] = [];
  const reading = (async () => {
    for await (const record of subscription) {
      if (!users.includes(record.value.user)) continue;
      events.push(record.value);
      if (done(events)) break;
    }
  })();
  await start();
  await withTimeout(reading, 15_000, `billing events; got ${JSON.stringify(events)}`);
  subscription.close();
  return events;
}

const story = (events: BillingEvent[], user: string) =>
  events.filter((event) => event.user === user && (event.period === 1 || event.event === 'subscribed')).map((event) => event.event);

test('each test card tells its story: paid, paid after retries, failed after retries, hard decline', async () => {
  const users = ['t-alice', 't-bob', 't-carol', 't-dave'];
  const finished = (events: BillingEvent[], user: string) => events.some((event) => event.user === user && event.period === 1 && (event.event === 'paid' || event.event === 'past-due'));
  const events = await collect(users, (events) => users.every((user) => finished(events, user)), async () => {
    await subscribe('t-alice', '4242 4242 4242 4242');
    await subscribe('t-bob', '4000 0000 0000 9995');
    await subscribe('t-carol', '4000 0000 0000 0119');
    await subscribe('t-dave', '4000 0000 0000 0002');
  });
  assert.equal(story(events, 't-alice'), ['subscribed', 'billing', 'paid']);
  assert.equal(story(events, 't-bob'), ['subscribed', 'billing', 'retrying', 'retrying', 'paid']);
  assert.equal(story(events, 't-carol'), ['subscribed', 'billing', 'retrying', 'retrying', 'failed', 'past-due']);
  assert.equal(story(events, 't-dave'), ['subscribed', 'billing', 'failed', 'past-due']);
  // Back-off doubles: 40 ms, then 80 ms. Period 1 only: on a loaded machine carol's next period (0.3 s
  // later) may begin retrying before the other cards have finished their first.
  assert.equal(events.filter((event) => event.user === 't-carol' && event.period === 1 && event.event === 'retrying').map((event) => event.retryInMs), [40, 80]);
  const bobPaid = events.find((event) => event.user === 't-bob' && event.event === 'paid')!;
  assert.is(bobPaid.attempt, 3);
  assert.ok(bobPaid.chargeId?.includes('t-bob/1'));
});

test('billing repeats every interval until cancelled, and cancelling stops the pending bill', async () => {
  const periods: number[] = [];
  await collect(['t-erin'], (events) => events.filter((event) => event.event === 'paid').length >= 3, async () => {
    await subscribe('t-erin', '4242 4242 4242 4242', { intervalSeconds: 0.1 });
  }).then((events) => periods.push(...events.filter((event) => event.event === 'paid').map((event) => event.period!)));
  assert.equal(periods.slice(0, 3), [1, 2, 3]);

  const afterCancel = await collect(['t-erin'], (events) => events.some((event) => event.event === 'cancelled'), async () => {
    await client.send({ typename: 'billing/subscription', id: 't-erin' }, { action: 'cancel' }, SubscriptionCommandType);
  });
  const lastBilled = Math.max(0, ...afterCancel.filter((event) => event.event === 'billing').map((event) => event.period!), ...periods);
  // Watch for three more intervals: no bill may come after the cancellation.
  const subscription = client.subscribe<BillingEvent>('billing', { type: BillingEventType });
  const late: BillingEvent[] = [];
  const reading = (async () => {
    for await (const record of subscription) if (record.value.user === 't-erin' && record.value.event === 'billing') late.push(record.value);
  })();
  await new Promise((resolve) => setTimeout(resolve, 400));
  subscription.close();
  await reading;
  assert.equal(late, [], `billed after cancelling (last billed period ${lastBilled})`);
});

test('a malformed command becomes a dead letter and the subscription goes on', async () => {
  const deadLetters = client.subscribe<{ address: { id: string }; reason: string }>('dead-letters');
  await subscribe('t-frank', '4242 4242 4242 4242', { amountCents: -5 });
  const [letter] = await take(deadLetters, 1);
  assert.is(letter!.value.address.id, 't-frank');
  assert.match(letter!.value.reason, /positive whole amountCents/);
  deadLetters.close();
  const events = await collect(['t-frank'], (events) => events.some((event) => event.event === 'paid'), () => subscribe('t-frank', '4242 4242 4242 4242'));
  assert.ok(events.some((event) => event.event === 'paid' && event.period === 1));
});

test('as the README says: a node with both examples, the billing demo and the greeter script', async () => {
  const nodeProcess = await startNodeProcess(['--functions', billingModule, '--functions', greeterModule, '--port', '0']);
  const run = (script: string, args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [example(script), ...args, '--url', nodeProcess.url], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(output);
        else reject(new Error(`${script} exited with ${code}:\n${output}`));
      });
    });
  const greeting = await run('greeter/send.js', ['Ada']);
  assert.match(greeting, /Hello, Ada!/);
  assert.match(await run('greeter/send.js', ['Ada']), /Hello again, Ada \(visit #2\)/);

  const demo = await run('billing/demo.js', ['--interval', '0.5', '--retry-ms', '50', '--seconds', '2.5']);
  for (const line of [/alice\s+paid period 1 \$12\.00/, /bob\s+retrying period 1 .*insufficient_funds/, /bob\s+paid period 1/, /carol\s+failed period 1/, /dave\s+past-due period 1/]) {
    assert.match(demo, line);
  }
  assert.not.match(demo, /dead letter/);
  nodeProcess.kill('SIGTERM');
  assert.is(await nodeProcess.exited, 0);
});

test.run();
