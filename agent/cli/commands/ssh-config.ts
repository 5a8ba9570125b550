import { createRequire } from 'node:module';
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { UsageError } from '../../util/errors.ts';
import { installSshConfig, sshConfigBlock } from '../../client/ssh-config.ts';
import { formatRelayEntry, parseRelayList } from '../../config/relay-entry.ts';

/** True inside a Node single executable (then process.execPath is diode itself). */
function isSea(): boolean {
  try {
    const sea = createRequire(process.execPath)('node:sea') as { isSea?: () => boolean };
    return sea.isSea?.() === true;
  } catch {
    return false;
  }
}

/** The absolute command that runs this very diode: the SEA executable, or node plus the bundle. */
export function selfCommand(): string[] {
  if (isSea()) return [process.execPath];
  const script = process.argv[1];
  if (!script) throw new UsageError('ssh-config: cannot tell which file runs diode (no script path)');
  return [process.execPath, realpathSync(resolve(script))];
}

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError(`ssh-config: unexpected "${args.positionals[0]}"`);
  const command = selfCommand();
  const flags: string[] = [];
  const relay = args.flags.relay as string[] | undefined;
  // Checked now, as every command checks it at start: a bad entry baked into the block would only fail at ssh time.
  const relays = parseRelayList((relay ?? []).join(','));
  if (relays.length > 0) flags.push('--relay', relays.map(formatRelayEntry).join(','));
  // A home chosen by flag or by DIODE_HOME is baked in: the shell ssh runs the ProxyCommand from may not have either.
  if (typeof args.flags.home === 'string' || process.env.DIODE_HOME) flags.push('--home', resolve(ctx.home));
  const block = sshConfigBlock(command, flags);
  if (!args.flags.install) {
    process.stdout.write(block);
    return 0;
  }
  const path = join(homedir(), '.ssh', 'config');
  const { result, backup, warnings } = installSshConfig(path, block);
  const note = result === 'unchanged' ? 'already there; nothing changed' : backup ? `${result} (previous file kept as ${backup})` : `${result} (new file)`;
  process.stdout.write(`${path}: diode block ${note}\n`);
  for (const warning of warnings) process.stderr.write(`diode: warning: ${warning}\n`);
  return 0;
}
