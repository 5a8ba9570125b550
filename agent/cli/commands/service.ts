import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { ParsedArgs } from '../args.ts';
import { parseArgs } from '../args.ts';
import type { CommandContext } from '../commands.ts';
import { findCommand } from '../commands.ts';
import { versionString } from '../version.ts';
import { resolveHome } from '../../identity/home.ts';
import { DiodeError, UsageError } from '../../util/errors.ts';
import { SERVICE_ROLES, SERVICE_USER, SYSTEM_STATE_DIR, renderUnit, unitName, type ServiceRole } from '../../ops/unit.ts';

const USAGE = [
  'diode service install [--user] [--print] <publish|socksd|bind|relay> [its flags]',
  'diode service uninstall [--user] <role>',
  'diode service status [--user] [<role>]',
].join('\n       ');

/** How this very program is started: the single executable, or node with the bundle. */
export function selfExec(): string[] {
  const script = process.argv[1];
  if (script && /\.(c|m)?js$/.test(script)) return [process.execPath, resolve(script)];
  return [process.execPath];
}

function unitDir(user: boolean): string {
  if (!user) return '/etc/systemd/system';
  return join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'systemd', 'user');
}

/** Leading service options (--user, --print) before the role. */
function takeOptions(argv: string[], allowed: string[]): { options: Set<string>; rest: string[] } {
  const options = new Set<string>();
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-'); i++) {
    const name = argv[i].replace(/^--?/, '');
    if (!allowed.includes(name)) throw new UsageError(`service: unknown option "${argv[i]}" before the command; options: ${allowed.map((a) => `--${a}`).join(', ')}`);
    options.add(name);
  }
  return { options, rest: argv.slice(i) };
}

function role(text: string | undefined): ServiceRole {
  if (!text || !SERVICE_ROLES.includes(text as ServiceRole)) {
    throw new UsageError(`service: name the command to run: ${SERVICE_ROLES.join(', ')}${text ? ` (not "${text}")` : ''}\nusage: ${USAGE}`);
  }
  return text as ServiceRole;
}

/** Runs systemctl, inheriting the terminal; a missing or inactive systemd is one clear error. */
function systemctl(user: boolean, args: string[], allowFailure = false): number {
  const argv = [...(user ? ['--user'] : []), ...args];
  const r = spawnSync('systemctl', argv, { stdio: 'inherit' });
  if (r.error) throw new DiodeError('ESYSTEMD', `cannot run systemctl: ${r.error.message}`);
  if (r.status !== 0 && !allowFailure) throw new DiodeError('ESYSTEMD', `systemctl ${argv.join(' ')} failed (exit ${r.status})`);
  return r.status ?? 1;
}

function systemdRuns(user: boolean): boolean {
  if (!user) return existsSync('/run/systemd/system');
  const r = spawnSync('systemctl', ['--user', 'is-system-running'], { stdio: 'ignore' });
  return !r.error && r.status !== null && existsSync('/run/systemd/system');
}

function ensureServiceUser(): void {
  if (spawnSync('id', ['-u', SERVICE_USER], { stdio: 'ignore' }).status === 0) return;
  const r = spawnSync('useradd', ['--system', '--home-dir', SYSTEM_STATE_DIR, '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', SERVICE_USER], { stdio: 'inherit' });
  if (r.status !== 0) throw new DiodeError('ESYSTEMD', `cannot create the system user "${SERVICE_USER}" (useradd exit ${r.status ?? r.error?.message})`);
}

export async function run(args: ParsedArgs, _ctx: CommandContext): Promise<number> {
  const [sub, ...argv] = args.positionals;
  if (sub === 'install') return install(argv);
  if (sub === 'uninstall') return uninstall(argv);
  if (sub === 'status') return status(argv);
  throw new UsageError(`service: ${sub ? `unknown subcommand "${sub}"` : 'name a subcommand'}\nusage: ${USAGE}`);
}

function install(argv: string[]): number {
  const { options, rest } = takeOptions(argv, ['user', 'print']);
  const r = role(rest[0]);
  const commandArgs = rest.slice(1);
  // The command's own flags are checked now, not at the first start.
  const spec = findCommand(r)!;
  const parsed = parseArgs(commandArgs, spec.flags, r);
  if (parsed.flags.help) throw new UsageError(`service: --help is not a service's flag`);
  const user = options.has('user');
  if (!user && parsed.flags.home === undefined && process.env.DIODE_HOME) {
    throw new UsageError(`service: DIODE_HOME is set; a system service uses ${SYSTEM_STATE_DIR}: pass --home explicitly to keep another state directory`);
  }
  const home = typeof parsed.flags.home === 'string' ? resolve(resolveHome(parsed.flags.home)) : undefined;
  const unit = renderUnit({ role: r, args: commandArgs, exec: selfExec(), user, home, version: versionString() });
  if (options.has('print')) {
    process.stdout.write(unit);
    return 0;
  }
  if (!user && process.getuid?.() !== 0) throw new DiodeError('EPERM', 'service install: a system unit needs root (sudo diode service install ...), or use --user');
  const path = join(unitDir(user), unitName(r));
  if (!systemdRuns(user)) throw new DiodeError('ESYSTEMD', `systemd is not running here; the unit would be ${path} (diode service install --print ... shows it)`);
  if (!user) ensureServiceUser();
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, unit, { mode: 0o644 });
  renameSync(tmp, path);
  process.stdout.write(`wrote ${path}\n`);
  systemctl(user, ['daemon-reload']);
  systemctl(user, ['enable', '--now', unitName(r)]);
  // A running unit picks up the new command line only on restart.
  systemctl(user, ['restart', unitName(r)]);
  process.stdout.write(`${unitName(r)} enabled and started; see: diode service status${user ? ' --user' : ''} ${r}\n`);
  return 0;
}

function uninstall(argv: string[]): number {
  const { options, rest } = takeOptions(argv, ['user']);
  const r = role(rest[0]);
  const user = options.has('user');
  const path = join(unitDir(user), unitName(r));
  if (!existsSync(path)) throw new DiodeError('ENOUNIT', `no unit ${path} (written by diode service install)`);
  if (systemdRuns(user)) systemctl(user, ['disable', '--now', unitName(r)], true);
  rmSync(path);
  if (systemdRuns(user)) systemctl(user, ['daemon-reload'], true);
  process.stdout.write(`removed ${path}; the state directory (key) is kept\n`);
  return 0;
}

function status(argv: string[]): number {
  const { options, rest } = takeOptions(argv, ['user']);
  const user = options.has('user');
  const units = rest.length > 0 ? rest.map((x) => unitName(role(x))) : ['diode-*.service'];
  if (!systemdRuns(user)) throw new DiodeError('ESYSTEMD', 'systemd is not running here (no /run/systemd/system)');
  // systemctl status: 0 running, 3 not running, 4 no such unit; passed on as is.
  return systemctl(user, ['status', '--no-pager', ...units], true);
}
