// Issue 14, item 2: one source cannot exhaust the relay's agent port, and the relay survives its fd limit.
import test, { type ExecutionContext } from 'ava';
import { connect as netConnect, type Socket } from 'node:net';
import { Identity } from '../agent/identity/index.ts';
import { startRelay, AGENT_LISTEN_BACKLOG } from '../agent/relay/listen.ts';
import { dialRelay } from '../agent/link/dial-relay.ts';
import { MuxSession } from '../agent/mux/index.ts';
import { AcceptGuard, openFilesLimit, RefusalLog } from '../agent/relay/admission.ts';
import { RelayStats } from '../agent/relay/stats.ts';
import type { RelayLimits } from '../agent/relay/config.ts';
import { silentLogger } from '../agent/util/log.ts';
import { tempDir, start, DIODE_BUNDLE } from './helpers/diode.ts';

async function relayFor(t: ExecutionContext, limits?: Partial<RelayLimits>) {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port: 0 }, home: tempDir(t), identity: Identity.random(), log: silentLogger, limits });
  t.teardown(() => relay.close());
  return relay;
}

/** Opens `n` TCP connections from `localAddress` that never start TLS; resolves once each connected or failed. */
async function rawFlood(t: ExecutionContext, port: number, n: number, localAddress: string): Promise<Socket[]> {
  const sockets: Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<void>((resolve) => {
        const s = netConnect({ host: '127.0.0.1', port, localAddress });
        sockets.push(s);
        s.on('error', () => resolve());
        s.once('connect', () => resolve());
        s.once('close', () => resolve());
      }),
    ),
  );
  return sockets;
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds or `ms` passed (the relay accepts a flood at its own pace on a busy machine). */
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await tick(20);
}

test('one source holding hundreds of connections that never finish TLS is capped per source; an honest agent from elsewhere still gets in', async (t) => {
  const relay = await relayFor(t);
  const limit = relay.server.limits.maxHandshakesPerIp;
  await rawFlood(t, relay.port, limit * 5, '127.0.0.2');
  await until(() => relay.server.stats.get('refused_handshakes_per_ip') >= limit * 4);
  t.true(relay.server.stats.get('refused_handshakes_per_ip') >= limit * 4 - 5, `refused ${relay.server.stats.get('refused_handshakes_per_ip')}`);
  const me = Identity.random();
  const honest = await dialRelay({ host: '127.0.0.1', port: relay.port }, me);
  t.teardown(() => honest.socket.destroy());
  t.is(honest.relayAddress, relay.server.address);
});

test('many sources together cannot hold more unauthenticated connections than the total cap', async (t) => {
  const relay = await relayFor(t, { maxHandshakes: 40, maxHandshakesPerIp: 10 });
  for (let i = 2; i < 10; i++) await rawFlood(t, relay.port, 10, `127.0.0.${i}`);
  await until(() => relay.server.stats.get('refused_handshakes_total') >= 40);
  await tick(100);
  t.is(relay.server.stats.get('refused_handshakes_total'), 80 - 40);
});

test('one source opening more authenticated sessions than --max-sessions-per-ip gets the rest closed', async (t) => {
  const relay = await relayFor(t, { maxSessionsPerIp: 10 });
  const sockets = await Promise.all(
    Array.from({ length: 25 }, async () => {
      // A refused session may be closed before the relay's hello arrives: that is the refusal.
      const link = await dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random()).catch(() => undefined);
      if (!link) return undefined;
      t.teardown(() => link.socket.destroy());
      link.socket.on('error', () => {});
      link.socket.resume();
      return link.socket;
    }),
  );
  await until(() => relay.server.stats.get('refused_sessions_per_ip') >= 15);
  await tick(200);
  t.is(relay.server.registry.size, 10);
  t.is(relay.server.stats.get('refused_sessions_per_ip'), 15);
  t.is(sockets.filter((s) => s === undefined || s.destroyed).length, 15);
  // Closing one makes room for one more.
  sockets.find((s) => s !== undefined && !s.destroyed)!.destroy();
  await until(() => relay.server.registry.size === 9);
  const again = await dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random());
  t.teardown(() => again.socket.destroy());
  await tick(200);
  t.is(relay.server.registry.size, 10);
  t.is(relay.server.stats.get('refused_sessions_per_ip'), 15);
});

test('one session opening more streams than --max-streams-per-session gets the rest reset', async (t) => {
  const relay = await relayFor(t, { maxStreamsPerSession: 20 });
  const { socket } = await dialRelay({ host: '127.0.0.1', port: relay.port }, Identity.random());
  const mux = new MuxSession(socket, { role: 'client' });
  t.teardown(() => mux.close());
  let reset = 0;
  for (let i = 0; i < 50; i++) {
    const s = mux.open();
    s.on('error', () => reset++);
  }
  await until(() => reset >= 30);
  await tick(100);
  t.is(reset, 30);
  t.is(relay.server.stats.get('refused_streams_per_session'), 30);
});

test('refusals of one kind are logged once a second with a count, not once each', (t) => {
  const lines: string[] = [];
  const log = new RefusalLog({ ...silentLogger, info: (m: string) => lines.push(m) });
  for (let i = 0; i < 1000; i++) log.refused('x', 'thing', 10_000 + i / 10);
  log.refused('x', 'thing', 11_500);
  t.is(lines.length, 2);
  t.regex(lines[1], /999 more x refusals/);
});

