import { COMMANDS, findCommand, type CommandContext } from './commands.ts';
import { parseArgs, flagHelp } from './args.ts';
import { DiodeError, UsageError } from '../util/errors.ts';
import { resolveHome } from '../identity/home.ts';
import { versionString } from './version.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';

// The only place that calls process.exit and turns errors into one line.

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    `diode ${versionString()} — reach a device by its key: ssh pi@<address>.diode`,
    '',
    'usage: diode <command> [flags]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'diode <command> --help shows its flags. Flags take one or two dashes.',
  ].join('\n');
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once('SIGINT', on('SIGINT'));
    process.once('SIGTERM', on('SIGTERM'));
  });
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp() + '\n');
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-version' || name === 'version') {
    process.stdout.write(`diode ${versionString()}\n`);
    return 0;
  }
  const spec = findCommand(name);
  if (!spec) throw new UsageError(`unknown command "${name}"; commands: ${COMMANDS.map((c) => c.name).join(', ')} (diode --help)`);
  const args = parseArgs(rest, spec.flags, name);
  if (args.flags.help) {
    process.stdout.write(`${spec.summary}\n\nusage: ${spec.usage}\n\nflags:\n${flagHelp(spec.flags)}\n`);
    return 0;
  }
  const ctx: CommandContext = { home: resolveHome(args.flags.home as string | undefined), stopSignal: waitForSignal() };
  const module = await spec.load();
  return (await module.run(args, ctx)) ?? 0;
}

tuneGcForStreaming();
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof DiodeError) {
      process.stderr.write(`diode: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`diode: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(70);
  },
);
