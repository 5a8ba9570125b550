import { toChecksumAddress as getAddress } from '../identity/checksum.ts';

export interface DiodeTarget {
  address: string;
  /** A port named in the host (`<addr>-<port>.diode`) wins over the requested one. */
  port: number;
}

/** Suffixes that always mean "a diode device"; a gateway may add its own domain. */
export const DIODE_SUFFIXES: readonly string[] = ['diode', 'diode.link'];

const LABEL = /^(0x[0-9a-f]{40})(?:-(\d{1,5}))?$/;

/**
 * Resolves `<address>[-<port>].diode` (also `.diode.link` and any extra
 * suffix) to an address and port, without any DNS lookup. Hex in any case is
 * accepted (DNS names are case-insensitive, so a checksum cannot be relied on).
 * Returns undefined for anything else.
 */
export function parseDiodeHost(host: string, port: number, extraSuffixes: readonly string[] = []): DiodeTarget | undefined {
  const name = host.toLowerCase().replace(/\.$/, '');
  for (const suffix of [...DIODE_SUFFIXES, ...extraSuffixes.map((s) => s.toLowerCase())]) {
    if (!name.endsWith('.' + suffix)) continue;
    const label = name.slice(0, -(suffix.length + 1));
    const match = LABEL.exec(label);
    if (!match) return undefined;
    const namedPort = match[2] !== undefined ? Number(match[2]) : undefined;
    if (namedPort !== undefined && (namedPort < 1 || namedPort > 65535)) return undefined;
    return { address: getAddress(match[1]), port: namedPort ?? port };
  }
  return undefined;
}
