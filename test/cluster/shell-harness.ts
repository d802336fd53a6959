/**
 * The view core wired to the real hand-over and recovery shells over a FakePort, as cluster-node.ts
 * wires them, without a network: what the shells send to peers is recorded, and the test plays the
 * membership by hand (`members`).
 */
import type { CheckpointControl, ClusterHooks } from '../../node/index.js';
import { HandoverShell } from '../../cluster/handover-shell.js';
import type { Member, MemberState } from '../../cluster/membership.js';
import { RecoveryShell } from '../../cluster/recovery-shell.js';
import { ClusterView, type ViewAction } from '../../cluster/view-core.js';
import { FakePort } from './fake-port.js';

export const member = (id: string, state: MemberState): Member => ({ id, address: `${id}:1`, incarnation: 0, state });

export function shells(selfId: string, options: { joining?: boolean; checkpointing?: boolean; keyGroups?: number; restoreRetryMs?: number } = {}) {
  const keyGroups = options.keyGroups ?? 16;
  const port = new FakePort(keyGroups, options.checkpointing ?? false);
  const logs: string[] = [];
  /** Envelopes queued for peers. */
  const sent: { to: string; bytes: Uint8Array }[] = [];
  const controls: { to: string; message: CheckpointControl }[] = [];
  /** Recovery epochs stamped on frames (network.setEpoch). */
  const epochs: number[] = [];
  const redelivered: { from: string; epoch: number; bytes: Uint8Array }[] = [];
  let members: Member[] = [member(selfId, 'alive')];
  const log = (line: string): void => void logs.push(line);
  const harness = {
    port,
    logs,
    sent,
    controls,
    epochs,
    redelivered,
    deliveringFrom: null as string | null,
    core: null as unknown as ClusterView,
    handovers: null as unknown as HandoverShell,
    recovery: null as unknown as RecoveryShell,
    /** The membership now says `states` (self included): members that changed are reported, then the view. */
    view(states: Record<string, MemberState>): void {
      const before = new Map(members.map((entry) => [entry.id, entry.state]));
      members = Object.entries(states).map(([id, state]) => member(id, state));
      for (const entry of members) if (entry.id !== selfId && before.get(entry.id) !== entry.state) harness.core.memberChanged(entry);
      harness.core.viewChanged(members, performance.now());
    },
  };
  const perform = (action: ViewAction): void => {
    switch (action.type) {
      case 'log':
        return log(action.line);
      case 'own':
        return port.setOwnership(action.owned);
      case 'release':
        return harness.handovers.release(action.keyGroup);
      case 'flush-held':
        return harness.handovers.flushHeld(action.keyGroup);
      case 'release-held':
        return harness.handovers.releaseHeld();
      case 'retry-handovers':
        return harness.handovers.retryPending();
      case 'control':
        controls.push({ to: action.to, message: action.message });
        return;
      case 'fence':
        epochs.push(action.epoch);
        return;
      case 'recovery-begin':
        harness.recovery.begin(action.epoch);
        return harness.handovers.dropAll();
      case 'rollback-prepare':
        return harness.recovery.prepare(action.plan);
      case 'rollback-run':
        return harness.recovery.run(action.plan, action.restore);
      case 'checkpoint-peers':
        return port.setCheckpointPeers(action.peers);
      case 'lead-checkpoints':
        return port.leadCheckpoints(action.lead);
      case 'view':
        return harness.handovers.placementChanged();
      default:
        return;
    }
  };
  harness.core = new ClusterView({ selfId, keyGroups, seeds: options.joining ? ['seed:1'] : [], joining: options.joining ?? false, checkpointing: port.checkpointing, perform });
  harness.handovers = new HandoverShell({
    core: harness.core,
    port,
    send: (to, bytes, offset, length) => sent.push({ to, bytes: bytes.slice(offset, offset + length) }),
    deliveringFrom: () => harness.deliveringFrom,
    isDead: (id) => (members.find((entry) => entry.id === id)?.state ?? 'dead') === 'dead',
    log,
  });
  harness.recovery = new RecoveryShell({
    core: harness.core,
    port,
    setEpoch: (epoch) => epochs.push(epoch),
    redeliver: (bytes, offset, length, from, epoch) => redelivered.push({ from, epoch, bytes: bytes.slice(offset, offset + length) }),
    members: () => members,
    releaseHeld: () => harness.handovers.releaseHeld(),
    sendControl: (to, message) => controls.push({ to, message }),
    log,
    restoreRetryMs: options.restoreRetryMs ?? 20,
  });
  port.hooks = { forward: (bytes, offset, length, keyGroup) => harness.handovers.forward(bytes, offset, length, keyGroup) } as ClusterHooks;
  harness.core.start();
  return harness;
}
