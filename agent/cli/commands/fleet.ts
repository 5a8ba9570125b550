// `diode fleet <subcommand>`: fleet administration from the command line.
// Progress goes to stderr, results to stdout (an address, a member list), so
// `FLEET=$(diode fleet deploy)` works. Fleet errors leave as one line with
// exit status 3; `check` answers with 0 (member) or 1 (not a member).
import type { ParsedArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { ConfigStore } from '../../config/index.ts';
import { DiodeError, UsageError } from '../../util/errors.ts';
import {
  FleetError,
  addMembers,
  deployFleet,
  isMember,
  listMembers,
  readAdminKey,
  removeMembers,
  type FleetAdminOptions,
  type MembersResult,
} from '../../fleet/index.ts';

/** Exit status of `fleet check` for a member, a non-member, and of any fleet error. */
export const EXIT_MEMBER = 0;
export const EXIT_NOT_MEMBER = 1;
export const EXIT_FLEET_ERROR = 3;
/** Interval of the elapsed-time progress line while waiting on a terminal, in ms. */
const TICK_MS = 1_000;

const SUBCOMMANDS = ['deploy', 'add', 'remove', 'list', 'check', 'ui'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

export async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const [sub, ...rest] = args.positionals;
  if (!sub || !(SUBCOMMANDS as readonly string[]).includes(sub)) {
    const what = sub ? `unknown subcommand "${sub}"` : 'missing subcommand';
    throw new UsageError(`fleet: ${what}; write diode fleet ${SUBCOMMANDS.join('|')} (diode fleet --help)`);
  }
  const progress = new Progress();
  try {
    return await dispatch(sub as Subcommand, rest, args, ctx, progress);
  } catch (err) {
    if (err instanceof FleetError) throw new DiodeError(err.code, err.message, EXIT_FLEET_ERROR);
    throw err;
  } finally {
    progress.end();
  }
}

async function dispatch(sub: Subcommand, rest: string[], args: ParsedArgs, ctx: CommandContext, progress: Progress): Promise<number> {
  const config = new ConfigStore(ctx.home);
  const flag = (name: string) => args.flags[name] as string | undefined;
  if (sub === 'ui') {
    expectArgs(sub, rest, 0, 0);
    const { serveFleetUi } = await import('./fleet-ui.ts');
    return serveFleetUi({ listen: flag('listen')!, fleet: flag('fleet') ?? config.get('fleet'), stopSignal: ctx.stopSignal });
  }
  const rpc = flag('rpc') ?? config.get('rpc');
  if (!rpc) throw new UsageError(`fleet ${sub}: no JSON-RPC endpoint; pass --rpc URL or run diode config -set rpc=URL`);
  const options: FleetAdminOptions = { rpc, onProgress: (line) => progress.line(line) };
  if (sub !== 'deploy') {
    const fleet = flag('fleet') ?? config.get('fleet');
    if (!fleet) throw new UsageError(`fleet ${sub}: no fleet contract; pass --fleet 0x... or run diode config -set fleet=0x...`);
    options.fleet = fleet;
  }
  if (sub === 'deploy' || sub === 'add' || sub === 'remove') {
    options.adminKey = await readAdminKey({ file: flag('admin-key-file') });
  }
  switch (sub) {
    case 'deploy': {
      expectArgs(sub, rest, 0, 0);
      const result = await deployFleet(options);
      process.stdout.write(`${result.fleet}\n`);
      process.stderr.write(`use it: diode config -set fleet=${result.fleet} (on the device and on each client)\n`);
      return 0;
    }
    case 'add':
    case 'remove': {
      expectArgs(sub, rest, 1, Infinity);
      const result = await (sub === 'add' ? addMembers : removeMembers)(options, rest);
      process.stderr.write(summary(sub, rest.length, result));
      return 0;
    }
    case 'list': {
      expectArgs(sub, rest, 0, 0);
      const members = await listMembers(options);
      process.stdout.write(members.map((m) => `${m}\n`).join(''));
      process.stderr.write(`${members.length} member${members.length === 1 ? '' : 's'} in fleet ${options.fleet}\n`);
      return 0;
    }
    case 'check': {
      expectArgs(sub, rest, 1, 1);
      const member = await isMember(options, rest[0]!);
      process.stdout.write(`${rest[0]} is ${member ? '' : 'not '}a member of fleet ${options.fleet}\n`);
      return member ? EXIT_MEMBER : EXIT_NOT_MEMBER;
    }
  }
}

function expectArgs(sub: Subcommand, rest: string[], min: number, max: number): void {
  if (rest.length < min) throw new UsageError(`fleet ${sub}: give ${min === max ? 'one' : 'at least one'} client address (0x followed by 40 hex digits)`);
  if (rest.length > max) throw new UsageError(`fleet ${sub}: unexpected "${rest[max]}"`);
}

function summary(sub: 'add' | 'remove', asked: number, result: MembersResult): string {
  const verb = sub === 'add' ? 'added' : 'removed';
  const unchanged = asked - result.changed.length;
  const note = unchanged > 0 ? ` (${unchanged} ${sub === 'add' ? 'already members or repeated' : 'not members or repeated'})` : '';
  return `${verb} ${result.changed.length} of ${asked}${note} in ${result.txs.length} transaction${result.txs.length === 1 ? '' : 's'}\n`;
}

/**
 * One stderr line per step. On a terminal, a step that waits ("waiting for
 * 1 confirmation") keeps counting seconds on its line until the next step.
 */
class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #timer: NodeJS.Timeout | undefined;

  line(text: string): void {
    this.end();
    if (!this.#tty || !/waiting/.test(text)) {
      process.stderr.write(`${text}\n`);
      return;
    }
    const started = Date.now();
    const draw = () => process.stderr.write(`\r${text} (${Math.floor((Date.now() - started) / 1_000)} s)`);
    draw();
    this.#timer = setInterval(draw, TICK_MS);
    this.#timer.unref();
  }

  /** Finishes a counting line, if any. */
  end(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    process.stderr.write('\n');
  }
}
