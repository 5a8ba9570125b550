import { parseAddress } from '../identity/address.ts';
import { hostProblem, parsePort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';
import type { AccessMode, PublishedPort } from '../protocol/messages.ts';
import { MAX_ALLOWED_ADDRESSES, MAX_PUBLISHED_PORTS } from '../protocol/limits.ts';

/** One published port: where the device forwards it, and who may use it. */
export interface PortMapping {
  /** Host the device connects to (localhost, or another machine on its LAN). */
  host: string;
  localPort: number;
  /** Port number clients ask for. */
  remotePort: number;
  mode: AccessMode;
  /** private: allowed client addresses (checksummed). */
  allow: string[];
}

const DEFAULT_TARGET_HOST = '127.0.0.1';

/**
 * Parses one port item: `<local>`, `<local>:<remote>` or `<host>:<local>:<remote>`
 * (as the Diode client: `192.168.1.20:80:8080` publishes port 80 of a LAN
 * machine as remote port 8080). A single number means local = remote.
 */
export function parsePortItem(item: string, flag: string): Omit<PortMapping, 'mode' | 'allow'> {
  const parts = item.split(':');
  const what = `${flag} "${item}"`;
  // The Diode client's form ends in the protocol: `22:22:tcp`.
  const last = parts[parts.length - 1];
  if (parts.length >= 2 && /^[a-z]+$/i.test(last)) {
    if (last.toLowerCase() !== 'tcp') throw new UsageError(`${what}: only tcp is supported (got "${last}")`);
    parts.pop();
  }
  if (parts.length === 1) {
    const port = parsePort(parts[0], what);
    return { host: DEFAULT_TARGET_HOST, localPort: port, remotePort: port };
  }
  if (parts.length === 2) {
    return { host: DEFAULT_TARGET_HOST, localPort: parsePort(parts[0], what), remotePort: parsePort(parts[1], what) };
  }
  if (parts.length === 3) {
    if (!parts[0]) throw new UsageError(`${what}: empty host; write host:local:remote`);
    return { host: checkTargetHost(parts[0], what), localPort: parsePort(parts[1], what), remotePort: parsePort(parts[2], what) };
  }
  throw new UsageError(`${what}: write [host:]<local>[:<remote>]`);
}

/** The machine a port is forwarded to: an IPv4 address or a host name, checked before anything starts. */
function checkTargetHost(host: string, what: string): string {
  if (!host.includes(':') && !hostProblem(host)) return host;
  throw new UsageError(`${what}: "${host}" is not an IPv4 address or a host name`);
}

/**
 * Parses a flag value: a comma-separated list of port items; for -private
 * and -protected the addresses (0x...) that follow a port item belong to it:
 * `-private 22:22,0xA,0xB,2222:22,0xC`.
 */
export function parsePortFlag(mode: AccessMode, value: string): PortMapping[] {
  const flag = `-${mode}`;
  const tokens = value.split(',').map((s) => s.trim());
  const out: PortMapping[] = [];
  for (const token of tokens) {
    if (!token) throw new UsageError(`${flag} "${value}": empty item between commas`);
    if (/^0x/i.test(token)) {
      const current = out[out.length - 1];
      if (!current) throw new UsageError(`${flag} "${value}": address ${token} comes before any port`);
      if (mode !== 'private') throw new UsageError(`${flag} "${value}": addresses belong to -private ports (got ${token})`);
      current.allow.push(parseAddress(token, `${flag} address`));
      if (current.allow.length > MAX_ALLOWED_ADDRESSES) throw new UsageError(`${flag}: more than ${MAX_ALLOWED_ADDRESSES} addresses for one port`);
      continue;
    }
    if (/^[0-9a-f]{40}$/i.test(token)) throw new UsageError(`${flag} "${value}": "${token}" looks like a client address without its 0x; write 0x${token}`);
    // Hex longer than any port number is an address too, cut short or mistyped.
    if (/^[0-9a-f]{6,}$/i.test(token)) {
      throw new UsageError(`${flag} "${value}": "${token}" is no port number and looks like a client address without its 0x (an address is 0x and 40 hex digits; this has ${token.length})`);
    }
    out.push({ ...parsePortItem(token, flag), mode, allow: [] });
  }
  if (mode === 'private') {
    for (const m of out) {
      if (m.allow.length === 0) throw new UsageError(`${flag} "${value}": port ${m.remotePort} lists no client address; write ${m.localPort}:${m.remotePort},0x<address>[,0x<address>...]`);
    }
  }
  return out;
}

/** Parses every -public/-private/-protected flag and checks the set as a whole. */
export function parsePublishFlags(flags: Partial<Record<AccessMode, string[]>>): PortMapping[] {
  const all: PortMapping[] = [];
  for (const mode of ['public', 'private', 'protected'] as const) {
    for (const value of flags[mode] ?? []) all.push(...parsePortFlag(mode, value));
  }
  if (all.length === 0) throw new UsageError('nothing to publish; give at least one of -public, -private, -protected (e.g. -public 22:22)');
  if (all.length > MAX_PUBLISHED_PORTS) throw new UsageError(`at most ${MAX_PUBLISHED_PORTS} ports can be published`);
  const byRemote = new Map<number, PortMapping>();
  for (const m of all) {
    const seen = byRemote.get(m.remotePort);
    if (seen) throw new UsageError(`remote port ${m.remotePort} is published twice (-${seen.mode} and -${m.mode}); each remote port once`);
    byRemote.set(m.remotePort, m);
  }
  return all;
}

/** What the relay is told: remote port, mode, allow list; never the LAN target. */
export function toPublished(mappings: PortMapping[]): PublishedPort[] {
  return mappings.map((m) => (m.mode === 'private' ? { port: m.remotePort, mode: m.mode, allow: m.allow } : { port: m.remotePort, mode: m.mode }));
}
