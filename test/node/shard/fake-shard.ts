// A fake shard for the parts that see a shard through ShardContext (embedded invocations, remote
// batches): a real KeyGroupState and counters; effects, dead letters, forwards, runs and flushes recorded;
// the key group's fate when work ends is the test's to set.
import type { StatecraftError } from '../../../lib/errors.js';
import { EffectKind, type Effect } from '../../../lib/invocation.js';
import type { Message } from '../../../lib/message.js';
import { KeyGroupState } from '../../../node/keygroups/key-group-state.js';
import { DelayedMessage, tokenKey } from '../../../node/keygroups/delayed-message.js';
import type { KeyGroupFate, ShardContext } from '../../../node/shard/shard-context.js';
import { ShardCounters } from '../../../node/shard/shard-counters.js';

export const KEY_GROUPS = 16;

export class FakeShard implements ShardContext {
  readonly thread = 1;
  readonly limits = { valueBytesMax: 1024 * 1024, idBytesMax: 1024 };
  delayedPendingMax = 100_000;
  handlerTimeoutMs = 10_000;
  /** Whether applyEffects also schedules and cancels delayed messages in `groups.timers`, as a shard does. */
  schedulesTimers = false;
  readonly groups = new KeyGroupState(KEY_GROUPS, false);
  readonly counters = new ShardCounters();
  nowMs: number;
  fate: KeyGroupFate = 'here';
  effects: { self: string; keyGroup: number; effects: Effect[] }[] = [];
  deadLetters: { message: Message; error: unknown }[] = [];
  forwarded: Message[] = [];
  runs: string[] = [];
  refreshes = 0;
  flushesScheduled = 0;

  /** `clock`: what refreshNow() sets the time to (default: the time stays at 1,000 ms). */
  constructor(private readonly clock: (() => number) | null = null) {
    this.nowMs = clock?.() ?? 1_000;
  }

  refreshNow(): void {
    this.refreshes++;
    if (this.clock !== null) this.nowMs = this.clock();
  }
  applyEffects(effects: readonly Effect[], selfTypename: string, selfId: string, keyGroup: number): void {
    this.effects.push({ self: `${selfTypename}/${selfId}`, keyGroup, effects: [...effects] });
    if (!this.schedulesTimers) return;
    for (const effect of effects) {
      if (effect.kind === EffectKind.SendAfter) {
        const key = effect.cancellationToken === null ? null : tokenKey(selfTypename, selfId, effect.cancellationToken);
        this.groups.timers.schedule(this.nowMs + effect.delayMs, new DelayedMessage(effect.targetTypename, effect.targetId, selfTypename, selfId, effect.value!, keyGroup), key);
      } else if (effect.kind === EffectKind.Cancel) {
        this.groups.timers.cancel(tokenKey(selfTypename, selfId, effect.cancellationToken!));
      }
    }
  }
  logs: string[] = [];
  log(line: string): void {
    this.logs.push(line);
  }
  deadLetter(message: Message, error: unknown): void {
    this.deadLetters.push({ message, error });
  }
  forward(message: Message): void {
    this.forwarded.push(message);
  }
  startRun(keyGroup: number): void {
    this.runs.push(`start ${keyGroup}`);
  }
  endRun(keyGroup: number): KeyGroupFate {
    this.runs.push(`end ${keyGroup}`);
    return this.fate;
  }
  scheduleFlush(): void {
    this.flushesScheduled++;
  }

  /** The sent values, in order, over every applyEffects call: [kind, target or egress, value]. */
  sent(): [string, string, unknown][] {
    const kinds = ['send', 'send-after', 'cancel', 'egress'];
    return this.effects.flatMap((call) => call.effects.map((effect) => [kinds[effect.kind]!, effect.kind === EffectKind.Egress ? effect.targetTypename : `${effect.targetTypename}/${effect.targetId}`, effect.value?.value ?? effect.value?.toBytes() ?? effect.cancellationToken] as [string, string, unknown]));
  }

  /** [message value, dead letter code] per dead letter, in order. */
  deadLetterCodes(): [string, string][] {
    return this.deadLetters.map(({ message, error }) => [message.asString(), (error as StatecraftError).code]);
  }
}
