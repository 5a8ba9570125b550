import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, rssBytes, startProcess, type BenchProcess } from '../lib/procs.ts';
import { scratch } from '../lib/paths.ts';
import { ask, type FleetMessage } from '../lib/ipc.ts';
import { MiB, round, sleep } from '../lib/stats.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** Devices one worker process simulates at most (fds and one event loop each). */
const DEVICES_PER_WORKER = 5_000;
/** Handshakes in flight per worker. */
const CONCURRENCY_PER_WORKER = 50;
/** ms the relay gets to settle before and after admitting everyone (GC, buffers). */
const SETTLE_MS = 3_000;
/** ms allowed for key generation and for admission. */
const READY_TIMEOUT_MS = 300_000;

export interface RelayScaleResult {
  devices: number;
  admitted: number;
  failed: number;
  firstError?: string;
  /** ms from "go" until every device had its publish set acknowledged. */
  admitMs: number;
  admitPerSec: number;
  relayRssBeforeMB: number;
  relayRssAfterMB: number;
  relayKiBPerDevice: number;
  /** Relay CPU seconds spent admitting (TLS + hello verification + mux setup), per 1,000 devices. */
  relayCpuSecPer1000: number;
}

const message = (proc: BenchProcess, t: FleetMessage['t']) => ask<FleetMessage>(proc, t, READY_TIMEOUT_MS);

/** One relay, N simulated devices (real TLS sessions, real hellos) in worker processes. */
export async function relayScale(bundle: string, devices: number, log: (line: string) => void, nodeArgs: string[] = []): Promise<RelayScaleResult> {
  const relay = startProcess('relay', process.execPath, [...nodeArgs, bundle, 'relay', '--listen', '127.0.0.1:0', '--home', scratch('scale'),
    // every simulated device comes from 127.0.0.1: lift the per-source caps, which would stop at 256
    '--max-sessions-per-ip', String(devices + 16), '--max-handshakes-per-ip', '1024'], { env: { ...process.env, DIODE_LOG: 'warn' } });
  const workers: BenchProcess[] = [];
  try {
    const port = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const counts: number[] = [];
    for (let left = devices; left > 0; left -= DEVICES_PER_WORKER) counts.push(Math.min(left, DEVICES_PER_WORKER));
    log(`relay-scale ${devices}: generating keys in ${counts.length} worker(s)`);
    for (const [i, count] of counts.entries()) {
      workers.push(
        startProcess(`devices-${i}`, process.execPath, ['--import', 'tsx', join(REPO, 'bench/devices.ts'), '--relay', String(port), '--count', String(count), '--concurrency', String(CONCURRENCY_PER_WORKER)], {
          cwd: REPO,
          stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        }),
      );
    }
    await Promise.all(workers.map((w) => message(w, 'ready')));
    await sleep(SETTLE_MS);
    const rssBefore = rssBytes(relay);
    const cpuBefore = cpuSeconds(relay);
    log(`relay-scale ${devices}: connecting`);
    const start = performance.now();
    const done = workers.map((w) => message(w, 'done'));
    for (const w of workers) w.child.send({ t: 'go' });
    const results = await Promise.all(done);
    const admitMs = performance.now() - start;
    const cpu = cpuSeconds(relay) - cpuBefore;
    await sleep(SETTLE_MS);
    const rssAfter = rssBytes(relay);
    const admitted = results.reduce((n, r) => n + (r.admitted ?? 0), 0);
    const failed = results.reduce((n, r) => n + (r.failed ?? 0), 0);
    const firstError = results.map((r) => r.firstError).find((e) => e);
    return {
      devices,
      admitted,
      failed,
      ...(firstError ? { firstError } : {}),
      admitMs: round(admitMs),
      admitPerSec: round(admitted / (admitMs / 1000)),
      relayRssBeforeMB: round(rssBefore / MiB),
      relayRssAfterMB: round(rssAfter / MiB),
      relayKiBPerDevice: round((rssAfter - rssBefore) / 1024 / Math.max(1, admitted)),
      relayCpuSecPer1000: round((cpu / Math.max(1, admitted)) * 1000),
    };
  } finally {
    for (const w of workers) await w.stop();
    await relay.stop();
  }
}
