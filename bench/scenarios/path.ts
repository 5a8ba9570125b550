import type { Socket } from 'node:net';
import { openEcho, sendBulk } from '../lib/client.ts';
import { cpuSeconds, rssBytes, RssSampler, type Measured } from '../lib/procs.ts';
import { GiB, MiB, median, quantile, round, sleep } from '../lib/stats.ts';
import type { Path } from '../lib/paths.ts';
import type { LatencySizes } from './latency.ts';

export interface PathSizes extends LatencySizes {
  /** Bytes per single-stream trial (1 GiB in a full run). */
  singleBytes: number;
  singleTrials: number;
  /** Concurrent streams and the bytes they move in total. */
  streams: number;
  multiBytes: number;
  /** Idle streams held open for the memory figure. */
  idleStreams: number;
  /** Bytes of one untimed transfer first (JIT warm-up; each stream still starts at the spec's window). */
  warmupBytes: number;
  /** ms the path gets to settle before an RSS reading. */
  settleMs: number;
}

export const FULL_SIZES: Readonly<PathSizes> = Object.freeze({
  singleBytes: GiB,
  singleTrials: 3,
  streams: 64,
  multiBytes: GiB,
  rttCount: 2000,
  // TurboFan is still compiling the hot path for the first thousands of round
  // trips after start-up (bench/README.md, "Where the round-trip tail comes
  // from"): after 3,000 the diode path's added p99 was still 1.9 ms, from
  // 6,000 on 0.55-0.73 ms in rounds of 3,000 (bench/trials/latency.ts
  // --rounds 4). An agent or relay in use is past this within minutes.
  rttWarmup: 8000,
  rttSize: 64,
  rttBlock: 100,
  setupCount: 200,
  setupWarmup: 300,
  idleStreams: 1000,
  warmupBytes: 128 * MiB,
  settleMs: 1_000,
});

export const QUICK_SIZES: Readonly<PathSizes> = Object.freeze({
  singleBytes: 8 * MiB,
  singleTrials: 1,
  streams: 64,
  multiBytes: 8 * MiB,
  rttCount: 200,
  rttWarmup: 20,
  rttSize: 64,
  rttBlock: 20,
  setupCount: 20,
  setupWarmup: 10,
  idleStreams: 100,
  warmupBytes: 1 * MiB,
  settleMs: 200,
});

/** Idle streams opened at once while building the idle-stream set. */
const IDLE_OPEN_CONCURRENCY = 50;

export interface ProcessFigures {
  /** CPU seconds (user+system) per GiB moved, over the single-stream trials. */
  cpuSecPerGiB: number;
  rssIdleMB: number;
  rssIdleStreamsMB: number;
  /** Highest RSS seen during the single- and multi-stream transfers. */
  rssTransferMB: number;
}

export interface PathResult {
  path: Path['name'];
  info: Record<string, string>;
  singleStream: { bytes: number; trialsMBps: number[]; medianMBps: number };
  multiStream: { streams: number; bytes: number; totalMBps: number; minStreamMBps: number; maxStreamMBps: number; fairness: number };
  rtt: { bytes: number; count: number; p50us: number; p99us: number };
  /** New connections after the warm-up; `cold`: the warm-up's own, the first after start-up. */
  setup: { count: number; p50ms: number; p99ms: number; cold: { count: number; p50ms: number; p99ms: number } };
  idleStreams: number;
  processes: Record<string, ProcessFigures>;
}

/** What the bench measures of every path together before their own figures (see run.ts). */
export interface SharedFigures {
  /** RSS of each process after start-up, before any traffic. */
  rssIdle: Map<string, number>;
  /** Round trips in µs and new-connection times in ms, taken in turns with the other paths (latency.ts). */
  rtts: number[];
  setups: number[];
  /** The warm-up's new-connection times (the first after start-up), ms. */
  coldSetups: number[];
}

const mb = (bytes: number) => round(bytes / MiB, 4);

