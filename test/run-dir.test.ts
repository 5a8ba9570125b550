// Issue 24 item 9: an agent run as root does not follow the service user's links.
import test from 'ava';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { resolveHome } from '../agent/identity/home.ts';
import { startControlSocket } from '../agent/ops/control.ts';
import { baseStatus } from '../agent/ops/run.ts';
import type { Logger } from '../agent/util/log.ts';
import { silentLogger } from '../agent/util/log.ts';
import { tempDir } from './helpers/diode.ts';

/** uid of `nobody`: another user than the one the tests run as. */
const OTHER_UID = 65534;

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { lines, log: { ...silentLogger, warn: (m: string) => lines.push(m) } };
}

const report = () => ({ ...baseStatus('publish', '0x0000000000000000000000000000000000000001'), connected: false, streams: { opened: 0, open: 0, failed: {}, bytes: { rx: 0, tx: 0 } } });

test("root does not take the service user's /var/lib/diode as its default home", (t) => {
  if (!isRoot) return t.pass('needs root');
  const saved = process.env.DIODE_HOME;
  delete process.env.DIODE_HOME;
  t.teardown(() => (saved === undefined ? delete process.env.DIODE_HOME : (process.env.DIODE_HOME = saved)));
  // As the Debian package leaves it: the service user's.
  const service = tempDir(t);
  chownSync(service, OTHER_UID, OTHER_UID);
  t.regex(resolveHome(undefined, service), /^\/root\/\.config\/diode$|\/\.config\/diode$/);
  t.not(resolveHome(undefined, service), service);
  // A link to root's own directory is no better.
  const link = join(tempDir(t), 'link');
  symlinkSync(tempDir(t), link);
  t.not(resolveHome(undefined, link), link);
  // As the Pi image has it (root's own), or not there yet: root's default.
  const own = tempDir(t);
  t.is(resolveHome(undefined, own), own);
  t.is(resolveHome(undefined, join(own, 'missing')), join(own, 'missing'));
});

test('a run/ that is a symbolic link is not followed: no chmod of its target, no socket in it', async (t) => {
  const home = tempDir(t);
  const elsewhere = tempDir(t);
  const before = statSync(elsewhere).mode & 0o777;
  symlinkSync(elsewhere, join(home, 'run'));
  const { log, lines } = capture();
  const socket = await startControlSocket(home, 'publish', report, log);
  t.is(socket, undefined);
  t.is(statSync(elsewhere).mode & 0o777, before, 'the link target keeps its mode');
  t.deepEqual(readdirSync(elsewhere), [], 'and gets no socket');
  t.regex(lines.join('\n'), /run is a symbolic link; not following it/);
});

test('a run/ that belongs to another user is refused, not chmodded or used', async (t) => {
  if (!isRoot) return t.pass('needs root to give a directory to another user');
  const home = tempDir(t);
  const run = join(home, 'run');
  mkdirSync(run);
  chmodSync(run, 0o777);
  chownSync(run, OTHER_UID, OTHER_UID);
  const { log, lines } = capture();
  const socket = await startControlSocket(home, 'publish', report, log);
  t.is(socket, undefined);
  t.is(statSync(run).mode & 0o777, 0o777, 'its mode is left alone');
  t.deepEqual(readdirSync(run), []);
  t.regex(lines.join('\n'), new RegExp(`belongs to uid ${OTHER_UID}, not to this user`));
});

test('an agent makes its own run/ (0700) and serves its socket there', async (t) => {
  const home = tempDir(t);
  const socket = await startControlSocket(home, 'publish', report, silentLogger);
  t.teardown(() => socket?.close());
  t.truthy(socket);
  t.is(statSync(join(home, 'run')).mode & 0o777, 0o700);
  t.true(existsSync(socket!.path));
});
