/** Value at quantile q (0..1) of the samples, nearest-rank on a sorted copy. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

export const median = (samples: readonly number[]): number => quantile(samples, 0.5);

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** Rounds to a few significant digits for JSON and tables. */
export function round(n: number, digits = 3): number {
  if (!Number.isFinite(n) || n === 0) return n;
  const scale = 10 ** Math.max(0, digits - Math.ceil(Math.log10(Math.abs(n))));
  return Math.round(n * scale) / scale;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
