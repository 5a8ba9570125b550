import { createServer, request, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { ExecutionContext } from 'ava';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function wsAccept(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

export interface Origin {
  port: number;
  /** Request heads the origin saw, newest last (for X-Forwarded-* checks). */
  seen: IncomingMessage['headers'][];
}

/**
 * A small HTTP server standing in for a device's web app, on a loopback port:
 *   GET  /who       → its name and the request headers as JSON
 *   POST /sha256    → SHA-256 of the streamed body (hex)
 *   GET  /download  → the file `downloadPath`, streamed
 *   GET  /hang      → never answers
 *   WebSocket upgrade on any path → echoes each text frame back
 */
export async function startOrigin(t: ExecutionContext, name: string, downloadPath?: string): Promise<Origin> {
  const seen: Origin['seen'] = [];
  const sockets = new Set<Duplex>();
  const server = createServer((req, res) => {
    seen.push(req.headers);
    if (req.url === '/who') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ name, headers: req.headers }));
    } else if (req.url === '/sha256' && req.method === 'POST') {
      const hash = createHash('sha256');
      req.on('data', (chunk: Buffer) => hash.update(chunk));
      req.on('end', () => res.end(hash.digest('hex')));
    } else if (req.url === '/download' && downloadPath) {
      createReadStream(downloadPath).pipe(res);
    } else if (req.url === '/hang') {
      // no answer: the gateway's idle timeout must end this
    } else {
      res.statusCode = 404;
      res.end('not here\n');
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    sockets.add(socket);
    seen.push(req.headers);
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || req.headers.upgrade?.toLowerCase() !== 'websocket') return socket.destroy();
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`);
    readFrames(socket, (text) => socket.write(encodeFrame(text, false)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const address = server.address();
  return { port: typeof address === 'object' && address ? address.port : 0, seen };
}

/** One WebSocket text frame (payload < 64 KiB); clients must mask. */
function encodeFrame(text: string, mask: boolean): Buffer {
  const payload = Buffer.from(text);
  const head = payload.length < 126 ? Buffer.from([0x81, payload.length]) : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff]);
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([head, key, masked]);
}

/** Calls onText for each complete text frame (the minimal subset: FIN set, payload < 64 KiB). */
function readFrames(socket: Duplex, onText: (text: string) => void): void {
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        offset = 4;
      }
      const keyAt = offset;
      if (masked) offset += 4;
      if (buf.length < offset + len) return;
      const payload = Buffer.from(buf.subarray(offset, offset + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[keyAt + (i % 4)];
      buf = buf.subarray(offset + len);
      if (opcode === 0x8) return socket.end();
      onText(payload.toString());
    }
  });
}

/** Opens a WebSocket to http://127.0.0.1:port with the given Host, sends each message and collects the echoes. */
export function webSocketEcho(port: number, host: string, messages: string[]): Promise<{ echoes: string[]; accept: string }> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/echo',
      headers: { Host: host, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key },
    });
    const timer = setTimeout(() => reject(new Error('WebSocket echo timed out')), 10_000);
    req.on('error', reject);
    req.on('response', (res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    req.on('upgrade', (res, socket: Socket, head: Buffer) => {
      const accept = String(res.headers['sec-websocket-accept']);
      if (accept !== wsAccept(key)) reject(new Error(`bad Sec-WebSocket-Accept ${accept}`));
      const echoes: string[] = [];
      if (head.length > 0) socket.unshift(head);
      readFrames(socket, (text) => {
        echoes.push(text);
        if (echoes.length === messages.length) {
          clearTimeout(timer);
          socket.destroy();
          resolve({ echoes, accept });
        }
      });
      for (const m of messages) socket.write(encodeFrame(m, true));
    });
    req.end();
  });
}

/** A bare SOCKS5 CONNECT (no auth, domain name): resolves with the reply code and the open socket. */
export function socks5Connect(proxyPort: number, host: string, port: number, localAddress?: string): Promise<{ rep: number; socket: Socket; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect({ host: '127.0.0.1', port: proxyPort, localAddress });
    let buf = Buffer.alloc(0);
    socket.on('error', reject);
    socket.on('connect', () => {
      const name = Buffer.from(host);
      const req = Buffer.concat([Buffer.from([5, 1, 0]), Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 0xff])]);
      socket.write(req);
    });
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 + 10) return;
      socket.off('data', onData);
      socket.pause();
      if (buf.length > 12) socket.unshift(buf.subarray(12));
      resolve({ rep: buf[3], socket, ms: Date.now() - started });
    };
    socket.on('data', onData);
    socket.on('close', () => reject(new Error(`SOCKS server closed after ${buf.length} bytes`)));
  });
}

/** A SOCKS4a CONNECT to host:port (the name in the request); resolves with the reply code (0x5a granted, 0x5b rejected). */
export function socks4aReply(proxyPort: number, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(proxyPort, '127.0.0.1');
    const head = Buffer.from([4, 1, port >> 8, port & 0xff, 0, 0, 0, 1, 0]);
    socket.once('connect', () => socket.write(Buffer.concat([head, Buffer.from(`${host}\0`)])));
    socket.once('data', (reply: Buffer) => {
      socket.destroy();
      resolve(reply[1]);
    });
    socket.once('error', reject);
    socket.setTimeout(20_000, () => socket.destroy(new Error('no SOCKS4a reply')));
  });
}
