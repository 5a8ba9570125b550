// npm run bench: the tunnel's hot path measured side by side with direct
// loopback and an OpenSSH reverse tunnel. See bench/README.md.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCleanupHandlers, loadAverage, rssBytes, stopAll, type Measured } from './lib/procs.ts';
import { buildBundle, diodePath, directPath, removeScratch, scratch, sshPath, startSink, type Path } from './lib/paths.ts';
import { summariseProfiles, type ProfileSummary } from './lib/profile.ts';
import { measurePath, FULL_SIZES, QUICK_SIZES, type PathResult } from './scenarios/path.ts';
import { measureLatencies } from './scenarios/latency.ts';
import { relayScale, type RelayScaleResult } from './scenarios/relay-scale.ts';
import { soak, type SoakResult } from './scenarios/soak.ts';
import { clusterScale, type ClusterResult } from './scenarios/cluster.ts';
import { readmit, type ReadmitResult } from './scenarios/readmit.ts';
import { relayPair, type RelayPairResult } from './scenarios/relay-pair.ts';
import { footprint, footprintTargets, formatFootprint, type FootprintResult, type RuntimeName } from './scenarios/footprint.ts';
import { formatLogin, loginTimes, type LoginResult } from './scenarios/login.ts';
import { formatNames, nameLogins, type NamesResult } from './scenarios/names.ts';
import { wanPaths, formatWan, type WanResult } from './scenarios/wan.ts';
import { buildProgram } from './lib/builds.ts';
import { formatIdle, idleMemory, type IdleResult } from './scenarios/idle.ts';
import { updateDownload, UPDATE_QUICK_SIZES, UPDATE_SIZES, type UpdateResult } from './scenarios/update.ts';
import { round, sleep } from './lib/stats.ts';
import { printReport, targets, ratios } from './report.ts';
import { floorPaths } from './lib/floor.ts';
import { floorFigures, type FloorFigures } from './scenarios/floor.ts';

const REPO = fileURLToPath(new URL('../', import.meta.url));
const PATHS = ['direct', 'diode', 'diode-before', 'ssh-tunnel'] as const;
const SCENARIOS = [...PATHS, 'relay-scale', 'soak', 'cluster', 'cluster-before', 'readmit', 'relay-pair', 'footprint', 'login', 'names', 'idle', 'update', 'wan'] as const;
/** Minutes of the idle scenario (the issue's 30). */
const DEFAULT_IDLE_MINUTES = 30;
const RUNTIMES: readonly RuntimeName[] = ['bundle', 'x64', 'arm64'];
/** The commit footprint, wan, login and diode-before compare against: main when issues 27 and 28 were filed (protocol version 3). */
const DEFAULT_BEFORE = 'b149bbf';
type Scenario = (typeof SCENARIOS)[number];
/** Minutes of the soak when it is asked for by name without --soak-minutes (the issue's 10). */
const DEFAULT_SOAK_MINUTES = 10;

export interface BenchOptions {
  quick: boolean;
  scenarios: Scenario[];
  devices: number[];
  /** Simulated devices per relay in the cluster scenario. */
  clusterDevices: number;
  /** Devices (RelayLinks) that return after the relay restart in the readmit scenario. */
  readmitDevices: number;
  /** Devices of the fleet that one relay and then two relays on this host admit in the relay-pair scenario. */
  pairDevices: number;
  soakMinutes: number;
  /** footprint: the commit to compare against, the runtimes, timed runs per figure. */
  before: string;
  runtimes: RuntimeName[];
  footprintRuns: number;
  /** login: rounds of ssh logins (each way once per round). */
  loginRuns: number;
  /** wan: new connections per way. */
  wanConnections: number;
  /** idle: minutes an idle publish is watched. */
  idleMinutes: number;
  profile: boolean;
  out: string | undefined;
  /** A ready diode bundle to run instead of building the working tree's. */
  bundle: string | undefined;
}

