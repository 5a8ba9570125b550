import type { Socket } from 'node:net';
import { openEcho, readExactly, timeSetup } from '../lib/client.ts';
import type { Path } from '../lib/paths.ts';

export interface LatencySizes {
  /** Round trips per path (after the warm-up ones). */
  rttCount: number;
  rttWarmup: number;
  rttSize: number;
  /** Sequential new connections timed per path. */
  setupCount: number;
  /** Round trips (and a fifth as many connections) a path gets before the next path takes its turn. */
  rttBlock: number;
}

export interface Latencies {
  /** ms from connect() to the sink's first byte back, per path. */
  setups: number[][];
  /** µs per round trip of rttSize bytes, per path. */
  rtts: number[][];
}

/**
 * Runs `measure(k)` `total` times for every path k, taking turns: a block on
 * one path, then a block on the next. Keeps the samples from `skip` on.
 */
async function inTurns(count: number, total: number, block: number, skip: number, measure: (k: number) => Promise<number>): Promise<number[][]> {
  const samples: number[][] = Array.from({ length: count }, () => []);
  for (let done = 0; done < total; done += block) {
    for (let k = 0; k < count; k++) {
      for (let i = done; i < Math.min(done + block, total); i++) {
        const sample = await measure(k);
        if (i >= skip) samples[k].push(sample);
      }
    }
  }
  return samples;
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
export async function measureLatencies(paths: Path[], sizes: LatencySizes, log: (line: string) => void): Promise<Latencies> {
  const names = paths.map((p) => p.name).join(', ');
  log(`${names}: ${sizes.setupCount} new connections each, in turns`);
  const setups = await inTurns(paths.length, sizes.setupCount, Math.max(1, sizes.rttBlock / 5), 0, (k) => timeSetup(paths[k].connector));

  log(`${names}: ${sizes.rttCount} round trips of ${sizes.rttSize} bytes each, in turns of ${sizes.rttBlock}`);
  const sockets: Socket[] = [];
  try {
    for (const path of paths) sockets.push(await openEcho(path.connector));
    const message = Buffer.alloc(sizes.rttSize, 0x5a);
    const rtts = await inTurns(paths.length, sizes.rttWarmup + sizes.rttCount, sizes.rttBlock, sizes.rttWarmup, async (k) => {
      const start = process.hrtime.bigint();
      sockets[k].write(message);
      await readExactly(sockets[k], sizes.rttSize);
      return Number(process.hrtime.bigint() - start) / 1e3;
    });
    return { setups, rtts };
  } finally {
    for (const s of sockets) s.destroy();
  }
}
