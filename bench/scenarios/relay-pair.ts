import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, startProcess, type BenchProcess } from '../lib/procs.ts';
import { startRedis } from '../lib/redis.ts';
import { freePort, scratch, untilOpen } from '../lib/paths.ts';
import { ask, type FleetMessage } from '../lib/ipc.ts';
import { sendBulk, socks5Connect } from '../lib/client.ts';
import { MiB, median, round, sleep } from '../lib/stats.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** Worker processes simulating devices, in both layouts (the same load generator either way). */
const WORKERS = 2;
/** Handshakes in flight per worker. */
const CONCURRENCY_PER_WORKER = 50;
const READY_TIMEOUT_MS = 600_000;
/** The port each bulk device publishes its sink as. */
const REMOTE_PORT = 9000;
/** Bulk streams at once in the throughput part (one device + one socksd each). */
const BULK_PAIRS = 2;
/** Bulk trials per layout (the median counts: one noisy minute on a shared host is one trial). */
const BULK_TRIALS = 3;

/** One layout's figures: `relays` relay processes on this host. */
export interface LayoutFigures {
  relays: number;
  admitted: number;
  failed: number;
  admitMs: number;
  admitPerSec: number;
  /** CPU seconds of all relays while admitting. */
  relayCpuSec: number;
  /** The busiest relay's CPU / wall time while admitting (1 = one core saturated: the Node thread is the limit). */
  busiestRelayUtilization: number;
  /** Host CPU busy over all cores while admitting (1 = both cores saturated: the host is the limit). */
  hostBusy: number;
  /** BULK_PAIRS bulk streams at once, each device/socksd pair on its own relay where there are two. */
  /** Median of the trials' total MB/s. */
  bulkTotalMBps: number;
  bulkTrialsMBps: number[];
  bulkRelayCpuSecPerGiB: number;
}

export interface RelayPairResult {
  devices: number;
  cores: number;
  one: LayoutFigures;
  two: LayoutFigures;
  /** two / one. */
  admitSpeedup: number;
  bulkSpeedup: number;
}

