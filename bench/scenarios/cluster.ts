import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, startProcess, type BenchProcess } from '../lib/procs.ts';
import { startRedis } from '../lib/redis.ts';
import { freePort, scratch, untilOpen, type Path } from '../lib/paths.ts';
import { ask, type FleetMessage } from '../lib/ipc.ts';
import { sendBulk, socks5Connect } from '../lib/client.ts';
import { GiB, MiB, median, quantile, round, sleep } from '../lib/stats.ts';
import { measureLatencies, type LatencySizes } from './latency.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** The port the bench device publishes the sink as. */
const REMOTE_PORT = 9000;
/** Handshakes in flight per devices worker. */
const CONCURRENCY_PER_WORKER = 50;
/** ms of rest over which Redis calls are counted (two refresh rounds of 30 s). */
const REST_WINDOW_MS = 60_000;
/** ms to settle after admission before the rest window starts (announcements, first refresh). */
const SETTLE_MS = 3_000;
const READY_TIMEOUT_MS = 300_000;

export interface ClusterSizes extends LatencySizes {
  /** Simulated devices per relay (0: the two paths only, no fleet and no rest window: a build that speaks another protocol version than bench/devices.ts). */
  devicesPerRelay: number;
  singleBytes: number;
  singleTrials: number;
}

export interface ClusterResult {
  /** The build's commit where it is not the working tree's (--scenario cluster-before). */
  commit?: string;
  relays: number;
  devicesPerRelay: number;
  admitted: number;
  failed: number;
  firstError?: string;
  /** ms until every simulated device of all relays had its publish acknowledged (all relays admitting at once). */
  admitMs: number;
  admitPerSec: number;
  /** Keys in Redis after admission (one per device held). */
  mapEntries: number;
  rest: { windowS: number; evalshaPerDevicePerMin: number; commandsPerDevicePerMin: number };
  sameRelay: PathFigures;
  crossRelay: PathFigures;
}

export interface PathFigures {
  setupP50ms: number;
  setupP99ms: number;
  rttP50us: number;
  rttP99us: number;
  singleStreamMBps: number[];
  /** CPU seconds per GiB of the single-stream trials, of the relays on the path (B; A + B across), each. */
  relayCpuSecPerGiB: Record<string, number>;
}

function redisCli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).trim();
}

/** commandstats: calls per command name. */
function commandCalls(port: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of redisCli(port, 'info', 'commandstats').matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1], Number(m[2]));
  return out;
}

/**
 * Three relays of one cluster on one Redis (all on this machine), a real
 * device (`diode publish`) on relay B for the sink, a socksd on B
 * (same-relay path) and one on A (cross-relay path: one extra hop), plus
 * devicesPerRelay simulated devices on each relay (real TLS + hello +
 * publish). Measures set-up and round trips of both paths in turns, their
 * single-stream throughput, and the Redis calls per device at rest.
 */
