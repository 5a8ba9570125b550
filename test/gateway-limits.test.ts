import test from 'ava';
import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { startRelay, startPublish } from './helpers/diode.ts';
import { startOrigin, socks5Connect } from './helpers/http.ts';

const run = promisify(execFile);
const IDLE_S = 4;

/** A connection that sent `GET /hang` (the origin never answers), so it holds a gateway slot until the idle timeout. */
function hangingRequest(port: number, host: string, localAddress: string): Promise<{ socket: Socket; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress });
    socket.on('error', () => {});
    socket.once('error', reject);
    socket.once('connect', () => {
      const opened = Date.now();
      const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - opened)));
      socket.write(`GET /hang HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      resolve({ socket, closed });
    });
  });
}

async function curlStatus(port: number, host: string, extra: string[] = []): Promise<{ status: number; body: string }> {
  const { stdout } = await run('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', '-H', `Host: ${host}`, ...extra, `http://127.0.0.1:${port}/who`], { timeout: 20_000 });
  const cut = stdout.lastIndexOf('\n');
  return { status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) };
}

test('the gateway refuses connections over the per-IP (429, SOCKS 0x01) and total (503) caps, closes idle ones, and counts every refusal', async (t) => {
  const origin = await startOrigin(t, 'web');
  const relay = await startRelay(t, [
    '--gateway-http', '127.0.0.1:0',
    '--gateway-socks', '127.0.0.1:0',
    '--gateway-max-conns-per-ip', '2',
    '--gateway-max-conns', '3',
    '--gateway-idle-timeout', String(IDLE_S),
  ]);
  const http = Number((await relay.proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
  const socks = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const device = await startPublish(t, relay.port, ['-public', `${origin.port}:80`]);
  const host = `${device.address.toLowerCase()}.diode`;

  t.is((await curlStatus(http, host)).status, 200);

  // Two slots from 127.0.0.1 (its cap) and one from 127.0.0.2 (the total cap of 3).
  const held = [await hangingRequest(http, host, '127.0.0.1'), await hangingRequest(http, host, '127.0.0.1'), await hangingRequest(http, host, '127.0.0.2')];
  t.teardown(() => held.forEach((h) => h.socket.destroy()));
  // All three reached the origin, so the gateway admitted them.
  while (origin.seen.length < 4) await new Promise((resolve) => setTimeout(resolve, 20));

  const perIp = await curlStatus(http, host);
  t.is(perIp.status, 429);
  t.regex(perIp.body, /at most 2 connections from one address/);
  const total = await curlStatus(http, host, ['--interface', '127.0.0.3']);
  t.is(total.status, 503);
  t.regex(total.body, /maximum of 3 connections/);
  const socksRefused = await socks5Connect(socks, host, 80);
  socksRefused.socket.destroy();
  t.is(socksRefused.rep, 0x01, 'SOCKS over the per-IP cap: general failure');
  t.regex(relay.proc.output(), /http 127\.0\.0\.1: refused, already 2 connections from this source/);
  t.regex(relay.proc.output(), /http 127\.0\.0\.3: refused, gateway full \(3 connections\)/);

  // The held requests get no byte either way: the idle timeout closes them and frees the slots.
  const idleMs = await Promise.all(held.map((h) => h.closed));
  for (const ms of idleMs) t.true(ms >= IDLE_S * 1000 - 200 && ms < IDLE_S * 1000 + 3000, `closed after ${ms} ms`);
  t.regex(relay.proc.output(), new RegExp(`closed after ${IDLE_S} s idle`));
  t.is((await curlStatus(http, host)).status, 200);

  // A SOCKS tunnel with no traffic is closed by the same timeout.
  const tunnel = await socks5Connect(socks, host, 80);
  t.is(tunnel.rep, 0x00);
  const started = Date.now();
  await new Promise((resolve) => tunnel.socket.once('close', resolve).resume());
  t.true(Date.now() - started >= IDLE_S * 1000 - 200, `SOCKS tunnel closed after ${Date.now() - started} ms`);

  // A SOCKS handshake past its 1 KiB bound (SOCKS4 with an endless user id) is cut off.
  const flood = connect({ host: '127.0.0.1', port: socks });
  flood.on('error', () => {});
  flood.write(Buffer.concat([Buffer.from([4, 1, 0, 80, 0, 0, 0, 1]), Buffer.alloc(2000, 0x75)]));
  await new Promise((resolve) => flood.once('close', resolve).resume());
  t.regex(relay.proc.output(), /handshake larger than 1024 bytes/);

  await relay.proc.stop();
  t.is(relay.proc.child.exitCode, 0, 'the relay and its gateway shut down cleanly on SIGTERM');
  const counters = JSON.parse(/counters (\{.*\})/.exec(relay.proc.output())![1]) as Record<string, number>;
  t.is(counters.gateway_refused_per_ip, 2);
  t.is(counters.gateway_refused_total, 1);
  t.true(counters.gateway_idle_timeout >= 4);
  t.is(counters.gateway_http_429, 1);
  t.is(counters.gateway_http_503, 1);
  t.is(counters.gateway_socks_header_too_large, 1);
});