/** Busy and total jiffies over all cores (/proc/stat's first line). */
function hostJiffies(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + (fields[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/**
 * One layout: `relays` relay processes (two form a cluster on one Redis, as
 * an operator would run them on one host), `devices` simulated devices
 * (real TLS + hello + publish) split evenly over them by the same WORKERS
 * worker processes, admitted at once; then BULK_PAIRS bulk streams, pair i
 * on relay i % relays.
 */
async function layout(bundle: string, sinkPort: number, relays: 1 | 2, devices: number, bulkBytes: number, log: (line: string) => void): Promise<LayoutFigures> {
  const procs: BenchProcess[] = [];
  const start = (name: string, command: string, args: string[], extra: Parameters<typeof startProcess>[3] = {}) => {
    const p = startProcess(name, command, args, extra);
    procs.push(p);
    return p;
  };
  const node = (role: string, args: string[]) => start(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
  try {
    const homes = Array.from({ length: relays }, (_, i) => scratch(`pair-relay-${i}`));
    const ports = await Promise.all(homes.map(() => freePort()));
    const caps = ['--max-sessions-per-ip', String(devices + 64), '--max-handshakes-per-ip', '1024', '--max-streams-per-caller', '4096', '--max-pending-per-caller', '256'];
    let cluster: string[][] = homes.map(() => []);
    if (relays === 2) {
      const { port: redisPort, proc: redis } = await startRedis('pair-redis');
      procs.push(redis);
      const addresses = homes.map((home) => execFileSync(process.execPath, [bundle, 'address', '--home', home], { encoding: 'utf8' }).trim());
      cluster = ports.map((port) => ['--cluster', `redis://127.0.0.1:${redisPort}`, '--advertise', `127.0.0.1:${port}`, '--cluster-allow', addresses.join(',')]);
    }
    const relayProcs = homes.map((home, i) => node(`relay-${i}`, ['relay', '--listen', `127.0.0.1:${ports[i]}`, '--home', home, ...cluster[i], ...caps]));
    await Promise.all(relayProcs.map((r) => r.waitFor(/listening on 127\.0\.0\.1:\d+/)));

    const perWorker = Math.ceil(devices / WORKERS);
    const workers = Array.from({ length: WORKERS }, (_, i) =>
      start(`devices-${i}`, process.execPath, ['--import', 'tsx', join(REPO, 'bench/devices.ts'), '--relay', String(ports[i % relays]), '--count', String(Math.min(perWorker, devices - i * perWorker)), '--concurrency', String(CONCURRENCY_PER_WORKER)], {
        cwd: REPO,
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      }),
    );
    log(`relay-pair ${relays} relay(s): generating ${devices} device keys`);
    await Promise.all(workers.map((w) => ask<FleetMessage>(w, 'ready', READY_TIMEOUT_MS)));
    await sleep(2_000);
    const cpuBefore = relayProcs.map((r) => cpuSeconds(r));
    const hostBefore = hostJiffies();
    const t0 = performance.now();
    const results = await Promise.all(workers.map((w) => ask<FleetMessage>(w, 'done', READY_TIMEOUT_MS, { t: 'go' })));
    const admitMs = performance.now() - t0;
    const hostAfter = hostJiffies();
    const cpu = relayProcs.map((r, i) => cpuSeconds(r) - cpuBefore[i]);
    const admitted = results.reduce((n, r) => n + (r.admitted ?? 0), 0);
    const failed = results.reduce((n, r) => n + (r.failed ?? 0), 0);
    log(`relay-pair ${relays} relay(s): ${admitted} admitted (${failed} failed) in ${round(admitMs)} ms, relay CPU ${cpu.map((c) => round(c)).join(' + ')} s`);
    // The idle fleet stays connected during the bulk part, as on a real relay.

    const pairs = Array.from({ length: BULK_PAIRS }, (_, i) => {
      const relayPort = ports[i % relays];
      const publish = node(`publish-${i}`, ['publish', '-public', `${sinkPort}:${REMOTE_PORT}`, '--relay', `127.0.0.1:${relayPort}`, '--home', scratch(`pair-device-${i}`)]);
      const socksd = node(`socksd-${i}`, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', scratch(`pair-client-${i}`)]);
      return { publish, socksd };
    });
    const connectors = await Promise.all(
      pairs.map(async ({ publish, socksd }) => {
        const device = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
        const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
        const connect = () => socks5Connect(socksPort, `${device}.diode`, REMOTE_PORT);
        await untilOpen(connect, `relay-pair ${relays} relay(s): the bulk path`);
        return connect;
      }),
    );
    await Promise.all(connectors.map(async (c) => sendBulk(await c(), 32 * MiB))); // warm-up
    const bulkCpuBefore = relayProcs.map((r) => cpuSeconds(r));
    const trials: number[] = [];
    for (let trial = 0; trial < BULK_TRIALS; trial++) {
      const b0 = performance.now();
      await Promise.all(connectors.map(async (c) => sendBulk(await c(), bulkBytes)));
      trials.push(round((bulkBytes * BULK_PAIRS) / MiB / ((performance.now() - b0) / 1000)));
    }
    const bulkCpu = relayProcs.reduce((n, r, i) => n + cpuSeconds(r) - bulkCpuBefore[i], 0);
    const bulkTotal = bulkBytes * BULK_PAIRS * BULK_TRIALS;
    const figures: LayoutFigures = {
      relays,
      admitted,
      failed,
      admitMs: round(admitMs),
      admitPerSec: round(admitted / (admitMs / 1000)),
      relayCpuSec: round(cpu.reduce((a, b) => a + b, 0)),
      busiestRelayUtilization: round(Math.max(...cpu) / (admitMs / 1000)),
      hostBusy: round((hostAfter.busy - hostBefore.busy) / Math.max(1, hostAfter.total - hostBefore.total)),
      bulkTotalMBps: median(trials),
      bulkTrialsMBps: trials,
      bulkRelayCpuSecPerGiB: round(bulkCpu / (bulkTotal / 1024 / MiB)),
    };
    log(`relay-pair ${relays} relay(s): ${BULK_PAIRS} bulk streams ${trials.join(' / ')} MB/s in total, relay CPU ${figures.bulkRelayCpuSecPerGiB} s/GiB`);
    return figures;
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

/**
 * What a second relay process on the same host gives (issue 15 item 6): a
 * relay is one Node thread, so one relay uses at most one core. The same
 * fleet and the same bulk load, against one relay and against two relays of
 * one cluster on this host. The load generators share the host's cores with
 * the relays, so `hostBusy` says whether the relays or the host ran out.
 */
export async function relayPair(bundle: string, sinkPort: number, devices: number, bulkBytes: number, cores: number, log: (line: string) => void): Promise<RelayPairResult> {
  const one = await layout(bundle, sinkPort, 1, devices, bulkBytes, log);
  const two = await layout(bundle, sinkPort, 2, devices, bulkBytes, log);
  return { devices, cores, one, two, admitSpeedup: round(two.admitPerSec / one.admitPerSec), bulkSpeedup: round(two.bulkTotalMBps / one.bulkTotalMBps) };
}
