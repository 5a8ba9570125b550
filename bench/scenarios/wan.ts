import { spawn } from 'node:child_process';
import { startProcess, cpuSeconds, type BenchProcess } from '../lib/procs.ts';
import { freePorts, scratch, untilOpen } from '../lib/paths.ts';
import { DelayLink, type DelayLine } from '../lib/delay-line.ts';
import { receiveBulk, socks5Connect, tcpConnect, timeSetup, type Connector } from '../lib/client.ts';
import { GiB, MiB, quantile, round } from '../lib/stats.ts';
import { SSHD_BINARY, makeSshdKeys, writeSshdConfig, type SshdFiles } from '../../test/helpers/sshd-files.ts';
import { MODE_ECHO } from '../lib/wire.ts';

// Issue 27 items 2 and 3: a home-broadband path emulated on loopback with
// bench/lib/delay-line.ts (the laptop 15 ms from the relay, the device 20 ms
// behind it with a 20 Mbit/s uplink, each way). In one run: new-connection
// times through diode's protocol version 3 (a build of an older commit) and
// version 4 (this tree), each with a warm socksd, and through an OpenSSH jump
// host at the relay's place (the device on `ssh -R`): a new `ssh -W` per
// connection as `ssh -J` makes, and a warm `ssh -L` for reference; then a
// download from the device through each, with the CPU per GiB of what sits
// in the middle (the relay, the jump host's sshd).

/** One-way delays and the device's uplink, as the issue gives them. */
export const LAPTOP_RELAY_MS = 15;
export const RELAY_DEVICE_MS = 20;
export const DEVICE_UPLINK_BITS = 20e6;
/** The port the device publishes the sink as. */
const REMOTE_PORT = 9000;
/** ms for a relay, an agent or an ssh to come up through the emulated path. */
const READY_MS = 60_000;
/** New connections per way measured in one turn (the ways take turns, so each meets the same moments). */
const TURN = 10;

export interface WanOptions {
  /** The bundle of this tree (protocol version 4). */
  bundle: string;
  /** A build of an older commit (protocol version 3, --before REF). */
  before: { bundle: string; commit: string };
  sinkPort: number;
  /** New connections per way. */
  connections: number;
  /** Bytes of the download through each way. */
  downloadBytes: number;
}

export interface WanWay {
  way: string;
  setupP50ms: number;
  setupP90ms: number;
  download: { bytes: number; MBps: number; cpuSecPerGiB: Record<string, number> };
}

export interface WanResult {
  path: { laptopRelayMs: number; relayDeviceMs: number; deviceUplinkMbit: number };
  connections: number;
  ways: WanWay[];
}

interface Way {
  name: string;
  /** ms from start to the sink's first byte on a new connection. */
  setup: () => Promise<number>;
  /** A new connection to the sink (for the download). */
  connector: Connector;
  /** The processes whose CPU the download is charged to: the middle first. */
  middle: BenchProcess[];
  /** The name of the way whose download this one shares (the same processes carry it). */
  downloadOf?: string;
}

