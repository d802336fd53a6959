/**
 * A network of Linux network namespaces for fault injection (the verifier's partitions; usable by tests).
 * Needs root (or CAP_NET_ADMIN) and `ip`/`tc` (iproute2); no iptables.
 *
 * Layout, per run (names carry the pid, so runs side by side never collide):
 *   - a bridge `scbr<pid>` in the caller's namespace with IP 10.A.B.254/24 (the "host": the verifier and
 *     its clients reach every node through it);
 *   - per node i (1..n) a namespace `statecraft-<pid>-n<i>` with loopback up and `eth0` (one end of a
 *     veth pair whose other end, `sc<pid>h<i>`, is a port of the bridge) at 10.A.B.i/24.
 *
 * Cuts are silent drops (no error to the application, like a lost packet): every `eth0` and every
 * host-side veth gets an `htb` qdisc whose default class passes everything and whose class 1:20 holds a
 * `tbf` with a 1-byte bucket, which drops every packet (this kernel has neither netem nor prio nor the
 * gact drop action; htb, tbf and the u32 classifier are there). Cutting X→Y adds a u32 filter on X's
 * egress that steers packets for Y's IP into 1:20, and healing deletes the filter. A cut into a node from the host (the clients) is a filter on the node's host-side veth
 * matching the source 10.A.B.254. So:
 *   cut(a, b)          a's packets to b are dropped (b's still reach a: one-way; TCP over it stalls
 *                      both ways, since a's ACKs are lost too)
 *   isolate(i, {clients})  every node↔i direction cut; with clients: true, host↔i as well (a real
 *                      partition: a client connected to i hangs until the heal)
 *   heal(i) / healAll()    undo
 * (Blackhole routes would cut one direction too, but the sender gets EINVAL at once: a fault the
 * application is told about, not a partition.)
 *
 * cleanup() deletes every namespace and link made; it is registered on process exit, and
 * removeStale() deletes what runs of dead processes left behind (a SIGKILLed verifier cannot clean up).
 */
import { execFileSync, spawnSync } from 'node:child_process';

export const HOST = 0;

