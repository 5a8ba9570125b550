import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { DIODE_BUNDLE, start, tempDir, type Running } from './diode.ts';
import { socks5Connect } from './http.ts';
import { SSHD_BINARY, makeSshdKeys, writeSshdConfig } from './sshd-files.ts';

export interface Sshd {
  port: number;
  user: string;
  /** Client private key that the sshd accepts. */
  clientKey: string;
  dir: string;
  proc: Running;
}


export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A real OpenSSH server of the test's own: its own config, host key and authorized key, on a loopback port. */
export async function startSshd(t: ExecutionContext): Promise<Sshd> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server (the .ci/run script does)');
  const dir = tempDir(t, 'diode-sshd-');
  const files = makeSshdKeys(dir);
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config = writeSshdConfig(dir, files, port);
    const proc = start(t, ['-D', '-e', '-f', config], { command: SSHD_BINARY });
    try {
      await proc.waitFor(/Server listening on 127\.0\.0\.1 port/, 10_000);
      return { port, user: files.user, clientKey: files.clientKey, dir, proc };
    } catch (err) {
      await proc.stop();
      if (!/Address already in use/.test(proc.output())) throw err;
    }
  }
  throw new Error('could not find a free port for sshd');
}

/** ssh/scp options that use the test's key, trust nothing on disk, and never prompt. */
export function sshOptions(sshd: Sshd, socksPort: number): string[] {
  return [
    '-F', '/dev/null',
    '-i', sshd.clientKey,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10',
    '-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`,
  ];
}

/**
 * Writes `<home>/ssh_config` with the ProxyCommand `diode ssh-config --install` writes (`diode
 * proxy` with this home and relay) for *.diode, and the test's key, trusting nothing on disk and
 * never prompting; returns its path, for `ssh -F`.
 */
export function writeProxySshConfig(sshd: Sshd, home: string, relay: string, connectTimeoutS = 10): string {
  const file = join(home, 'ssh_config');
  writeFileSync(
    file,
    [
      'Host *.diode',
      `  ProxyCommand ${process.execPath} ${DIODE_BUNDLE} proxy %h %p --relay ${relay} --home ${home}`,
      'Host *',
      `  IdentityFile ${sshd.clientKey}`,
      '  IdentitiesOnly yes',
      '  StrictHostKeyChecking no',
      '  UserKnownHostsFile /dev/null',
      '  BatchMode yes',
      '  LogLevel ERROR',
      `  ConnectTimeout ${connectTimeoutS}`,
      '',
    ].join('\n'),
  );
  return file;
}

/** The device's sshd answers through this socksd: its SSH banner arrives (no ssh handshake timed in). */
export async function bannerThrough(socksPort: number, device: string): Promise<boolean> {
  const { rep, socket } = await socks5Connect(socksPort, `${device.toLowerCase()}.diode`, 22);
  try {
    if (rep !== 0) return false;
    socket.resume();
    const first = await new Promise<Buffer>((resolve, reject) => {
      socket.once('data', resolve);
      socket.once('close', () => reject(new Error('closed')));
      setTimeout(() => reject(new Error('no banner')), 5000).unref();
    });
    return first.toString().startsWith('SSH-');
  } finally {
    socket.destroy();
  }
}

const sha256Of = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/**
 * `bytes` random bytes copied with OpenSSH scp up to the device (`host`,
 * through `opts`) and back, all in `dir`: the sha256 of the file sent, of
 * the device's copy and of the one that came back.
 */
export async function scpBothWays(opts: string[], host: string, dir: string, bytes: number, timeout = 60_000): Promise<{ up: string; remote: string; down: string }> {
  const run = promisify(execFile);
  const up = join(dir, 'up.bin');
  writeFileSync(up, randomBytes(bytes));
  const remote = join(dir, 'remote.bin');
  const down = join(dir, 'down.bin');
  await run('scp', [...opts, '-q', up, `${host}:${remote}`], { timeout });
  await run('scp', [...opts, '-q', `${host}:${remote}`, down], { timeout });
  return { up: sha256Of(up), remote: sha256Of(remote), down: sha256Of(down) };
}
