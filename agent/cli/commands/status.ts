import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { readAllStatuses } from '../../ops/control.ts';
import { formatStatuses } from '../../ops/format-status.ts';

/** Exit statuses of `diode status` (as `tailscale status` scripts expect: 0 means usable). */
export const STATUS_EXIT = { connected: 0, notConnected: 1, nothingRuns: 3 } as const;

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const { statuses, denied } = await readAllStatuses(ctx.home);
  if (args.flags.json) process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
  else if (statuses.length > 0) process.stdout.write(formatStatuses(statuses));
  else if (denied.length === 0) process.stdout.write(`no diode agent runs with state directory ${ctx.home}\n`);
  // Another user's agents (a service's, as User=diode): not "nothing runs", but unknown.
  for (const path of denied) {
    process.stderr.write(`diode: status: may not read ${path} (permission denied): run as the agent's user or root (sudo diode status --home ${ctx.home})\n`);
  }
  if (denied.length > 0) return STATUS_EXIT.notConnected;
  if (statuses.length === 0) return STATUS_EXIT.nothingRuns;
  return statuses.every((s) => s.connected) ? STATUS_EXIT.connected : STATUS_EXIT.notConnected;
}