export async function clusterScale(bundle: string, sinkPort: number, sizes: ClusterSizes, log: (line: string) => void): Promise<ClusterResult> {
  const procs: BenchProcess[] = [];
  try {
    const { port: redisPort, proc: redis } = await startRedis();
    procs.push(redis);
    const node = (role: string, args: string[]) => {
      const p = startProcess(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
      procs.push(p);
      return p;
    };
    const homes = [scratch('relay-a'), scratch('relay-b'), scratch('relay-c')];
    const addresses = homes.map((home) => execFileSync(process.execPath, [bundle, 'address', '--home', home], { encoding: 'utf8' }).trim());
    const ports = [await freePort(), await freePort(), await freePort()];
    const caps = ['--max-sessions-per-ip', String(sizes.devicesPerRelay + 64), '--max-handshakes-per-ip', '1024', '--max-streams-per-caller', '4096', '--max-pending-per-caller', '256'];
    const relays = homes.map((home, i) =>
      node(`relay-${'abc'[i]}`, ['relay', '--listen', `127.0.0.1:${ports[i]}`, '--home', home, '--cluster', `redis://127.0.0.1:${redisPort}`,
        '--advertise', `127.0.0.1:${ports[i]}`, '--cluster-allow', addresses.join(','), ...caps]),
    );
    await Promise.all(relays.map((r) => r.waitFor(/advertised as/)));
    const publish = node('publish', ['publish', '-public', `${sinkPort}:${REMOTE_PORT}`, '--relay', `127.0.0.1:${ports[1]}`, '--home', scratch('device')]);
    const same = node('socksd-b', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${ports[1]}`, '--home', scratch('client-b')]);
    const cross = node('socksd-a', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${ports[0]}`, '--home', scratch('client-a')]);
    const device = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
    const sockPort = async (p: BenchProcess) => Number((await p.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const [samePort, crossPort] = [await sockPort(same), await sockPort(cross)];
    const pathOf = (port: number, label: string): Path => ({
      name: 'diode',
      connector: () => socks5Connect(port, `${device}.diode`, REMOTE_PORT),
      processes: [],
      info: { label },
    });
    const paths = [pathOf(samePort, 'same-relay'), pathOf(crossPort, 'cross-relay')];
    for (const p of paths) await untilOpen(p.connector, `cluster: the ${p.info.label} path`);
    log('cluster: same-relay and cross-relay paths up');
    const latencies = await measureLatencies(paths, sizes, log);
    const throughput: number[][] = [[], []];
    await sendBulk(await paths[0].connector(), 32 * MiB);
    await sendBulk(await paths[1].connector(), 32 * MiB);
    // The relays on each path: B alone for the same-relay path, A and B across.
    const onPath = [[relays[1]], [relays[0], relays[1]]];
    const cpu: Array<Map<string, number>> = [new Map(), new Map()];
    for (let trial = 0; trial < sizes.singleTrials; trial++) {
      for (const [k, p] of paths.entries()) {
        const before = onPath[k].map((r) => cpuSeconds(r));
        const t = await sendBulk(await p.connector(), sizes.singleBytes);
        onPath[k].forEach((r, i) => cpu[k].set(r.name, (cpu[k].get(r.name) ?? 0) + cpuSeconds(r) - before[i]));
        throughput[k].push(round(t.bytes / MiB / (t.ms / 1000)));
      }
    }
    const movedGiB = (sizes.singleBytes * sizes.singleTrials) / GiB;
    log(`cluster: single stream same ${throughput[0].join('/')} MB/s, cross ${throughput[1].join('/')} MB/s`);
    const figures = (k: number) => ({
      setupP50ms: round(median(latencies.setups[k])),
      setupP99ms: round(quantile(latencies.setups[k], 0.99)),
      rttP50us: round(median(latencies.rtts[k])),
      rttP99us: round(quantile(latencies.rtts[k], 0.99)),
      singleStreamMBps: throughput[k],
      relayCpuSecPerGiB: Object.fromEntries([...cpu[k]].map(([name, s]) => [name, round(s / movedGiB)])),
    });
    if (sizes.devicesPerRelay === 0) {
      const none = { windowS: 0, evalshaPerDevicePerMin: 0, commandsPerDevicePerMin: 0 };
      return { relays: 3, devicesPerRelay: 0, admitted: 0, failed: 0, admitMs: 0, admitPerSec: 0, mapEntries: 0, rest: none, sameRelay: figures(0), crossRelay: figures(1) };
    }

    // Simulated devices, spread over the three relays, admitted at once.
    log(`cluster: ${sizes.devicesPerRelay} simulated devices per relay: generating keys`);
    const workers = ports.map((port, i) => {
      const w = startProcess(`devices-${i}`, process.execPath, ['--import', 'tsx', join(REPO, 'bench/devices.ts'), '--relay', String(port), '--count', String(sizes.devicesPerRelay), '--concurrency', String(CONCURRENCY_PER_WORKER)], {
        cwd: REPO,
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      procs.push(w);
      return w;
    });
    await Promise.all(workers.map((w) => ask<FleetMessage>(w, 'ready', READY_TIMEOUT_MS)));
    const start = performance.now();
    const results = await Promise.all(workers.map((w) => ask<FleetMessage>(w, 'done', READY_TIMEOUT_MS, { t: 'go' })));
    const admitMs = performance.now() - start;
    const admitted = results.reduce((n, r) => n + (r.admitted ?? 0), 0);
    const failed = results.reduce((n, r) => n + (r.failed ?? 0), 0);
    const firstError = results.map((r) => r.firstError).find((e) => e);
    await sleep(SETTLE_MS);
    const mapEntries = Number(redisCli(redisPort, 'dbsize'));
    log(`cluster: ${admitted} admitted in ${round(admitMs)} ms, ${mapEntries} map entries; resting ${REST_WINDOW_MS / 1000} s`);
    const before = commandCalls(redisPort);
    await sleep(REST_WINDOW_MS);
    const after = commandCalls(redisPort);
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const all = [...after.keys()].filter((k) => k !== 'info').reduce((n, k) => n + delta(k), 0);
    const perDevMin = (n: number) => round(n / mapEntries / (REST_WINDOW_MS / 60_000));
    return {
      relays: 3,
      devicesPerRelay: sizes.devicesPerRelay,
      admitted,
      failed,
      ...(firstError ? { firstError } : {}),
      admitMs: round(admitMs),
      admitPerSec: round(admitted / (admitMs / 1000)),
      mapEntries,
      rest: { windowS: REST_WINDOW_MS / 1000, evalshaPerDevicePerMin: perDevMin(delta('evalsha') + delta('eval')), commandsPerDevicePerMin: perDevMin(all) },
      sameRelay: figures(0),
      crossRelay: figures(1),
    };
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}
