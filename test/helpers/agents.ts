import { createHash } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import type { ExecutionContext } from 'ava';
import { Identity } from '../../agent/identity/index.ts';
import { startRelay, type RunningRelay } from '../../agent/relay/listen.ts';
import type { RelayLimits } from '../../agent/relay/config.ts';
import { RelayLink } from '../../agent/link/relay-link.ts';
import { IncomingHandler } from '../../agent/device/incoming.ts';
import type { AccessMode } from '../../agent/protocol/messages.ts';
import { silentLogger, type Logger } from '../../agent/util/log.ts';
import { tempDir } from './diode.ts';

// In-process parts for tests that look inside the relay (its counters, its
// data connections): a real relay, real device and client links with their
// data connection pools, real TCP on loopback.

export const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns whether it held. */
export async function until(cond: () => boolean, ms = 15_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= end) return false;
    await tick(20);
  }
  return true;
}

/** An echo server standing for the device's sshd; `sockets` are the connections it holds. */
export async function echoServer(t: ExecutionContext): Promise<{ port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    sockets.forEach((s) => s.destroy());
    server.close();
  });
  return { port: (server.address() as { port: number }).port, sockets };
}

/** A service standing for a device's local port that accepts and never reads (a stalled stream); `held` are its connections. */
export async function stalledServer(t: ExecutionContext): Promise<{ port: number; held: Set<Socket> }> {
  const held = new Set<Socket>();
  const server = createServer((s) => {
    held.add(s);
    s.on('error', () => {});
    s.pause();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    held.forEach((s) => s.destroy());
    server.close();
  });
  return { port: (server.address() as { port: number }).port, held };
}

/** A service that reads until the client's end, then answers the sha256 (hex) of what it read and closes: half-close or nothing. */
export async function digestServer(t: ExecutionContext): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    const hash = createHash('sha256');
    s.on('data', (c: Buffer) => hash.update(c));
    s.once('end', () => s.end(`${hash.digest('hex')}\n`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    sockets.forEach((s) => s.destroy());
    server.close();
  });
  return (server.address() as { port: number }).port;
}

/** A relay of this process on a loopback port (0: a free one), closed when the test ends. */
export async function relayHere(t: ExecutionContext, limits: Partial<RelayLimits> = {}, port = 0, home = tempDir(t)): Promise<RunningRelay> {
  const relay = await startRelay({ listen: { host: '127.0.0.1', port }, home, identity: Identity.random(), log: silentLogger, limits });
  t.teardown(() => relay.close());
  return relay;
}

export interface DeviceHere {
  identity: Identity;
  link: RelayLink;
  /** Lines the device logged (info and above). */
  lines: string[];
}

/** A device publishing `localPort` as port 22 in `mode`, keeping `dataPool` data connections ready. */
export async function deviceHere(t: ExecutionContext, relayPort: number, options: { localPort: number; mode?: AccessMode; dataPool?: number; allow?: string[] }): Promise<DeviceHere> {
  const identity = Identity.random();
  const lines: string[] = [];
  const log: Logger = { ...silentLogger, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
  const mode = options.mode ?? 'public';
  const handler = new IncomingHandler([{ host: '127.0.0.1', localPort: options.localPort, remotePort: 22, mode, allow: options.allow ?? [] }], log, { identity });
  const link = new RelayLink({
    relays: [{ host: '127.0.0.1', port: relayPort }],
    identity,
    log,
    publish: [{ port: 22, mode, ...(mode === 'private' ? { allow: options.allow ?? [] } : {}) }],
    dataPool: options.dataPool ?? 4,
    onStream: (s, _relay, data) => handler.handle(s, data),
    watchNetwork: false,
  });
  t.teardown(() => link.stop());
  link.start();
  await link.waitForSession(10_000);
  return { identity, link, lines };
}

/** A client link keeping `dataPool` data connections ready; `lines` are what it logged. */
export async function clientHere(t: ExecutionContext, relayPort: number, dataPool = 4, identity = Identity.random(), control = true): Promise<{ identity: Identity; link: RelayLink; lines: string[] }> {
  const lines: string[] = [];
  const log: Logger = { ...silentLogger, info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
  const link = new RelayLink({ relays: [{ host: '127.0.0.1', port: relayPort }], identity, log, dataPool, watchNetwork: false, control });
  t.teardown(() => link.stop());
  link.start();
  await link.waitForSession(10_000);
  return { identity, link, lines };
}

/** Waits until the link's current session has `n` ready data connections. */
export async function poolReady(link: RelayLink, n: number, ms = 10_000): Promise<boolean> {
  return until(() => (link.dataPool?.idle ?? 0) >= n, ms);
}
