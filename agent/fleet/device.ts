// The device side of protected ports: reads the fleet settings from the
// config (keys `fleet`, `rpc`, `fleet-ttl`) and opens a FleetMembership.
// A device asked to publish a protected port without them refuses to start.
import { readConfigValue } from '../config/read.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { openProvider } from './rpc.ts';
import { FleetMembership } from './membership.ts';

/** Default for the `fleet-ttl` config key, in seconds. */
export const DEFAULT_FLEET_TTL_S = 60;

export interface FleetSettings {
  fleet: string;
  rpc: string;
  ttlSeconds: number;
}

/** The fleet settings from the config in `home`; throws ECONFIG naming the missing keys. */
export function fleetSettings(home: string): FleetSettings {
  const fleet = readConfigValue(home, 'fleet');
  const rpc = readConfigValue(home, 'rpc');
  const missing = [fleet ? '' : 'fleet=0x<fleet contract>', rpc ? '' : 'rpc=<JSON-RPC URL>'].filter(Boolean);
  if (!fleet || !rpc) {
    throw new DiodeError(
      'ECONFIG',
      `-protected ports need a fleet contract: run diode config ${missing.map((m) => `-set ${m}`).join(' ')} (state directory ${home})`,
    );
  }
  const ttl = readConfigValue(home, 'fleet-ttl');
  return { fleet, rpc, ttlSeconds: ttl === undefined ? DEFAULT_FLEET_TTL_S : Number(ttl) };
}

/** Opens the membership cache for protected ports; `log` gets one line per denial caused by an error. */
export function openFleetMembership(settings: FleetSettings, log: (line: string) => void): FleetMembership {
  return new FleetMembership({ ...settings, log });
}

/** ms the start-up check gives the fleet's JSON-RPC endpoint to answer eth_chainId. */
export const RPC_PROBE_TIMEOUT_MS = 5_000;

/**
 * Warns once at start when the fleet's RPC does not answer: until it does,
 * every protected stream is denied (the device fails closed). Never throws.
 */
export async function warnUnreachableRpc(rpc: string, warn: (line: string) => void): Promise<void> {
  try {
    const provider = await openProvider(rpc, RPC_PROBE_TIMEOUT_MS);
    provider.destroy();
  } catch (err) {
    warn(`the fleet RPC ${rpc} cannot be reached (${errorMessage(err)}); protected ports deny every client until it answers`);
  }
}
