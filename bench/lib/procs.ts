import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** ms a process gets between SIGTERM and SIGKILL when the bench stops it. */
const STOP_GRACE_MS = 3_000;
/** Clock ticks per second of /proc/<pid>/stat utime/stime (USER_HZ, 100 on every Linux we run on). */
const CLOCK_TICKS = 100;

/** What the figures need of a process: the bench's own children, the bench itself, the sink. */
export type Measured = Pick<BenchProcess, 'name' | 'pid' | 'tree'>;

export interface BenchProcess {
  /** Short role name used in the table and JSON (relay, socksd, ssh -L, ...). */
  name: string;
  child: ChildProcess;
  pid: number;
  /** Count this process's descendants too (sshd forks one process per connection). */
  tree: boolean;
  output(): string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

/** Every child the bench started: stopped in reverse order at the end, and killed on Ctrl-C or exit. */
const running = new Set<BenchProcess>();

export function startProcess(name: string, command: string, args: string[], options: SpawnOptions & { tree?: boolean } = {}): BenchProcess {
  const child = spawn(command, args, { ...options, stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${name} (${command})`);
  let text = '';
  const listeners = new Set<() => void>();
  const onChunk = (chunk: Buffer) => {
    // Keep the head and the tail only: a process that logs per stream must not grow the bench.
    text = text.length > 64 * 1024 ? text.slice(0, 16 * 1024) + text.slice(-16 * 1024) + chunk.toString() : text + chunk.toString();
    for (const l of listeners) l();
  };
  child.stdout?.on('data', onChunk);
  child.stderr?.on('data', onChunk);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const proc: BenchProcess = {
    name,
    child,
    pid: child.pid,
    tree: options.tree ?? false,
    output: () => text,
    async stop() {
      running.delete(proc);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
    waitFor(pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = text.match(pattern);
          if (m) {
            done();
            resolve(m);
          }
        };
        const onExit = () => {
          check();
          done();
          reject(new Error(`${name} exited before printing ${pattern}:\n${text}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name}: timed out waiting for ${pattern}:\n${text}`));
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
  running.add(proc);
  return proc;
}

/** Stops every process still running, newest first (clients before the servers they use). */
export async function stopAll(): Promise<void> {
  for (const p of [...running].reverse()) await p.stop();
}

/** Synchronous last resort (process 'exit', signals): SIGKILL whatever is left. */
export function killAllNow(): void {
  for (const p of running) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  running.clear();
}

let handlersInstalled = false;

/** Ctrl-C, SIGTERM and any exit kill every bench child. */
export function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.once('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping all bench processes\n`);
      stopAll().finally(() => process.exit(130));
      setTimeout(() => process.exit(130), STOP_GRACE_MS + 1000).unref();
    });
  }
}

// ---- /proc readers ----------------------------------------------------------------

function childrenOf(): Map<number, number[]> {
  const map = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = map.get(ppid) ?? [];
    list.push(Number(entry));
    map.set(ppid, list);
  }
  return map;
}

/** The pid, plus all its descendants when `tree` is set. */
export function pidsOf(pid: number, tree: boolean): number[] {
  if (!tree) return [pid];
  const children = childrenOf();
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop()!;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/** CPU seconds (user + system) used so far by one process; 0 if it is gone. */
function cpuOfPid(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after "(comm)": state is [0], utime is field 14 of stat → index 11 here, stime index 12.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** One "<field>: N kB" line of /proc/<pid>/status in bytes (VmRSS, RssAnon, RssFile); 0 if the process is gone. */
function statusBytes(pid: number, field: string): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Resident set size in bytes of one process (VmRSS); 0 if it is gone. */
function rssOfPid(pid: number): number {
  return statusBytes(pid, 'VmRSS');
}

/** The anonymous part of a process's RSS (RssAnon: heap, stacks; not the executable's pages), bytes. */
export function rssAnonBytes(p: Omit<Measured, 'name'>): number {
  return pidsOf(p.pid, p.tree).reduce((sum, pid) => sum + statusBytes(pid, 'RssAnon'), 0);
}

export function cpuSeconds(p: Omit<Measured, 'name'>): number {
  return pidsOf(p.pid, p.tree).reduce((sum, pid) => sum + cpuOfPid(pid), 0);
}

export function rssBytes(p: Omit<Measured, 'name'>): number {
  return pidsOf(p.pid, p.tree).reduce((sum, pid) => sum + rssOfPid(pid), 0);
}

/** Samples the RSS of some processes every intervalMs and keeps each one's maximum. */
export class RssSampler {
  readonly max = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;
  constructor(procs: ReadonlyArray<Measured>, intervalMs = 200) {
    const sample = () => {
      for (const p of procs) this.max.set(p.name, Math.max(this.max.get(p.name) ?? 0, rssBytes(p)));
    };
    sample();
    this.#timer = setInterval(sample, intervalMs);
  }
  stop(): Map<string, number> {
    clearInterval(this.#timer);
    return this.max;
  }
}

export function loadAverage(): number[] {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return [];
  }
}
