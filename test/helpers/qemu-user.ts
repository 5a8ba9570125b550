// Runs the cross-built executables on this host: x64 directly, ARM through
// qemu-user (binfmt_misc when registered, else qemu-*-static explicitly, with
// `-L <sysroot>` when the target libraries are not installed; see
// cross-build/qemu-user.mjs for the rules and cross-build/setup-host.sh for
// the host packages).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { armCommand, QemuUnavailableError, type ArmArch } from '../../cross-build/qemu-user.mjs';

export { QemuUnavailableError, type ArmArch };

export type Target = 'x64' | ArmArch;
export const TARGETS: readonly Target[] = Object.freeze(['x64', 'arm64', 'armv7']);

export interface TargetCommand {
  file: string;
  args: string[];
  /** Only what must be added to the environment (e.g. QEMU_LD_PREFIX). */
  env: Record<string, string>;
  via: 'native' | 'binfmt' | 'qemu';
}

/** How to start `binary args...` built for target on this host. Throws QemuUnavailableError. */
export function targetCommand(target: Target, binary: string, args: readonly string[] = []): TargetCommand {
  if (target === 'x64') {
    if (process.arch !== 'x64') throw new QemuUnavailableError(`cannot run an x64 binary on a ${process.arch} host`);
    return { file: binary, args: [...args], env: {}, via: 'native' };
  }
  return armCommand(target, binary, args);
}

/** Why target binaries cannot run here, or undefined when they can. */
export function cannotRun(target: Target): string | undefined {
  try {
    targetCommand(target, '/bin/true');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Starts a target binary (long-running processes: relay, publish). */
export function spawnTarget(target: Target, binary: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const cmd = targetCommand(target, binary, args);
  return spawn(cmd.file, cmd.args, { ...options, env: { ...(options.env ?? process.env), ...cmd.env } });
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, milliseconds. */
  ms: number;
}

/** Runs a target binary to completion; never rejects on a non-zero exit (check `code`). */
export function runTarget(
  target: Target,
  binary: string,
  args: readonly string[],
  { timeoutMs = 60_000, env, cwd }: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawnTarget(target, binary, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - start });
    });
  });
}
