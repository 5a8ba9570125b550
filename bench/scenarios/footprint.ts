import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { closeSync, openSync, readSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { rssAnonBytes, rssBytes, startProcess, type BenchProcess } from '../lib/procs.ts';
import { scratch } from '../lib/paths.ts';
import { buildProgram, totalBytes, type Build, type ExeTarget } from '../lib/builds.ts';
import { median, MiB, round, sleep } from '../lib/stats.ts';
import { targetCommand } from '../../test/helpers/qemu-user.ts';

// Issue 28 item 2: what the agent costs to start and to keep, before (an
// older commit, built in the same run) and after (the working tree), as the
// npm bundle, the x64 executable and the arm64 executable under qemu-user.
// Time figures are taken in turns (before, after, before, ...) so both meet
// the same moments of a shared machine; the qemu figures mean something
// only as ratios against the same run's before build.

/** What the device publishes: a service that speaks first (as sshd does), so `diode proxy` has a first byte to time. */
const BANNER = 'SSH-2.0-footprint-bench\r\n';
/** The port number the device publishes the banner service as. */
const REMOTE_PORT = 22;
/** Where the banner service listens (bannerServer sets it). */
let bannerPort = 0;
/** ms an idle agent gets after connecting before its RSS is read (the heap watch's quiet and settle collections run by then). */
const IDLE_SETTLE_MS = 15_000;
/** ms one command may take (a qemu start-up on a loaded box takes seconds). */
const COMMAND_TIMEOUT_MS = 120_000;
/** ms a publish may take from start to "connected to relay" (qemu included). */
const CONNECT_TIMEOUT_MS = 120_000;

export type RuntimeName = 'bundle' | ExeTarget;

export interface FootprintOptions {
  /** The commit to compare against (the issue's: main at b149bbf). */
  before: string;
  /** Runtimes to measure: the bundle always; executables need a cross-build. */
  runtimes: RuntimeName[];
  /** Timed runs per figure and build (--version, proxy); publish restarts get half. */
  runs: number;
}

export interface Figures {
  /** Median wall ms of `diode --version`. */
  versionMs: number;
  /** Median ms from spawning `diode proxy <device>.diode 22` to the device's first byte on its stdout. */
  proxyFirstByteMs: number;
  /** The same with the running socksd's state directory (issue 28 item 5: the proxy hands the stream to that socksd; before, it opens its own session there too). */
  proxyAgentFirstByteMs: number;
  /** Median ms from spawning `diode publish` to its "connected to relay ... published" line. */
  publishConnectMs: number;
  /** VmRSS / RssAnon of an idle publish with one relay session, IDLE_SETTLE_MS after it connected. */
  publishRssMB: number;
  publishRssAnonMB: number;
  /** VmRSS of an idle socksd with its relay session, and of the relay holding both. */
  socksdRssMB: number;
  relayRssMB: number;
}

export interface Size {
  bytes: number;
  xzBytes: number;
}

export interface FootprintResult {
  before: { ref: string; commit: string };
  after: { commit: string };
  sizes: Partial<Record<RuntimeName, { before: Size; after: Size; ratio: number; xzRatio: number }>>;
  runtimes: Partial<Record<RuntimeName, { before: Figures; after: Figures; ratio: Record<keyof Figures, number> }>>;
  /** How each executable runs here (native, binfmt, qemu). */
  via: Partial<Record<RuntimeName, string>>;
}

interface Command {
  file: string;
  args: string[];
  env: Record<string, string>;
}

/** How to run one build's diode in one runtime; `relay` is where its relay runs (x64 for arm64: the relay is a server). */
function command(build: Build, runtime: RuntimeName, args: string[]): Command {
  if (runtime === 'bundle') return { file: process.execPath, args: [build.bundle, ...args], env: {} };
  const exe = build.exe[runtime];
  if (!exe) throw new Error(`${build.name}: no ${runtime} executable`);
  const c = targetCommand(runtime, exe, args);
  return { file: c.file, args: c.args, env: c.env };
}

const relayRuntime = (runtime: RuntimeName): RuntimeName => (runtime === 'arm64' ? 'x64' : runtime);

function start(name: string, c: Command): BenchProcess {
  return startProcess(name, c.file, c.args, { env: { ...process.env, ...c.env, DIODE_LOG: 'info' } });
}

/** Wall ms of one command run to its end. */
async function timed(c: Command): Promise<number> {
  const t0 = performance.now();
  const child = spawn(c.file, c.args, { env: { ...process.env, ...c.env }, stdio: 'ignore' });
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`${c.file} ${c.args.join(' ')} exited ${code}`);
  return performance.now() - t0;
}

