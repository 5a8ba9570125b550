import { once } from 'node:events';
import { createServer, connect, type Socket, type AddressInfo } from 'node:net';

/** A connected TCP pair on 127.0.0.1 (half-open allowed): [the dialer's socket, the accepted socket]. */
export async function tcpPair(): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const dialer = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await once(dialer, 'connect');
  const [socket] = await accepted;
  server.close();
  return [dialer, socket];
}

/**
 * Writes `chunk` into `s` until the path behind it pushes back and stays
 * pushed back for half a second, or `max` bytes went in; returns the bytes
 * written.
 */
export async function writeUntilPushedBack(s: Socket, chunk: Buffer, max: number): Promise<number> {
  let written = 0;
  for (;;) {
    written += chunk.length;
    if (!s.write(chunk)) {
      const drained = await Promise.race([once(s, 'drain').then(() => true), new Promise((r) => setTimeout(r, 500, false))]);
      if (!drained) break;
    }
    if (written > max) break;
  }
  return written;
}
