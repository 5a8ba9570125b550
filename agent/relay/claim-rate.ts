import { setBounded } from '../util/bounded-map.ts';

/**
 * names: a source may claim this many at once before its per-second rate
 * applies: after a relay restart every device behind one NAT claims again
 * within seconds.
 */
export const NAME_CLAIM_BURST = 16;
/** Sources whose claim budgets are remembered; beyond it the least recently seen is forgotten (and starts full again). */
export const MAX_CLAIM_SOURCES = 65_536;

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Name claims per source (an IPv4 address or an IPv6 /64) and second, as a
 * token bucket: `perSecond` names a second, up to NAME_CLAIM_BURST at once.
 * A flood of fresh keys from one host cannot fill the relay's name table
 * faster than that.
 */
export class ClaimRate {
  readonly #perSecond: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(perSecond: number, now: () => number = Date.now) {
    this.#perSecond = perSecond;
    this.#now = now;
  }

  /** Takes `n` claims from `source`'s budget; false (and nothing taken) when it has fewer left. */
  take(source: string, n: number): boolean {
    const now = this.#now();
    const last = this.#buckets.get(source);
    const tokens = last ? Math.min(NAME_CLAIM_BURST, last.tokens + ((now - last.at) / 1000) * this.#perSecond) : NAME_CLAIM_BURST;
    const ok = tokens >= n;
    setBounded(this.#buckets, source, { tokens: ok ? tokens - n : tokens, at: now }, MAX_CLAIM_SOURCES);
    return ok;
  }
}