/** The rest of one path's figures (idle RSS and latencies come in `shared`, taken before any transfer). */
export async function measurePath(path: Path, extra: Measured[], sizes: PathSizes, shared: SharedFigures, log: (line: string) => void): Promise<PathResult> {
  const procs: Measured[] = [...path.processes, ...extra];
  const { rssIdle, rtts, setups, coldSetups } = shared;

  log(`${path.name}: ${sizes.idleStreams} idle streams`);
  const idle: Socket[] = [];
  let rssIdleStreams: Map<string, number>;
  try {
    for (let i = 0; i < sizes.idleStreams; i += IDLE_OPEN_CONCURRENCY) {
      const batch = Math.min(IDLE_OPEN_CONCURRENCY, sizes.idleStreams - i);
      idle.push(...(await Promise.all(Array.from({ length: batch }, () => openEcho(path.connector)))));
    }
    await sleep(sizes.settleMs);
    rssIdleStreams = new Map(procs.map((p) => [p.name, rssBytes(p)]));
  } finally {
    for (const s of idle) s.destroy();
  }
  await sleep(sizes.settleMs);

  log(`${path.name}: warm-up transfer of ${mb(sizes.warmupBytes)} MiB`);
  await sendBulk(await path.connector(), sizes.warmupBytes);
  const sampler = new RssSampler(procs);
  const cpuBefore = new Map(procs.map((p) => [p.name, cpuSeconds(p)]));
  const trials: number[] = [];
  for (let i = 0; i < sizes.singleTrials; i++) {
    log(`${path.name}: single stream ${mb(sizes.singleBytes)} MiB, trial ${i + 1}/${sizes.singleTrials}`);
    const t = await sendBulk(await path.connector(), sizes.singleBytes);
    trials.push(mb(t.bytes) / (t.ms / 1000));
  }
  const cpuAfter = new Map(procs.map((p) => [p.name, cpuSeconds(p)]));
  const movedGiB = (sizes.singleBytes * sizes.singleTrials) / GiB;

  log(`${path.name}: ${sizes.streams} concurrent streams, ${mb(sizes.multiBytes)} MiB in total`);
  const each = Math.floor(sizes.multiBytes / sizes.streams);
  const sockets = await Promise.all(Array.from({ length: sizes.streams }, () => path.connector()));
  const start = process.hrtime.bigint();
  const transfers = await Promise.all(sockets.map((s) => sendBulk(s, each)));
  const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
  const perStream = transfers.map((t) => mb(t.bytes) / (t.ms / 1000));
  const rssTransfer = sampler.stop();

  const processes: Record<string, ProcessFigures> = {};
  for (const p of procs) {
    processes[p.name] = {
      cpuSecPerGiB: round((cpuAfter.get(p.name)! - cpuBefore.get(p.name)!) / movedGiB),
      rssIdleMB: round(mb(rssIdle.get(p.name)!)),
      rssIdleStreamsMB: round(mb(rssIdleStreams.get(p.name)!)),
      rssTransferMB: round(mb(rssTransfer.get(p.name) ?? 0)),
    };
  }
  const minStream = Math.min(...perStream);
  const maxStream = Math.max(...perStream);
  return {
    path: path.name,
    info: path.info,
    singleStream: { bytes: sizes.singleBytes, trialsMBps: trials.map((x) => round(x)), medianMBps: round(median(trials)) },
    multiStream: {
      streams: sizes.streams,
      bytes: each * sizes.streams,
      totalMBps: round(mb(each * sizes.streams) / (wallMs / 1000)),
      minStreamMBps: round(minStream),
      maxStreamMBps: round(maxStream),
      fairness: round(minStream / maxStream),
    },
    rtt: { bytes: sizes.rttSize, count: rtts.length, p50us: round(quantile(rtts, 0.5)), p99us: round(quantile(rtts, 0.99)) },
    setup: { count: setups.length, p50ms: round(quantile(setups, 0.5)), p99ms: round(quantile(setups, 0.99)), cold: { count: coldSetups.length, p50ms: round(quantile(coldSetups, 0.5)), p99ms: round(quantile(coldSetups, 0.99)) } },
    idleStreams: sizes.idleStreams,
    processes,
  };
}
