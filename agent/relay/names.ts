import type { SignedName } from '../names/claim.ts';
import type { ClaimOutcome } from '../protocol/names.ts';
import type { PublisherChange, SessionSet } from './registry.ts';
import { savedName, type NameSnapshot, type SavedName } from './name-snapshot.ts';

/** A name as a relay keeps it: the claim (name, key, signature) and the address the key proves. */
export interface NameRecord extends SignedName {
  /** Checksummed. */
  address: string;
}

/**
 * name → device, as a relay (or its cluster) keeps it: the one question
 * lookups and the gateway ask, and where claims go. Two implementations:
 * MemoryNameTable (a relay on its own) and, for a cluster, the names in
 * Redis beside the address map (relay/cluster/names.ts).
 *
 * Rules, the same for both: first claim wins; an address holds the names of
 * its latest claim (a claim is the complete set: a name left out is freed);
 * a name stays its address's while the address publishes on the relay and
 * for `holdMs` after it went (a reboot or an outage frees nothing).
 */
export interface NameTable {
  /**
   * Claims `claims` (signatures already checked against `address`'s key) as
   * the complete set of `address`'s names; at most `maxNames` are taken, in
   * order. One outcome per claim, in order.
   */
  claim(address: string, claims: readonly SignedName[], maxNames: number): Promise<ClaimOutcome[]>;
  /** The holder of `name` (lower case) now; throws when the table cannot answer (Redis away). */
  lookup(name: string): Promise<NameRecord | undefined>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Names one relay keeps in memory; at the bound, expired names go first, then new claims are refused (`full`). */
export const MAX_RELAY_NAMES = 100_000;

export interface MemoryNameTableOptions {
  sessions: SessionSet;
  /** ms a name stays reserved after its address stopped publishing here. */
  holdMs: number;
  maxNames?: number;
  now?: () => number;
  /** Where the names are kept across restarts (a relay's state directory); none: memory only. */
  snapshot?: NameSnapshot;
}

interface Held {
  record: NameRecord;
  /** ms since the epoch; Infinity while the address publishes here. */
  expiresAt: number;
}

export function heldBy(name: string, holder: string): ClaimOutcome {
  return { name, ok: false, code: 'held', holder, message: `${name} is held by ${holder}` };
}

export function overLimit(name: string, maxNames: number): ClaimOutcome {
  return { name, ok: false, code: 'limit', message: `at most ${maxNames} name${maxNames === 1 ? '' : 's'} per address on this relay (--max-names-per-address)` };
}

/** The names of a relay on its own. */
export class MemoryNameTable implements NameTable {
  readonly #o: Required<Omit<MemoryNameTableOptions, 'snapshot'>> & Pick<MemoryNameTableOptions, 'snapshot'>;
  readonly #byName = new Map<string, Held>();
  readonly #byAddress = new Map<string, Set<string>>();
  #unsubscribe: (() => void) | undefined;

  constructor(options: MemoryNameTableOptions) {
    this.#o = { maxNames: MAX_RELAY_NAMES, now: Date.now, ...options };
  }

  get size(): number {
    return this.#byName.size;
  }

  async start(): Promise<void> {
    const now = this.#o.now();
    for (const [name, address, pub, sig, saved] of this.#o.snapshot?.load() ?? []) {
      // Online when the relay stopped: its hold starts now (its device claims again when it is back).
      const expiresAt = saved ?? now + this.#o.holdMs;
      if (expiresAt <= now || this.#byName.size >= this.#o.maxNames) continue;
      this.#byName.set(name, { record: { name, address, pub, sig }, expiresAt });
      let names = this.#byAddress.get(address);
      if (!names) this.#byAddress.set(address, (names = new Set()));
      names.add(name);
    }
    this.#unsubscribe = this.#o.sessions.onPublisherChange((change) => this.#onPublisherChange(change));
  }

  async close(): Promise<void> {
    this.#unsubscribe?.();
    await this.#o.snapshot?.close(this.#rows());
  }

  #rows(): SavedName[] {
    return [...this.#byName.values()].map((held) => savedName(held.record, held.expiresAt));
  }

  #changed(): void {
    this.#o.snapshot?.changed(() => this.#rows());
  }

  async claim(address: string, claims: readonly SignedName[], maxNames: number): Promise<ClaimOutcome[]> {
    const expiresAt = this.#expiry(address);
    const kept = new Set<string>();
    const outcomes = claims.map((claim, i): ClaimOutcome => {
      if (i >= maxNames) return overLimit(claim.name, maxNames);
      const held = this.#live(claim.name);
      if (held && held.record.address !== address) return heldBy(claim.name, held.record.address);
      if (!held && this.#byName.size >= this.#o.maxNames && (this.#sweep(), this.#byName.size >= this.#o.maxNames)) {
        return { name: claim.name, ok: false, code: 'full', message: `this relay holds its maximum of ${this.#o.maxNames} names` };
      }
      this.#byName.set(claim.name, { record: { ...claim, address }, expiresAt });
      kept.add(claim.name);
      return { name: claim.name, ok: true };
    });
    // A claim is the complete set: what the address held before and left out is free now.
    for (const name of this.#byAddress.get(address) ?? []) {
      if (!kept.has(name) && this.#byName.get(name)?.record.address === address) this.#byName.delete(name);
    }
    if (kept.size > 0) this.#byAddress.set(address, kept);
    else this.#byAddress.delete(address);
    this.#changed();
    return outcomes;
  }

  async lookup(name: string): Promise<NameRecord | undefined> {
    return this.#live(name)?.record;
  }

  #expiry(address: string): number {
    return this.#o.sessions.publisher(address) ? Infinity : this.#o.now() + this.#o.holdMs;
  }

  /** The entry of `name` unless its hold ran out (then it is dropped). */
  #live(name: string): Held | undefined {
    const held = this.#byName.get(name);
    if (!held || held.expiresAt > this.#o.now()) return held;
    this.#drop(name, held);
    return undefined;
  }

  #drop(name: string, held: Held): void {
    this.#changed();
    this.#byName.delete(name);
    const names = this.#byAddress.get(held.record.address);
    names?.delete(name);
    if (names?.size === 0) this.#byAddress.delete(held.record.address);
  }

  #sweep(): void {
    const now = this.#o.now();
    for (const [name, held] of this.#byName) if (held.expiresAt <= now) this.#drop(name, held);
  }

  /** Online: names never run out; gone: the hold starts now. */
  #onPublisherChange({ address, active }: PublisherChange): void {
    const expiresAt = active ? Infinity : this.#o.now() + this.#o.holdMs;
    const names = this.#byAddress.get(address);
    if (names) this.#changed();
    for (const name of names ?? []) {
      const held = this.#byName.get(name);
      if (held) held.expiresAt = expiresAt;
    }
  }
}
