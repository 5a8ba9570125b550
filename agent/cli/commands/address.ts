import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { renderQr, parseQrTheme } from '../qr.ts';
import { UsageError } from '../../util/errors.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError(`address: unexpected "${args.positionals[0]}"; write diode address [--qr]`);
  const theme = parseQrTheme(args.flags['qr-theme'] as string | undefined);
  if (args.flags['qr-theme'] !== undefined && !args.flags.qr) throw new UsageError('address: --qr-theme goes with --qr');
  const { identity, created, path } = loadOrCreateIdentity(ctx.home);
  if (created) process.stderr.write(`created a new identity in ${path}\n`);
  process.stdout.write(identity.address + '\n');
  if (args.flags.qr) process.stdout.write(renderQr(identity.address, theme));
  return 0;
}
