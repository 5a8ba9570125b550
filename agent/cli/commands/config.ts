import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { ConfigStore, parseAssignment, CONFIG_KEYS } from '../../config/index.ts';
import { UsageError } from '../../util/errors.ts';

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const sets = (args.flags.set as string[] | undefined) ?? [];
  const deletes = (args.flags.delete as string[] | undefined) ?? [];
  if (args.positionals.length > 0) throw new UsageError(`config: unexpected "${args.positionals[0]}"; write -set key=value, -list or -delete key`);
  if (sets.length === 0 && deletes.length === 0 && !args.flags.list) {
    throw new UsageError(`config: nothing to do; write -set key=value, -list or -delete key (keys: ${Object.keys(CONFIG_KEYS).join(', ')})`);
  }
  // Validate every assignment before writing any, so a bad one changes nothing.
  const store = new ConfigStore(ctx.home);
  const planned = sets.map(parseAssignment).map(([k, v]) => [k, CONFIG_KEYS[k] ? CONFIG_KEYS[k].parse(v) : store.get(k)] as const);
  for (const key of deletes) store.get(key);
  for (const [key, value] of planned) {
    store.set(key, value as string);
    process.stdout.write(`${key}=${value}\n`);
  }
  for (const key of deletes) process.stdout.write(store.delete(key) ? `deleted ${key}\n` : `${key} was not set\n`);
  if (args.flags.list) {
    for (const [key, value] of store.list()) process.stdout.write(`${key}=${value}\n`);
  }
  return 0;
}