function run(command: string, args: string[]): void {
  execFileSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** An htb root on dev: class 1:10 (the default) passes everything, class 1:20 drops everything. */
function addDropClass(nsArgs: string[], dev: string): void {
  run('tc', [...nsArgs, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10']);
  run('tc', [...nsArgs, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', '100gbit']);
  run('tc', [...nsArgs, 'class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:20', 'htb', 'rate', '100gbit']);
  run('tc', [...nsArgs, 'qdisc', 'add', 'dev', dev, 'parent', '1:20', 'handle', '20:', 'tbf', 'rate', '8bit', 'burst', '1', 'limit', '1']);
}

/** Whether network namespaces can be made here (root, iproute2, netem): makes one and deletes it. */
export function netnsAvailable(): { ok: boolean; reason: string } {
  const name = `statecraft-probe-${process.pid}`;
  const added = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (added.error !== undefined || added.status !== 0) return { ok: false, reason: `ip netns add failed: ${added.error?.message ?? added.stderr.trim()}` };
  try {
    const veth = spawnSync('ip', ['-n', name, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1'], { encoding: 'utf8' });
    if (veth.status !== 0) return { ok: false, reason: `veth: ${veth.stderr.trim()}` };
    try {
      addDropClass(['-n', name], 'probe0');
    } catch (error) {
      return { ok: false, reason: `tc (htb, tbf): ${String((error as { stderr?: Buffer }).stderr ?? (error as Error).message).trim()}` };
    }
    return { ok: true, reason: '' };
  } finally {
    spawnSync('ip', ['netns', 'del', name]);
  }
}

/** Deletes namespaces and bridges named for pids that no longer run. */
export function removeStale(): void {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  const namespaces = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const match of namespaces.matchAll(/^statecraft-(\d+)-n\d+/gm)) if (!alive(Number(match[1]))) spawnSync('ip', ['netns', 'del', match[0]]);
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout ?? '';
  for (const match of links.matchAll(/^\d+: (sc(?:br)?(\d+)(?:[hi]\d+)?)[@:]/gm)) if (!alive(Number(match[2]))) spawnSync('ip', ['link', 'del', match[1]!]);
}

export class NetnsCluster {
  readonly prefix: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly hostIp: string;
  private readonly namespaces: string[] = [];
  private readonly hostVeths: string[] = [];
  private readonly cuts = new Set<string>();
  private cleaned = false;

  constructor(readonly size: number, readonly tag = process.pid) {
    this.prefix = `statecraft-${tag}`;
    this.bridge = `scbr${tag}`;
    this.subnet = `10.${100 + (Math.floor(tag / 256) % 150)}.${tag % 256}`;
    this.hostIp = `${this.subnet}.254`;
  }

  ns(node: number): string {
    return `${this.prefix}-n${node}`;
  }

  ip(node: number): string {
    return node === HOST ? this.hostIp : `${this.subnet}.${node}`;
  }

  /** Makes the bridge and `size` namespaces (nodes 1..size). Registers cleanup on exit. */
  create(): void {
    removeStale();
    process.on('exit', () => this.cleanup());
    run('ip', ['link', 'add', this.bridge, 'type', 'bridge']);
    this.hostVeths.push(this.bridge);
    run('ip', ['addr', 'add', `${this.hostIp}/24`, 'dev', this.bridge]);
    run('ip', ['link', 'set', this.bridge, 'up']);
    for (let node = 1; node <= this.size; node++) {
      const ns = this.ns(node);
      const hostSide = `sc${this.tag}h${node}`;
      const inside = `sc${this.tag}i${node}`;
      run('ip', ['netns', 'add', ns]);
      this.namespaces.push(ns);
      run('ip', ['link', 'add', hostSide, 'type', 'veth', 'peer', 'name', inside, 'netns', ns]);
      this.hostVeths.push(hostSide);
      run('ip', ['link', 'set', hostSide, 'master', this.bridge]);
      run('ip', ['link', 'set', hostSide, 'up']);
      run('ip', ['-n', ns, 'link', 'set', inside, 'name', 'eth0']);
      run('ip', ['-n', ns, 'addr', 'add', `${this.ip(node)}/24`, 'dev', 'eth0']);
      run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      for (const [nsArgs, dev] of [[['-n', ns], 'eth0'], [[], hostSide]] as const) addDropClass([...nsArgs], dev);
    }
  }

  private hostSide(node: number): string {
    return this.hostVeths[node]!;
  }

  /** The command line that runs `command args` inside node's namespace. */
  exec(node: number, command: string, args: string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', this.ns(node), command, ...args]];
  }

  /** Drops every packet `from` sends to `to` (either may be HOST). No-op when already cut. */
  cut(from: number, to: number): void {
    const key = `${from}>${to}`;
    if (this.cuts.has(key)) return;
    if (from === HOST) {
      // The host's packets to a node leave the bridge through the node's host-side veth.
      run('tc', ['filter', 'add', 'dev', this.hostSide(to), 'parent', '1:', 'protocol', 'ip', 'pref', '100', 'u32', 'match', 'ip', 'src', `${this.hostIp}/32`, 'flowid', '1:20']);
    } else {
      run('tc', ['-n', this.ns(from), 'filter', 'add', 'dev', 'eth0', 'parent', '1:', 'protocol', 'ip', 'pref', String(100 + (to === HOST ? 254 : to)), 'u32', 'match', 'ip', 'dst', `${this.ip(to)}/32`, 'flowid', '1:20']);
    }
    this.cuts.add(key);
  }

  uncut(from: number, to: number): void {
    const key = `${from}>${to}`;
    if (!this.cuts.has(key)) return;
    if (from === HOST) run('tc', ['filter', 'del', 'dev', this.hostSide(to), 'parent', '1:', 'protocol', 'ip', 'pref', '100', 'u32']);
    else run('tc', ['-n', this.ns(from), 'filter', 'del', 'dev', 'eth0', 'parent', '1:', 'protocol', 'ip', 'pref', String(100 + (to === HOST ? 254 : to)), 'u32']);
    this.cuts.delete(key);
  }

  /** Cuts node from every other node both ways; with clients, from the host too. */
  isolate(node: number, options: { clients?: boolean } = {}): void {
    for (let other = 1; other <= this.size; other++) {
      if (other === node) continue;
      this.cut(node, other);
      this.cut(other, node);
    }
    if (options.clients) {
      this.cut(node, HOST);
      this.cut(HOST, node);
    }
  }

  /** Cuts `side` (a set of nodes) from every node not in it, both ways. */
  split(side: readonly number[]): void {
    for (const a of side) for (let b = 1; b <= this.size; b++) if (!side.includes(b)) (this.cut(a, b), this.cut(b, a));
  }

  /** Undoes every cut to or from node. */
  heal(node: number): void {
    for (const key of [...this.cuts]) {
      const [from, to] = key.split('>').map(Number) as [number, number];
      if (from === node || to === node) this.uncut(from, to);
    }
  }

  healAll(): void {
    for (const key of [...this.cuts]) {
      const [from, to] = key.split('>').map(Number) as [number, number];
      this.uncut(from, to);
    }
  }

  activeCuts(): string[] {
    return [...this.cuts];
  }

  /** Deletes every namespace and link this made (idempotent; never throws). */
  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const ns of this.namespaces) spawnSync('ip', ['netns', 'del', ns]);
    // The veths die with their namespaces; the bridge does not.
    for (const link of this.hostVeths) spawnSync('ip', ['link', 'del', link], { stdio: 'ignore' });
  }
}
