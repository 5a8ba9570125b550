import test from 'ava';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { DelayLink, startDelayLine, HANDSHAKE_ONE_WAY_DELAYS } from '../bench/lib/delay-line.ts';

// The bench's emulated paths (bench/lib/delay-line.ts) must hold the delays
// they promise: these are lower bounds (a loaded host only adds time) with
// loose upper bounds that catch a line that forgot to delay or doubled it.

/** Large enough that a line which skipped the handshake's two extra one-way delays fails even on a loaded host. */
const ONE_WAY_MS = 200;
/** What a loaded 2-core host may add to one exchange, ms: less than 4 one-way delays, so a doubled handshake still fails. */
const SLACK_MS = 600;

async function listen(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {}); // the line resets its connections when it closes
    onSocket(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

function firstData(s: Socket): Promise<Buffer> {
  return once(s, 'data').then(([b]) => b as Buffer);
}

test('a client that speaks first hears its first answer four one-way delays after dialling, then one round trip per exchange', async (t) => {
  const { server, port } = await listen((s) => s.pipe(s));
  const { line, link } = await startDelayLine({ oneWayMs: ONE_WAY_MS, target: { port } });
  t.teardown(async () => {
    await link.close();
    server.close();
  });
  // A first connection warms the code paths (JIT), so the timed one measures the line.
  const warm = await dial(line.port);
  warm.write('w');
  await firstData(warm);
  warm.destroy();
  const start = performance.now();
  const s = await dial(line.port);
  s.write('a');
  await firstData(s);
  const first = performance.now() - start;
  t.true(first >= (HANDSHAKE_ONE_WAY_DELAYS + 1) * ONE_WAY_MS - 1, `first answer after ${first} ms`);
  t.true(first < (HANDSHAKE_ONE_WAY_DELAYS + 1) * ONE_WAY_MS + SLACK_MS, `first answer after ${first} ms`);
  const rtts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    s.write('b');
    await firstData(s);
    rtts.push(performance.now() - t0);
  }
  for (const rtt of rtts) t.true(rtt >= 2 * ONE_WAY_MS - 1 && rtt < 2 * ONE_WAY_MS + SLACK_MS, `round trips ${rtts.join(', ')} ms`);
  s.destroy();
});

test('a server that speaks first (an ssh banner) is heard four one-way delays after the dial', async (t) => {
  const { server, port } = await listen((s) => s.end('SSH-2.0-test\r\n'));
  const { line, link } = await startDelayLine({ oneWayMs: ONE_WAY_MS, target: { port } });
  t.teardown(async () => {
    await link.close();
    server.close();
  });
  const warm = await dial(line.port);
  await firstData(warm);
  warm.destroy();
  const start = performance.now();
  const s = await dial(line.port);
  const banner = await firstData(s);
  const ms = performance.now() - start;
  t.is(banner.toString(), 'SSH-2.0-test\r\n');
  t.true(ms >= (HANDSHAKE_ONE_WAY_DELAYS + 1) * ONE_WAY_MS - 1 && ms < (HANDSHAKE_ONE_WAY_DELAYS + 1) * ONE_WAY_MS + SLACK_MS, `banner after ${ms} ms`);
  await once(s, 'end');
  s.destroy();
});

test('bytes cross in order and complete in both directions, and a half-close passes behind them', async (t) => {
  const payload = randomBytes(3 * 1024 * 1024);
  // The target echoes everything and ends once the dialer has ended.
  const { server, port } = await listen((s) => s.pipe(s));
  const link = new DelayLink({ oneWayMs: 5, upBitsPerSec: 400e6 });
  const line = await link.forward({ port });
  t.teardown(async () => {
    await link.close();
    server.close();
  });
  const s = await dial(line.port);
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  const ended = once(s, 'end');
  // Writes of random sizes, so segments and chunks never line up.
  for (let off = 0; off < payload.length; ) {
    const n = 1 + Math.floor(Math.random() * 100_000);
    s.write(payload.subarray(off, off + n));
    off += n;
  }
  s.end();
  await ended;
  t.true(Buffer.concat(got).equals(payload));
  const stats = link.stats();
  t.is(stats.up.bytes, payload.length);
  t.is(stats.down.bytes, payload.length);
});

test('a rate limit holds: 1 MiB up a 16 Mbit/s line takes at least its serialisation time', async (t) => {
  let received = 0;
  let done: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  const bytes = 1024 * 1024;
  const { server, port } = await listen((s) =>
    s.on('data', (b: Buffer) => {
      received += b.length;
      if (received >= bytes) done();
    }),
  );
  const rate = 16e6;
  const { line, link } = await startDelayLine({ oneWayMs: 2, upBitsPerSec: rate, target: { port } });
  t.teardown(async () => {
    await link.close();
    server.close();
  });
  const s = await dial(line.port);
  const start = performance.now();
  s.write(randomBytes(bytes));
  await all;
  const ms = performance.now() - start;
  const serialisationMs = ((bytes * 8) / rate) * 1000; // 524 ms, before headers
  t.true(ms >= serialisationMs, `1 MiB took ${ms} ms`);
  t.true(ms < 2 * serialisationMs + SLACK_MS, `1 MiB took ${ms} ms`);
  // The line stops reading past its buffer instead of holding everything written.
  t.true(link.stats().up.peakBufferedBytes < bytes, `peak ${link.stats().up.peakBufferedBytes} bytes buffered`);
  s.destroy();
});

test('a target that refuses the connection resets the dialer', async (t) => {
  const { server, port } = await listen(() => {});
  await new Promise((resolve) => server.close(resolve));
  const { line, link } = await startDelayLine({ oneWayMs: 2, target: { port } });
  t.teardown(() => link.close());
  const s = await dial(line.port);
  const [err] = await once(s, 'error');
  t.is((err as NodeJS.ErrnoException).code, 'ECONNRESET');
});
