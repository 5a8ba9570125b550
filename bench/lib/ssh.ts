import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { startProcess, type BenchProcess } from './procs.ts';
import { SSHD_BINARY, writeSshdConfig, type SshdFiles } from '../../test/helpers/sshd-files.ts';

// Real OpenSSH logins for the scenarios that time or repeat them (login, idle).

/** ms one login may take before it counts as failed. */
export const LOGIN_TIMEOUT_MS = 60_000;

/** Options for a non-interactive ssh with the bench's own key and no config, known_hosts or prompts. */
export function sshOptions(files: SshdFiles): string[] {
  return [
    '-F', '/dev/null', '-i', files.clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', `ConnectTimeout=${LOGIN_TIMEOUT_MS / 1000}`,
  ];
}

/** An sshd on 127.0.0.1:port with the bench's keys (its config in dir), up when this resolves. */
export async function startSshd(name: string, files: SshdFiles, dir: string, port: number, extra: string[] = []): Promise<BenchProcess> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const proc = startProcess(name, SSHD_BINARY, ['-D', '-e', '-f', writeSshdConfig(dir, files, port, extra)], { tree: true });
  await proc.waitFor(/Server listening on 127\.0\.0\.1 port/);
  return proc;
}

/** Seconds of one `ssh <args>` run to its end; throws with ssh's words when it fails. */
export async function sshRun(args: string[]): Promise<number> {
  const t0 = performance.now();
  const child = spawn('ssh', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b));
  const timer = setTimeout(() => child.kill('SIGKILL'), LOGIN_TIMEOUT_MS);
  const [code] = await once(child, 'exit');
  clearTimeout(timer);
  if (code !== 0) throw new Error(`ssh ${args.join(' ')} exited ${code}: ${stderr.trim()}`);
  return (performance.now() - t0) / 1000;
}
