import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess, type BenchProcess } from './procs.ts';
import { socks5Connect, tcpConnect, openEcho, type Connector } from './client.ts';
import { sleep } from './stats.ts';
import { SSHD_BINARY, makeSshdKeys, writeSshdConfig } from '../../test/helpers/sshd-files.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** The port the device publishes the sink as (any number: it is a name on the relay, not a socket). */
const DIODE_REMOTE_PORT = 9000;
/** ms to wait for a forwarded port to start accepting. */
const FORWARD_READY_MS = 15_000;

export interface Path {
  /** diode-before: the same diode path run from a build of an older commit (--before REF), in the same run. */
  name: 'direct' | 'diode' | 'diode-before' | 'ssh-tunnel';
  connector: Connector;
  /** The processes of the path itself (not the bench client, not the sink). */
  processes: BenchProcess[];
  /** Facts about the set-up worth keeping in the JSON (cipher, versions). */
  info: Record<string, string>;
  /** The diode path's ports, for scenarios that add devices to it (the soak's flapping device). */
  diode?: { relayPort: number; socksPort: number; sinkPort: number; node: (role: string, args: string[]) => BenchProcess };
}

const scratchDirs: string[] = [];

/** A scratch directory under the OS temp dir; removeScratch() deletes them all. */
export function scratch(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `diode-bench-${prefix}-`));
  scratchDirs.push(dir);
  return dir;
}

export function removeScratch(): void {
  for (const dir of scratchDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Bundles the working tree's agent (so the bench measures the code as it is now, not a stale dist/). */
export function buildBundle(dir: string, readable = false): string {
  const out = join(dir, 'diode.cjs');
  const env = readable ? { ...process.env, DIODE_BUNDLE_READABLE: '1' } : process.env;
  execFileSync(process.execPath, [join(REPO, 'scripts/build.mjs'), out], { cwd: REPO, stdio: 'inherit', env });
  return out;
}

export async function startSink(): Promise<{ port: number; proc: BenchProcess }> {
  const proc = startProcess('sink', process.execPath, ['--import', 'tsx', join(REPO, 'bench/sink.ts')], { cwd: REPO });
  const m = await proc.waitFor(/sink listening on 127\.0\.0\.1:(\d+)/);
  return { port: Number(m[1]), proc };
}

export function directPath(sinkPort: number): Path {
  return { name: 'direct', connector: () => tcpConnect(sinkPort), processes: [], info: {} };
}

export interface DiodeOptions {
  bundle: string;
  /** The path's name: 'diode-before' where the bundle is a build of an older commit. */
  name?: 'diode' | 'diode-before';
  /** Extra node flags for the three diode processes (e.g. --cpu-prof). */
  nodeArgs?: (role: string) => string[];
}

/** relay, a publishing device agent for the sink, and a socksd; the client speaks SOCKS5 to socksd. */
export async function diodePath(sinkPort: number, options: DiodeOptions): Promise<Path> {
  const name = options.name ?? 'diode';
  const node = (role: string, args: string[]) =>
    startProcess(role, process.execPath, [...(options.nodeArgs?.(role) ?? []), options.bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
  // The bench measures what streams cost, not the relay's policy: one socksd (one caller) holds up to
  // 1,000 idle streams toward the one device and opens 50 at a time, past the fair-share defaults, and
  // past --max-streams-per-session's 1,024 once they travel on data connections: the streams of the
  // phase before still count until their half-closes have gone round (each FIN on a data connection
  // waits for a ping of its session, docs/PROTOCOL.md §10).
  const relay = node('relay', [
    'relay', '--listen', '127.0.0.1:0', '--home', scratch('relay'),
    '--max-streams-per-caller', '4096', '--max-pending-per-caller', '256', '--max-streams-per-session', '4096',
  ]);
  const relayPort = Number((await relay.waitFor(/relay 0x[0-9a-fA-F]{40} listening on 127\.0\.0\.1:(\d+)/))[1]);
  // The device and the client agent start side by side.
  const publish = node('publish', ['publish', '-public', `${sinkPort}:${DIODE_REMOTE_PORT}`, '--relay', `127.0.0.1:${relayPort}`, '--home', scratch('device')]);
  const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', scratch('client')]);
  const [address, socksPort] = await Promise.all([
    publish.waitFor(/ as (0x[0-9a-fA-F]{40})/).then((m) => m[1]),
    socksd.waitFor(/socksd 0x[0-9a-fA-F]{40} listening on 127\.0\.0\.1:(\d+)/).then((m) => Number(m[1])),
  ]);
  const connector = () => socks5Connect(socksPort, `${address}.diode`, DIODE_REMOTE_PORT);
  // publish and socksd print their address before the relay session is up: wait until a stream goes through.
  await untilOpen(connector, `${name} path`);
  return { name, connector, processes: [socksd, relay, publish], info: { device: address }, diode: { relayPort, socksPort, sinkPort, node } };
}

/**
 * The tunnel people use today: sshd as the jump host, `ssh -R` from the
 * device side publishing the sink on the jump host's loopback, `ssh -L` on
 * the client side forwarding a local port to it. Each with its own config
 * and keys; OpenSSH's default cipher choice.
 */
export async function sshPath(sinkPort: number): Promise<Path> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const dir = scratch('ssh');
  const files = makeSshdKeys(dir);
  const { clientKey, user } = files;
  const [sshdPort, remotePort, localPort] = await freePorts(3);
  const config = writeSshdConfig(dir, files, sshdPort, ['AllowTcpForwarding yes']);
  const sshd = startProcess('sshd', SSHD_BINARY, ['-D', '-e', '-f', config], { tree: true });
  await sshd.waitFor(/Server listening on 127\.0\.0\.1 port/);
  const common = [
    '-N', '-T', '-F', '/dev/null', '-i', clientKey, '-p', String(sshdPort),
    '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', 'ExitOnForwardFailure=yes',
    // What autossh setups use: notice a dead jump host.
    '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=3',
  ];
  const sshR = startProcess('ssh -R', 'ssh', [...common, '-R', `127.0.0.1:${remotePort}:127.0.0.1:${sinkPort}`, `${user}@127.0.0.1`]);
  await untilOpen(() => tcpConnect(remotePort), 'ssh -R forward', false);
  const sshL = startProcess('ssh -L', 'ssh', [...common, '-L', `127.0.0.1:${localPort}:127.0.0.1:${remotePort}`, `${user}@127.0.0.1`]);
  const connector = () => tcpConnect(localPort);
  await untilOpen(connector, 'ssh tunnel');
  const cipher = execFileSync('ssh', ['-G', '-F', '/dev/null', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().match(/^ciphers (\S+)/m)?.[1].split(',')[0] ?? '?';
  const version = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr ?? ''; // ssh -V prints on stderr
  return { name: 'ssh-tunnel', connector, processes: [sshL, sshd, sshR], info: { cipher, openssh: version.trim() } };
}

/** Retries until the connector reaches the sink's echo (or, with echo=false, just connects). */
export async function untilOpen(connector: Connector, what: string, echo = true): Promise<void> {
  const deadline = Date.now() + FORWARD_READY_MS;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const socket = echo ? await openEcho(connector) : await connector();
      socket.destroy();
      return;
    } catch (err) {
      last = err;
      await sleep(100);
    }
  }
  throw new Error(`${what} did not open within ${FORWARD_READY_MS} ms: ${String(last)}`);
}

/** `n` loopback ports free right now (the kernel's picks, all held at once so they differ, then released). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<Server>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** One loopback port free right now. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}
