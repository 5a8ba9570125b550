import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { DiodeError, UsageError } from '../../util/errors.ts';
import { parseAddress } from '../../identity/address.ts';
import { parseName } from '../../names/name.ts';
import { knownNamesFile, localNamesFile } from '../../names/local.ts';
import { peerText } from '../../util/escape.ts';

const USAGE = 'diode name set <name> 0x<address> | list [--json] | rm <name> | forget <name>';

/**
 * `diode name`: a person's own names (looked up first, never sent to a
 * relay) and the names this machine pinned when a relay first taught them.
 */
export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const [sub, ...rest] = args.positionals;
  const local = localNamesFile(ctx.home);
  const known = knownNamesFile(ctx.home);
  const want = (n: number, shape: string) => {
    if (rest.length !== n) throw new UsageError(`name ${sub}: write diode name ${sub} ${shape}`);
  };
  if (args.flags.json && sub !== 'list') throw new UsageError('name: --json goes with list');
  switch (sub) {
    case 'set': {
      want(2, '<name> 0x<address>');
      const name = parseName(rest[0].replace(/\.diode$/i, ''), 'name set');
      const address = parseAddress(rest[1].replace(/\.diode$/i, ''), 'name set');
      const was = local.set({ name, address });
      process.stdout.write(`${name}.diode → ${address} (your name${was && was !== address ? `; was ${was}` : ''})\n`);
      const pinned = known.get(name);
      if (pinned && pinned.address !== address) process.stdout.write(`it overrides what a relay said (${pinned.address}, pinned in ${known.path})\n`);
      return 0;
    }
    case 'rm':
    case 'forget': {
      want(1, '<name>');
      const name = parseName(rest[0].replace(/\.diode$/i, ''), `name ${sub}`);
      const file = sub === 'rm' ? local : known;
      const gone = file.remove(name);
      if (!gone) {
        const hint = sub === 'rm' ? (known.get(name) ? `; it is pinned from a relay: diode name forget ${name}` : '') : local.get(name) ? `; it is one of your own names: diode name rm ${name}` : '';
        throw new DiodeError('ENAME_NONE', `name ${sub}: ${name} is not in ${file.path}${hint}`);
      }
      process.stdout.write(
        sub === 'rm'
          ? `removed your name ${name} (was ${gone.address})\n`
          : `forgot ${name} (was pinned to ${gone.address}); the next lookup pins what the relay says then\n`,
      );
      return 0;
    }
    case 'list': {
      want(0, '[--json]');
      const rows = [
        ...local.entries().map((e) => ({ name: e.name, address: e.address, source: 'yours' as const })),
        ...known.entries().map((e) => ({ name: e.name, address: e.address, source: 'pinned' as const, ...(e.comment ? { learned: e.comment } : {}) })),
      ];
      if (args.flags.json) {
        process.stdout.write(`${JSON.stringify(rows)}\n`);
        return 0;
      }
      if (rows.length === 0) {
        process.stdout.write(`no names yet: diode name set <name> 0x<address> names a device yourself; names learned from relays are listed here too\n`);
        return 0;
      }
      const width = Math.max(...rows.map((r) => r.name.length)) + 2;
      const shadowed = new Set(local.entries().map((e) => e.name));
      for (const r of rows) {
        const note = r.source === 'yours' ? 'yours' : `pinned${'learned' in r ? ` (${peerText(r.learned ?? '')})` : ''}${shadowed.has(r.name) ? '; your own name wins' : ''}`;
        process.stdout.write(`${r.name.padEnd(width)}${r.address}  ${note}\n`);
      }
      return 0;
    }
    default:
      throw new UsageError(sub === undefined ? `name: write ${USAGE}` : `name: unknown subcommand "${sub}"; write ${USAGE}`);
  }
}
