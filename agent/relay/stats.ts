/** Named counters (drops, refusals, routes) with their reasons, for the log and a metrics endpoint. */
export class RelayStats {
  readonly #counters = new Map<string, number>();

  count(name: string, by = 1): void {
    this.#counters.set(name, (this.#counters.get(name) ?? 0) + by);
  }

  get(name: string): number {
    return this.#counters.get(name) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.#counters].sort());
  }
}
