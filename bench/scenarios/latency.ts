import type { Socket } from 'node:net';
import { openEcho, readExactly, timeSetup } from '../lib/client.ts';
import type { Connector } from '../lib/client.ts';

export interface LatencySizes {
  /** Round trips per path (after the warm-up ones). */
  rttCount: number;
  rttWarmup: number;
  rttSize: number;
  /** Sequential new connections timed per path. */
  setupCount: number;
  /**
   * New connections per path before those: the agents and the relay run for
   * days, and for the first few hundred connections after start-up V8 is
   * still compiling their set-up code (set-up p50 8.0 -> 6.4-7.2 ms over
   * the next 600, bench/README.md). Their times are kept as the cold figure.
   */
  setupWarmup: number;
  /** Round trips (and a fifth as many connections) a path gets before the next path takes its turn. */
  rttBlock: number;
}

export interface Latencies {
  /** ms from connect() to the sink's first byte back, per path, after the warm-up. */
  setups: number[][];
  /** The same for the warm-up's connections, the first after start-up. */
  coldSetups: number[][];
  /** µs per round trip of rttSize bytes, per path. */
  rtts: number[][];
}

/**
 * Runs `measure(k)` `total` times for every path k, taking turns: a block on
 * one path, then a block on the next. Keeps the samples from `skip` on.
 */
async function inTurns(count: number, total: number, block: number, skip: number, measure: (k: number) => Promise<number>): Promise<{ samples: number[][]; skipped: number[][] }> {
  const samples: number[][] = Array.from({ length: count }, () => []);
  const skipped: number[][] = Array.from({ length: count }, () => []);
  for (let done = 0; done < total; done += block) {
    for (let k = 0; k < count; k++) {
      for (let i = done; i < Math.min(done + block, total); i++) {
        const sample = await measure(k);
        (i >= skip ? samples : skipped)[k].push(sample);
      }
    }
  }
  return { samples, skipped };
}

/**
 * New-connection times and round-trip times of every path, taken in turns.
 *
 * Why in turns: the added latency is a difference between paths, and on a
 * shared machine a noisy second (another tenant, a slow vCPU wake-up) moves
 * every path's tail. Measured one path after the other, minutes apart, the
 * difference mostly reflected which path drew the noisy minute; in turns,
 * each path sees the same moments. Blocks (not single messages) keep each
 * path's processes as warm as they are in real interactive use. The
 * connections come first: they also warm up each path's code.
 */
export async function measureLatencies(paths: ReadonlyArray<{ name: string; connector: Connector }>, sizes: LatencySizes, log: (line: string) => void): Promise<Latencies> {
  const names = paths.map((p) => p.name).join(', ');
  log(`${names}: ${sizes.setupWarmup} + ${sizes.setupCount} new connections each, in turns`);
  const connections = await inTurns(paths.length, sizes.setupWarmup + sizes.setupCount, Math.max(1, sizes.rttBlock / 5), sizes.setupWarmup, (k) => timeSetup(paths[k].connector));

  log(`${names}: ${sizes.rttCount} round trips of ${sizes.rttSize} bytes each, in turns of ${sizes.rttBlock}`);
  const sockets: Socket[] = [];
  try {
    for (const path of paths) sockets.push(await openEcho(path.connector));
    const message = Buffer.alloc(sizes.rttSize, 0x5a);
    const { samples: rtts } = await inTurns(paths.length, sizes.rttWarmup + sizes.rttCount, sizes.rttBlock, sizes.rttWarmup, async (k) => {
      const start = process.hrtime.bigint();
      sockets[k].write(message);
      await readExactly(sockets[k], sizes.rttSize);
      return Number(process.hrtime.bigint() - start) / 1e3;
    });
    return { setups: connections.samples, coldSetups: connections.skipped, rtts };
  } finally {
    for (const s of sockets) s.destroy();
  }
}