test('a kind allowed several lines a second logs that many, then counts the rest', (t) => {
  const lines: string[] = [];
  const log = new RefusalLog({ ...silentLogger, info: (m: string) => lines.push(m) });
  for (let i = 0; i < 100; i++) log.line('info', 'closed', `session ${i}`, 'sessions closed', 10_000 + i, 20);
  log.line('info', 'closed', 'session later', 'sessions closed', 11_500, 20);
  t.is(lines.length, 21);
  t.is(lines[19], 'session 19');
  t.is(lines[20], 'session later (80 more sessions closed since the last line)');
});

test('the open-files limit is read from /proc/self/limits', (t) => {
  t.is(openFilesLimit('Max open files            1024                 524288               files     \n'), 1024);
  t.is(openFilesLimit('Max open files            unlimited            unlimited            files     \n'), undefined);
  t.true((openFilesLimit() ?? 1) > 0);
});

test('the accept guard stops listening near the fd limit and listens again once there is room, with the same accept backlog', async (t) => {
  const { createServer } = await import('node:net');
  const held: Socket[] = [];
  const server = createServer((s) => held.push(s));
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1', backlog: AGENT_LISTEN_BACKLOG }, () => r()));
  const port = (server.address() as { port: number }).port;
  const stats = new RelayStats();
  const warnings: string[] = [];
  const guard = new AcceptGuard({ server, host: '127.0.0.1', port, backlog: AGENT_LISTEN_BACKLOG, pauseMs: 200, stats, log: { ...silentLogger, warn: (m: string) => warnings.push(m) }, fdLimit: 64 + 10 });
  t.teardown(() => {
    guard.stop();
    held.forEach((s) => s.destroy());
    server.close();
  });
  const clients = await rawFlood(t, port, 10, '127.0.0.1');
  await until(() => guard.paused);
  t.true(guard.paused);
  t.is(stats.get('accept_paused_fd_limit'), 1);
  t.is(warnings.length, 1);
  const refused = await rawFlood(t, port, 1, '127.0.0.1');
  await tick(50);
  t.true(refused[0].destroyed, 'no accept while paused');
  clients.forEach((c) => c.destroy());
  held.forEach((s) => s.destroy());
  await until(() => !guard.paused);
  t.false(guard.paused);
  const later = await rawFlood(t, port, 1, '127.0.0.1');
  t.false(later[0].destroyed);
  t.is(await listenBacklog(port), await expectedBacklog(t));
});

test('a relay at its open-files limit (EMFILE) stops accepting for a moment, logs once, survives and serves honest agents again', async (t) => {
  // The relay runs as its own process under a low fd limit; the flood comes from several
  // loopback sources, so the per-source caps (defaults) are not what stops it.
  const home = tempDir(t);
  const relay = start(t, ['-c', `ulimit -n 256; exec "${process.execPath}" "${DIODE_BUNDLE}" relay --listen 127.0.0.1:0 --home "${home}"`], { command: '/bin/sh' });
  const m = await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
  const port = Number(m[1]);
  const flood: Socket[] = [];
  for (let i = 2; i < 10; i++) flood.push(...(await rawFlood(t, port, 40, `127.0.0.${i}`)));
  await tick(1500); // the GC watch looks once a second; before the fix its memoryUsage() threw EMFILE here
  t.is(relay.child.exitCode, null, `relay died:\n${relay.output()}`);
  t.is(relay.output().match(/out of file descriptors/g)?.length, 1, relay.output());
  flood.forEach((s) => s.destroy());
  await relay.waitFor(/accepting agent connections again/, 10_000);
  const honest = await dialRelay({ host: '127.0.0.1', port }, Identity.random());
  t.teardown(() => honest.socket.destroy());
  t.truthy(honest.relayAddress);
  t.is(relay.child.exitCode, null);
});

/** The accept queue the kernel gives a listening socket on 127.0.0.1:port (ss's Send-Q of a LISTEN socket). */
async function listenBacklog(port: number): Promise<number> {
  const { execFile } = await import('node:child_process');
  const out = await new Promise<string>((resolve, reject) =>
    execFile('ss', ['-Hltn', `sport = :${port}`], (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
  const fields = out.trim().split(/\s+/);
  return Number(fields[2]);
}

/** AGENT_LISTEN_BACKLOG as the kernel grants it (capped at net.core.somaxconn); above Node's default of 511. */
async function expectedBacklog(t: ExecutionContext): Promise<number> {
  const { readFileSync } = await import('node:fs');
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  const expected = Math.min(AGENT_LISTEN_BACKLOG, somaxconn);
  t.true(expected > 511, `net.core.somaxconn is ${somaxconn}: the kernel would cap any backlog at that`);
  return expected;
}

test('the agent port queues a fleet burst: its accept backlog is 4096 (capped by somaxconn)', async (t) => {
  const relay = await relayFor(t);
  // Node's default (511) made the kernel drop SYNs while a busy relay was between two accepts.
  t.is(await listenBacklog(relay.port), await expectedBacklog(t));
});
