/**
 * The client's liveness check of its node. A node that is stopped (SIGSTOP), frozen or cut off by the
 * network never closes its sockets: without this the client would wait for it, holding every
 * unconfirmed event, until it came back. It pings every `intervalMs`; any frame, ping or pong from the
 * node counts as a sign of life; after `timeoutMs` without one it calls `onSilent` (the client then
 * drops the connection and goes to another node, re-sending what was not confirmed).
 */
import { performance } from 'node:perf_hooks';

/** What the heartbeat needs of a `ws` WebSocket (structural: the published types do not depend on ws's). */
export interface PingableSocket {
  readonly readyState: number;
  readonly OPEN: number;
  ping(): void;
  on(event: 'message' | 'ping' | 'pong', listener: () => void): unknown;
  off(event: 'message' | 'ping' | 'pong', listener: () => void): unknown;
}

export interface HeartbeatOptions {
  /** How often the client pings its node. Default 1 s. */
  intervalMs?: number;
  /**
   * How long the node may stay silent before the client gives up on the connection. Default 3 s: about
   * when the cluster declares a silent member dead, and above a busy node's pauses (exceeding it costs
   * only a reconnect and re-sends, which the node drops as repeats).
   */
  timeoutMs?: number;
}

export const HEARTBEAT_INTERVAL_MS_DEFAULT = 1000;
export const HEARTBEAT_TIMEOUT_MS_DEFAULT = 3000;

export class Heartbeat {
  private heard = performance.now();
  private ticked = this.heard;
  private readonly timer: NodeJS.Timeout;
  private readonly onHeard = (): void => {
    this.heard = performance.now();
  };

  constructor(
    private readonly socket: PingableSocket,
    private readonly intervalMs: number,
    private readonly timeoutMs: number,
    private readonly onSilent: (silentMs: number) => void,
  ) {
    socket.on('message', this.onHeard);
    socket.on('ping', this.onHeard);
    socket.on('pong', this.onHeard);
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.socket.off('message', this.onHeard);
    this.socket.off('ping', this.onHeard);
    this.socket.off('pong', this.onHeard);
  }

  private tick(): void {
    const now = performance.now();
    // This process was itself paused or busy (a late timer): the silence is ours, not the node's, and
    // its answers may be waiting unread in the socket.
    if (now - this.ticked > 2 * this.intervalMs) this.heard = now;
    this.ticked = now;
    if (now - this.heard >= this.timeoutMs) {
      this.stop();
      this.onSilent(now - this.heard);
      return;
    }
    if (this.socket.readyState === this.socket.OPEN) this.socket.ping();
  }
}
