import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, existsSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { userInfo } from 'node:os';
import type { ExecutionContext } from 'ava';
import { start, tempDir, type Running } from './diode.ts';

export interface Sshd {
  port: number;
  user: string;
  /** Client private key that the sshd accepts. */
  clientKey: string;
  dir: string;
  proc: Running;
}

const SSHD_CANDIDATES = ['/usr/sbin/sshd', '/usr/bin/sshd'];
const SFTP_CANDIDATES = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server'];

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
  const sshd = SSHD_CANDIDATES.find(existsSync);
  if (!sshd) throw new Error('sshd not found: apt-get install openssh-server (the .ci/run script does)');
  const sftp = SFTP_CANDIDATES.find(existsSync);
  const dir = tempDir(t, 'diode-sshd-');
  chmodSync(dir, 0o700);
  // sshd refuses to start without its privilege separation directory.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'host_ed25519');
  const clientKey = join(dir, 'client_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', clientKey]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(clientKey + '.pub'), { mode: 0o600 });
  const user = userInfo().username;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config = join(dir, 'sshd_config');
    writeFileSync(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${authorized}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'StrictModes no',
        'UsePAM no',
        `AllowUsers ${user}`,
        sftp ? `Subsystem sftp ${sftp}` : '',
      ].join('\n') + '\n',
    );
    const proc = start(t, ['-D', '-e', '-f', config], { command: sshd });
    try {
      await proc.waitFor(/Server listening on 127\.0\.0\.1 port/, 10_000);
      return { port, user, clientKey, dir, proc };
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
