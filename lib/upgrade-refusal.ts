/**
 * Refuses a WebSocket upgrade with a plain HTTP answer before any WebSocket exists (a flood of
 * refused connections costs one short write each), then closes the socket once it is written.
 */
import type { Duplex } from 'node:stream';

const STATUS_TEXT = { 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' } as const;

/** `body`: text, or a value sent as JSON; none: an empty answer. */
export function refuseUpgrade(socket: Duplex, status: keyof typeof STATUS_TEXT, body?: string | object): void {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const type = body === undefined ? '' : `Content-Type: ${typeof body === 'string' ? 'text/plain' : 'application/json'}\r\n`;
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nConnection: close\r\n${type}Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`, () => socket.destroy());
}
