/**
 * Prints the records of one or more egresses of a running node, one JSON line per record.
 *
 *   node scripts/watch.js billing dead-letters [--url ws://127.0.0.1:8080] [--from earliest|latest|<id>]
 */
import { parseArgs } from 'node:util';
import { connect } from 'statecraft';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string', default: process.env.STATECRAFT_URL ?? 'ws://127.0.0.1:8080' },
    from: { type: 'string', default: 'latest' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help || positionals.length === 0) {
  console.log('usage: node scripts/watch.js <egress> [<egress> ...] [--url ws://127.0.0.1:8080] [--from earliest|latest|<record id>]');
  process.exit(values.help ? 0 : 2);
}
const from = values.from === 'earliest' || values.from === 'latest' ? values.from : Number(values.from);
if (typeof from === 'number' && !Number.isInteger(from)) {
  console.error(`--from must be earliest, latest or a record id, not ${values.from}`);
  process.exit(2);
}

const client = await connect(values.url);
console.error(`watching ${positionals.join(', ')} on ${values.url} (node ${client.nodeId}); Ctrl-C to stop`);
await Promise.all(
  positionals.map(async (egress) => {
    const subscription = client.subscribe(egress, { from, onGap: (first, last) => console.error(`${egress}: records ${first}..${last} were no longer retained`) });
    for await (const record of subscription) {
      const value = record.value instanceof Uint8Array ? Buffer.from(record.value).toString('base64') : record.value;
      console.log(JSON.stringify({ egress, id: record.id, source: record.source, type: record.valueTypeName, value }));
    }
  }),
);
