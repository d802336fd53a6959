/**
 * The link-verdict shell (link-verdicts.ts): every second it notes which live members this node's peer
 * links reach, floods the reports it knows over gossip, and keeps the verdict — the members left out
 * because some live member cannot reach them directly. The view core sees the membership through
 * `members()`: a member left out as dead (the others recover without it); when this node is the one
 * left out, every other member as suspect (it has no majority: it serves nothing until it is back).
 */
import type { Member } from './membership.js';
import { LinkVerdicts, isLinksMessage, type LinksMessage } from './link-verdicts.js';

/** How often links are observed and reports flooded. */
export const LINK_CHECK_MS = 1_000;

export interface LinkShellOptions {
  selfId: string;
  startMs: number;
  /** The membership as it is (self included). */
  members(): Member[];
  /** Peers whose link is up now. */
  connectedPeers(): string[];
  /** Sends a gossip message to a member. */
  gossip(id: string, message: LinksMessage): void;
  /** The verdict changed: these members (maybe this node) are now left out, or back. */
  changed(ids: readonly string[]): void;
  log(line: string): void;
}

const isLive = (member: Member) => member.state === 'alive' || member.state === 'suspect';

export class LinkShell {
  private readonly verdicts: LinkVerdicts;
  #out = new Set<string>();

  constructor(private readonly options: LinkShellOptions) {
    this.verdicts = new LinkVerdicts(options.selfId, options.startMs);
  }

  /** Members left out by the verdict now. */
  get out(): ReadonlySet<string> {
    return this.#out;
  }

  /** The live members this node has reported it cannot reach directly. */
  get down(): string[] {
    return this.verdicts.down;
  }

  /** This node is left out: its links to some live members are cut while they reach each other. */
  get selfOut(): boolean {
    return this.#out.has(this.options.selfId);
  }

  /** Why this node serves nothing, when the verdict left it out (else null). */
  get reason(): string | null {
    if (!this.selfOut) return null;
    const down = this.verdicts.down;
    return `left out of the view: ${down.length > 0 ? `this node cannot reach ${down.join(', ')} directly` : 'live members cannot reach this node directly'} while the others reach each other; it serves again once its links are back`;
  }

  /** The membership as the view core should see it (see the file comment). */
  members(): Member[] {
    const members = this.options.members();
    if (this.#out.size === 0) return members;
    return members.map((member) => this.adjusted(member));
  }

  /** One member as the view core should see it. */
  adjusted(member: Member): Member {
    if (member.id === this.options.selfId || !isLive(member)) return member;
    if (this.selfOut) return member.state === 'alive' ? { ...member, state: 'suspect' } : member;
    return this.#out.has(member.id) ? { ...member, state: 'dead' } : member;
  }

  /** A member held dead only by the verdict: its link stays (the verdict is lifted once it is up again). */
  keepsLink(id: string): boolean {
    const member = this.options.members().find((entry) => entry.id === id);
    return member !== undefined && isLive(member) && this.#out.has(id);
  }

  /** Reports from a peer's gossip; false when the message is not one. */
  receive(message: unknown): boolean {
    if (!isLinksMessage(message)) return false;
    if (this.verdicts.receive(message)) this.decide();
    return true;
  }

  /** Periodic: observe the links, flood the reports, decide. */
  tick(nowMs: number): void {
    const members = this.options.members();
    const connected = new Set(this.options.connectedPeers());
    if (this.verdicts.observe(members.map((member) => ({ id: member.id, alive: member.state === 'alive', connected: connected.has(member.id) })), nowMs)) {
      const down = this.verdicts.down;
      this.options.log(down.length === 0 ? 'cluster: links: every live member is reachable directly again' : `cluster: links: cannot reach ${down.join(', ')} directly (they are alive: others reach them)`);
    }
    const message = this.verdicts.outgoing();
    if (message !== null) for (const id of connected) this.options.gossip(id, message);
    this.decide();
  }

  private decide(): void {
    const members = this.options.members();
    const live = new Set(members.filter(isLive).map((member) => member.id));
    const next = new Set(this.verdicts.verdict([...live], (id) => live.has(id)));
    const changed = [...new Set([...next, ...this.#out])].filter((id) => next.has(id) !== this.#out.has(id));
    if (changed.length === 0) return;
    this.#out = next;
    const self = this.options.selfId;
    if (next.has(self)) this.options.log(`cluster: left out of the view: some live members cannot reach this node directly (left out: ${[...next].join(', ')}); it serves nothing until its links are back`);
    else if (next.size > 0) this.options.log(`cluster: left out of the view (cut links between live members): ${[...next].join(', ')}`);
    else this.options.log('cluster: no member is left out for cut links any more');
    this.options.changed(changed);
  }
}
