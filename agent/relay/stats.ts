/**
 * Named counters (drops, refusals, routes) with their reasons: the one store
 * the relay's shutdown line, `diode status` and `--metrics` all read.
 * Timings (admission, stream set-up) go to an observer that --metrics
 * attaches; without it they cost one check.
 */
export class RelayStats {
  readonly #counters = new Map<string, number>();
  #observer: ((name: string, seconds: number) => void) | undefined;

  count(name: string, by = 1): void {
    this.#counters.set(name, (this.#counters.get(name) ?? 0) + by);
  }

  get(name: string): number {
    return this.#counters.get(name) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.#counters].sort());
  }

  /** A duration in seconds, e.g. "admission" (TCP accept → hello verified) or "stream_setup" (connect → ok). */
  observe(name: string, seconds: number): void {
    this.#observer?.(name, seconds);
  }

  setObserver(observer: ((name: string, seconds: number) => void) | undefined): void {
    this.#observer = observer;
  }
}
