import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { readAllStatuses } from '../../ops/control.ts';
import { formatStatuses } from '../../ops/format-status.ts';
import { SYSTEM_STATE_DIR } from '../../ops/unit.ts';

/** Exit statuses of `diode status` (as `tailscale status` scripts expect: 0 means usable). */
export const STATUS_EXIT = { connected: 0, notConnected: 1, nothingRuns: 3 } as const;

/**
 * The system agent's state directory, which `diode status` also reads when
 * no state directory was chosen (a service's agent, as on the Pi image or
 * from the Debian package, runs there as root or as user diode).
 * DIODE_SYSTEM_HOME moves it (tests).
 */
function systemHome(): string {
  return process.env.DIODE_SYSTEM_HOME || SYSTEM_STATE_DIR;
}

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const chosen = args.flags.home !== undefined || Boolean(process.env.DIODE_HOME);
  const system = systemHome();
  const homes = [ctx.home];
  if (!chosen && resolve(system) !== resolve(ctx.home) && existsSync(system)) homes.push(system);
  const reports = await Promise.all(homes.map(async (home) => ({ home, ...(await readAllStatuses(home)) })));
  const statuses = reports.flatMap((r) => r.statuses);
  const denied = reports.flatMap((r) => r.denied.map((path) => ({ home: r.home, path })));
  if (args.flags.json) process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
  else if (statuses.length > 0) process.stdout.write(formatStatuses(statuses));
  else if (denied.length === 0) process.stdout.write(`no diode agent runs with state directory ${homes.join(' or ')}\n`);
  // Another user's agents (a service's, as User=diode or root): not "nothing runs", but unknown.
  for (const { home, path } of denied) {
    const again = home === ctx.home && chosen ? `sudo diode status --home ${home}` : 'sudo diode status';
    const whose = home === system && !chosen ? "the system agent's " : '';
    process.stderr.write(`diode: status: may not read ${whose}${path} (permission denied): run as the agent's user or root (${again})\n`);
  }
  if (denied.length > 0) return STATUS_EXIT.notConnected;
  if (statuses.length === 0) return STATUS_EXIT.nothingRuns;
  return statuses.every((s) => s.connected) ? STATUS_EXIT.connected : STATUS_EXIT.notConnected;
}
