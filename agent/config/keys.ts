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

/** Release keys one agent may list (a current key and spares). */
export const MAX_UPDATE_KEYS = 8;
/** KiB/s: the slowest and fastest update-rate (a download must end some day; a Pi's uplink is small). */
const UPDATE_RATE_MIN_KIB = 16;
const UPDATE_RATE_MAX_KIB = 1024 * 1024;
/** KiB/s a release is downloaded at unless update-rate says otherwise: an ssh session on the same link keeps most of a slow uplink. */
export const DEFAULT_UPDATE_RATE_KIB = 512;

function parseUpdateKeys(value: string): string {
  const keys = value.split(',').map((k) => k.trim()).filter(Boolean);
  if (keys.length === 0) throw new UsageError(`update-keys: "${value}" names no key; give 0x<release key address>[,0x...] (diode release keygen prints one), or delete the key to never update`);
  if (keys.length > MAX_UPDATE_KEYS) throw new UsageError(`update-keys: ${keys.length} keys; at most ${MAX_UPDATE_KEYS}`);
  return [...new Set(keys.map((k) => parseAddress(k, 'update-keys')))].join(',');
}

function parseUpdateRate(value: string): string {
  const v = value.trim();
  if (!/^\d{1,7}$/.test(v) || Number(v) < UPDATE_RATE_MIN_KIB || Number(v) > UPDATE_RATE_MAX_KIB) {
    throw new UsageError(`update-rate: "${value}" must be a whole number of KiB/s from ${UPDATE_RATE_MIN_KIB} to ${UPDATE_RATE_MAX_KIB}`);
  }
  return String(Number(v));
}

export const CONFIG_KEYS: Readonly<Record<string, ConfigKeySpec>> = Object.freeze({
  relays: { description: 'comma-separated relays, tried in order: host:port, or 0x<relay address>@host:port to pin one', example: 'host:port', parse: parseRelays },
  fleet: { description: 'fleet contract address for -protected ports', example: '0x<contract address>', parse: (v) => parseAddress(v, 'fleet') },
  rpc: { description: 'JSON-RPC URL of the chain that holds the fleet contract', example: 'URL', parse: parseRpcUrl },
  name: { description: 'the name diode publish claims at its relay (kitchen: ssh pi@kitchen.diode); a comma list for several', example: 'kitchen', parse: (v) => parseNameList(v, 'name').join(',') },
  'fleet-ttl': { description: 'seconds a fleet membership answer is cached (default 60)', example: '60', parse: parseSeconds('fleet-ttl') },
  'update-keys': {
    description: 'release keys (addresses) whose signed releases diode publish installs from its relay; unset: it never updates',
    example: '0x<release key address>',
    parse: parseUpdateKeys,
  },
  'update-rate': { description: `KiB/s a release is downloaded at over the relay link (default ${DEFAULT_UPDATE_RATE_KIB})`, example: String(DEFAULT_UPDATE_RATE_KIB), parse: parseUpdateRate },
});

export function configKeySpec(key: string): ConfigKeySpec {
  const spec = Object.prototype.hasOwnProperty.call(CONFIG_KEYS, key) ? CONFIG_KEYS[key] : undefined;
  if (!spec) throw new UsageError(`unknown config key "${key}"; known keys: ${Object.keys(CONFIG_KEYS).join(', ')}`);
  return spec;
}
