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

test('install puts the block before the first Host line once, keeps other contents, writes a backup, replaces an outdated block, and leaves mode 0600', (t) => {
  const dir = tempDir(t);
  const path = join(dir, '.ssh', 'config');
  mkdirSync(join(dir, '.ssh'));
  const globals = 'ServerAliveInterval 30\n';
  const hosts = 'Host build\n  HostName 10.0.0.2\n  User ci';
  writeFileSync(path, globals + hosts, { mode: 0o644 });
  const block = sshConfigBlock(['/usr/bin/node', '/opt/diode.cjs']);
  t.deepEqual(installSshConfig(path, block), { result: 'added', backup: path + BACKUP_SUFFIX, warnings: [] });
  t.is(readFileSync(path, 'utf8'), `${globals}\n${block}\n${hosts}`);
  t.is(readFileSync(path + BACKUP_SUFFIX, 'utf8'), globals + hosts);
  t.is(statSync(path).mode & 0o777, 0o600);
  t.is(installSshConfig(path, block).result, 'unchanged');
  t.is(readFileSync(path, 'utf8'), `${globals}\n${block}\n${hosts}`);

  const moved = sshConfigBlock(['/usr/bin/node', '/srv/diode.cjs']);
  t.is(installSshConfig(path, moved).result, 'updated');
  t.is(readFileSync(path, 'utf8'), `${globals}\n${moved}\n${hosts}`);
  t.is(readFileSync(path, 'utf8').match(/Host \*\.diode/g)?.length, 1);
  t.is(installSshConfig(path, moved).result, 'unchanged');

  // A file with no Host line gets the block at its end; a new file gets it alone, with no backup.
  writeFileSync(path, 'User me');
  installSshConfig(path, block);
  t.is(readFileSync(path, 'utf8'), `User me\n\n${block}`);
  t.is(installSshConfig(path, block).result, 'unchanged');
  const fresh = join(dir, 'fresh', 'config');
  t.deepEqual(installSshConfig(fresh, block), { result: 'added', backup: undefined, warnings: [] });
  t.is(readFileSync(fresh, 'utf8'), block);
});

test('17.2 an older block after a Host * with its own ProxyCommand is moved ahead of it, so real ssh uses diode proxy; a ProxyCommand for every host is warned about', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'config');
  const block = sshConfigBlock(['/usr/bin/node', '/opt/my diode/diode.cjs'], ['--home', "/srv/it's home"]);
  writeFileSync(path, `Host *\n  ProxyCommand nc -X 5 -x corp.example:1080 %h %p\n\n${block}`);
  const effective = async () => (await run('ssh', ['-G', '-F', path, `${'0x' + 'ab'.repeat(20)}.diode`])).stdout.match(/^proxycommand (.*)$/m)?.[1];
  t.is(await effective(), 'nc -X 5 -x corp.example:1080 %h %p', 'the old placement loses');
  t.is(installSshConfig(path, block).result, 'updated');
  t.is(await effective(), `/usr/bin/node '/opt/my diode/diode.cjs' proxy %h %p --home '/srv/it'\\''s home'`);
  t.is((await run('ssh', ['-G', '-F', path, 'other.example'])).stdout.match(/^proxycommand (.*)$/m)?.[1], 'nc -X 5 -x corp.example:1080 %h %p');
  writeFileSync(path, 'ProxyJump bastion\nHost x\n  User y\n');
  t.deepEqual(installSshConfig(path, block).warnings, [`${path}: "ProxyJump bastion" before any Host line applies to every host and wins over the diode block; move it under a Host line`]);
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

test('17.2 installed with DIODE_HOME set, the block carries that home, so a later shell without it logs in with plain ssh; a first install claims no backup', async (t) => {
  const { startRelay, startPublish } = await import('./helpers/diode.ts');
  const { startSshd } = await import('./helpers/sshd.ts');
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`]);
  const home = tempDir(t);
  const diodeHome = join(home, "my diode's home");
  await run(process.execPath, [DIODE_BUNDLE, 'config', '-set', `relays=127.0.0.1:${relay.port}`], { env: { ...process.env, DIODE_HOME: diodeHome } });
  const installed = await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', '--install'], { env: { ...process.env, HOME: home, DIODE_HOME: diodeHome } });
  t.is(installed.stdout, `${join(home, '.ssh', 'config')}: diode block added (new file)\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  delete env.DIODE_HOME;
  const ssh = await run('ssh', [
    '-F', join(home, '.ssh', 'config'),
    '-i', sshd.clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', `${sshd.user}@${device.address.toLowerCase()}.diode`, 'echo home-ok',
  ], { env, timeout: 30_000 });
  t.is(ssh.stdout, 'home-ok\n');
});