/** A diode build's relay, device agent and socksd over the emulated path. */
async function diodeWay(name: string, bundle: string, sinkPort: number, links: { laptop: DelayLink; device: DelayLink }, lines: DelayLine[], procs: BenchProcess[]): Promise<Way> {
  const node = (role: string, args: string[]) => {
    const p = startProcess(`${role} (${name})`, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
    procs.push(p);
    return p;
  };
  const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', scratch('wan-relay')]);
  const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
  const deviceLine = await links.device.forward({ port: relayPort });
  const laptopLine = await links.laptop.forward({ port: relayPort });
  lines.push(deviceLine, laptopLine);
  const publish = node('publish', ['publish', '-public', `${sinkPort}:${REMOTE_PORT}`, '--relay', `127.0.0.1:${deviceLine.port}`, '--home', scratch('wan-device')]);
  const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${laptopLine.port}`, '--home', scratch('wan-socksd')]);
  const device = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/, READY_MS))[1].toLowerCase();
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
  const connector: Connector = () => socks5Connect(socksPort, `${device}.diode`, REMOTE_PORT);
  await untilOpen(connector, `wan: ${name}`);
  return { name, setup: () => timeSetup(connector), connector, middle: [relay, socksd, publish] };
}

/** ssh options: the bench's own key, no host keys kept, no prompts, quiet. */
function sshArgs(files: SshdFiles): string[] {
  return ['-F', '/dev/null', '-i', files.clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
}

/**
 * What `ssh -J jump target` does for each new connection: an ssh to the jump
 * host whose stdio is a channel to host:port there (-W). ms from its start to
 * the sink's first byte.
 */
function jumpSetup(files: SshdFiles, jumpPort: number, target: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const ssh = spawn('ssh', [...sshArgs(files), '-p', String(jumpPort), '-W', `127.0.0.1:${target}`, `${files.user}@127.0.0.1`], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    ssh.stderr.on('data', (d: Buffer) => (err += d.toString()));
    ssh.stdout.once('data', (d: Buffer) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      ssh.kill();
      if (d[0] === MODE_ECHO) resolve(ms);
      else reject(new Error('the sink did not answer through ssh -W'));
    });
    ssh.once('exit', (code) => reject(new Error(`ssh -W exited (${code}) before the sink answered: ${err.trim()}`)));
    ssh.stdin.write(Buffer.from([MODE_ECHO]));
  });
}

/** An OpenSSH jump host (sshd) at the relay's place: the device keeps `ssh -R`, the laptop goes through it. */
async function sshWays(sinkPort: number, links: { laptop: DelayLink; device: DelayLink }, lines: DelayLine[], procs: BenchProcess[]): Promise<Way[]> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const dir = scratch('wan-ssh');
  const files = makeSshdKeys(dir);
  const [jumpPort, remotePort, localPort] = await freePorts(3);
  const config = writeSshdConfig(dir, files, jumpPort, ['AllowTcpForwarding yes']);
  const sshd = startProcess('sshd (jump host)', SSHD_BINARY, ['-D', '-e', '-f', config], { tree: true });
  procs.push(sshd);
  await sshd.waitFor(/Server listening on 127\.0\.0\.1 port/);
  const fromDevice = await links.device.forward({ port: jumpPort });
  const fromLaptop = await links.laptop.forward({ port: jumpPort });
  lines.push(fromDevice, fromLaptop);
  const keep = ['-N', '-T', '-o', 'ExitOnForwardFailure=yes', '-o', 'ServerAliveInterval=15'];
  const reverse = startProcess('ssh -R', 'ssh', [...sshArgs(files), ...keep, '-p', String(fromDevice.port), '-R', `127.0.0.1:${remotePort}:127.0.0.1:${sinkPort}`, `${files.user}@127.0.0.1`]);
  procs.push(reverse);
  await untilOpen(() => tcpConnect(remotePort), 'wan: ssh -R forward', false);
  const forward = startProcess('ssh -L', 'ssh', [...sshArgs(files), ...keep, '-p', String(fromLaptop.port), '-L', `127.0.0.1:${localPort}:127.0.0.1:${remotePort}`, `${files.user}@127.0.0.1`]);
  procs.push(forward);
  const warm: Connector = () => tcpConnect(localPort);
  await untilOpen(warm, 'wan: ssh -L tunnel');
  return [
    { name: 'OpenSSH jump (ssh -J)', setup: () => jumpSetup(files, fromLaptop.port, remotePort), connector: warm, middle: [sshd, forward, reverse], downloadOf: 'OpenSSH tunnel (warm ssh -L)' },
    { name: 'OpenSSH tunnel (warm ssh -L)', setup: () => timeSetup(warm), connector: warm, middle: [sshd, forward, reverse] },
  ];
}

/** The ways take turns of TURN new connections each, `total` per way. */
async function setupTimes(ways: Way[], total: number, log: (line: string) => void): Promise<number[][]> {
  const times = ways.map((): number[] => []);
  // One untimed connection each: caches, keys and code paths warm.
  for (const w of ways) await w.setup();
  for (let done = 0; done < total; done += TURN) {
    for (const [k, w] of ways.entries()) {
      for (let i = 0; i < Math.min(TURN, total - done); i++) times[k].push(await w.setup());
    }
  }
  log(`wan: ${total} new connections per way`);
  return times;
}

export async function wanPaths(options: WanOptions, log: (line: string) => void): Promise<WanResult> {
  const laptop = new DelayLink({ oneWayMs: LAPTOP_RELAY_MS });
  const device = new DelayLink({ oneWayMs: RELAY_DEVICE_MS, upBitsPerSec: DEVICE_UPLINK_BITS });
  const lines: DelayLine[] = [];
  const procs: BenchProcess[] = [];
  try {
    const links = { laptop, device };
    const ways: Way[] = [];
    ways.push(await diodeWay(`diode before (${options.before.commit})`, options.before.bundle, options.sinkPort, links, lines, procs));
    ways.push(await diodeWay('diode (v4)', options.bundle, options.sinkPort, links, lines, procs));
    ways.push(...(await sshWays(options.sinkPort, links, lines, procs)));
    log(`wan: ${ways.map((w) => w.name).join(', ')} up`);
    const times = await setupTimes(ways, options.connections, log);
    const downloads = new Map<string, WanWay['download']>();
    for (const w of ways.filter((x) => !x.downloadOf)) {
      const before = w.middle.map((p) => cpuSeconds(p));
      const t = await receiveBulk(await w.connector(), options.downloadBytes);
      const gib = options.downloadBytes / GiB;
      const download = {
        bytes: t.bytes,
        MBps: round(t.bytes / MiB / (t.ms / 1000)),
        cpuSecPerGiB: Object.fromEntries(w.middle.map((p, i) => [p.name, round((cpuSeconds(p) - before[i]) / gib)])),
      };
      downloads.set(w.name, download);
      log(`wan: ${w.name}: ${download.MBps} MB/s down, CPU s/GiB ${JSON.stringify(download.cpuSecPerGiB)}`);
    }
    const results: WanWay[] = ways.map((w, k) => ({
      way: w.name,
      setupP50ms: round(quantile(times[k], 0.5)),
      setupP90ms: round(quantile(times[k], 0.9)),
      download: downloads.get(w.downloadOf ?? w.name)!,
    }));
    return { path: { laptopRelayMs: LAPTOP_RELAY_MS, relayDeviceMs: RELAY_DEVICE_MS, deviceUplinkMbit: DEVICE_UPLINK_BITS / 1e6 }, connections: options.connections, ways: results };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    for (const l of lines) await l.close();
    await Promise.all([laptop.close(), device.close()]);
  }
}

export function formatWan(r: WanResult): string {
  const rows = r.ways.map((w) => `  ${w.way.padEnd(30)} ${String(w.setupP50ms).padStart(8)} ${String(w.setupP90ms).padStart(8)}   ${String(w.download.MBps).padStart(6)}   ${Object.entries(w.download.cpuSecPerGiB).map(([n, v]) => `${n} ${v}`).join(', ')}`);
  return [
    `\nwan: laptop–relay ${r.path.laptopRelayMs} ms, relay–device ${r.path.relayDeviceMs} ms each way, device uplink ${r.path.deviceUplinkMbit} Mbit/s; ${r.connections} new connections per way`,
    `  way                            set-up p50  p90 ms   down MB/s   CPU s/GiB of the download`,
    ...rows,
  ].join('\n') + '\n';
}
