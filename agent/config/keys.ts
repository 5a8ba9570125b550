import { rpcUrlProblem } from '../fleet/rpc-url.ts';
import { parseAddress } from '../identity/address.ts';
import { parseRelayList, formatRelayEntry } from './relay-entry.ts';
import { UsageError } from '../util/errors.ts';
import { parseNameList } from '../names/name.ts';

/** One config key: what it means and how a value is checked and normalised. */
export interface ConfigKeySpec {
  description: string;
  /** A value to show in a `diode config -set key=<example>` hint. */
  example: string;
  /** Returns the normalised value to store, or throws UsageError naming the value. */
  parse(value: string): string;
}

export { DEFAULT_RELAY_PORT } from './relay-entry.ts';

function parseRelays(value: string): string {
  const items = parseRelayList(value);
  if (items.length === 0) throw new UsageError(`relays: "${value}" is empty; give host:port[,host:port...] (or 0x<relay address>@host:port to pin each)`);
  return items.map(formatRelayEntry).join(',');
}

function parseRpcUrl(value: string): string {
  const problem = rpcUrlProblem(value, 'rpc');
  if (problem) throw new UsageError(problem);
  return value;
}

function parseSeconds(key: string) {
  return (value: string): string => {
    if (!/^\d+$/.test(value.trim()) || Number(value) < 1 || Number(value) > 86400) {
      throw new UsageError(`${key}: "${value}" must be a whole number of seconds from 1 to 86400`);
    }
    return String(Number(value));
  };
}

export const CONFIG_KEYS: Readonly<Record<string, ConfigKeySpec>> = Object.freeze({
  relays: { description: 'comma-separated relays, tried in order: host:port, or 0x<relay address>@host:port to pin one', example: 'host:port', parse: parseRelays },
  fleet: { description: 'fleet contract address for -protected ports', example: '0x<contract address>', parse: (v) => parseAddress(v, 'fleet') },
  rpc: { description: 'JSON-RPC URL of the chain that holds the fleet contract', example: 'URL', parse: parseRpcUrl },
  name: { description: 'the name diode publish claims at its relay (kitchen: ssh pi@kitchen.diode); a comma list for several', example: 'kitchen', parse: (v) => parseNameList(v, 'name').join(',') },
  'fleet-ttl': { description: 'seconds a fleet membership answer is cached (default 60)', example: '60', parse: parseSeconds('fleet-ttl') },
});

export function configKeySpec(key: string): ConfigKeySpec {
  const spec = Object.prototype.hasOwnProperty.call(CONFIG_KEYS, key) ? CONFIG_KEYS[key] : undefined;
  if (!spec) throw new UsageError(`unknown config key "${key}"; known keys: ${Object.keys(CONFIG_KEYS).join(', ')}`);
  return spec;
}
