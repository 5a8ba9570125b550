import { sendUntil, slowReader } from '../lib/client.ts';
import { rssBytes } from '../lib/procs.ts';
import { median, MiB, round, sleep } from '../lib/stats.ts';
import type { Path } from '../lib/paths.ts';
import { churn, type ChurnResult } from './churn.ts';

/** ms between RSS samples. */
const SAMPLE_MS = 5_000;
/**
 * ms of transfer before the baseline starts (JIT, pools, windows and the
 * young generation reach their steady size; issue 19: flat "after the first
 * minute"). With 30 s, samples of the first baseline minute were still
 * 20 % below the rest.
 */
const WARMUP_MS = 60_000;
/** Bytes/s the slow reader consumes: far below what the writer can send. */
const SLOW_RATE = 256 * 1024;
/** Allowed drift of memory over the soak (the issue's ± 10 %). */
const FLAT_TOLERANCE = 0.1;

export interface SoakResult {
  minutes: number;
  bulkBytes: number;
  bulkMBps: number;
  /** The slow reader: how far ahead of it the writer got at most (bounded = backpressure works). */
  slowReader: { rateBps: number; writtenMB: number; readMB: number; maxAheadMB: number };
  processes: Record<string, { baselineMB: number; endMB: number; maxMB: number; driftPct: number; flat: boolean; trendPct: number; perMinuteMB: number[]; samplesMB: number[] }>;
  /** Streams opening and closing throughout (warm-up included), and a device restarted every 30 s. */
  churn: ChurnResult;
}

/**
 * A bulk stream, a slow-reader stream and the churn (streams opening and
 * closing, a flapping device) through the path for `minutes`, memory sampled
 * throughout.
 */
export async function soak(path: Path, minutes: number, log: (line: string) => void): Promise<SoakResult> {
  const ms = minutes * 60_000;
  const warmup = Math.min(WARMUP_MS, ms / 2); // short soaks are smoke runs
  const deadline = Date.now() + warmup + ms;
  const samples = new Map<string, number[]>(path.processes.map((p) => [p.name, []]));
  log(`soak: ${minutes} min after ${warmup / 1000} s warm-up (bulk + slow reader + churn through ${path.name})`);
  const bulk = sendUntil(await path.connector(), deadline);
  const slow = slowReader(path.connector, SLOW_RATE, warmup + ms);
  const churned = churn(path, deadline, log);
  await sleep(warmup);
  let minute = 0;
  const perMinute = Math.max(1, Math.round(60_000 / SAMPLE_MS));
  while (Date.now() < deadline - SAMPLE_MS / 2) {
    for (const p of path.processes) samples.get(p.name)!.push(rssBytes(p) / MiB);
    if (samples.get(path.processes[0].name)!.length % perMinute === 0) {
      log(`soak minute ${++minute}: RSS ${path.processes.map((p) => `${p.name} ${round(median(samples.get(p.name)!.slice(-perMinute)))} MB`).join(', ')}`);
    }
    await sleep(SAMPLE_MS);
  }
  const [b, s, c] = await Promise.all([bulk, slow, churned]);
  log(`soak churn: ${c.streams} streams (${c.streamsPerSec}/s), ${c.failed} failed, ${c.bytesLost} of ${c.bytesSent} checksummed bytes lost; device restarted ${c.flap.restarts} times`);
  const processes: SoakResult['processes'] = {};
  // Baseline: the first minute's median; drift: the furthest any later sample strays from it.
  for (const [name, list] of samples) {
    const baseline = median(list.slice(0, perMinute));
    const drift = Math.max(...list.map((x) => Math.abs(x - baseline))) / baseline;
    // Growth with bytes moved shows as a trend: the last minute's median against the first's (a GC peak does not).
    const trend = (median(list.slice(-perMinute)) - baseline) / baseline;
    processes[name] = {
      baselineMB: round(baseline),
      endMB: round(list[list.length - 1]),
      maxMB: round(Math.max(...list)),
      driftPct: round(drift * 100),
      flat: drift <= FLAT_TOLERANCE,
      trendPct: round(trend * 100),
      perMinuteMB: Array.from({ length: Math.ceil(list.length / perMinute) }, (_, i) => round(median(list.slice(i * perMinute, (i + 1) * perMinute)))),
      samplesMB: list.map((x) => round(x)),
    };
  }
  return {
    minutes,
    bulkBytes: b.bytes,
    bulkMBps: round(b.bytes / MiB / (b.ms / 1000)),
    slowReader: { rateBps: SLOW_RATE, writtenMB: round(s.written / MiB), readMB: round(s.read / MiB), maxAheadMB: round(s.maxAhead / MiB) },
    processes,
    churn: c,
  };
}
