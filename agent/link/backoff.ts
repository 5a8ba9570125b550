/**
 * Capped exponential backoff with full jitter (AWS architecture blog's
 * variant), in two phases:
 * - while the failure is recent (up to `patienceMs`), no wait is longer than
 *   `maxMs` (3 s): a device is reachable within 5 s of its relay or its path
 *   coming back, and the jitter spreads a fleet's return over that window;
 * - once it has failed for longer, waits are between half of `slowMaxMs`
 *   and all of it (60 s): a relay that stays unreachable (a mistyped name, a
 *   relay gone, no network) costs a battery-powered device on a mobile plan
 *   one attempt a minute, not one every 3 s forever.
 * A change of the machine's network (an interface or address coming up)
 * starts over from the first phase at once (see RelayLink), so a real outage
 * that ends on the device's side is still left within seconds.
 */
export interface BackoffConfig {
  /** ms: ceiling of the first retry's delay. */
  baseMs: number;
  /** ms: largest delay while the link has failed for less than patienceMs. */
  maxMs: number;
  /** ms of continuous failure after which the waits grow to slowMaxMs (omitted: never). */
  patienceMs?: number;
  /** ms: largest delay after patienceMs of failure; each wait is between half of it and all of it. */
  slowMaxMs?: number;
}

export const defaultBackoff: Readonly<BackoffConfig> = Object.freeze({ baseMs: 250, maxMs: 3_000, patienceMs: 5 * 60_000, slowMaxMs: 60_000 });

/**
 * ms to wait before retry number `attempt` (0 = the first), when the link
 * has been failing for `failingForMs`.
 */
export function backoffDelay(attempt: number, config: BackoffConfig, random: () => number = Math.random, failingForMs = 0): number {
  if (config.patienceMs !== undefined && config.slowMaxMs !== undefined && failingForMs >= config.patienceMs) {
    return Math.round(config.slowMaxMs * (0.5 + 0.5 * random()));
  }
  const ceiling = Math.min(config.maxMs, config.baseMs * 2 ** Math.min(attempt, 30));
  // Never retry sooner than a tenth of the ceiling, so a flapping relay cannot make us spin.
  return Math.round(ceiling * (0.1 + 0.9 * random()));
}

/** The backoff in words, for log lines: "up to 3 s, every 30-60 s after 5 min of failure". */
export function describeBackoff(config: BackoffConfig): string {
  const fast = `up to ${duration(config.maxMs)}`;
  if (config.patienceMs === undefined || config.slowMaxMs === undefined) return fast;
  return `${fast}, ${describeSlowRetries(config)} after ${duration(config.patienceMs)} of failure`;
}

/** "every 30-60 s": the waits of the slow phase. */
export function describeSlowRetries(config: BackoffConfig): string {
  return `every ${(config.slowMaxMs ?? 0) / 2000}-${duration(config.slowMaxMs ?? 0)}`;
}

/** "3 s", "0.1 s", "5 min". */
export function duration(ms: number): string {
  return ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}
