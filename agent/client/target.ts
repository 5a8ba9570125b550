import { parsePort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';
import { parseAddress } from '../identity/address.ts';
import { classifyHost, type DiodeHost } from '../names/host.ts';
import { nameProblem, shownName } from '../names/name.ts';

/**
 * A device named on the command line: `<address>.diode` or `<name>.diode`
 * (any case, a `-<port>` after either), a bare `0x<address>` or a bare
 * name. Anything else is a usage error, never a DNS lookup.
 */
export function parseTargetHost(host: string, port: number, what: string): DiodeHost {
  if (/^0x[0-9a-fA-F]*$/.test(host)) return { address: parseAddress(host, what), port };
  const c = classifyHost(host, port);
  if (c.kind === 'device') return c.host;
  const bare = host.toLowerCase();
  if (c.kind === 'other' && !bare.includes('.') && nameProblem(bare) === undefined) return { name: bare, port };
  const why = c.kind === 'malformed' ? c.reason : bare.includes('.') ? 'it does not end in .diode' : nameProblem(bare);
  throw new UsageError(`${what}: ${shownName(host)} is not a device: ${why} (write <name>.diode, or 0x and 40 hex digits then .diode)`);
}

/** Hosts a bind spec may name before its local port: the one it listens on anyway. */
const LOOPBACK_BIND_HOSTS = new Set(['127.0.0.1', 'localhost']);

export interface BindSpec {
  /** 127.0.0.1 port to listen on (0 picks a free one). */
  localPort: number;
  target: DiodeHost;
  /** As given, for messages. */
  text: string;
}

/**
 * Parses bind specs as the Diode client's -bind: `<local>:<address or name>[.diode]:<remote>[:tcp]`,
 * several per argument separated by commas. A local port may appear once.
 */
export function parseBindSpecs(values: string[]): BindSpec[] {
  const specs: BindSpec[] = [];
  for (const value of values) {
    for (const raw of value.split(',')) {
      const text = raw.trim();
      const what = `bind "${text}"`;
      if (!text) throw new UsageError(`bind "${value}": empty item between commas`);
      const parts = text.split(':');
      // `host:local:address:remote`: a bind only ever listens on loopback.
      if (parts.length >= 4 && /^\d+$/.test(parts[3])) {
        const host = parts.shift()!;
        if (!LOOPBACK_BIND_HOSTS.has(host.toLowerCase())) {
          throw new UsageError(`${what}: bind listens on 127.0.0.1 only (not "${host}"): a device port is this machine's shortcut, never a service for the network; write ${parts.slice(0, 3).join(':')}`);
        }
      }
      if (parts.length === 4 && parts[3].toLowerCase() !== 'tcp') throw new UsageError(`${what}: only tcp is supported (got "${parts[3]}")`);
      if (parts.length !== 3 && parts.length !== 4) throw new UsageError(`${what}: write <local-port>:<name or address>.diode:<remote-port>`);
      const localPort = parsePort(parts[0], `${what} local port`, true);
      const target = parseTargetHost(parts[1], parsePort(parts[2], `${what} remote port`), what);
      if (localPort !== 0 && specs.some((s) => s.localPort === localPort)) throw new UsageError(`${what}: local port ${localPort} is bound twice`);
      specs.push({ localPort, target, text });
    }
  }
  if (specs.length === 0) throw new UsageError('bind: nothing to bind; write diode bind <local-port>:<name or address>.diode:<remote-port> [...]');
  return specs;
}
