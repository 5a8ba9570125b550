import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { loadOrCreateIdentity } from '../../identity/index.ts';
import { renderQr } from '../qr.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const { identity, created, path } = loadOrCreateIdentity(ctx.home);
  if (created) process.stderr.write(`created a new identity in ${path}\n`);
  process.stdout.write(identity.address + '\n');
  if (args.flags.qr) process.stdout.write(renderQr(identity.address));
  return 0;
}
