/**
 * Starts a rally between ts/ping (TypeScript, embedded) and py/pong (Python, remote) through a running
 * node, and prints ping's reports until the rally ends.
 *
 *   node examples/ping-pong/rally.js [--id rally] [--n 4] [--url ws://127.0.0.1:8080]
 */
import { parseArgs } from 'node:util';
import { connect, Types } from 'statecraft';
import { pingReport } from './functions.js';

const { values } = parseArgs({
  options: {
    id: { type: 'string', default: 'rally' },
    n: { type: 'string', default: '4' },
    url: { type: 'string', default: process.env.STATECRAFT_URL ?? 'ws://127.0.0.1:8080' },
  },
});
const n = Number(values.n);
const client = await connect(values.url);
const pings = client.subscribe('example/pings', { type: pingReport });
await client.send({ typename: 'ts/ping', id: values.id }, n, Types.int);
for await (const record of pings) {
  if (record.value.id !== values.id) continue;
  console.log(`ping ${record.value.id}: volley #${record.value.volleys}, pong answered ${record.value.n}`);
  if (record.value.n === 0) break;
}
await client.close();
