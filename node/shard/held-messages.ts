/**
 * Messages for key groups a shard owns but may not run now (its node reaches no majority, or waits for
 * a recovery): the routing table marks such a key group held at its shard (rings/mailbox.ts `heldAt`).
 * They are kept per key group in arrival order, past the producer check already, and run before
 * anything newer once the key group runs again. Like the messages waiting for a busy instance, they are
 * part of their key group: a snapshot and a hand-over carry them, a recovery drops them.
 *
 * Why here and not at the main thread: a message sent back to the main thread while the key group is
 * held could still be on its way when the key group runs again, and newer messages would overtake it.
 */
import type { Message } from '../../lib/message.js';

export class HeldMessages {
  private readonly byKeyGroup = new Map<number, Message[]>();
  /** Messages held, over every key group. */
  count = 0;

  hold(message: Message): void {
    const list = this.byKeyGroup.get(message.keyGroup);
    if (list === undefined) this.byKeyGroup.set(message.keyGroup, [message]);
    else list.push(message);
    this.count++;
  }

  has(keyGroup: number): boolean {
    return this.count > 0 && this.byKeyGroup.has(keyGroup);
  }

  /** Key groups with held messages. */
  keyGroups(): number[] {
    return [...this.byKeyGroup.keys()];
  }

  /** Removes and returns a key group's held messages, oldest first (empty when none). */
  take(keyGroup: number): Message[] {
    const list = this.byKeyGroup.get(keyGroup);
    if (list === undefined) return [];
    this.byKeyGroup.delete(keyGroup);
    this.count -= list.length;
    return list;
  }

  /** Lists the held messages of the `wanted` key groups into `into`, in order, and keeps them (a snapshot). */
  peek(wanted: (keyGroup: number) => boolean, into: (keyGroup: number, message: Message) => void): void {
    for (const [keyGroup, list] of this.byKeyGroup) if (wanted(keyGroup)) for (const message of list) into(keyGroup, message);
  }

  /** A recovery: they were sent before it. */
  clear(): void {
    this.byKeyGroup.clear();
    this.count = 0;
  }
}
