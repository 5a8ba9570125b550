import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { userInfo } from 'node:os';

// A private OpenSSH server's files (keys, authorized key, config), shared by
// the end-to-end tests and the bench's ssh-tunnel path. No ava here, so the
// bench can import it.

export const SSHD_BINARY = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(existsSync);
const SFTP_SERVER = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/libexec/sftp-server'].find(existsSync);

export interface SshdFiles {
  hostKey: string;
  clientKey: string;
  authorized: string;
  user: string;
}

/** Host and client keys, the client key authorized, in dir (made 0700); /run/sshd exists for root. */
export function makeSshdKeys(dir: string): SshdFiles {
  chmodSync(dir, 0o700);
  // sshd refuses to start without its privilege separation directory.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'host_ed25519');
  const clientKey = join(dir, 'client_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', clientKey]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(clientKey + '.pub'), { mode: 0o600 });
  return { hostKey, clientKey, authorized, user: userInfo().username };
}

/** Writes <dir>/sshd_config: loopback only, key auth for the current user only, plus extra lines. */
export function writeSshdConfig(dir: string, files: SshdFiles, port: number, extra: string[] = []): string {
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${files.hostKey}`,
      `AuthorizedKeysFile ${files.authorized}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      `AllowUsers ${files.user}`,
      SFTP_SERVER ? `Subsystem sftp ${SFTP_SERVER}` : '',
      ...extra,
    ].join('\n') + '\n',
  );
  return config;
}
