/**
 * The codec bound: how fast one thread packs and unpacks a message envelope with msgpackr. Statecraft's
 * hot paths carry the same fields (kind, key group, target, caller, typed value); this is the baseline
 * every throughput benchmark prints beside its figure.
 */
import { Packr } from 'msgpackr';
import { median, rateOf } from './harness.js';

export function codecBound(runs = 5, runMs = 400): number {
  const packr = new Packr({ useRecords: false });
  const envelope = {
    kind: 1,
    keyGroup: 517,
    target: { typename: 'bench/hop', id: 'h4711' },
    caller: { typename: 'bench/hop', id: 'h815' },
    value: { typename: 'io.statefun.types/int', bytes: new Uint8Array([0x0d, 0x2a, 0, 0, 0]) },
  };
  let sink = 0;
  const rates: number[] = [];
  for (let run = 0; run < runs; run++) {
    rates.push(
      rateOf((iterations) => {
        for (let index = 0; index < iterations; index++) {
          envelope.keyGroup = index & 1023;
          const decoded = packr.unpack(packr.pack(envelope)) as typeof envelope;
          sink += decoded.keyGroup;
        }
      }, runMs),
    );
  }
  if (sink === -1) console.log(sink);
  return median(rates);
}
