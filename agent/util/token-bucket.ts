/**
 * A token bucket: `perSecond` tokens a second, at most `burst` saved up.
 * Its state is two numbers, so a caller keeps one per session or source.
 */
export class TokenBucket {
  #tokens: number;
  #at: number;
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #now: () => number;

  constructor(perSecond: number, burst: number, now: () => number = Date.now) {
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#at = now();
  }

  /** Takes `n` tokens (one by default); false (nothing taken) when fewer are left. */
  take(n = 1): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#perSecond);
    this.#at = now;
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }
}