const USAGE = `usage: tsx bench/run.ts [--quick] [--scenario NAME[,NAME]]... [--devices N[,N]] [--cluster-devices N] [--readmit-devices N] [--pair-devices N] [--soak-minutes N] [--before REF] [--runtimes bundle,x64,arm64] [--footprint-runs N] [--login-runs N] [--idle-minutes N] [--wan-connections N] [--profile] [--out FILE] [--bundle dist/diode.cjs]
  scenarios: ${SCENARIOS.join(', ')} (default: direct, diode, ssh-tunnel, relay-scale; diode-before: the diode path from a build of --before REF (default ${DEFAULT_BEFORE}), taking turns with the others as they do; --soak-minutes adds soak; cluster: 3 relays on one Redis, --cluster-devices per relay, default 1000; cluster-before: its same-relay and cross-relay paths (no fleet) from a build of --before REF, first, in the same run; readmit: a relay restart with --readmit-devices reconnecting devices, default 10000; relay-pair: one relay against two on this host, --pair-devices, default 10000; footprint: start-up, idle memory and sizes of --before REF, default ${DEFAULT_BEFORE}, against the working tree, both built in the run, as --runtimes, default bundle,x64,arm64 (arm64 under qemu-user), --footprint-runs timed runs per figure, default 10; login: ssh … true over an emulated home-broadband path through diode proxy (a home of its own, and the running socksd's), socksd + nc (before and after) and an OpenSSH jump, --login-runs rounds, default 15; names: ssh … true by kitchen.diode against by address over the same path, through diode proxy and socksd + nc, --login-runs rounds; idle: an idle publish with one ssh login a minute through diode proxy for --idle-minutes, default ${DEFAULT_IDLE_MINUTES}, RSS at the end against minute 2; update: round trips through a device while it downloads a release at update-rate, against idle; wan: new connections and a download's CPU per GiB over an emulated home-broadband path through --before REF and the working tree (protocol versions 3 and 4) and an OpenSSH jump host, --wan-connections per way, default 100)`;

