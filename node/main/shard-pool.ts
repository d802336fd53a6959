/**
 * The shard worker threads of a node, seen from its main thread: starting them, which shard a key
 * group belongs to, and requests that wait for a shard's answer (matched by request number). Messages
 * on the hot path never come here: they go through the rings.
 */
import { Worker } from 'node:worker_threads';
import { StatecraftError } from '../../lib/errors.js';
import type { MainToShard, ShardToMain, ShardWorkerData } from '../shard/shard-worker.js';

const SHARD_START_TIMEOUT_MS = 60_000;
/** How long a stopping shard may take before it is terminated. */
const SHARD_STOP_WAIT_MS = 2000;

export type ShardReply<Type extends ShardToMain['type']> = Extract<ShardToMain, { type: Type }>;

/** A request to a shard: the pool numbers it. */
export type ShardRequest = MainToShard & { request: number };

export interface ShardPoolEvents {
  log(line: string): void;
  /** A shard uploaded its part of a checkpoint. */
  onPart(thread: number, part: ShardReply<'checkpoint-part'>): void;
  /** A shard died (a runtime bug): the node cannot go on. Not called once the pool is stopping. */
  onFatal(error: Error): void;
}

/** What parts of the main thread ask of the shard threads (a fake stands in for it in tests). */
export type ShardRequests = Pick<ShardPool, 'size' | 'shardOf' | 'byShard' | 'ask' | 'askAll' | 'post' | 'postAll'>;

export class ShardPool {
  private readonly workers: Worker[] = [];
  private requests = 0;
  /** Answers shards owe, by request number. */
  private readonly replies = new Map<number, (reply: ShardToMain) => void>();
  private stopping = false;

  constructor(
    /** Shard threads, numbered 1..size (thread 0 is the main thread). */
    readonly size: number,
    private readonly events: ShardPoolEvents,
  ) {}

  /** The shard that owns a key group when this node owns it: the one place this mapping is written. */
  shardOf(keyGroup: number): number {
    return 1 + (keyGroup % this.size);
  }

  /** Groups items by the shard of their key group, in order. */
  byShard<T>(items: Iterable<T>, keyGroupOf: (item: T) => number): Map<number, T[]> {
    const groups = new Map<number, T[]>();
    for (const item of items) {
      const shard = this.shardOf(keyGroupOf(item));
      const list = groups.get(shard);
      if (list === undefined) groups.set(shard, [item]);
      else list.push(item);
    }
    return groups;
  }

  /** Starts the workers; resolves once each has loaded its functions and is ready. */
  async start(data: Omit<ShardWorkerData, 'thread'>): Promise<void> {
    const ready: Promise<void>[] = [];
    for (let thread = 1; thread <= this.size; thread++) {
      const worker = new Worker(new URL('../shard/shard-worker.js', import.meta.url), {
        workerData: { ...data, thread } satisfies ShardWorkerData,
        name: `statecraft-shard-${thread}`,
      });
      this.workers.push(worker);
      ready.push(
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new StatecraftError('SC_ERR_SHARD_START', `shard ${thread} did not start within ${SHARD_START_TIMEOUT_MS / 1000} s`)), SHARD_START_TIMEOUT_MS);
          worker.on('message', (message: ShardToMain) => {
            switch (message.type) {
              case 'ready':
                clearTimeout(timer);
                resolve();
                break;
              case 'failed':
                clearTimeout(timer);
                reject(new StatecraftError('SC_ERR_MODULE_LOAD', `shard ${thread} failed to start: ${message.message}`));
                break;
              case 'log':
                this.events.log(message.line);
                break;
              case 'released':
              case 'adopted':
              case 'restored': {
                const reply = this.replies.get(message.request);
                this.replies.delete(message.request);
                reply?.(message);
                break;
              }
              case 'checkpoint-part':
                this.events.onPart(thread, message);
                break;
            }
          });
          worker.on('error', (error) => {
            clearTimeout(timer);
            reject(error);
            if (!this.stopping) this.events.onFatal(new StatecraftError('SC_ERR_INTERNAL', `shard ${thread} crashed: ${error.stack ?? error.message}`));
          });
          worker.on('exit', (code) => {
            clearTimeout(timer);
            reject(new StatecraftError('SC_ERR_SHARD_START', `shard ${thread} exited with code ${code}`));
            if (!this.stopping) this.events.onFatal(new StatecraftError('SC_ERR_INTERNAL', `shard ${thread} exited unexpectedly with code ${code}`));
          });
        }),
      );
    }
    await Promise.all(ready);
  }

  /** Posts a request to a shard and resolves with its answer. */
  ask<Type extends 'released' | 'adopted' | 'restored'>(shard: number, message: ShardRequest): Promise<ShardReply<Type>> {
    const worker = this.workers[shard - 1]!;
    const request = ++this.requests;
    return new Promise((resolve) => {
      this.replies.set(request, resolve as (reply: ShardToMain) => void);
      worker.postMessage({ ...message, request });
    });
  }

  /** The same request to every shard. */
  askAll<Type extends 'released' | 'adopted' | 'restored'>(message: ShardRequest): Promise<ShardReply<Type>[]> {
    return Promise.all(this.workers.map((_, index) => this.ask<Type>(index + 1, message)));
  }

  /** Whether any worker was started (a node that failed to start may have none). */
  get started(): boolean {
    return this.workers.length > 0;
  }

  post(shard: number, message: MainToShard): void {
    this.workers[shard - 1]!.postMessage(message);
  }

  postAll(message: MainToShard): void {
    for (const worker of this.workers) worker.postMessage(message);
  }

  /** Heap in use by each shard, in bytes (after a full collection when the process runs with --expose-gc). */
  heapBytes(): Promise<number[]> {
    return Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<number>((resolve) => {
            const onMessage = (message: ShardToMain) => {
              if (message.type !== 'heap') return;
              worker.off('message', onMessage);
              resolve(message.usedBytes);
            };
            worker.on('message', onMessage);
            worker.postMessage({ type: 'heap' } satisfies MainToShard);
          }),
      ),
    );
  }

  /** From now on a shard that exits is expected (no onFatal). */
  beginStop(): void {
    this.stopping = true;
  }

  /** Tells every shard to stop and waits for it to exit (terminating one that takes too long). */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void worker.terminate().then(() => resolve()), SHARD_STOP_WAIT_MS);
            worker.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            worker.postMessage({ type: 'stop' } satisfies MainToShard);
          }),
      ),
    );
  }
}
