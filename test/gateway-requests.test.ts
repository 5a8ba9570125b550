// Issue 14, items 5 and 6: pipelined requests, upgrades the device declines, duplicate Host headers.
import test, { type ExecutionContext } from 'ava';
import { createServer, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { Identity } from '../agent/identity/index.ts';
import { startRelay } from '../agent/relay/listen.ts';
import { RelayLink } from '../agent/link/relay-link.ts';
import { IncomingHandler } from '../agent/device/incoming.ts';
import { startGateway } from '../agent/gateway/gateway.ts';
import { DEFAULT_GATEWAY_LIMITS } from '../agent/gateway/config.ts';
import { MAX_PIPELINED_REQUESTS } from '../agent/gateway/http.ts';
import { silentLogger } from '../agent/util/log.ts';
import { tempDir } from './helpers/diode.ts';
import { webSocketEcho } from './helpers/http.ts';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The device's web app: answers every request (also Upgrade ones, which it does not speak) after `delayMs` with what it saw. */
async function origin(t: ExecutionContext, delayMs = 0) {
  const stats = { requests: 0, open: 0, maxOpen: 0, connections: 0, seen: [] as IncomingMessage['headers'][] };
  const server = createServer((req, res) => {
    stats.requests++;
    stats.open++;
    stats.maxOpen = Math.max(stats.maxOpen, stats.open);
    stats.seen.push(req.headers);
    setTimeout(() => {
      stats.open--;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    }, delayMs);
  });
  server.on('connection', () => stats.connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { port: (server.address() as { port: number }).port, stats };
}

async function gatewayToDevice(t: ExecutionContext, originPort: number) {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger });
  t.teardown(() => relay.close());
  const gateway = await startGateway(relay.server, { http: { host: '127.0.0.1', port: 0 }, limits: { ...DEFAULT_GATEWAY_LIMITS } }, silentLogger);
  t.teardown(() => gateway.close());
  const device = Identity.random();
  const handler = new IncomingHandler([{ host: '127.0.0.1', localPort: originPort, remotePort: 80, mode: 'public', allow: [] }], silentLogger, { identity: device });
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port: relay.port }], identity: device, log: silentLogger, publish: [{ port: 80, mode: 'public' }], onStream: (s) => handler.handle(s) });
  t.teardown(() => link.stop());
  link.start();
  await link.waitForSession(5000);
  await tick(100);
  return { relay, port: gateway.listening.http!.port, host: `${device.address.toLowerCase()}.diode` };
}

function rawConnection(t: ExecutionContext, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
    t.teardown(() => s.destroy());
  });
}

/** Reads from `socket` until `count` complete responses (with Content-Length bodies) arrived. */
function readResponses(socket: Socket, count: number): Promise<Array<{ status: number; body: string }>> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const out: Array<{ status: number; body: string }> = [];
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) break;
        const head = buffer.slice(0, end);
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buffer.length < end + 4 + length) break;
        out.push({ status: Number(head.slice(9, 12)), body: buffer.slice(end + 4, end + 4 + length) });
        buffer = buffer.slice(end + 4 + length);
        if (out.length === count) {
          socket.off('data', onData);
          return resolve(out);
        }
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('close', () => resolve(out));
  });
}

test.serial('pipelined GETs on a connection that never reads open one device stream at a time, and past the bound get 429 and a close', async (t) => {
  const web = await origin(t, 20);
  const { relay, port, host } = await gatewayToDevice(t, web.port);
  // Two anonymous connections, 500 pipelined GETs each, never reading.
  for (let c = 0; c < 2; c++) {
    const socket = await rawConnection(t, port);
    socket.pause();
    socket.write(`GET /x HTTP/1.1\r\nHost: ${host}\r\n\r\n`.repeat(500));
  }
  await tick(2000);
  t.true(web.stats.maxOpen <= 2, `the device served ${web.stats.maxOpen} requests at once`);
  t.true(web.stats.requests <= 2 * (MAX_PIPELINED_REQUESTS + 1), `the device got ${web.stats.requests} requests`);
  t.true(relay.server.stats.get('gateway_http_pipeline_refused') >= 2);
  t.true(relay.server.stats.get('gateway_http_pipelined') >= 2 * MAX_PIPELINED_REQUESTS);
});

test.serial('a few pipelined GETs from a client that reads are all answered, in order', async (t) => {
  const web = await origin(t, 5);
  const { port, host } = await gatewayToDevice(t, web.port);
  const socket = await rawConnection(t, port);
  const answers = readResponses(socket, 5);
  socket.write([1, 2, 3, 4, 5].map((i) => `GET /${i} HTTP/1.1\r\nHost: ${host}\r\n\r\n`).join(''));
  const got = await answers;
  t.deepEqual(got.map((r) => r.status), [200, 200, 200, 200, 200]);
  t.deepEqual(got.map((r) => JSON.parse(r.body).url), ['/1', '/2', '/3', '/4', '/5']);
  t.is(web.stats.maxOpen, 1);
});

test.serial('an Upgrade the device answers with 200 is an ordinary response, and later requests on the connection get the usual header rewriting', async (t) => {
  const web = await origin(t);
  const { port, host } = await gatewayToDevice(t, web.port);
  const socket = await rawConnection(t, port);
  const first = readResponses(socket, 1);
  socket.write(`GET /up HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nX-Forwarded-Host: evil.example\r\n\r\n`);
  const [up] = await first;
  t.is(up.status, 200);
  t.is(JSON.parse(up.body).url, '/up');
  const second = readResponses(socket, 1);
  socket.write(`GET /after HTTP/1.1\r\nHost: ${host}\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: gopher\r\n\r\n`);
  const [after] = await second;
  t.is(after.status, 200);
  const seen = JSON.parse(after.body).headers;
  t.is(seen['x-forwarded-host'], host, 'the gateway set X-Forwarded-Host, not the client');
  t.is(seen['x-forwarded-proto'], 'http');
  t.is(seen['x-forwarded-for'], '127.0.0.1');
});

test.serial('a WebSocket upgrade the device accepts with 101 is spliced through', async (t) => {
  const { startOrigin } = await import('./helpers/http.ts');
  const ws = await startOrigin(t, 'ws');
  const { port, host } = await gatewayToDevice(t, ws.port);
  const { echoes } = await webSocketEcho(port, host, ['hello through the gateway', 'and again']);
  t.deepEqual(echoes, ['hello through the gateway', 'and again']);
});

test.serial('a request with two Host headers is answered 400', async (t) => {
  const web = await origin(t);
  const { relay, port, host } = await gatewayToDevice(t, web.port);
  const socket = await rawConnection(t, port);
  const answer = readResponses(socket, 1);
  socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nHost: other.example\r\n\r\n`);
  const [r] = await answer;
  t.is(r.status, 400);
  t.regex(r.body, /more than one Host/);
  t.is(web.stats.requests, 0);
  t.is(relay.server.stats.get('gateway_http_400'), 1);
});
