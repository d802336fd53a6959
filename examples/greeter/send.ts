/**
 * Greets a name through a running node and prints the greeting from the `greetings` egress.
 *
 *   node examples/greeter/send.js Alice [--url ws://127.0.0.1:8080]
 */
import { parseArgs } from 'node:util';
import { connect } from 'statecraft';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { url: { type: 'string', default: process.env.STATECRAFT_URL ?? 'ws://127.0.0.1:8080' } } });
const name = positionals[0] ?? 'World';

const client = await connect(values.url);
const greetings = client.subscribe<string>('greetings');
await client.send({ typename: 'example/greeter', id: name }, name);
for await (const record of greetings) {
  if (record.source.id !== name) continue; // someone else's greeting
  console.log(record.value);
  break;
}
await client.close();
