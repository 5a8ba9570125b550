// Not config/index.ts: that would load conf, which only `diode config` needs.
import { readConfigValue } from '../config/read.ts';
import { parseRelayList, type RelayEntry } from '../config/relay-entry.ts';
import { UsageError } from '../util/errors.ts';

/**
 * --relay (repeatable, comma lists) wins over the "relays" config key. Every
 * entry is checked here, at start: a bad one is one line and exit 2, never a
 * retry loop.
 */
export function resolveRelays(flag: string[] | undefined, home: string): RelayEntry[] {
  const source = flag && flag.length > 0 ? flag.join(',') : readConfigValue(home, 'relays');
  if (!source) throw new UsageError('no relay configured; pass --relay host:port or run: diode config -set relays=host:port');
  const relays = parseRelayList(source);
  if (relays.length === 0) throw new UsageError(`no relay in "${source}"; pass --relay host:port`);
  return relays;
}