/** ms from spawning `diode proxy` to the first byte it writes (the device's banner); then it is stopped. */
async function proxyFirstByte(c: Command): Promise<number> {
  const t0 = performance.now();
  const child = spawn(c.file, c.args, { env: { ...process.env, ...c.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b));
  const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
  try {
    const first = await Promise.race([
      once(child.stdout, 'data').then(() => performance.now() - t0),
      once(child, 'exit').then(([code]) => Promise.reject(new Error(`diode proxy exited ${code} before a byte: ${stderr.trim()}`))),
    ]);
    return first;
  } finally {
    clearTimeout(timer);
    child.stdin.end();
    child.kill('SIGTERM');
    if (child.exitCode === null && child.signalCode === null) await once(child, 'exit');
  }
}

/** A relay, a publishing device (the banner service) and an idle socksd of one build. */
interface Stack {
  build: Build;
  relay: BenchProcess;
  relayPort: number;
  publish: BenchProcess;
  socksd: BenchProcess;
  device: string;
  deviceHome: string;
  proxyHome: string;
  socksdHome: string;
  connectMs: number[];
}

async function startPublish(stack: Omit<Stack, 'publish' | 'socksd' | 'device'>, runtime: RuntimeName): Promise<{ proc: BenchProcess; ms: number; device: string }> {
  const t0 = performance.now();
  const proc = start(`publish ${stack.build.name}`, command(stack.build, runtime, ['publish', '-public', `${bannerPort}:${REMOTE_PORT}`, '--relay', `127.0.0.1:${stack.relayPort}`, '--home', stack.deviceHome]));
  await proc.waitFor(/connected to relay/, CONNECT_TIMEOUT_MS);
  const ms = performance.now() - t0;
  const device = (await proc.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
  return { proc, ms, device };
}

async function startStack(build: Build, runtime: RuntimeName): Promise<Stack> {
  const relay = start(`relay ${build.name}`, command(build, relayRuntime(runtime), ['relay', '--listen', '127.0.0.1:0', '--home', scratch('fp-relay')]));
  const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/, CONNECT_TIMEOUT_MS))[1]);
  const base = { build, relay, relayPort, deviceHome: scratch('fp-device'), proxyHome: scratch('fp-proxy'), socksdHome: scratch('fp-socksd'), connectMs: [] as number[] };
  const published = await startPublish(base, runtime);
  const socksd = start(`socksd ${build.name}`, command(build, runtime, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', base.socksdHome]));
  await socksd.waitFor(/connected to relay/, CONNECT_TIMEOUT_MS);
  return { ...base, publish: published.proc, socksd, device: published.device, connectMs: [published.ms] };
}

async function stopStack(s: Stack): Promise<void> {
  await s.socksd.stop();
  await s.publish.stop();
  await s.relay.stop();
}

function bannerServer(): Promise<Server> {
  const server = createServer((socket) => {
    socket.on('error', () => {});
    socket.end(BANNER);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    bannerPort = (server.address() as AddressInfo).port;
    resolve(server);
  }));
}

