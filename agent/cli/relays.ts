// Not config/index.ts: that would load conf, which only `diode config` needs.
import { readConfigValue } from '../config/read.ts';
import { DEFAULT_RELAY_PORT } from '../config/keys.ts';
import { parseHostPort, type HostPort } from '../util/hostport.ts';
import { UsageError } from '../util/errors.ts';

/** --relay (repeatable, comma lists) wins over the "relays" config key. */
export function resolveRelays(flag: string[] | undefined, home: string): HostPort[] {
  const source = flag && flag.length > 0 ? flag.join(',') : readConfigValue(home, 'relays');
  if (!source) throw new UsageError('no relay configured; pass --relay host:port or run: diode config -set relays=host:port');
  return source
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => parseHostPort(item.includes(':') ? item : `${item}:${DEFAULT_RELAY_PORT}`, `relay "${item}"`));
}
