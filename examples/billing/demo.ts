/**
 * Drives the billing example against a running node: subscribes four users with different test cards,
 * then prints the `billing` egress (and any dead letters) as the node bills them every few seconds.
 *
 *   npm start                                   # in one terminal
 *   node examples/billing/demo.js               # in another; Ctrl-C to stop watching
 *
 * Flags: --url ws://127.0.0.1:8080, --interval 5 (seconds between bills), --retry-ms 1000 (first retry
 * back-off), --seconds N (stop after N seconds), --cancel-after N (cancel every subscription after N
 * periods have been billed).
 */
import { parseArgs } from 'node:util';
import { connect, DEAD_LETTERS_EGRESS, type DeadLetter } from 'statecraft';
import { BILLING_EGRESS, BillingEventType, SubscriptionCommandType, type BillingEvent } from './functions.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.STATECRAFT_URL ?? 'ws://127.0.0.1:8080' },
    interval: { type: 'string', default: '5' },
    'retry-ms': { type: 'string', default: '1000' },
    seconds: { type: 'string' },
    'cancel-after': { type: 'string' },
  },
});
const intervalSeconds = Number(values.interval);
const retryBaseMs = Number(values['retry-ms']);
const cancelAfter = values['cancel-after'] === undefined ? Infinity : Number(values['cancel-after']);

const users = [
  { user: 'alice', plan: 'pro', amountCents: 1200, card: '4242 4242 4242 4242' }, // approved
  { user: 'bob', plan: 'basic', amountCents: 500, card: '4000 0000 0000 9995' }, // two soft declines, then approved
  { user: 'carol', plan: 'pro', amountCents: 1200, card: '4000 0000 0000 0119' }, // soft declines until retries run out
  { user: 'dave', plan: 'team', amountCents: 4900, card: '4000 0000 0000 0002' }, // hard decline
];

const client = await connect(values.url, { reconnect: { attemptsMax: 3 } });
console.log(`connected to ${values.url} (node ${client.nodeId})`);
const billing = client.subscribe<BillingEvent>(BILLING_EGRESS, { type: BillingEventType });
const deadLetters = client.subscribe<DeadLetter>(DEAD_LETTERS_EGRESS);

const started = Date.now();
const clock = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s`;
function describe(event: BillingEvent): string {
  const money = event.amountCents === undefined ? '' : ` $${(event.amountCents / 100).toFixed(2)}`;
  const period = event.period === undefined ? '' : ` period ${event.period}`;
  const details = [
    event.attempt === undefined ? '' : `attempt ${event.attempt}`,
    event.reason ?? '',
    event.retryInMs === undefined ? '' : `next try in ${event.retryInMs} ms`,
    event.chargeId ?? '',
    event.status === undefined ? '' : `status ${event.status}`,
  ].filter(Boolean);
  return `${event.user.padEnd(6)} ${event.event}${period}${money}${details.length ? ` (${details.join(', ')})` : ''}`;
}

const cancelled = new Set<string>();
void (async () => {
  for await (const record of billing) {
    const event = record.value;
    console.log(`${clock()}  ${describe(event)}`);
    if (event.event === 'billing' && event.period! >= cancelAfter && !cancelled.has(event.user)) {
      cancelled.add(event.user);
      await client.send({ typename: 'billing/subscription', id: event.user }, { action: 'cancel' }, SubscriptionCommandType);
    }
  }
})();
void (async () => {
  for await (const record of deadLetters) console.log(`${clock()}  dead letter: ${JSON.stringify(record.value)}`);
})();

for (const { user, ...details } of users) {
  await client.send({ typename: 'billing/subscription', id: user }, { action: 'subscribe', ...details, intervalSeconds, retryBaseMs }, SubscriptionCommandType);
}
console.log(`subscribed ${users.map((entry) => entry.user).join(', ')}; billing every ${intervalSeconds} s. Ctrl-C to stop watching.`);

const stop = async () => {
  await client.close();
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
if (values.seconds !== undefined) setTimeout(stop, Number(values.seconds) * 1000);
