import { isIPv6 } from 'node:net';
import { ipv6Groups, unmapped } from './ip.ts';

// Where a connection comes from, as the relay's and the gateway's caps count
// it. A source is one IPv4 address or one IPv6 /64 (one host usually holds a
// whole /64). An IPv6 customer often holds a /56 or a /48, which is hundreds
// of /64s: their connections are also counted by /56 and by /48, each with
// a cap of its own, so one customer is not hundreds of sources.

/** Sources of one /56 together may hold this many times a source's cap. */
export const PREFIX_56_FACTOR = 4;
/** Sources of one /48 together may hold this many times a source's cap. */
export const PREFIX_48_FACTOR = 8;

/** The key a remote address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function sourceKey(remoteAddress: string | undefined): string {
  if (!remoteAddress) return 'unknown';
  const ip = unmapped(remoteAddress);
  if (!isIPv6(ip)) return ip;
  return ipv6Groups(ip).slice(0, 4).map((g) => g.toString(16)).join(':') + '::/64';
}

/** The /56 and /48 a /64 source key lies in (none for IPv4). */
export function prefixKeys(source: string): { p56: string; p48: string } | undefined {
  if (!source.endsWith('::/64')) return undefined;
  const g = source.slice(0, -'::/64'.length).split(':').map((h) => parseInt(h, 16));
  const head = g.slice(0, 3).map((n) => n.toString(16)).join(':');
  return { p56: `${head}:${(g[3] & 0xff00).toString(16)}::/56`, p48: `${head}::/48` };
}

/** Why a connection was not admitted: its source, its /56, its /48, or everyone together is at the cap. */
export type Refusal = 'per-ip' | 'per-56' | 'per-48' | 'total';

/**
 * Counts connections (or sessions) in total, per source, and per /56 and
 * /48 of IPv6 sources (PREFIX_56_FACTOR and PREFIX_48_FACTOR times the
 * per-source cap, never more than the total).
 */
export class ConnectionLimiter {
  readonly #maxTotal: number;
  readonly #caps: Record<'per-ip' | 'per-56' | 'per-48', number>;
  readonly #counts = new Map<string, number>();
  #total = 0;

  constructor(maxTotal: number, maxPerSource: number) {
    this.#maxTotal = maxTotal;
    this.#caps = {
      'per-ip': maxPerSource,
      'per-56': Math.min(maxTotal, maxPerSource * PREFIX_56_FACTOR),
      'per-48': Math.min(maxTotal, maxPerSource * PREFIX_48_FACTOR),
    };
  }

  /** The cap of a refusal kind. */
  cap(refusal: Refusal): number {
    return refusal === 'total' ? this.#maxTotal : this.#caps[refusal];
  }

  /** Takes a slot for `source` (see sourceKey), or says why not. Every success needs one release. */
  admit(source: string): Refusal | undefined {
    const levels = this.#levels(source);
    for (const [kind, key] of levels) if ((this.#counts.get(key) ?? 0) >= this.#caps[kind]) return kind;
    if (this.#total >= this.#maxTotal) return 'total';
    for (const [, key] of levels) this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    this.#total++;
    return undefined;
  }

  release(source: string): void {
    const levels = this.#levels(source);
    if (!this.#counts.has(levels[0][1])) return;
    for (const [, key] of levels) {
      const n = this.#counts.get(key) ?? 0;
      if (n <= 1) this.#counts.delete(key);
      else this.#counts.set(key, n - 1);
    }
    this.#total--;
  }

  get total(): number {
    return this.#total;
  }

  /** One line for people: what was full (`what`: "connections", "sessions"). */
  describe(refusal: Refusal, source: string, what: string): string {
    const cap = this.cap(refusal);
    const prefixes = prefixKeys(source);
    if (refusal === 'per-ip') return `already ${cap} ${what} from this source`;
    if (refusal === 'per-56') return `already ${cap} ${what} from its /56, ${prefixes?.p56}`;
    if (refusal === 'per-48') return `already ${cap} ${what} from its /48, ${prefixes?.p48}`;
    return `already ${cap} ${what} in total`;
  }

  #levels(source: string): Array<['per-ip' | 'per-56' | 'per-48', string]> {
    const prefixes = prefixKeys(source);
    return prefixes ? [['per-ip', source], ['per-56', prefixes.p56], ['per-48', prefixes.p48]] : [['per-ip', source]];
  }
}
