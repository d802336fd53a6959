/**
 * Link verdicts: what the cluster does about two members that are both alive but cannot talk to each
 * other (a bridge partition: A–B cut while both reach C; or a one-way cut, which breaks the TCP
 * connection both ways). Membership keeps both alive — indirect probes through C succeed — but barriers
 * and messages between A and B cannot pass, so no checkpoint could commit for as long as the cut lasts.
 *
 * Each node reports the members of its view whose peer link has been down for LINK_DOWN_MS while
 * membership holds them alive, and withdraws a report once the link has been up for LINK_UP_MS. Reports
 * spread by flooding (every node sends every report it knows to the peers it reaches, newest version
 * per reporter wins), so every node ends up with the same reports and computes the same verdict: the
 * fewest members to leave out so that the rest can all reach each other (greedy: the member on the
 * most cut links first, then the larger id). A member left out is treated as dead by the others (a
 * recovery without it), and treats itself as cut off from its view (it serves nothing, and says why);
 * once its links are back and its reports are withdrawn, it returns as a member that was declared dead
 * does.
 *
 * Sans-I/O: time comes in as `nowMs`, the shell sends what `outgoing()` returns and feeds what arrives.
 */

/** How long a link to a live member must be down before this node reports it. */
export const LINK_DOWN_MS = 5_000;
/** How long a reported link must be up again before the report is withdrawn. */
export const LINK_UP_MS = 2_000;
/** Reports kept at most (one per reporter). */
const REPORTERS_MAX = 4096;

/** One node's report: the members it cannot reach directly, with a version that only grows. */
export interface LinkReport {
  reporter: string;
  /** Orders this reporter's reports: a process start time in ms, then +1 per change. */
  version: number;
  down: string[];
}

/** The gossip message that carries reports. */
export interface LinksMessage {
  type: 'links';
  reports: LinkReport[];
}

/** Whether a peer's message is a well-formed links message (a peer's bytes are checked before use). */
export function isLinksMessage(message: unknown): message is LinksMessage {
  if (typeof message !== 'object' || message === null || (message as { type?: unknown }).type !== 'links') return false;
  const reports = (message as { reports?: unknown }).reports;
  return (
    Array.isArray(reports) &&
    reports.length <= REPORTERS_MAX &&
    reports.every(
      (report: unknown) =>
        typeof report === 'object' &&
        report !== null &&
        typeof (report as LinkReport).reporter === 'string' &&
        Number.isSafeInteger((report as LinkReport).version) &&
        Array.isArray((report as LinkReport).down) &&
        (report as LinkReport).down.length <= REPORTERS_MAX &&
        (report as LinkReport).down.every((id) => typeof id === 'string'),
    )
  );
}

/**
 * Who to leave out so that the others can all reach each other, given cut links among `members`:
 * repeatedly the member on the most cut links (ties: the larger id, so the smaller ids, which lead,
 * stay). The same cuts give the same answer on every node.
 */
export function leaveOut(members: readonly string[], cuts: readonly (readonly [string, string])[]): string[] {
  const inView = new Set(members);
  let edges = cuts.filter(([a, b]) => a !== b && inView.has(a) && inView.has(b));
  const out: string[] = [];
  while (edges.length > 0) {
    const degree = new Map<string, number>();
    for (const [a, b] of edges) {
      degree.set(a, (degree.get(a) ?? 0) + 1);
      degree.set(b, (degree.get(b) ?? 0) + 1);
    }
    let chosen = '';
    let most = 0;
    for (const [id, count] of degree) if (count > most || (count === most && id > chosen)) [chosen, most] = [id, count];
    out.push(chosen);
    edges = edges.filter(([a, b]) => a !== chosen && b !== chosen);
  }
  return out.sort();
}

export class LinkVerdicts {
  private readonly reports = new Map<string, LinkReport>();
  /** Per member of the view: since when its link has been down (or up again, for a reported one). */
  private readonly downSince = new Map<string, number>();
  private readonly upSince = new Map<string, number>();
  private ownDown = new Set<string>();
  private version: number;
  private changed = false;

  constructor(
    private readonly selfId: string,
    startMs: number,
  ) {
    // A restarted node's reports outrank its earlier process's.
    this.version = Math.floor(startMs) * 1000;
  }

  /**
   * This node's links now: for each other member of the view, whether membership holds it alive and
   * whether the link to it is up. True when this node's report changed.
   */
  observe(links: readonly { id: string; alive: boolean; connected: boolean }[], nowMs: number): boolean {
    const next = new Set<string>();
    const seen = new Set<string>();
    for (const { id, alive, connected } of links) {
      if (id === this.selfId) continue;
      seen.add(id);
      const reported = this.ownDown.has(id);
      if (!alive) {
        // Not alive: membership deals with it. A report of it is withdrawn.
        this.downSince.delete(id);
        this.upSince.delete(id);
        continue;
      }
      if (connected) {
        this.downSince.delete(id);
        if (reported) {
          const since = this.upSince.get(id) ?? nowMs;
          this.upSince.set(id, since);
          if (nowMs - since < LINK_UP_MS) next.add(id);
        }
        continue;
      }
      this.upSince.delete(id);
      const since = this.downSince.get(id) ?? nowMs;
      this.downSince.set(id, since);
      if (reported || nowMs - since >= LINK_DOWN_MS) next.add(id);
    }
    for (const id of [...this.downSince.keys()]) if (!seen.has(id)) this.downSince.delete(id);
    for (const id of [...this.upSince.keys()]) if (!seen.has(id)) this.upSince.delete(id);
    const same = next.size === this.ownDown.size && [...next].every((id) => this.ownDown.has(id));
    if (same) return false;
    this.ownDown = next;
    this.version++;
    this.reports.set(this.selfId, { reporter: this.selfId, version: this.version, down: [...next].sort() });
    this.changed = true;
    return true;
  }

  /** Reports from a peer: the newer version of each reporter's replaces the older. True when any changed. */
  receive(message: LinksMessage): boolean {
    let changed = false;
    for (const report of message.reports) {
      if (report.reporter === this.selfId) continue; // this node is the authority on its own
      const known = this.reports.get(report.reporter);
      if (known !== undefined && known.version >= report.version) continue;
      if (known === undefined && this.reports.size >= REPORTERS_MAX) continue;
      this.reports.set(report.reporter, { reporter: report.reporter, version: report.version, down: [...report.down] });
      changed = true;
    }
    if (changed) this.changed = true;
    return changed;
  }

  /** Every report known, to flood to the peers (null when none says anything: nothing to send). */
  outgoing(): LinksMessage | null {
    const reports = [...this.reports.values()];
    if (reports.length === 0 || (reports.every((report) => report.down.length === 0) && !this.changed)) return null;
    this.changed = false;
    return { type: 'links', reports };
  }

  /** The members of `view` left out: those the reports of live view members say must go (this node may be one). */
  verdict(view: readonly string[], alive: (id: string) => boolean): string[] {
    const members = view.filter((id) => id === this.selfId || alive(id));
    const present = new Set(members);
    const cuts: [string, string][] = [];
    for (const report of this.reports.values()) {
      if (!present.has(report.reporter)) continue;
      for (const id of report.down) if (present.has(id)) cuts.push(report.reporter < id ? [report.reporter, id] : [id, report.reporter]);
    }
    return leaveOut(members, cuts);
  }

  /** This node's own report: the members it cannot reach directly. */
  get down(): string[] {
    return [...this.ownDown].sort();
  }
}
