/**
 * Capped exponential backoff with full jitter (AWS architecture blog's
 * variant), with a short cap: a device must be reachable within 5 s of its
 * relay coming back, so no wait is longer than maxMs, and the jitter spreads
 * a fleet's return over that window instead of one burst.
 */
export interface BackoffConfig {
  /** ms: ceiling of the first retry's delay. */
  baseMs: number;
  /** ms: largest delay ever waited. */
  maxMs: number;
}

export const defaultBackoff: Readonly<BackoffConfig> = Object.freeze({ baseMs: 250, maxMs: 3_000 });

export function backoffDelay(attempt: number, config: BackoffConfig, random: () => number = Math.random): number {
  const ceiling = Math.min(config.maxMs, config.baseMs * 2 ** Math.min(attempt, 30));
  // Never retry sooner than a tenth of the ceiling, so a flapping relay cannot make us spin.
  return Math.round(ceiling * (0.1 + 0.9 * random()));
}
