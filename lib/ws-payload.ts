/**
 * One WebSocket's payload limit, changed after the upgrade: a peer or client that has not yet
 * identified itself gets a small limit (its handshake frames are small), and the full one once it has.
 * ws takes the limit per server, not per socket, so this sets its receiver's field; ws is pinned by the
 * lock file, and a ws without that field fails here loudly (a test opens a socket through it).
 */
import type { WebSocket } from 'ws';

export function setMaxPayload(socket: WebSocket, bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new RangeError(`a payload limit must be a positive whole number of bytes, got ${bytes}`);
  const receiver = (socket as unknown as { _receiver?: { _maxPayload?: unknown } | null })._receiver;
  if (receiver === undefined || receiver === null || typeof receiver._maxPayload !== 'number') {
    throw new Error("this ws version keeps no per-socket payload limit where lib/ws-payload.ts expects it: use the ws version in package-lock.json");
  }
  receiver._maxPayload = bytes;
}
