#!/usr/bin/env node
// The main job on one machine: a relay, a published sshd and a SOCKS proxy,
// then the exact ssh line that uses them (tried once here to prove it works).
// Ctrl-C stops everything it started. Everything it writes, the ssh host
// keys it learns included, stays in .demo/ (DIODE_DEMO_DIR elsewhere);
// DIODE_DEMO_SSHD=own starts its own sshd even when one answers on port 22.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, readFileSync, chmodSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';

const root = resolve(new URL('..', import.meta.url).pathname);
const bundle = join(root, 'dist', 'diode.cjs');
const state = resolve(process.env.DIODE_DEMO_DIR ?? join(root, '.demo'));
/** The host keys the demo's ssh line learns: never the user's ~/.ssh/known_hosts. */
const knownHosts = join(state, 'known_hosts');
const children = [];

function step(text) {
  process.stdout.write(`• ${text}\n`);
}

function fail(text) {
  process.stderr.write(`demo: ${text}\n`);
  shutdown(1);
}

function shutdown(code) {
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  setTimeout(() => process.exit(code), 300);
}
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));

function startProcess(name, command, args, pattern) {
  return new Promise((resolveLine, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let output = '';
    const logFile = join(state, `${name}.log`);
    const onData = (chunk) => {
      output += chunk;
      writeFileSync(logFile, output);
      const m = output.match(pattern);
      if (m) {
        child.stdout.off('data', onData);
        resolveLine(m);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}); see ${logFile}:\n${output}`)));
  });
}

/** One word for sh: as is when safe, else single-quoted. */
function shellWord(word) {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

function portOpen(port) {
  return new Promise((done) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      done(true);
    });
    s.on('error', () => done(false));
  });
}

function freePort() {
  return new Promise((done) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => done(port));
    });
  });
}

/** Uses the machine's sshd on port 22 if one answers, else starts a private one with its own keys. */
async function sshTarget() {
  const user = userInfo().username;
  if (process.env.DIODE_DEMO_SSHD !== 'own' && (await portOpen(22))) {
    return { port: 22, user, keyArgs: '', note: 'the sshd already running on port 22 (log in as you normally do)' };
  }
  const sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(existsSync);
  if (!sshd) fail('no sshd on port 22 and none installed: apt-get install openssh-server openssh-client netcat-openbsd');
  const dir = join(state, 'sshd');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  for (const name of ['host_ed25519', 'client_ed25519']) {
    if (!existsSync(join(dir, name))) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, name)]);
  }
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_ed25519.pub')), { mode: 0o600 });
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true });
  const port = await freePort();
  writeFileSync(
    join(dir, 'sshd_config'),
    [`Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_ed25519')}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`, 'PasswordAuthentication no', 'PermitRootLogin prohibit-password', 'StrictModes no', 'UsePAM no'].join('\n') + '\n',
  );
  await startProcess('sshd', sshd, ['-D', '-e', '-f', join(dir, 'sshd_config')], /Server listening/);
  return { port, user, keyArgs: `-i ${shellWord(join(dir, 'client_ed25519'))} -o IdentitiesOnly=yes `, note: `a demo sshd on 127.0.0.1:${port} with its own keys in ${dir}` };
}

mkdirSync(state, { recursive: true });
if (!existsSync(bundle)) {
  step('building dist/diode.cjs');
  execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { stdio: 'inherit', cwd: root });
}
const node = process.execPath;
try {
  const ssh = await sshTarget();
  step(`ssh server: ${ssh.note}`);
  const relay = await startProcess('relay', node, [bundle, 'relay', '--listen', '127.0.0.1:0', '--home', join(state, 'relay')], /listening on 127\.0\.0\.1:(\d+)/);
  const relayPort = relay[1];
  step(`relay listening on 127.0.0.1:${relayPort}`);
  const device = await startProcess('publish', node, [bundle, 'publish', '-public', `${ssh.port}:22`, '--relay', `127.0.0.1:${relayPort}`, '--home', join(state, 'device')], / as (0x[0-9a-fA-F]{40})/);
  const address = device[1];
  step(`device ${address} publishes its sshd as port 22`);
  const socks = await startProcess('socksd', node, [bundle, 'socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', join(state, 'client')], /listening on 127\.0\.0\.1:(\d+)/);
  const socksPort = socks[1];
  step(`socksd listening on 127.0.0.1:${socksPort}`);
  const line = `ssh ${ssh.keyArgs}-o ${shellWord(`UserKnownHostsFile=${knownHosts}`)} -o StrictHostKeyChecking=accept-new -o "ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p" ${ssh.user}@${address.toLowerCase()}.diode`;
  if (ssh.keyArgs) {
    await new Promise((r) => setTimeout(r, 500));
    try {
      const out = execFileSync('sh', ['-c', `${line.replace('ssh ', 'ssh -o BatchMode=yes -o LogLevel=ERROR ')} echo tunnel-ok`], { timeout: 20_000 }).toString().trim();
      step(`checked: the line below ran "echo" on the device and got "${out}"`);
    } catch (err) {
      step(`warning: trying the ssh line failed: ${String(err.stderr ?? err.message).trim()}`);
    }
  }
  process.stdout.write(`\nTry it (logs in ${state}/*.log; Ctrl-C here stops everything):\n\n  ${line}\n\n`);
} catch (err) {
  fail(err.message);
}
