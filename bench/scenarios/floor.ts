import type { FloorPath } from '../lib/floor.ts';
import type { Latencies } from './latency.ts';
import { quantile, round } from '../lib/stats.ts';

/** What three bare forwarders add over direct (lib/floor.ts), per floor path. */
export type FloorFigures = Partial<Record<FloorPath['name'], { addedRttP50ms: number; addedRttP99ms: number; setupP50ms: number; setupP99ms: number }>>;

/**
 * The floor paths' figures from a latency run whose first `first` paths
 * were the bench's own and whose direct path was at `direct` (-1: none).
 */
export function floorFigures(floors: readonly FloorPath[], latencies: Latencies, first: number, direct: number): FloorFigures | undefined {
  if (floors.length === 0 || direct < 0) return undefined;
  const base = latencies.rtts[direct];
  const out: FloorFigures = {};
  for (const [i, f] of floors.entries()) {
    const rtts = latencies.rtts[first + i];
    const setups = latencies.setups[first + i];
    out[f.name] = {
      addedRttP50ms: round((quantile(rtts, 0.5) - quantile(base, 0.5)) / 1000),
      addedRttP99ms: round((quantile(rtts, 0.99) - quantile(base, 0.99)) / 1000),
      setupP50ms: round(quantile(setups, 0.5)),
      setupP99ms: round(quantile(setups, 0.99)),
    };
  }
  return out;
}
