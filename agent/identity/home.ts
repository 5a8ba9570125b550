import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * The state directory holds the identity key, the config and (for a relay)
 * its certificate. Root gets /var/lib/diode so a system service and an admin
 * shell agree on one identity.
 */
export function resolveHome(flag?: string): string {
  if (flag) return flag;
  if (process.env.DIODE_HOME) return process.env.DIODE_HOME;
  if (typeof process.getuid === 'function' && process.getuid() === 0) return '/var/lib/diode';
  return join(homedir(), '.config', 'diode');
}
