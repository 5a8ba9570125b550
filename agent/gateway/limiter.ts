import { isIPv6 } from 'node:net';

/** Why a connection was not admitted. */
export type Refusal = 'per-ip' | 'total';

/**
 * Counts open gateway connections, in total and per source. A source is one
 * IPv4 address or one IPv6 /64 (a single host usually holds a whole /64).
 */
export class ConnectionLimiter {
  readonly #maxTotal: number;
  readonly #maxPerSource: number;
  readonly #bySource = new Map<string, number>();
  #total = 0;

  constructor(maxTotal: number, maxPerSource: number) {
    this.#maxTotal = maxTotal;
    this.#maxPerSource = maxPerSource;
  }

  /** Takes a slot for `source` (see sourceKey), or says why not. Every success needs one release. */
  admit(source: string): Refusal | undefined {
    const n = this.#bySource.get(source) ?? 0;
    if (n >= this.#maxPerSource) return 'per-ip';
    if (this.#total >= this.#maxTotal) return 'total';
    this.#bySource.set(source, n + 1);
    this.#total++;
    return undefined;
  }

  release(source: string): void {
    const n = this.#bySource.get(source);
    if (n === undefined) return;
    if (n <= 1) this.#bySource.delete(source);
    else this.#bySource.set(source, n - 1);
    this.#total--;
  }

  get total(): number {
    return this.#total;
  }
}

/** The key a remote address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function sourceKey(remoteAddress: string | undefined): string {
  if (!remoteAddress) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  if (mapped) return mapped[1];
  if (!isIPv6(remoteAddress)) return remoteAddress;
  return expandIPv6(remoteAddress).slice(0, 4).join(':') + '::/64';
}

function expandIPv6(address: string): string[] {
  const [head, tail] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((h) => h.toLowerCase().replace(/^0+(?=.)/, ''));
}
