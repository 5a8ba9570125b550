import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir, DIODE_BUNDLE } from './helpers/diode.ts';
import { installSshConfig, sshConfigBlock, quoteWord, BACKUP_SUFFIX } from '../agent/client/ssh-config.ts';

const run = promisify(execFile);

test('the block quotes paths for the shell and escapes ssh percent tokens', (t) => {
  t.is(quoteWord('/usr/bin/node'), '/usr/bin/node');
  t.is(quoteWord("/opt/my diode/it's"), `'/opt/my diode/it'\\''s'`);
  t.is(quoteWord('/a%b'), '/a%%b');
  t.regex(sshConfigBlock(['/n', '/d.cjs'], ['--relay', 'r:1']), /\n {2}ProxyCommand \/n \/d\.cjs proxy %h %p --relay r:1\n/);
});

test('install appends once, keeps other contents, writes a backup, replaces an outdated block in place, and leaves mode 0600', (t) => {
  const dir = tempDir(t);
  const path = join(dir, '.ssh', 'config');
  mkdirSync(join(dir, '.ssh'));
  const before = 'Host build\n  HostName 10.0.0.2\n  User ci';
  writeFileSync(path, before, { mode: 0o644 });
  const block = sshConfigBlock(['/usr/bin/node', '/opt/diode.cjs']);
  t.is(installSshConfig(path, block), 'added');
  t.is(readFileSync(path, 'utf8'), `${before}\n\n${block}`);
  t.is(readFileSync(path + BACKUP_SUFFIX, 'utf8'), before);
  t.is(statSync(path).mode & 0o777, 0o600);
  t.is(installSshConfig(path, block), 'unchanged');
  t.is(readFileSync(path, 'utf8'), `${before}\n\n${block}`);

  writeFileSync(path, readFileSync(path, 'utf8') + 'Host other\n  User x\n');
  const moved = sshConfigBlock(['/usr/bin/node', '/srv/diode.cjs']);
  t.is(installSshConfig(path, moved), 'updated');
  t.is(readFileSync(path, 'utf8'), `${before}\n\n${moved}Host other\n  User x\n`);
  t.is(readFileSync(path, 'utf8').match(/Host \*\.diode/g)?.length, 1);
});

test('diode ssh-config --install writes ~/.ssh/config of $HOME once', async (t) => {
  const home = tempDir(t);
  const env = { ...process.env, HOME: home };
  const first = await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', '--install'], { env });
  t.regex(first.stdout, /\.ssh\/config: diode block added/);
  const second = await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', '--install'], { env });
  t.regex(second.stdout, /already there; nothing changed/);
  const text = readFileSync(join(home, '.ssh', 'config'), 'utf8');
  t.regex(text, new RegExp(`ProxyCommand ${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\S*dist/diode\\.cjs proxy %h %p\\n`));
  t.is(statSync(join(home, '.ssh', 'config')).mode & 0o777, 0o600);
});
