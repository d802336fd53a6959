/**
 * The commit point's cost (issue 12): what a leader does to commit a checkpoint once its manifest is
 * written. Before terms that was one durable write (LATEST); with terms it is the commit record's write
 * plus a list of `terms/` (the fence: node/checkpoint/terms.ts). The baseline, one durable write of the
 * same size, is measured in the same run, interleaved, so the ratio is what to quote.
 *
 *   node bench/commit-point.js [--store file|s3] [--commits 300] [--rounds 5]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { beginTerm, deposedBy, encodeCommitRecord, setBase, writeCommit, type CommitRecord } from '../node/checkpoint/terms.js';
import { openBlobStore, type BlobStore } from '../node/storage/blob-store.js';
import { startS3Server, type S3TestServer } from '../test/s3-server.js';
import { median } from './harness.js';

const { values } = parseArgs({ options: { store: { type: 'string', default: 'file' }, commits: { type: 'string', default: '300' }, rounds: { type: 'string', default: '5' } } });
const commits = Number(values.commits);
const rounds = Number(values.rounds);

async function main(): Promise<void> {
  let s3: S3TestServer | null = null;
  let directory: string | null = null;
  let store: BlobStore;
  if (values.store === 's3') {
    s3 = await startS3Server();
    store = await openBlobStore(`s3://${s3.bucket}/bench`, { endpoint: s3.endpoint });
  } else {
    directory = mkdtempSync(join(tmpdir(), 'statecraft-commit-point-'));
    store = await openBlobStore(`file://${directory}`);
  }
  try {
    // A store as a leader finds it: a few earlier terms, its own based on the head.
    for (let index = 0; index < 3; index++) {
      const { term, head } = await beginTerm(store, 'bench');
      await setBase(store, term, head);
    }
    const { term, head } = await beginTerm(store, 'bench');
    await setBase(store, term, head);
    const retained = [1, 2].map((checkpoint) => ({ checkpoint, term }));
    let checkpoint = 10;
    const record = (): CommitRecord => ({ checkpoint: ++checkpoint, term, retained });
    const baseline: number[] = [];
    const fenced: number[] = [];
    for (let round = 0; round < rounds; round++) {
      // Interleaved: one durable write (the old LATEST), then the record and the list, per commit.
      let plain = 0;
      let terms = 0;
      for (let index = 0; index < commits; index++) {
        const bytes = encodeCommitRecord(record());
        let started = performance.now();
        await store.put('LATEST-baseline', bytes);
        plain += performance.now() - started;
        started = performance.now();
        await writeCommit(store, record());
        if ((await deposedBy(store, term)) !== null) throw new Error('deposed');
        terms += performance.now() - started;
      }
      baseline.push(plain / commits);
      fenced.push(terms / commits);
      console.log(`round ${round + 1}: one durable write ${(plain / commits).toFixed(3)} ms, record + list ${(terms / commits).toFixed(3)} ms (${(terms / plain).toFixed(2)}x)`);
    }
    const ratio = median(fenced.map((value, index) => value / baseline[index]!));
    console.log(
      JSON.stringify({ store: values.store, commits, rounds, baselineMsMedian: Number(median(baseline).toFixed(3)), commitPointMsMedian: Number(median(fenced).toFixed(3)), ratioMedian: Number(ratio.toFixed(2)) }),
    );
  } finally {
    await store.close();
    if (directory !== null) rmSync(directory, { recursive: true, force: true });
    await s3?.close();
  }
}

await main();
