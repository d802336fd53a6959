/**
 * What every part of the checkpoint simulation shares (checkpoint-sim-world.ts wires the parts): the
 * seeded randomness, the fake clock and its event queue, the epoch, the global event sequence and message
 * ids, the event log, the topology and the placement of key groups, the fake blob store, the statistics,
 * and the negative control still to strike. Each part takes the core, and the world alone moves the
 * epoch, the placement and the log on.
 */
import { EventQueue } from '../../sim/event-queue.js';
import { EnvelopeDecoder } from '../../../lib/envelope.js';
import type { Message } from '../../../lib/message.js';
import { createRandom } from '../../cluster/sim-network.js';
import { BREAKAGE_FROM_MS, CheckFailure, type Breakage, type Channel, type EpochLog, type Proc, type QueuedEvent, type Stored, type WorldOptions, type WorldStats } from './checkpoint-sim-common.js';

export class SimCore {
  readonly stats: WorldStats;
  readonly random: () => number;
  private readonly queue = new EventQueue<QueuedEvent>();
  readonly decoder = new EnvelopeDecoder();
  private order = 0;
  nowMs = 0;
  /** Global event sequence: orders origins and snapshots. */
  seq = 0;
  nextId = 1;
  readonly processes: Proc[] = [];
  readonly channels: Channel[] = [];
  /** The channel a message from process `from` takes towards process `to`: nextHop[from][to]. */
  nextHop: (Channel | undefined)[][] = [];
  /** Indexes of the shards (the processes that own key groups). */
  shardIndexes: number[] = [];
  /** Set once, right after the topology is built (it depends on the number of shards). */
  keyGroups = 0;
  /** Key group → owning process index (this epoch). */
  owner: number[] = [];
  groupsOf: number[][] = [];
  epoch = 0;
  log: EpochLog;
  faulty: boolean;
  private breakagePending: boolean;
  readonly store = new Map<string, Stored>();

  constructor(private readonly options: WorldOptions) {
    this.random = createRandom(options.seed);
    this.faulty = options.faults;
    this.breakagePending = options.breakage !== undefined;
    this.log = { epoch: 0, baseCounters: new Map(), baseIds: new Uint8Array(0), baseSize: 0, firstId: this.nextId, origins: [] };
    // processes and keyGroups are filled in once the topology is built.
    this.stats = {
      processes: 0,
      keyGroups: 0,
      started: 0,
      askedAgain: 0,
      committed: 0,
      failed: 0,
      superseded: 0,
      recordedMessages: 0,
      queuedMessages: 0,
      reusedObjects: 0,
      recoveries: 0,
      coordinators: 1,
      messages: 0,
      egressReleased: 0,
      egressRepeats: 0,
      deletedKeys: 0,
      crashes: 0,
      crashesSkipped: 0,
      terms: 0,
      deposed: 0,
      adopted: 0,
    };
  }

  // ---- randomness and scheduling ----

  int(bound: number): number {
    return Math.floor(this.random() * bound);
  }

  at(timeMs: number, run: () => void): void {
    this.queue.push({ timeMs, order: this.order++, run });
  }

  /** The next event due by `endMs`, with the clock moved to it; null when none is. */
  nextEvent(endMs: number): QueuedEvent | null {
    if (this.queue.size === 0 || this.queue.peek()!.timeMs > endMs) return null;
    const event = this.queue.pop()!;
    this.nowMs = event.timeMs;
    return event;
  }

  fail(message: string): never {
    throw new CheckFailure(`at ${this.nowMs} ms (epoch ${this.epoch}): ${message}`);
  }

  /** True once, at the first chance for the breakage `kind` (negative controls only). */
  breakNow(kind: Breakage): boolean {
    if (!this.breakagePending || this.options.breakage !== kind || this.nowMs < BREAKAGE_FROM_MS) return false;
    this.breakagePending = false;
    return true;
  }

  decode(bytes: Uint8Array): Message {
    return this.decoder.decodeInvoke(bytes, 0, bytes.length);
  }
}
