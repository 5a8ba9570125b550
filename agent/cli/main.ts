import { COMMANDS, GLOBAL_FLAGS, findCommand, type CommandContext, type CommandSpec } from './commands.ts';
import { parseArgs, flagHelp, type ParsedArgs } from './args.ts';
import { DiodeError, UsageError } from '../util/errors.ts';
import { escapeText } from '../util/escape.ts';
import { parseLogFormat, parseLogLevel, setLogFormat, setLogLevel } from '../util/log.ts';
import { resolveHome } from '../identity/home.ts';
import { versionString } from './version.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';

// The only place that calls process.exit and turns errors into one line.

const HELP_WORDS = new Set(['--help', '-help', '-h', 'help']);
const VERSION_WORDS = new Set(['--version', '-version', '-v', 'version']);

function topHelp(): string {
  const rows: Array<[string, string]> = [
    ...COMMANDS.map((c): [string, string] => [c.name, c.summary]),
    ['help [command]', 'show this help, or one command\'s flags (same as diode <command> --help)'],
    ['version', 'print the version and the commit it was built from (also -v, --version)'],
  ];
  const width = Math.max(...rows.map(([name]) => name.length)) + 2;
  const globals = GLOBAL_FLAGS.map((f) => `--${f.name} ${f.placeholder ?? 'VALUE'}`).join(', ');
  return [
    `diode ${versionString()} — reach a device by its key or its name: ssh pi@<address>.diode, ssh pi@<name>.diode`,
    '',
    'usage: diode [global flags] <command> [flags]',
    '',
    'commands:',
    ...rows.map(([name, summary]) => `  ${name.padEnd(width)}${summary}`),
    '',
    `global flags (before or after the command): ${globals}`,
    'diode <command> --help shows its flags. Flags take one or two dashes.',
  ].join('\n');
}

async function commandHelp(spec: CommandSpec): Promise<string> {
  const details = spec.details ? `\n${await spec.details()}\n` : '';
  return `${spec.summary}\n\nusage: ${spec.usage}\n\nflags:\n${flagHelp(spec.flags)}\n${details}`;
}

function unknownCommand(name: string): UsageError {
  return new UsageError(`unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(', ')} (diode --help)`);
}

/**
 * Splits `diode [global flags] <command> [args]`: the global flags before the
 * command are handed to the command's own parser, as if written after it.
 */
function splitGlobalFlags(argv: string[]): { globals: string[]; name: string | undefined; rest: string[] } {
  const globals: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('-') || HELP_WORDS.has(arg) || VERSION_WORDS.has(arg)) break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const flagName = eq >= 0 ? body.slice(0, eq) : body;
    if (!GLOBAL_FLAGS.some((f) => f.name === flagName)) {
      throw new UsageError(`unknown flag "${arg}" before the command; global flags: ${GLOBAL_FLAGS.map((f) => `--${f.name}`).join(', ')} (diode --help)`);
    }
    if (eq >= 0) globals.push(`--${body}`);
    else {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      globals.push(`--${flagName}`, argv[++i]);
    }
  }
  return { globals, name: argv[i], rest: argv.slice(i + 1) };
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once('SIGINT', on('SIGINT'));
    process.once('SIGTERM', on('SIGTERM'));
  });
}

/** For a command that parses its own arguments: only a leading --help is taken here. */
function rawArgs(rest: string[]): ParsedArgs {
  if (rest[0] === '--help' || rest[0] === '-h' || rest[0] === '-help') return { flags: { help: true }, positionals: [] };
  return { flags: {}, positionals: rest };
}

async function main(argv: string[]): Promise<number> {
  const { globals, name, rest } = splitGlobalFlags(argv);
  if (!name || HELP_WORDS.has(name)) {
    const topic = name ? rest.find((a) => !a.startsWith('-')) : undefined;
    if (topic === 'help' || topic === 'version') {
      // Listed in the top-level help as commands, so they have help of their own.
      process.stdout.write(topic === 'help' ? topHelp() + '\n' : 'print the version and the commit it was built from\n\nusage: diode version (also -v, --version)\n');
      return 0;
    }
    if (topic) {
      const spec = findCommand(topic);
      if (!spec) throw unknownCommand(topic);
      process.stdout.write(await commandHelp(spec));
      return 0;
    }
    process.stdout.write(topHelp() + '\n');
    return name ? 0 : 2;
  }
  if (VERSION_WORDS.has(name)) {
    process.stdout.write(`diode ${versionString()}\n`);
    return 0;
  }
  const spec = findCommand(name);
  if (!spec) throw unknownCommand(name);
  for (let i = 0; i < globals.length; i++) {
    const flag = globals[i].replace(/^--/, '').split('=')[0];
    if (!spec.flags.some((f) => f.name === flag)) throw new UsageError(`--${flag} does not apply to diode ${name}`);
    if (!globals[i].includes('=')) i++;
  }
  const args = spec.rawArgs ? rawArgs(rest) : parseArgs([...globals, ...rest], spec.flags, name);
  if (args.flags['log-format'] !== undefined) setLogFormat(parseLogFormat(String(args.flags['log-format']), '--log-format'));
  else if (process.env.DIODE_LOG_FORMAT !== undefined) setLogFormat(parseLogFormat(process.env.DIODE_LOG_FORMAT, 'DIODE_LOG_FORMAT'));
  if (args.flags.help) {
    process.stdout.write(await commandHelp(spec));
    return 0;
  }
  // The log level is checked before anything starts: a typo never silently means "info".
  const levelFlag = args.flags['log-level'] as string | undefined;
  if (levelFlag !== undefined) setLogLevel(parseLogLevel(levelFlag, '--log-level'));
  else if (process.env.DIODE_LOG) setLogLevel(parseLogLevel(process.env.DIODE_LOG, 'DIODE_LOG'));
  let stopSignal: Promise<string> | undefined;
  const ctx: CommandContext = {
    home: resolveHome(args.flags.home as string | undefined),
    get stopSignal() {
      return (stopSignal ??= waitForSignal());
    },
  };
  // Handlers before anything starts for the commands that clean up on a stop; the rest keep the default action.
  if (spec.untilStopped) void ctx.stopSignal;
  const module = await spec.load();
  return (await module.run(args, ctx)) ?? 0;
}

tuneGcForStreaming();
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof DiodeError) {
      // Messages may quote a relay's or device's text: no control character reaches the terminal (lines we wrote stay lines).
      process.stderr.write(`diode: ${err.message.split('\n').map(escapeText).join('\n')}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`diode: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(70);
  },
);
