/**
 * A TypeScript function that plays ping-pong with a Python one (examples/python/pong.py), each keeping
 * its own state: Statecraft runs `ts/ping` embedded and sends `py/pong` over HTTP.
 *
 *   python3 examples/python/pong.py --port 8000
 *   node cluster/start.js --functions examples/ping-pong/functions.js --endpoint 'py/*=http://127.0.0.1:8000/'
 *   node examples/ping-pong/rally.js --n 4
 *
 * A client's int n starts a rally: ping sends n to pong; pong counts the hit and answers n - 1 while
 * n > 0; ping counts each answer, reports it on the `example/pings` egress, and plays it back.
 */
import { defineFunction, Types } from 'statecraft';

export const pingReport = Types.json<{ id: string; volleys: number; n: number }>('example/ping-report');

export const ping = defineFunction({
  typename: 'ts/ping',
  specs: [{ name: 'volleys', type: Types.int }],
  fn(context, message) {
    const n = message.asInt();
    const pong = { typename: 'py/pong', id: context.self.id };
    if (context.caller === null) {
      context.send(pong, n, Types.int); // a client serves
      return;
    }
    const volleys = (context.storage.volleys ?? 0) + 1;
    context.storage.volleys = volleys;
    context.egress('example/pings', { id: context.self.id, volleys, n }, pingReport);
    if (n > 0) context.send(pong, n, Types.int);
  },
});
