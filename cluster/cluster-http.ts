/**
 * What a node says about its cluster: GET /cluster (a JSON report: members, view, placement, links,
 * hand-overs, recoveries), GET /health while this node is not in a majority (503 and why), and the
 * cluster's lines of GET /metrics.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StatecraftNode } from '../node/index.js';
import type { HandoverShell, HandoverStats } from './handover-shell.js';
import type { Member, Membership } from './membership.js';
import type { PeerNetwork } from './peer-network.js';
import { ownedCounts } from './placement.js';
import type { ClusterView } from './view-core.js';

/** GET /cluster. */
export interface ClusterReport {
  nodeId: string;
  address: string;
  /** In a majority of the last agreed view (also while a recovery is pending or under way). */
  serving: boolean;
  reason: string | null;
  /** Counts the views this node acted on. */
  viewVersion: number;
  viewId: string;
  keyGroups: number;
  view: string[];
  members: (Member & { keyGroups: number; inView: boolean; connected: boolean })[];
  peers: ReturnType<PeerNetwork['linkStats']>;
  refusals: string[];
  /** Key groups this node adopted and released, and the longest pause one of them saw. */
  handovers: HandoverStats & { keyGroupsMoving: number };
  /** Recoveries from checkpoints (checkpoints on): the current recovery epoch and whether one is under way. */
  recovery: { epoch: number; recovering: boolean; awaiting: string | null; recoveries: number };
  checkpoints: ReturnType<StatecraftNode['checkpointStatus']>;
  /** Cut links between live members (checkpoints on, else null): the members this node cannot reach directly, and those left out of the view. */
  links: { down: string[]; leftOut: string[] } | null;
}

export interface ClusterHttpSources {
  nodeId: string;
  address: string;
  core: ClusterView;
  membership: Pick<Membership, 'members'>;
  network: Pick<PeerNetwork, 'connectedPeers' | 'linkStats' | 'refusals' | 'queuedBytes' | 'authFailures' | 'handshakesRefused'>;
  handovers: Pick<HandoverShell, 'stats' | 'heldCount'>;
  /** Control messages refused from peers (recovery-shell.ts). */
  controlRefused(): number;
  checkpointStatus(): ReturnType<StatecraftNode['checkpointStatus']>;
  /** Why this node does not serve, when it knows better than the view core (left out for cut links), else null. */
  reason(): string | null;
  links(): { down: string[]; leftOut: string[] } | null;
}

export class ClusterHttp {
  constructor(private readonly sources: ClusterHttpSources) {}

  report(): ClusterReport {
    const { core, network, handovers } = this.sources;
    const counts = ownedCounts(core.placement);
    const connected = new Set(network.connectedPeers());
    const view = core.viewMembers();
    return {
      nodeId: this.sources.nodeId,
      address: this.sources.address,
      serving: core.inMajority(),
      reason: this.sources.reason() ?? core.reason,
      viewVersion: core.viewVersion,
      viewId: core.placement.viewId,
      keyGroups: core.keyGroups,
      view,
      members: this.sources.membership
        .members()
        .map((member) => ({ ...member, keyGroups: counts[member.id] ?? 0, inView: core.inView(member.id), connected: member.id === this.sources.nodeId || connected.has(member.id) }))
        .sort((a, b) => a.id.localeCompare(b.id)),
      peers: network.linkStats(),
      refusals: network.refusals,
      handovers: { ...handovers.stats, keyGroupsMoving: core.moves.count },
      recovery: { epoch: core.epoch, recovering: core.isRecovering(), awaiting: core.awaitingReason, recoveries: core.recoveries },
      checkpoints: this.sources.checkpointStatus(),
      links: this.sources.links(),
    };
  }

  /** Serves GET /cluster, and GET /health while not in a majority; false: not ours. */
  serve(request: IncomingMessage, response: ServerResponse): boolean {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method === 'GET' && path === '/cluster') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.report(), null, 2));
      return true;
    }
    if (request.method === 'GET' && path === '/health' && !this.sources.core.inMajority()) {
      response.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'not-serving', nodeId: this.sources.nodeId, reason: this.sources.reason() ?? this.sources.core.reason }));
      return true;
    }
    return false;
  }

  metrics(): string[] {
    const { core, network, handovers } = this.sources;
    const members = this.sources.membership.members();
    const count = (state: string) => members.filter((member) => member.state === state).length;
    return [
      `statecraft_cluster_serving ${core.inMajority() ? 1 : 0}`,
      `statecraft_cluster_view_version ${core.viewVersion}`,
      `statecraft_cluster_view_members ${core.viewMembers().length}`,
      `statecraft_cluster_members_alive ${count('alive')}`,
      `statecraft_cluster_members_suspect ${count('suspect')}`,
      `statecraft_cluster_members_dead ${count('dead')}`,
      `statecraft_cluster_key_groups_owned ${ownedCounts(core.placement)[this.sources.nodeId] ?? 0}`,
      `statecraft_peer_queued_bytes ${network.queuedBytes}`,
      `statecraft_peer_auth_failures_total ${network.authFailures}`,
      `statecraft_peer_handshakes_refused_total ${network.handshakesRefused}`,
      `statecraft_control_refused_total ${this.sources.controlRefused()}`,
      `statecraft_messages_held ${handovers.heldCount}`,
      `statecraft_key_groups_moving ${core.moves.count}`,
      `statecraft_handovers_adopted ${handovers.stats.adopted}`,
      `statecraft_handovers_released ${handovers.stats.released}`,
      `statecraft_handovers_ignored ${handovers.stats.ignored}`,
      `statecraft_handover_pause_max_ms ${handovers.stats.maxPauseMs}`,
      `statecraft_handover_pause_last_ms ${handovers.stats.lastPauseMs}`,
    ];
  }
}
