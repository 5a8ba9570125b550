import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { ConfigStore, parseAssignment, CONFIG_KEYS } from '../../config/index.ts';
import { UsageError, errorMessage } from '../../util/errors.ts';
import { LEARNED_RELAY_DELAY_MS, readLearnedRelays } from '../../link/learned-relays.ts';
import { formatRelayEntry } from '../../config/relay-entry.ts';

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
    const entries = store.list();
    for (const [key, value] of entries) process.stdout.write(`${key}=${value}\n`);
    if (entries.length === 0) process.stdout.write(`nothing set in ${store.path}\n`);
    process.stdout.write(`${effectiveRelays(args.flags.relay as string[] | undefined, store)}\n`);
    for (const line of learnedRelayLines(ctx.home)) process.stdout.write(`${line}\n`);
  } else if (args.flags.relay) {
    throw new UsageError('config: --relay only shows with -list which relays are in effect; to store them write -set relays=host:port');
  }
  return 0;
}

/** The relays the agents learned (kept apart from the configured ones), and those that retired. */
function learnedRelayLines(home: string): string[] {
  const { relays, retired, problem } = readLearnedRelays(home);
  const lines: string[] = [];
  if (problem) lines.push(`learned relays: unreadable: ${problem}`);
  if (relays.length > 0) {
    const list = relays.map((r) => `${formatRelayEntry(r.entry)} (last seen ${new Date(r.lastSeen).toISOString().slice(0, 10)}, from ${r.from})`);
    lines.push(`learned relays (tried after the relays in effect have failed for ${LEARNED_RELAY_DELAY_MS / 1000} s): ${list.join(', ')}`);
  }
  if (retired.length > 0) lines.push(`retired relays (tried last): ${retired.map((r) => `${r.address} (since ${new Date(r.at).toISOString().slice(0, 10)})`).join(', ')}`);
  return lines;
}

/** One line: the relays the agents would use now, and where that list comes from. */
function effectiveRelays(flag: string[] | undefined, store: ConfigStore): string {
  if (flag && flag.length > 0) {
    const list = CONFIG_KEYS.relays.parse(flag.join(','));
    return `relays in effect: ${list} (from --relay)`;
  }
  let stored: string | undefined;
  try {
    stored = store.get('relays');
  } catch (err) {
    return `relays in effect: none; ${errorMessage(err)}`;
  }
  if (stored) {
    // A hand-edited file can hold what -set would refuse; the agents refuse it at start, so say so here.
    let list: string;
    try {
      list = CONFIG_KEYS.relays.parse(stored);
    } catch (err) {
      return `relays in effect: none; the "relays" key in ${store.path} is refused by every agent (${errorMessage(err)}); fix it with diode config -set relays=host:port`;
    }
    return `relays in effect: ${list} (from the "relays" key in ${store.path}; --relay overrides it)`;
  }
  return 'relays in effect: none; pass --relay host:port or run diode config -set relays=host:port';
}
