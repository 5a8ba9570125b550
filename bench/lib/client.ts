import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { COUNT_BYTES, MODE_DISCARD, MODE_ECHO, MODE_GENERATE, MODE_SLOW } from './wire.ts';

/** Bytes per client write in bulk transfers (what `cat`/`scp` style writers do). */
const WRITE_CHUNK = 256 * 1024;
/** One buffer of random bytes, written again and again (nothing on any path compresses). */
const PAYLOAD = randomBytes(WRITE_CHUNK);

/** Opens a TCP connection on loopback. */
export function tcpConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Reads exactly n bytes (keeping any surplus for the next reader). */
export function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
      if (got.length < n) return;
      cleanup();
      socket.pause();
      if (got.length > n) socket.unshift(got.subarray(n));
      resolve(got.subarray(0, n));
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`connection ended after ${got.length} of ${n} bytes`));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onError);
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onError);
    socket.resume();
  });
}

/**
 * SOCKS5 CONNECT to host:port by name, greeting and request sent together
 * (the server reads them in order). Resolves once the server answered
 * "succeeded": for diode, that is after the device reached its local port.
 */
export async function socks5Connect(proxyPort: number, host: string, port: number): Promise<Socket> {
  const socket = await tcpConnect(proxyPort);
  const name = Buffer.from(host, 'latin1');
  const request = Buffer.alloc(3 + 4 + 1 + name.length + 2);
  request.set([5, 1, 0], 0); // version 5, one method: no authentication
  request.set([5, 1, 0, 3, name.length], 3); // CONNECT, reserved, domain name
  name.copy(request, 8);
  request.writeUInt16BE(port, 8 + name.length);
  socket.write(request);
  try {
    const method = await readExactly(socket, 2);
    if (method[0] !== 5 || method[1] !== 0) throw new Error(`SOCKS5 method reply ${method.toString('hex')}`);
    const head = await readExactly(socket, 5);
    if (head[1] !== 0) throw new Error(`SOCKS5 CONNECT refused with code ${head[1]}`);
    // The bound address: IPv4 (4 bytes), name (1 + head[4]) or IPv6 (16), then the port.
    const rest = head[3] === 1 ? 3 + 2 : head[3] === 4 ? 15 + 2 : head[4] + 2;
    await readExactly(socket, rest);
  } catch (err) {
    socket.destroy();
    throw err;
  }
  return socket;
}

/** A way to reach the sink: plain, through diode's SOCKS, or through the ssh -L port. */
export type Connector = () => Promise<Socket>;

/** Opens an echo connection and waits for the sink's first byte: the path is open end to end. */
export async function openEcho(connector: Connector): Promise<Socket> {
  const socket = await connector();
  socket.on('error', () => {});
  socket.write(Buffer.from([MODE_ECHO]));
  const ack = await readExactly(socket, 1);
  if (ack[0] !== MODE_ECHO) throw new Error('sink did not acknowledge echo mode');
  return socket;
}

/** ms from connect() to the first byte back from the sink (TCP + proxy handshake + one round trip). */
export async function timeSetup(connector: Connector): Promise<number> {
  const start = process.hrtime.bigint();
  const socket = await openEcho(connector);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  socket.destroy();
  return ms;
}

export interface Transfer {
  bytes: number;
  /** ms from the first byte written to the sink's count received. */
  ms: number;
}

/** Sends `bytes` on an open connection in discard mode and waits for the sink to confirm it got them all. */
export async function sendBulk(socket: Socket, bytes: number): Promise<Transfer> {
  socket.on('error', () => {});
  const start = process.hrtime.bigint();
  socket.write(Buffer.from([MODE_DISCARD]));
  let sent = 0;
  while (sent < bytes) {
    const n = Math.min(WRITE_CHUNK, bytes - sent);
    sent += n;
    if (!socket.write(n === WRITE_CHUNK ? PAYLOAD : PAYLOAD.subarray(0, n))) await once(socket, 'drain');
  }
  socket.end();
  const count = Number((await readExactly(socket, COUNT_BYTES)).readBigUInt64BE(0));
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  socket.destroy();
  if (count !== bytes) throw new Error(`sink counted ${count} bytes, ${bytes} were sent`);
  return { bytes, ms };
}

/** Asks the sink for `bytes` (generate mode) and reads them to the sink's end: a download from the far side. */
export async function receiveBulk(socket: Socket, bytes: number): Promise<Transfer> {
  socket.on('error', () => {});
  const head = Buffer.alloc(1 + COUNT_BYTES);
  head[0] = MODE_GENERATE;
  head.writeBigUInt64BE(BigInt(bytes), 1);
  const start = process.hrtime.bigint();
  let got = 0;
  socket.on('data', (chunk: Buffer) => (got += chunk.length));
  const ended = once(socket, 'end');
  socket.write(head);
  socket.resume();
  await ended;
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  socket.destroy();
  if (got !== bytes) throw new Error(`received ${got} bytes, the sink was asked for ${bytes}`);
  return { bytes, ms };
}

/**
 * Writes as fast as the path lets it to a sink reading at `rate` bytes/s,
 * for `ms`. Reports how far the writer got ahead of the reader at most:
 * bounded only if backpressure reaches the writer through every hop.
 */
export async function slowReader(connector: Connector, rate: number, ms: number): Promise<{ written: number; read: number; maxAhead: number }> {
  const socket = await connector();
  socket.on('error', () => {});
  const head = Buffer.alloc(5);
  head[0] = MODE_SLOW;
  head.writeUInt32BE(rate, 1);
  socket.write(head);
  let read = 0;
  let written = 0;
  let maxAhead = 0;
  let progress = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    progress = Buffer.concat([progress, chunk]);
    while (progress.length >= COUNT_BYTES) {
      read = Number(progress.readBigUInt64BE(0));
      progress = progress.subarray(COUNT_BYTES);
      maxAhead = Math.max(maxAhead, written - read);
    }
  });
  socket.resume(); // the SOCKS handshake reader left it paused
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    written += PAYLOAD.length;
    if (!socket.write(PAYLOAD)) {
      const drained = once(socket, 'drain').then(() => true);
      const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), Math.max(0, deadline - Date.now())));
      if (!(await Promise.race([drained, timeout]))) break;
    }
  }
  socket.destroy();
  return { written, read, maxAhead };
}

/** Sends in discard mode until `deadline` (Date.now() ms), then waits for the sink's count. */
export async function sendUntil(socket: Socket, deadline: number): Promise<Transfer> {
  socket.on('error', () => {});
  const start = process.hrtime.bigint();
  socket.write(Buffer.from([MODE_DISCARD]));
  let sent = 0;
  while (Date.now() < deadline) {
    sent += PAYLOAD.length;
    if (!socket.write(PAYLOAD)) await once(socket, 'drain');
  }
  socket.end();
  const count = Number((await readExactly(socket, COUNT_BYTES)).readBigUInt64BE(0));
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  socket.destroy();
  if (count !== sent) throw new Error(`sink counted ${count} bytes, ${sent} were sent`);
  return { bytes: sent, ms };
}
