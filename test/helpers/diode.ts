import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';

export const DIODE_BUNDLE = fileURLToPath(new URL('../../dist/diode.cjs', import.meta.url));

const execFileAsync = promisify(execFile);
/** ms a one-shot command may take on a loaded machine before it is stopped. */
const COMMAND_TIMEOUT_MS = 150_000;

/** A one-shot command's end: exit status (and the signal that stopped it, if any) and its output. */
export interface Ran {
  code: number;
  signal?: string;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node dist/diode.cjs ...args` to its end; returns its exit status and output instead of throwing.
 * After `timeoutMs` it gets `killSignal` (SIGTERM: a long-running command shuts down as on Ctrl-C).
 */
export async function runDiode(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = COMMAND_TIMEOUT_MS, killSignal: NodeJS.Signals = 'SIGTERM'): Promise<Ran> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [DIODE_BUNDLE, ...args], { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; signal?: string | null; stdout: string; stderr: string };
    return { code: e.code, signal: e.signal ?? undefined, stdout: e.stdout, stderr: e.stderr };
  }
}

/** A temporary directory removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'diode-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface Running {
  child: ChildProcess;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /**
   * Resolves with the exit code once the process has exited and its output is all read: 'close', not
   * 'exit', which can come before the last bytes of stdout and stderr have been read from the pipes.
   */
  exited(): Promise<number | null>;
  /** Resolves with the first match of pattern in stdout+stderr. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

/**
 * Starts a process; it is killed when the test ends, pass or fail.
 * `command` defaults to running the bundled diode with node.
 */
export function start(t: ExecutionContext, args: string[], options: { command?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Running {
  const command = options.command ?? process.execPath;
  const argv = options.command ? args : [DIODE_BUNDLE, ...args];
  const child = spawn(command, argv, { env: { ...process.env, ...options.env }, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const listeners = new Set<() => void>();
  const onChunk = (chunk: Buffer) => {
    output += chunk.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onChunk);
  child.stderr!.on('data', onChunk);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
  };
  t.teardown(stop);
  // A failed test shows what each of its processes said last (CI keeps only this log).
  t.teardown(() => {
    if (t.passed || output === '') return;
    const tail = output.trimEnd().split('\n').slice(-30).join('\n  ');
    process.stderr.write(`\n[${t.title}] output of ${[command === process.execPath ? 'diode' : command, ...args.slice(0, 1)].join(' ')} (pid ${child.pid}), last lines:\n  ${tail}\n`);
  });
  return {
    child,
    output: () => output,
    exited: () => closed,
    stop,
    waitFor(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = output.match(pattern);
          if (m) {
            done();
            resolve(m);
          }
        };
        const onExit = () => {
          check();
          done();
          reject(new Error(`process exited before printing ${pattern}; output:\n${output}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for ${pattern}; output:\n${output}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('close', onExit);
        };
        listeners.add(check);
        // 'close', not 'exit': the process can exit before its last output has been read from the pipe.
        child.once('close', onExit);
        check();
      });
    },
  };
}

/** A relay's counters, as `diode status --json --home <its home>` reports them. */
export async function relayCounters(home: string): Promise<Record<string, number>> {
  const { stdout } = await execFileAsync(process.execPath, [DIODE_BUNDLE, 'status', '--json', '--home', home]);
  return (JSON.parse(stdout) as Array<{ counters?: Record<string, number> }>)[0].counters ?? {};
}

/** A relay, a publishing device and a socksd, each with its own state directory, all on loopback. */
export async function startRelay(t: ExecutionContext, extra: string[] = [], home = tempDir(t)): Promise<{ port: number; address: string; home: string; proc: Running }> {
  const proc = start(t, ['relay', '--listen', '127.0.0.1:0', '--home', home, ...extra]);
  const m = await proc.waitFor(/relay (0x[0-9a-fA-F]{40}) listening on 127\.0\.0\.1:(\d+)/);
  return { address: m[1], port: Number(m[2]), home, proc };
}

export async function startPublish(t: ExecutionContext, relayPort: number, flags: string[], home = tempDir(t)): Promise<{ address: string; home: string; proc: Running }> {
  const proc = start(t, ['publish', ...flags, '--relay', `127.0.0.1:${relayPort}`, '--home', home]);
  const m = await proc.waitFor(/ as (0x[0-9a-fA-F]{40})/);
  await proc.waitFor(/connected to relay/);
  return { address: m[1], home, proc };
}

export async function startSocksd(t: ExecutionContext, relayPort: number, home = tempDir(t)): Promise<{ port: number; address: string; proc: Running }> {
  const proc = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', home]);
  const m = await proc.waitFor(/socksd (0x[0-9a-fA-F]{40}) listening on 127\.0\.0\.1:(\d+)/);
  await proc.waitFor(/connected to relay/);
  return { address: m[1], port: Number(m[2]), proc };
}

/** A publishing device that claims `names` (--name); resolves once the relay answered its claim (held or refused). */
export async function startPublishNamed(t: ExecutionContext, relay: string, ports: string[], names: string[], home = tempDir(t)): Promise<{ address: string; home: string; proc: Running }> {
  const proc = start(t, ['publish', ...ports, ...names.flatMap((n) => ['--name', n]), '--relay', relay, '--home', home]);
  const address = (await proc.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  await proc.waitFor(/name \S+ (claimed at|is held by|refused by)/);
  return { address, home, proc };
}
