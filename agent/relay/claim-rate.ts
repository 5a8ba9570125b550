import { setBounded } from '../util/bounded-map.ts';
import { TokenBucket } from '../util/token-bucket.ts';
import { NAME_CLAIM_BURST } from './config.ts';

export { NAME_CLAIM_BURST };
/** Sources whose claim budgets are remembered; beyond it the least recently seen is forgotten (and starts full again). */
export const MAX_CLAIM_SOURCES = 65_536;

/**
 * Name claims per source (an IPv4 address or an IPv6 /64) and second, a
 * token bucket each: `perSecond` names a second, up to NAME_CLAIM_BURST at
 * once. A flood of fresh keys from one host cannot fill the relay's name
 * table faster than that.
 */
export class ClaimRate {
  readonly #perSecond: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, TokenBucket>();

  constructor(perSecond: number, now: () => number = Date.now) {
    this.#perSecond = perSecond;
    this.#now = now;
  }

  /** Takes `n` claims from `source`'s budget; false (and nothing taken) when it has fewer left. */
  take(source: string, n: number): boolean {
    const bucket = this.#buckets.get(source) ?? new TokenBucket(this.#perSecond, NAME_CLAIM_BURST, this.#now);
    setBounded(this.#buckets, source, bucket, MAX_CLAIM_SOURCES);
    return bucket.take(n);
  }
}
