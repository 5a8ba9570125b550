import { parseAddress } from '../identity/address.ts';
import { formatHostPort, hostProblem, parseHostPort, type HostPort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';

export const DEFAULT_RELAY_PORT = 41046;

/** A relay to dial; `pin` is the address it must prove in its hello (refused otherwise). */
export interface RelayEntry extends HostPort {
  pin?: string;
}

/** Diode's own URL form of a pinned relay: diode://0x<address>@host:port. */
const DIODE_SCHEME = /^diode:\/\//i;
const ANY_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;
const PIN = /^(0x[0-9a-fA-F]*)@(.*)$/;

const FORMS = 'write host:port, 0x<relay address>@host:port or diode://0x<relay address>@host:port';

/**
 * Parses one relay entry as given to --relay, `config -set relays=` or the
 * image's diode.conf:
 *
 *     host:port          host          [v6]:port
 *     0x<address>@host:port            diode://0x<address>@host:port
 *
 * A missing port is 41046, for a name with a dot, `localhost` or an IP
 * address only: a bare word (`relay`, `yes`) is a mistake more often than a
 * LAN host name, and says so. Other URLs (`http://…`), paths, bad ports and
 * bad addresses are refused with one line naming the entry.
 */
export function parseRelayEntry(text: string): RelayEntry {
  const what = `relay "${text}"`;
  let rest = text.trim();
  if (DIODE_SCHEME.test(rest)) {
    rest = rest.replace(DIODE_SCHEME, '');
    if (!PIN.test(rest)) throw new UsageError(`${what}: a diode:// relay names its address: diode://0x<relay address>@host:port`);
  } else {
    const scheme = ANY_SCHEME.exec(rest);
    if (scheme) throw new UsageError(`${what}: a relay is not a ${scheme[1]}:// URL; ${FORMS}`);
  }
  let pin: string | undefined;
  const pinned = PIN.exec(rest);
  if (pinned) {
    pin = parseAddress(pinned[1], `${what}: relay address`);
    rest = pinned[2];
  } else if (rest.includes('@')) {
    throw new UsageError(`${what}: before the @ goes the relay's 0x address; ${FORMS}`);
  }
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  if (rest.includes('/')) throw new UsageError(`${what}: a relay has no path; ${FORMS}`);
  if (!rest) throw new UsageError(`${what}: no host; ${FORMS}`);
  const hasPort = /^\[[^\]]+\]:/.test(rest) || (!rest.startsWith('[') && (rest.match(/:/g) ?? []).length === 1);
  if (!hasPort) {
    const host = rest.replace(/^\[(.*)\]$/, '$1');
    const isIp = /^[\d.]+$/.test(host) || host.includes(':');
    if (!isIp && !host.includes('.') && host.toLowerCase() !== 'localhost') {
      throw new UsageError(`${what}: "${host}" is a bare word, not a relay; write host:port (e.g. ${host}.example.org:${DEFAULT_RELAY_PORT} or ${host}:${DEFAULT_RELAY_PORT})`);
    }
    rest = host.includes(':') ? `[${host}]:${DEFAULT_RELAY_PORT}` : `${host}:${DEFAULT_RELAY_PORT}`;
  }
  const hp = parseHostPort(rest, what);
  checkRelayHost(hp.host, what);
  return pin ? { ...hp, pin } : hp;
}

/**
 * A host that can never resolve is refused at start, not retried forever on
 * ENOTFOUND: an IPv6 address without brackets (`::1:41046` reads as a host
 * with no port), an IPv4 address out of range, a name with other characters.
 */
function checkRelayHost(host: string, what: string): void {
  const problem = hostProblem(host);
  if (!problem) return;
  const fix = host.includes(':') ? `an IPv6 relay goes in brackets, its port after them: [::1]:${DEFAULT_RELAY_PORT}` : FORMS;
  throw new UsageError(`${what}: "${host}" ${problem}; ${fix}`);
}

/** A comma list of entries (flags repeat and take comma lists). */
export function parseRelayList(text: string): RelayEntry[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(parseRelayEntry);
}

/** The canonical text of an entry: `0x<Address>@host:port` when pinned. */
export function formatRelayEntry(entry: RelayEntry): string {
  return entry.pin ? `${entry.pin}@${formatHostPort(entry)}` : formatHostPort(entry);
}
