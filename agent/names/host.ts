import { toChecksumAddress } from '../identity/checksum.ts';
import { nameProblem } from './name.ts';

/** A device and port to dial: what every host name comes down to once its name (if any) is resolved. */
export interface DiodeTarget {
  address: string;
  /** A port named in the host (`<addr>-<port>.diode`) wins over the requested one. */
  port: number;
}

/** A device as a host names it: by its address, or by a name still to be resolved (names/resolver.ts). */
export type DiodeHost = (DiodeTarget & { name?: undefined }) | { name: string; port: number; address?: undefined };

/** Suffixes that always mean "a diode device"; a gateway may add its own domain. */
export const DIODE_SUFFIXES: readonly string[] = ['diode', 'diode.link'];

const ADDRESS_LABEL = /^0x[0-9a-f]{40}$/;
const PORT_SUFFIX = /^(.+)-(\d{1,5})$/;

/** What a host name is to diode. */
export type HostClass =
  /** `<address>[-<port>]` or `<name>[-<port>]` under a diode suffix. */
  | { kind: 'device'; host: DiodeHost }
  /** Under a diode suffix, but neither: never looked up anywhere (no DNS). */
  | { kind: 'malformed'; reason: string }
  /** Not under any diode suffix: some other host. */
  | { kind: 'other' };

/**
 * Sorts a host name without any lookup: `<label>.diode` (also `.diode.link`
 * and any extra suffix, a gateway's domain), where the label is an address
 * (`0x` and 40 hex digits, any case: DNS names are case-insensitive, so a
 * checksum cannot be relied on) or a name (names/name.ts), either followed
 * by `-<port>`, which wins over the requested port.
 */
export function classifyHost(host: string, port: number, extraSuffixes: readonly string[] = []): HostClass {
  const text = host.toLowerCase().replace(/\.$/, '');
  for (const suffix of [...DIODE_SUFFIXES, ...extraSuffixes.map((s) => s.toLowerCase())]) {
    if (!text.endsWith('.' + suffix)) continue;
    let label = text.slice(0, -(suffix.length + 1));
    let namedPort: number | undefined;
    const withPort = PORT_SUFFIX.exec(label);
    if (withPort) {
      label = withPort[1];
      namedPort = Number(withPort[2]);
      if (namedPort < 1 || namedPort > 65535) return { kind: 'malformed', reason: `port ${withPort[2]} is outside 1-65535` };
    }
    if (label.startsWith('0x')) {
      if (!ADDRESS_LABEL.test(label)) return { kind: 'malformed', reason: 'an address is 0x and 40 hex digits' };
      return { kind: 'device', host: { address: toChecksumAddress(label), port: namedPort ?? port } };
    }
    if (label.includes('.')) return { kind: 'malformed', reason: 'a device is one label before the suffix (<address> or <name>)' };
    const problem = nameProblem(label);
    if (problem) return { kind: 'malformed', reason: problem };
    return { kind: 'device', host: { name: label, port: namedPort ?? port } };
  }
  return { kind: 'other' };
}

/** classifyHost's device, or undefined for anything else. */
export function parseDiodeHost(host: string, port: number, extraSuffixes: readonly string[] = []): DiodeHost | undefined {
  const c = classifyHost(host, port, extraSuffixes);
  return c.kind === 'device' ? c.host : undefined;
}

/** `kitchen.diode`, `0x….diode` (lower case): a device host as people write it. */
export function hostLabel(host: DiodeHost): string {
  return `${host.name ?? host.address.toLowerCase()}.diode`;
}