function xzBytes(files: string[]): number {
  // One stream over all files, as a tarball of the bundle would compress.
  const r = spawnSync('sh', ['-c', 'cat "$@" | xz -6 -T1 -c | wc -c', 'xz', ...files], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`xz failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

function size(files: string[]): Size {
  return { bytes: totalBytes(files), xzBytes: xzBytes(files) };
}

const ms = (samples: number[]) => round(median(samples));
const mb = (bytes: number) => round(bytes / MiB);

/** Runs the pair (before, after) of one figure `runs` times, in turns. */
async function inTurns(runs: number, pair: [() => Promise<number>, () => Promise<number>]): Promise<[number[], number[]]> {
  const out: [number[], number[]] = [[], []];
  for (let i = 0; i < runs; i++) for (const k of [0, 1] as const) out[k].push(await pair[k]());
  return out;
}

/**
 * Reads files whole, so the page cache holds all of them. How much of an
 * executable shows in a process's RSS depends on what of it is cached (the
 * kernel maps cached neighbours of each page it faults in): measured here
 * with an executable freshly written, a stripped node showed 2 MB more file
 * pages than the same file later. Both builds start each runtime fully cached.
 */
function warmPageCache(files: string[]): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const file of files) {
    const fd = openSync(file, 'r');
    try {
      while (readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      closeSync(fd);
    }
  }
}

async function measureRuntime(runtime: RuntimeName, builds: [Build, Build], runs: number, log: (line: string) => void): Promise<[Figures, Figures]> {
  warmPageCache(builds.flatMap((b) => [...(runtime === 'bundle' ? [process.execPath, ...b.bundleFiles] : [b.exe[runtime]!]), ...(runtime === 'arm64' ? [b.exe.x64!] : [])]));
  log(`footprint ${runtime}: --version ×${runs} each`);
  const version = await inTurns(runs, [0, 1].map((k) => () => timed(command(builds[k], runtime, ['--version']))) as [() => Promise<number>, () => Promise<number>]);
  log(`footprint ${runtime}: relay, publish, socksd of both builds`);
  const stacks: Stack[] = [];
  try {
    for (const b of builds) stacks.push(await startStack(b, runtime));
    const proxy = (s: Stack, home = s.proxyHome) => () =>
      proxyFirstByte(command(s.build, runtime, ['proxy', `${s.device.toLowerCase()}.diode`, String(REMOTE_PORT), '--relay', `127.0.0.1:${s.relayPort}`, '--home', home]));
    // One untimed proxy run each: it makes its key (a first run's extra work, not start-up).
    for (const s of stacks) await proxy(s)();
    log(`footprint ${runtime}: diode proxy to the first byte ×${runs} each`);
    const proxyMs = await inTurns(runs, [proxy(stacks[0]), proxy(stacks[1])]);
    const restarts = Math.max(2, Math.ceil(runs / 2));
    log(`footprint ${runtime}: publish start → connected ×${restarts} each`);
    for (let i = 0; i < restarts; i++) {
      for (const s of stacks) {
        await s.publish.stop();
        const again = await startPublish(s, runtime);
        s.publish = again.proc;
        s.connectMs.push(again.ms);
      }
    }
    log(`footprint ${runtime}: idle for ${IDLE_SETTLE_MS / 1000} s, then RSS`);
    await sleep(IDLE_SETTLE_MS);
    const memory = stacks.map((s) => ({
      publishRssMB: mb(rssBytes(s.publish)),
      publishRssAnonMB: mb(rssAnonBytes(s.publish)),
      socksdRssMB: mb(rssBytes(s.socksd)),
      relayRssMB: mb(rssBytes(s.relay)),
    }));
    // After the RSS: streams through the socksd would make it an idle socksd no more.
    log(`footprint ${runtime}: diode proxy beside the socksd (its state directory) to the first byte ×${runs} each`);
    const proxyAgentMs = await inTurns(runs, [proxy(stacks[0], stacks[0].socksdHome), proxy(stacks[1], stacks[1].socksdHome)]);
    return stacks.map((s, k): Figures => ({
      versionMs: ms(version[k]),
      proxyFirstByteMs: ms(proxyMs[k]),
      proxyAgentFirstByteMs: ms(proxyAgentMs[k]),
      // The first start of each stack came before any proxy run warmed the page cache: the restarts are the figure.
      publishConnectMs: ms(s.connectMs.slice(1)),
      ...memory[k],
    })) as [Figures, Figures];
  } finally {
    for (const s of stacks) await stopStack(s);
  }
}

function ratioOf(before: Figures, after: Figures): Record<keyof Figures, number> {
  return Object.fromEntries(Object.keys(after).map((k) => [k, round(after[k as keyof Figures] / before[k as keyof Figures])])) as Record<keyof Figures, number>;
}

export async function footprint(options: FootprintOptions, log: (line: string) => void): Promise<FootprintResult> {
  const targets = options.runtimes.filter((r): r is ExeTarget => r !== 'bundle');
  // An arm64 row needs the x64 executable for its relay.
  const exeTargets: ExeTarget[] = targets.includes('arm64') && !targets.includes('x64') ? ['x64', ...targets] : targets;
  const before = buildProgram('before', options.before, scratch('fp-before'), exeTargets, log);
  const after = buildProgram('after', undefined, scratch('fp-after'), exeTargets, log);
  const builds: [Build, Build] = [before, after];
  const result: FootprintResult = { before: { ref: options.before, commit: before.commit }, after: { commit: after.commit }, sizes: {}, runtimes: {}, via: {} };
  for (const runtime of options.runtimes) {
    const files = (b: Build) => (runtime === 'bundle' ? b.bundleFiles : [b.exe[runtime]!]);
    const [sb, sa] = [size(files(before)), size(files(after))];
    result.sizes[runtime] = { before: sb, after: sa, ratio: round(sa.bytes / sb.bytes), xzRatio: round(sa.xzBytes / sb.xzBytes) };
    if (runtime !== 'bundle') result.via[runtime] = targetCommand(runtime, after.exe[runtime]!).via;
  }
  const server = await bannerServer();
  try {
    for (const runtime of options.runtimes) {
      const [fb, fa] = await measureRuntime(runtime, builds, runtime === 'arm64' ? Math.max(3, Math.ceil(options.runs / 2)) : options.runs, log);
      result.runtimes[runtime] = { before: fb, after: fa, ratio: ratioOf(fb, fa) };
    }
  } finally {
    server.close();
  }
  return result;
}

/** The table printed after a run. */
export function formatFootprint(r: FootprintResult): string {
  const lines = [`\nfootprint: before ${r.before.ref} (${r.before.commit}) against after ${r.after.commit}; ratios after/before`];
  const pad = (s: string, n: number) => s.padStart(n);
  lines.push(`  ${'size'.padEnd(10)}${pad('before MB', 12)}${pad('after MB', 12)}${pad('ratio', 8)}${pad('xz before', 12)}${pad('xz after', 12)}${pad('ratio', 8)}`);
  for (const [name, s] of Object.entries(r.sizes)) {
    lines.push(`  ${name.padEnd(10)}${pad(String(round(s.before.bytes / 1e6)), 12)}${pad(String(round(s.after.bytes / 1e6)), 12)}${pad(String(s.ratio), 8)}${pad(String(round(s.before.xzBytes / 1e6)), 12)}${pad(String(round(s.after.xzBytes / 1e6)), 12)}${pad(String(s.xzRatio), 8)}`);
  }
  const rows: Array<[keyof Figures, string]> = [
    ['versionMs', '--version ms'],
    ['proxyFirstByteMs', 'proxy first byte ms'],
    ['proxyAgentFirstByteMs', '  beside a socksd ms'],
    ['publishConnectMs', 'publish start→connected ms'],
    ['publishRssMB', 'idle publish RSS MB'],
    ['publishRssAnonMB', '  of it RssAnon MB'],
    ['socksdRssMB', 'idle socksd RSS MB'],
    ['relayRssMB', 'relay RSS MB'],
  ];
  for (const [runtime, f] of Object.entries(r.runtimes)) {
    lines.push(`  ${runtime}${r.via[runtime as RuntimeName] ? ` (${r.via[runtime as RuntimeName]})` : ''}${pad('before', 30 - runtime.length)}${pad('after', 10)}${pad('ratio', 8)}`);
    for (const [key, label] of rows) lines.push(`    ${label.padEnd(28)}${pad(String(f.before[key]), 10)}${pad(String(f.after[key]), 10)}${pad(String(f.ratio[key]), 8)}`);
  }
  return lines.join('\n') + '\n';
}

/** The issue's targets for the x64 bundle and the executables' size. */
export function footprintTargets(r: FootprintResult): Array<{ target: string; value: string; pass: boolean }> {
  const out: Array<{ target: string; value: string; pass: boolean }> = [];
  const b = r.runtimes.bundle?.after;
  if (b) {
    out.push({ target: 'idle publish RSS ≤ 48 MB (x64 bundle)', value: `${b.publishRssMB} MB`, pass: b.publishRssMB <= 48 });
    out.push({ target: 'idle publish RssAnon ≤ 12 MB (x64 bundle)', value: `${b.publishRssAnonMB} MB`, pass: b.publishRssAnonMB <= 12 });
    out.push({ target: 'diode --version ≤ 120 ms wall (x64 bundle, quiet host)', value: `${b.versionMs} ms`, pass: b.versionMs <= 120 });
    out.push({ target: 'publish start → published ≤ 300 ms (x64 bundle, loopback relay)', value: `${b.publishConnectMs} ms`, pass: b.publishConnectMs <= 300 });
  }
  for (const t of ['x64', 'arm64'] as const) {
    const s = r.sizes[t];
    if (s) out.push({ target: `${t} executable not larger than before`, value: `${round(s.after.bytes / 1e6)} MB against ${round(s.before.bytes / 1e6)} MB`, pass: s.after.bytes <= s.before.bytes });
  }
  return out;
}
