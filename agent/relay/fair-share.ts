import type { RelayLimits } from './config.ts';
import type { RelayStats } from './stats.ts';
import type { RefusalLog } from './admission.ts';

/** One stream a caller holds toward a device: pending until the device answers, then open until it closes. */
export interface Share {
  /** The device answered (ok or an error): no longer pending. */
  answered(): void;
  /** The stream is gone. Idempotent. */
  release(): void;
}

interface Count {
  open: number;
  pending: number;
}

/**
 * Fair share of a device's stream slots (a relay ↔ device session holds at
 * most 4,096): each caller may hold at most `maxStreamsPerCaller` streams
 * toward one device, `maxPendingPerCaller` of them not yet answered. A caller
 * is counted twice, by its address (agents) and by its source (IPv4 address
 * or IPv6 /64; for the gateway the only name it has), so neither many keys
 * from one host nor one key from many hosts takes more than its share.
 */
export class CallerShares {
  readonly #limits: RelayLimits;
  readonly #stats: RelayStats;
  readonly #refusals: RefusalLog;
  readonly #counts = new Map<string, Count>();

  constructor(limits: RelayLimits, stats: RelayStats, refusals: RefusalLog) {
    this.#limits = limits;
    this.#stats = stats;
    this.#refusals = refusals;
  }

  /** Takes a pending slot for each of `callers` toward `device`, or returns why not (nothing taken then). */
  take(callers: readonly string[], device: string): Share | string {
    const keys = callers.map((c) => `${c}>${device}`);
    for (let i = 0; i < keys.length; i++) {
      const n = this.#counts.get(keys[i]);
      if (!n) continue;
      if (n.pending >= this.#limits.maxPendingPerCaller) {
        this.#stats.count('refused_pending_per_caller');
        const why = `${callers[i]} already has ${n.pending} streams toward ${device} that the device has not answered (--max-pending-per-caller)`;
        this.#refusals.refused('pending_per_caller', why);
        return why;
      }
      if (n.open >= this.#limits.maxStreamsPerCaller) {
        this.#stats.count('refused_streams_per_caller');
        const why = `${callers[i]} already has ${n.open} streams open toward ${device} (--max-streams-per-caller)`;
        this.#refusals.refused('streams_per_caller', why);
        return why;
      }
    }
    const counts = keys.map((k) => {
      let n = this.#counts.get(k);
      if (!n) this.#counts.set(k, (n = { open: 0, pending: 0 }));
      n.open++;
      n.pending++;
      return n;
    });
    let pending = true;
    let held = true;
    const answered = () => {
      if (!pending) return;
      pending = false;
      for (const n of counts) n.pending--;
    };
    return {
      answered,
      release: () => {
        if (!held) return;
        answered();
        held = false;
        for (let i = 0; i < keys.length; i++) {
          if (--counts[i].open === 0) this.#counts.delete(keys[i]);
        }
      },
    };
  }

  /** Callers × devices with at least one stream (for tests and metrics). */
  get size(): number {
    return this.#counts.size;
  }
}
