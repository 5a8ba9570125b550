import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { DIODE_BUNDLE, start, tempDir, type Running } from './diode.ts';
import { freePort } from './sshd.ts';

const run = promisify(execFile);

/** A home with its key made, and the address `diode address` prints for it. */
export async function makeHome(t: ExecutionContext): Promise<{ home: string; address: string }> {
  const home = tempDir(t);
  const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'address', '--home', home]);
  return { home, address: stdout.trim() };
}

export interface ClusterRelay {
  home: string;
  address: string;
  port: number;
  proc: Running;
  /** Where agents reach it: "127.0.0.1:<port>". */
  at: string;
  start(): Promise<void>;
}

/**
 * n relays of one cluster on loopback, each on a fixed free port (its
 * --advertise must be known before it starts), all listed in everyone's
 * --cluster-allow. Not started: call start() on each (after changing
 * extra args if needed).
 */
export async function clusterRelays(t: ExecutionContext, redisUrl: string, n: number, extra: (i: number) => string[] = () => []): Promise<ClusterRelay[]> {
  const homes = await Promise.all(Array.from({ length: n }, () => makeHome(t)));
  const allow = homes.map((h) => h.address).join(',');
  const relays: ClusterRelay[] = [];
  for (let i = 0; i < n; i++) {
    const port = await freePort();
    const relay: ClusterRelay = {
      ...homes[i],
      port,
      at: `127.0.0.1:${port}`,
      proc: undefined as unknown as Running,
      async start() {
        relay.proc = start(t, [
          'relay', '--listen', relay.at, '--home', relay.home,
          '--cluster', redisUrl, '--advertise', relay.at, '--cluster-allow', allow,
          ...extra(i),
        ]);
        await relay.proc.waitFor(/cluster .*advertised as/);
      },
    };
    relays.push(relay);
  }
  return relays;
}

/** Three relays of one cluster, all started, the first with a public SOCKS gateway; and that gateway's port. */
export async function threeRelaysWithGateway(t: ExecutionContext, redisUrl: string): Promise<{ relays: ClusterRelay[]; gatewayPort: number }> {
  const relays = await clusterRelays(t, redisUrl, 3, (i) => (i === 0 ? ['--gateway-socks', '127.0.0.1:0'] : []));
  for (const r of relays) await r.start();
  const gatewayPort = Number((await relays[0].proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  return { relays, gatewayPort };
}

/** Polls until probe() resolves truthy; returns the ms it took. */
export async function within(what: string, timeoutMs: number, probe: () => Promise<boolean>, everyMs = 100): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await probe().catch(() => false)) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
