import { ConfigStore, DEFAULT_RELAY_PORT } from '../config/index.ts';
import { parseHostPort, type HostPort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';

/** --relay (repeatable, comma lists) wins over the "relays" config key. */
export function resolveRelays(flag: string[] | undefined, home: string): HostPort[] {
  const source = flag && flag.length > 0 ? flag.join(',') : new ConfigStore(home).get('relays');
  if (!source) throw new UsageError('no relay configured; pass --relay host:port or run: diode config -set relays=host:port');
  return source
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => parseHostPort(item.includes(':') ? item : `${item}:${DEFAULT_RELAY_PORT}`, `relay "${item}"`));
}