function parseOptions(argv: string[]): BenchOptions {
  const options: BenchOptions = { quick: false, scenarios: [], devices: [], clusterDevices: 1000, readmitDevices: 10_000, pairDevices: 10_000, soakMinutes: 0, before: DEFAULT_BEFORE, runtimes: [], footprintRuns: 0, loginRuns: 0, idleMinutes: 0, wanConnections: 100, profile: false, out: undefined, bundle: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === '--quick') options.quick = true;
    else if (arg === '--profile') options.profile = true;
    else if (arg === '--scenario') {
      for (const name of value().split(',')) {
        if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario "${name}"\n${USAGE}`);
        options.scenarios.push(name as Scenario);
      }
    } else if (arg === '--devices') options.devices = value().split(',').map(positive(arg));
    else if (arg === '--cluster-devices') options.clusterDevices = positive(arg)(value());
    else if (arg === '--readmit-devices') options.readmitDevices = positive(arg)(value());
    else if (arg === '--pair-devices') options.pairDevices = positive(arg)(value());
    else if (arg === '--soak-minutes') options.soakMinutes = positive(arg)(value());
    else if (arg === '--before') options.before = value();
    else if (arg === '--footprint-runs') options.footprintRuns = positive(arg)(value());
    else if (arg === '--login-runs') options.loginRuns = positive(arg)(value());
    else if (arg === '--wan-connections') options.wanConnections = positive(arg)(value());
    else if (arg === '--idle-minutes') options.idleMinutes = positive(arg)(value());
    else if (arg === '--runtimes') {
      for (const name of value().split(',')) {
        if (!(RUNTIMES as readonly string[]).includes(name)) throw new Error(`unknown runtime "${name}" (${RUNTIMES.join(', ')})\n${USAGE}`);
        options.runtimes.push(name as RuntimeName);
      }
    }
    else if (arg === '--out') options.out = resolve(value());
    else if (arg === '--bundle') options.bundle = resolve(value());
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else throw new Error(`unknown option ${arg}\n${USAGE}`);
  }
  if (options.scenarios.length === 0) options.scenarios = ['direct', 'diode', 'ssh-tunnel', 'relay-scale', ...(options.soakMinutes > 0 ? (['soak'] as const) : [])];
  if (options.scenarios.includes('soak') && options.soakMinutes === 0) options.soakMinutes = DEFAULT_SOAK_MINUTES;
  if (options.devices.length === 0) options.devices = options.quick ? [200] : [1_000, 10_000];
  if (options.runtimes.length === 0) options.runtimes = options.quick ? ['bundle'] : [...RUNTIMES];
  if (options.footprintRuns === 0) options.footprintRuns = options.quick ? 3 : 10;
  if (options.loginRuns === 0) options.loginRuns = options.quick ? 3 : 15;
  if (options.idleMinutes === 0) options.idleMinutes = options.quick ? 3 : DEFAULT_IDLE_MINUTES;
  return options;
}

function positive(flag: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!(n > 0)) throw new Error(`${flag}: "${text}" is not a positive number`);
    return n;
  };
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: REPO, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return '';
  }
}

const t0 = Date.now();
const log = (line: string) => process.stderr.write(`bench ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s: ${line}\n`);

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  installCleanupHandlers();
  const sizes = options.quick ? QUICK_SIZES : FULL_SIZES;
  const startedAt = new Date();
  const loadStart = loadAverage();
  log(`load average ${loadStart.join(' ')} on ${cpus().length} cores; scenarios ${options.scenarios.join(', ')}${options.quick ? ' (quick)' : ''}`);
  // A profile needs the readable layout to map samples back to source files.
  const bundle = options.bundle ?? buildBundle(scratch('bundle'), options.profile);
  log(options.bundle ? `using ${bundle}` : 'bundle built');
  const paths: Partial<Record<Path['name'], PathResult>> = {};
  const scale: RelayScaleResult[] = [];
  let soaked: SoakResult | undefined;
  let floor: FloorFigures | undefined;
  let profiles: ProfileSummary[] | undefined;
  const profileDir = options.profile ? join(REPO, 'bench/results/profiles', startedAt.toISOString().replace(/[:.]/g, '-')) : undefined;

  const wantPaths = PATHS.filter((p) => options.scenarios.includes(p));
  if (wantPaths.length > 0 || options.scenarios.includes('soak')) {
    const sink = await startSink();
    log(`sink on port ${sink.port}`);
    const client = { name: 'client', pid: process.pid, tree: false };
    const extra: Measured[] = [client, sink.proc];
    // All paths up together: idle RSS before any traffic, then connection and
    // round-trip times in turns (same moments for every path), then each
    // path's own figures.
    const started: Path[] = [];
    for (const name of wantPaths) {
      started.push(
        name === 'direct'
          ? directPath(sink.port)
          : name === 'diode'
            ? await diodePath(sink.port, { bundle, nodeArgs: (role) => (profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${role}.cpuprofile`] : []) })
            : name === 'diode-before'
              ? await diodePath(sink.port, { name, bundle: buildProgram('before', options.before, scratch('before'), [], log).bundle })
              : await sshPath(sink.port),
      );
      log(`${name}: path up`);
    }
    // Where direct is measured, so is the floor under every tunnel: three bare forwarders (lib/floor.ts).
    const floors = started.some((p) => p.name === 'direct') ? await floorPaths(sink.port, log) : [];
    await sleep(sizes.settleMs);
    const rssIdle = started.map((path) => new Map([...path.processes, ...extra].map((p) => [p.name, rssBytes(p)])));
    let latencies;
    try {
      latencies = await measureLatencies([...started, ...floors], sizes, log);
    } finally {
      await Promise.all(floors.flatMap((f) => f.processes.map((p) => p.stop())));
    }
    floor = floorFigures(floors, latencies, started.length, started.findIndex((p) => p.name === 'direct'));
    for (const [k, path] of started.entries()) {
      try {
        paths[path.name] = await measurePath(path, extra, sizes, { rssIdle: rssIdle[k], rtts: latencies.rtts[k], setups: latencies.setups[k], coldSetups: latencies.coldSetups[k] }, log);
      } finally {
        await Promise.all(path.processes.map((p) => p.stop()));
      }
    }
    if (options.scenarios.includes('soak')) {
      const path = await diodePath(sink.port, { bundle });
      try {
        soaked = await soak(path, options.soakMinutes, log);
      } finally {
        await Promise.all(path.processes.map((p) => p.stop()));
      }
    }
    await sink.proc.stop();
  }
  let cluster: ClusterResult | undefined;
  let clusterBefore: ClusterResult | undefined;
  if (options.scenarios.includes('cluster') || options.scenarios.includes('cluster-before')) {
    const sink = await startSink();
    try {
      const clusterSizes = { ...sizes, singleBytes: Math.min(sizes.singleBytes, 256 * 1024 * 1024) };
      if (options.scenarios.includes('cluster-before')) {
        // The fleet's simulated devices speak this tree's protocol: the older build gets its two paths only.
        const before = buildProgram('before', options.before, scratch('cluster-before'), [], log);
        clusterBefore = { commit: before.commit, ...(await clusterScale(before.bundle, sink.port, { ...clusterSizes, devicesPerRelay: 0 }, log)) };
      }
      const devicesPerRelay = options.quick ? Math.min(options.clusterDevices, 100) : options.clusterDevices;
      if (options.scenarios.includes('cluster')) cluster = await clusterScale(bundle, sink.port, { ...clusterSizes, devicesPerRelay }, log);
    } finally {
      await sink.proc.stop();
    }
  }
  if (options.scenarios.includes('relay-scale')) {
    for (const n of options.devices) {
      const prof = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=relay-scale-${n}.cpuprofile`] : [];
      scale.push(await relayScale(bundle, n, log, prof));
    }
  }
  let readmitted: ReadmitResult | undefined;
  if (options.scenarios.includes('readmit')) readmitted = await readmit(bundle, options.quick ? Math.min(options.readmitDevices, 500) : options.readmitDevices, log);
  let paired: RelayPairResult | undefined;
  if (options.scenarios.includes('relay-pair')) {
    const sink = await startSink();
    try {
      paired = await relayPair(bundle, sink.port, options.quick ? Math.min(options.pairDevices, 200) : options.pairDevices, options.quick ? 64 * 1024 * 1024 : 512 * 1024 * 1024, cpus().length, log);
    } finally {
      await sink.proc.stop();
    }
  }
  let footprinted: FootprintResult | undefined;
  if (options.scenarios.includes('footprint')) {
    footprinted = await footprint({ before: options.before, runtimes: options.runtimes, runs: options.footprintRuns }, log);
  }
  let loggedIn: LoginResult | undefined;
  if (options.scenarios.includes('login')) loggedIn = await loginTimes({ before: options.before, runs: options.loginRuns }, log);
  let named: NamesResult | undefined;
  if (options.scenarios.includes('names')) named = await nameLogins(bundle, options.loginRuns, log);
  let idled: IdleResult | undefined;
  if (options.scenarios.includes('idle')) idled = await idleMemory(bundle, options.idleMinutes, log);
  let wan: WanResult | undefined;
  if (options.scenarios.includes('wan')) {
    const before = buildProgram('before', options.before, scratch('wan-before'), [], log);
    const sink = await startSink();
    try {
      wan = await wanPaths({ bundle, before: { bundle: before.bundle, commit: before.commit }, sinkPort: sink.port, connections: options.quick ? 20 : options.wanConnections, downloadBytes: options.quick ? 4 * 1024 * 1024 : 32 * 1024 * 1024 }, log);
    } finally {
      await sink.proc.stop();
    }
  }
  let updated: UpdateResult | undefined;
  if (options.scenarios.includes('update')) {
    const sink = await startSink();
    try {
      updated = await updateDownload(bundle, sink.port, options.quick ? UPDATE_QUICK_SIZES : UPDATE_SIZES, log);
    } finally {
      await sink.proc.stop();
    }
  }
  if (profileDir) profiles = summariseProfiles(profileDir, bundle);

  const result = {
    startedAt: startedAt.toISOString(),
    durationS: round((Date.now() - startedAt.getTime()) / 1000),
    commit: git(['rev-parse', '--short=12', 'HEAD']),
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
    node: process.version,
    cpu: cpus()[0]?.model ?? '?',
    cores: cpus().length,
    loadAverage: { start: loadStart, end: loadAverage() },
    quick: options.quick,
    scenarios: options.scenarios,
    sizes,
    paths,
    ratios: ratios(paths),
    ...(floor ? { floor } : {}),
    relayScale: scale,
    ...(soaked ? { soak: soaked } : {}),
    ...(cluster ? { cluster } : {}),
    ...(clusterBefore ? { clusterBefore } : {}),
    ...(readmitted ? { readmit: readmitted } : {}),
    ...(paired ? { relayPair: paired } : {}),
    ...(footprinted ? { footprint: { ...footprinted, targets: footprintTargets(footprinted) } } : {}),
    ...(loggedIn ? { login: loggedIn } : {}),
    ...(named ? { names: named } : {}),
    ...(idled ? { idle: idled } : {}),
    ...(wan ? { wan } : {}),
    ...(updated ? { update: updated } : {}),
    ...(profiles ? { profile: { dir: profileDir, processes: profiles } } : {}),
    targets: targets(paths, scale, soaked),
  };
  const out = options.out ?? join(REPO, 'bench/results', `${startedAt.toISOString().replace(/[:.]/g, '-')}${options.quick ? '-quick' : ''}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  printReport(result);
  const line = (name: string, f: ClusterResult['sameRelay']) =>
    `  ${name.padEnd(12)} set-up p50 ${f.setupP50ms} ms p99 ${f.setupP99ms} ms | RTT p50 ${f.rttP50us} µs p99 ${f.rttP99us} µs | single stream ${f.singleStreamMBps.join(' / ')} MB/s | relay CPU s/GiB ${Object.entries(f.relayCpuSecPerGiB).map(([r, v]) => `${r} ${v}`).join(', ')}`;
  if (clusterBefore) {
    process.stdout.write(`\ncluster before (${clusterBefore.commit}): 3 relays on one Redis, no fleet\n${line('same relay', clusterBefore.sameRelay)}\n${line('cross relay', clusterBefore.crossRelay)}\n`);
  }
  if (cluster) {
    const c = cluster;
    process.stdout.write(
      `\ncluster: ${c.relays} relays × ${c.devicesPerRelay} simulated devices on one Redis (${c.admitted} admitted, ${c.failed} failed${c.firstError ? ` (first: ${c.firstError})` : ''}, ${c.admitPerSec}/s; ${c.mapEntries} map entries)\n` +
        `${line('same relay', c.sameRelay)}\n${line('cross relay', c.crossRelay)}\n` +
        `  at rest (${c.rest.windowS} s): ${c.rest.evalshaPerDevicePerMin} script calls and ${c.rest.commandsPerDevicePerMin} Redis commands per device per minute\n`,
    );
  }
  if (readmitted) {
    const r = readmitted;
    const s = r.ssh;
    process.stdout.write(
      `\nreadmit: ${r.devices} devices after a relay kill -9 and ${r.outageMs} ms down: half back ${r.backMs.half} ms, 90 % ${r.backMs.ninety} ms, all ${r.backMs.all ?? `not (${r.upAtEnd} up)`} ms after it listened again (${r.admitPerSec}/s, relay CPU ${r.relayCpuSec} s)\n` +
        `  honest ssh meanwhile: ${s.tries - s.failed} of ${s.tries} tries ok, first ok ${s.firstOkMs} ms after the restart, ok tries p50 ${s.okP50Ms} ms, max ${s.okMaxMs} ms${s.firstError ? ` (a failed try: ${s.firstError})` : ''}\n`,
    );
  }
  if (paired) {
    const row = (f: RelayPairResult['one']) =>
      `  ${String(f.relays).padEnd(7)} ${`${f.admitted}/${f.admitted + f.failed}`.padStart(12)} ${String(f.admitMs).padStart(9)} ${String(f.admitPerSec).padStart(8)} ${String(f.relayCpuSec).padStart(10)} ${String(f.busiestRelayUtilization).padStart(10)} ${String(f.hostBusy).padStart(9)} ${String(f.bulkTotalMBps).padStart(10)} ${String(f.bulkRelayCpuSecPerGiB).padStart(9)}\n`;
    process.stdout.write(
      `\nrelay-pair: ${paired.devices} devices and 2 bulk streams on ${paired.cores} cores, one relay against two (a cluster on one Redis)\n` +
        `  relays      admitted  admit ms   per s   relay CPU  busiest    host busy  bulk MB/s  relay s/GiB\n` +
        row(paired.one) + row(paired.two) +
        `  two / one: admission ${paired.admitSpeedup}×, bulk ${paired.bulkSpeedup}×\n`,
    );
  }
  if (footprinted) {
    process.stdout.write(formatFootprint(footprinted));
    for (const t of footprintTargets(footprinted)) process.stdout.write(`  ${t.pass ? 'PASS' : 'FAIL'}  ${t.target}: ${t.value}\n`);
  }
  if (loggedIn) process.stdout.write(formatLogin(loggedIn));
  if (named) process.stdout.write(formatNames(named));
  if (idled) process.stdout.write(formatIdle(idled));
  if (wan) process.stdout.write(formatWan(wan));
  if (updated) {
    const u = updated;
    process.stdout.write(
      `\nupdate: a ${u.releaseBytes / 1048576} MiB release downloaded over the device's relay link at update-rate ${u.rateKiB} KiB/s: ${u.achievedKiBps} KiB/s kept (${u.downloadS} s; device CPU ${u.deviceCpuSec} s, relay ${u.relayCpuSec} s)\n` +
        `  64-byte round trip through the device: idle p50 ${u.idle.rttP50us} µs p99 ${u.idle.rttP99us} µs; downloading p50 ${u.downloading.rttP50us} µs p99 ${u.downloading.rttP99us} µs (× ${u.ratioP50} / × ${u.ratioP99})\n`,
    );
  }
  process.stdout.write(`\nJSON: ${out}\n`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await stopAll();
    removeScratch();
  });
