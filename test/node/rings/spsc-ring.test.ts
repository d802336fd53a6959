// SharedArrayBuffer rings: wrap-around, a full ring, and a producer thread outrunning its consumer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import { RingConsumer, RingProducer, createRingBuffer, type RecordVisitor } from '../../../node/rings/spsc-ring.js';
import { Inbox, createMailboxLayout } from '../../../node/rings/mailbox.js';
import { withTimeout } from '../../helpers.js';

class Collector implements RecordVisitor {
  records: number[][] = [];
  visit(data: Uint8Array, offset: number, length: number): void {
    this.records.push([...data.subarray(offset, offset + length)]);
  }
}

test('records of every size wrap around the end of the ring intact and in order', () => {
  const buffer = createRingBuffer(1024);
  const producer = new RingProducer(buffer);
  const consumer = new RingConsumer(buffer);
  const collector = new Collector();
  let written = 0;
  let read = 0;
  // 5,000 records of 0..199 bytes through a 1 KiB ring: it wraps hundreds of times.
  while (read < 5000) {
    while (written < 5000) {
      const length = (written * 37) % 200;
      const offset = producer.reserve(length);
      if (offset < 0) break;
      producer.data.fill(written & 0xff, offset, offset + length);
      if (length > 0) producer.data[offset] = written % 251;
      producer.commit(length);
      written++;
    }
    producer.publish();
    consumer.poll(collector, 1 << 30);
    for (; read < collector.records.length; read++) {
      const record = collector.records[read]!;
      assert.is(record.length, (read * 37) % 200, `record ${read} length`);
      if (record.length > 0) assert.is(record[0], read % 251, `record ${read} first byte`);
      for (let index = 1; index < record.length; index++) assert.is(record[index], read & 0xff);
    }
  }
  assert.ok(consumer.isEmpty());
});

test('a full ring refuses a record until the consumer releases space; unpublished records stay invisible', () => {
  const buffer = createRingBuffer(1024);
  const producer = new RingProducer(buffer);
  const consumer = new RingConsumer(buffer);
  let accepted = 0;
  while (producer.reserve(100) >= 0) {
    producer.commit(100);
    accepted++;
  }
  assert.is(accepted, 9, '9 records of 104 bytes fit in 1 KiB');
  const collector = new Collector();
  assert.is(consumer.poll(collector, 100), 0, 'nothing published yet');
  producer.publish();
  assert.is(consumer.poll(collector, 3), 3);
  assert.ok(producer.reserve(100) >= 0, 'released space is reusable');
  producer.commit(100);
  producer.publish();
  assert.is(consumer.poll(collector, 100), 7);
  assert.throws(() => producer.reserve(600), /exceeds the ring's limit/);
});

test('a producer thread outrunning its consumer: overflow queue, nothing lost, order kept per address', async () => {
  const count = 300_000;
  const addresses = 100;
  const layout = createMailboxLayout(2, 64 * 1024);
  let received = 0;
  const lastPerAddress = new Int32Array(addresses).fill(-1);
  let lastSeq = -1;
  let corrupt = 0;
  const inbox = new Inbox(layout, 0, {
    visit(data, offset, length) {
      const view = new DataView(data.buffer, data.byteOffset + offset, length);
      const seq = view.getUint32(0, true);
      const address = view.getUint16(4, true);
      const counter = view.getUint32(6, true);
      if (seq !== lastSeq + 1 || counter !== lastPerAddress[address]! + 1 || length !== 10 + (seq % 97)) corrupt++;
      for (let index = 10; index < length; index++) if (data[offset + index] !== (seq & 0xff)) corrupt++;
      lastSeq = seq;
      lastPerAddress[address] = counter;
      received++;
    },
  });
  const worker = new Worker(new URL('../../fixtures/ring-producer.js', import.meta.url), { workerData: { layout, count, addresses } });
  const done = new Promise<{ overflowBytesMax: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  // A slow consumer: drain a few records at a time, parking on the doorbell when the ring is empty.
  await withTimeout(
    (async () => {
      let turns = 0;
      while (received < count) {
        const polled = inbox.poll(turns++ % 50 === 0 ? 10_000 : 200);
        if (polled === 0) await inbox.park(50);
        else if (turns % 20 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    })(),
    60_000,
    'consumer to receive every record',
  );
  const { overflowBytesMax } = await withTimeout(done, 10_000, 'producer to finish');
  await worker.terminate();
  assert.is(received, count);
  assert.is(corrupt, 0);
  assert.ok(overflowBytesMax > 0, 'the ring was full and the producer used its overflow queue');
});

test.run();
