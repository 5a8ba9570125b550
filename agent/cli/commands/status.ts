import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { readAllStatuses } from '../../ops/control.ts';
import { formatStatuses } from '../../ops/format-status.ts';

/** Exit statuses of `diode status` (as `tailscale status` scripts expect: 0 means usable). */
export const STATUS_EXIT = { connected: 0, notConnected: 1, nothingRuns: 3 } as const;

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const statuses = await readAllStatuses(ctx.home);
  if (args.flags.json) process.stdout.write(JSON.stringify(statuses, null, 2) + '\n');
  else if (statuses.length === 0) process.stdout.write(`no diode agent runs with state directory ${ctx.home}\n`);
  else process.stdout.write(formatStatuses(statuses));
  if (statuses.length === 0) return STATUS_EXIT.nothingRuns;
  return statuses.every((s) => s.connected) ? STATUS_EXIT.connected : STATUS_EXIT.notConnected;
}
