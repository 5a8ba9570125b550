import test, { type ExecutionContext } from 'ava';
import { connect, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { startSocksServer, SocksRefusal, SOCKS_HANDSHAKE_TIMEOUT_MS } from '../agent/socks/server.ts';
import { Rep } from '../agent/socks/protocol.ts';
import { silentLogger } from '../agent/util/log.ts';

async function server(t: ExecutionContext, handshakeTimeoutMs?: number) {
  // Echo "tunnels" for x.ok names; refusals with a chosen code otherwise.
  const running = await startSocksServer({ host: '127.0.0.1', port: 0 }, {
    log: silentLogger,
    handshakeTimeoutMs,
    connector: async (req) => {
      if (req.host === 'x.ok') {
        const echo = new PassThrough();
        return echo;
      }
      throw new SocksRefusal(Rep.hostUnreachable, 'no');
    },
  });
  t.teardown(() => running.close());
  return running.port;
}

function talk(port: number, send: Buffer[], expectBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ host: '127.0.0.1', port }, () => send.forEach((b) => s.write(b)));
    let got = Buffer.alloc(0);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= expectBytes) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
  });
}

const connectReq = (host: string, port = 22) => Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), Buffer.from(host), Buffer.from([port >> 8, port & 255])]);

test('the default SOCKS handshake deadline is 10 seconds', (t) => {
  t.is(SOCKS_HANDSHAKE_TIMEOUT_MS, 10_000);
});

test('a SOCKS5 CONNECT byte by byte gets success and then the tunnel', async (t) => {
  const port = await server(t);
  const bytes = Buffer.concat([Buffer.from([5, 1, 0]), connectReq('x.ok'), Buffer.from('ping')]);
  const parts = [...bytes].map((b) => Buffer.from([b]));
  const reply = await talk(port, parts, 2 + 10 + 4);
  t.deepEqual([...reply.subarray(0, 4)], [5, 0, 5, 0]);
  t.is(reply.subarray(12).toString(), 'ping');
});

test('refusals carry the connector reply code; unsupported commands get code 7', async (t) => {
  const port = await server(t);
  const refused = await talk(port, [Buffer.from([5, 1, 0]), connectReq('nowhere')], 12);
  t.is(refused[3], Rep.hostUnreachable);
  const bind = Buffer.from(connectReq('x.ok'));
  bind[1] = 2;
  const unsupported = await talk(port, [Buffer.from([5, 1, 0]), bind], 12);
  t.is(unsupported[3], Rep.commandNotSupported);
});

test('a client offering only username/password auth is told no method is acceptable', async (t) => {
  const port = await server(t);
  const reply = await talk(port, [Buffer.from([5, 1, 2])], 2);
  t.deepEqual([...reply], [5, 0xff]);
});

test('SOCKS4a works and is refused with 0x5b', async (t) => {
  const port = await server(t);
  const req = (host: string) => Buffer.concat([Buffer.from([4, 1, 0, 22, 0, 0, 0, 1]), Buffer.from('me\0'), Buffer.from(host + '\0')]);
  const ok = await talk(port, [req('x.ok'), Buffer.from('hi')], 10);
  t.is(ok[1], 0x5a);
  t.is(ok.subarray(8).toString(), 'hi');
  const no = await talk(port, [req('nowhere')], 8);
  t.is(no[1], 0x5b);
});

test('garbage and oversize handshakes are dropped, stalled ones after the deadline, while honest clients are served', async (t) => {
  const port = await server(t, 1000);
  const garbage = await talk(port, [Buffer.from('GET / HTTP/1.1\r\n\r\n')], 1);
  t.is(garbage.length, 0);
  const oversize = await talk(port, [Buffer.concat([Buffer.from([4, 1, 0, 22, 0, 0, 0, 1]), Buffer.alloc(4096, 0x41)])], 1);
  t.true(oversize.length === 0 || oversize[1] === 0x5b);
  const started = Date.now();
  const stalled = talk(port, [Buffer.from([5, 1, 0]), Buffer.from([5, 1])], 1000);
  const honest = await talk(port, [Buffer.from([5, 1, 0]), connectReq('x.ok'), Buffer.from('yo')], 14);
  t.is(honest.subarray(12).toString(), 'yo');
  const stalledReply = await stalled;
  t.deepEqual([...stalledReply], [5, 0]);
  const ms = Date.now() - started;
  t.true(ms >= 900 && ms < 3000, `stalled client dropped after ${ms} ms`);
});
