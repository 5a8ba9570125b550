import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { startProcess } from '../lib/procs.ts';
import { sshOptions, sshRun, startSshd } from '../lib/ssh.ts';
import { freePorts, scratch } from '../lib/paths.ts';
import { DelayLink, type DelayLine } from '../lib/delay-line.ts';
import { buildProgram, type Build } from '../lib/builds.ts';
import { median, round } from '../lib/stats.ts';
import { SSHD_BINARY, makeSshdKeys, type SshdFiles } from '../../test/helpers/sshd-files.ts';

// Issue 28 item 5: how long `ssh <user>@<device> true` takes over a home
// broadband path emulated on loopback (bench/lib/delay-line.ts): the laptop
// 15 ms from the relay, the device 20 ms behind it with a 20 Mbit/s uplink,
// each way. The ways in: plain ssh with `diode proxy` as its ProxyCommand
// (one new relay connection per login: the README's ssh-config path), ssh
// through a running socksd with `nc -X 5`, an OpenSSH jump host (`ssh -J`,
// the device on `ssh -R`) at the relay's place, and ssh routed directly
// (35 ms each way). The diode ways run for the before build and the
// working tree, all in turns, so every way meets the same moments: `diode
// proxy` twice, with a state directory of its own (it opens a relay session
// per login) and with the running socksd's (since issue 28 item 5 it hands
// the stream to that socksd through its stream socket; a build before that
// opens its own session there too).

/** One-way delays and the device's uplink, as the issue gives them. */
export const LAPTOP_RELAY_MS = 15;
export const RELAY_DEVICE_MS = 20;
export const DEVICE_UPLINK_BITS = 20e6;
/** A bare node speaking SOCKS5 to the socksd (bench/lib/node-socks-pipe.cjs): the floor for any ProxyCommand run by Node. */
const NODE_FLOOR_SCRIPT = fileURLToPath(new URL('../lib/node-socks-pipe.cjs', import.meta.url));
/** ms for a relay, an agent or an ssh -R to come up. */
const READY_MS = 60_000;

export type LoginWay = 'proxy' | 'socksd' | 'jump' | 'direct';

export interface LoginOptions {
  before: string;
  runs: number;
}

export interface LoginResult {
  before: { ref: string; commit: string };
  after: { commit: string };
  path: { laptopRelayMs: number; relayDeviceMs: number; deviceUplinkMbit: number };
  runs: number;
  /** Median seconds of `ssh … true` per way; the diode ways per build (proxyAgent: `diode proxy` with the socksd's state directory). */
  medianS: { proxy: { before: number; after: number }; proxyAgent: { before: number; after: number }; socksd: { before: number; after: number }; nodeFloor: number; jump: number; direct: number };
  /** The comparison: diode proxy against socksd + nc of the same build, seconds. */
  proxyOverSocksdS: { before: number; after: number };
  /** The same for `diode proxy` beside a running socksd of its state directory. */
  proxyAgentOverSocksdS: { before: number; after: number };
}

/** One build's relay, its device agent publishing the device sshd, and a socksd, over the emulated path. */
interface DiodeWays {
  build: Build;
  proxy: string[];
  /** `diode proxy` with the socksd's state directory (and relay). */
  proxyAgent: string[];
  socksd: string[];
  /** A bare node as the SOCKS client instead of nc (NODE_FLOOR_SCRIPT). */
  nodeFloor: string[];
}

async function diodeWays(build: Build, links: { laptop: DelayLink; device: DelayLink }, sshd: { files: SshdFiles; port: number }, lines: DelayLine[], log: (line: string) => void): Promise<DiodeWays> {
  const node = (role: string, args: string[]) => startProcess(`${role} ${build.name}`, process.execPath, [build.bundle, ...args], { env: { ...process.env, DIODE_LOG: 'info' } });
  const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', scratch('login-relay')]);
  const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
  const deviceLine = await links.device.forward({ port: relayPort });
  const laptopLine = await links.laptop.forward({ port: relayPort });
  lines.push(deviceLine, laptopLine);
  const publish = node('publish', ['publish', '-public', `${sshd.port}:22`, '--relay', `127.0.0.1:${deviceLine.port}`, '--home', scratch('login-device')]);
  const device = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/, READY_MS))[1].toLowerCase();
  await publish.waitFor(/connected to relay/, READY_MS);
  const socksdHome = scratch('login-socksd');
  const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${laptopLine.port}`, '--home', socksdHome]);
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
  await socksd.waitFor(/connected to relay/, READY_MS);
  const proxyHome = scratch('login-proxy');
  const target = [`${sshd.files.user}@${device}.diode`, 'true'];
  log(`login ${build.name}: relay, device and socksd up (device ${device})`);
  return {
    build,
    proxy: [...sshOptions(sshd.files), '-o', `ProxyCommand=${process.execPath} ${build.bundle} proxy %h %p --relay 127.0.0.1:${laptopLine.port} --home ${proxyHome}`, ...target],
    proxyAgent: [...sshOptions(sshd.files), '-o', `ProxyCommand=${process.execPath} ${build.bundle} proxy %h %p --relay 127.0.0.1:${laptopLine.port} --home ${socksdHome}`, ...target],
    socksd: [...sshOptions(sshd.files), '-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`, ...target],
    nodeFloor: [...sshOptions(sshd.files), '-o', `ProxyCommand=${process.execPath} ${NODE_FLOOR_SCRIPT} 127.0.0.1:${socksPort} %h %p`, ...target],
  };
}

export async function loginTimes(options: LoginOptions, log: (line: string) => void): Promise<LoginResult> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const before = buildProgram('before', options.before, scratch('login-before'), [], log);
  const after = buildProgram('after', undefined, scratch('login-after'), [], log);
  const dir = scratch('login-ssh');
  const files = makeSshdKeys(dir);
  const [deviceSshdPort, jumpSshdPort, remotePort] = await freePorts(3);
  // The device's sshd, and the jump host's (an sshd that allows forwarding) at the relay's place.
  await startSshd('device sshd', files, dir, deviceSshdPort);
  const jumpDir = scratch('login-jump');
  await startSshd('jump sshd', files, jumpDir, jumpSshdPort, ['AllowTcpForwarding yes']);
  const laptop = new DelayLink({ oneWayMs: LAPTOP_RELAY_MS });
  const device = new DelayLink({ oneWayMs: RELAY_DEVICE_MS, upBitsPerSec: DEVICE_UPLINK_BITS });
  const direct = new DelayLink({ oneWayMs: LAPTOP_RELAY_MS + RELAY_DEVICE_MS });
  const lines: DelayLine[] = [];
  try {
    const sshd = { files, port: deviceSshdPort };
    const ways = [await diodeWays(before, { laptop, device }, sshd, lines, log), await diodeWays(after, { laptop, device }, sshd, lines, log)];
    // OpenSSH's own way: the device keeps `ssh -R` to the jump host, the laptop goes through it with -J.
    const jumpFromDevice = await device.forward({ port: jumpSshdPort });
    const jumpFromLaptop = await laptop.forward({ port: jumpSshdPort });
    const directLine = await direct.forward({ port: deviceSshdPort });
    lines.push(jumpFromDevice, jumpFromLaptop, directLine);
    const reverse = startProcess('ssh -R', 'ssh', [...sshOptions(files), '-N', '-o', 'ExitOnForwardFailure=yes', '-o', 'ServerAliveInterval=15', '-p', String(jumpFromDevice.port), '-R', `127.0.0.1:${remotePort}:127.0.0.1:${deviceSshdPort}`, `${files.user}@127.0.0.1`]);
    // What -J does (an ssh -W to the jump host as the ProxyCommand), spelled out: a -J hop would take none of our -o options.
    const hop = ['ssh', ...sshOptions(files), '-p', String(jumpFromLaptop.port), '-W', '%h:%p', `${files.user}@127.0.0.1`].join(' ');
    const jumpArgs = [...sshOptions(files), '-o', `ProxyCommand=${hop}`, '-p', String(remotePort), `${files.user}@127.0.0.1`, 'true'];
    const directArgs = [...sshOptions(files), '-p', String(directLine.port), `${files.user}@127.0.0.1`, 'true'];
    // The reverse forward is up once a login through it works.
    const deadline = performance.now() + READY_MS;
    for (;;) {
      try {
        await sshRun(jumpArgs);
        break;
      } catch (err) {
        if (performance.now() > deadline || reverse.child.exitCode !== null) throw new Error(`the OpenSSH jump did not come up: ${String(err)}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    // One untimed login each (the proxy makes its key, ssh and sshd warm their caches).
    for (const w of ways) {
      await sshRun(w.proxy);
      await sshRun(w.proxyAgent);
      await sshRun(w.socksd);
    }
    await sshRun(ways[1].nodeFloor);
    await sshRun(directArgs);
    const times: Record<string, number[]> = {};
    const take = async (key: string, args: string[]) => (times[key] ??= []).push(await sshRun(args));
    log(`login: ${options.runs} rounds of ${ways.length * 3 + 3} logins`);
    for (let i = 0; i < options.runs; i++) {
      for (const w of ways) {
        await take(`proxy ${w.build.name}`, w.proxy);
        await take(`proxyAgent ${w.build.name}`, w.proxyAgent);
        await take(`socksd ${w.build.name}`, w.socksd);
      }
      await take('nodeFloor', ways[1].nodeFloor);
      await take('jump', jumpArgs);
      await take('direct', directArgs);
    }
    const m = (key: string) => round(median(times[key]));
    const result: LoginResult = {
      before: { ref: options.before, commit: before.commit },
      after: { commit: after.commit },
      path: { laptopRelayMs: LAPTOP_RELAY_MS, relayDeviceMs: RELAY_DEVICE_MS, deviceUplinkMbit: DEVICE_UPLINK_BITS / 1e6 },
      runs: options.runs,
      medianS: {
        proxy: { before: m('proxy before'), after: m('proxy after') },
        proxyAgent: { before: m('proxyAgent before'), after: m('proxyAgent after') },
        socksd: { before: m('socksd before'), after: m('socksd after') },
        nodeFloor: m('nodeFloor'),
        jump: m('jump'),
        direct: m('direct'),
      },
      proxyOverSocksdS: { before: round(m('proxy before') - m('socksd before')), after: round(m('proxy after') - m('socksd after')) },
      proxyAgentOverSocksdS: { before: round(m('proxyAgent before') - m('socksd before')), after: round(m('proxyAgent after') - m('socksd after')) },
    };
    return result;
  } finally {
    for (const l of lines) await l.close();
    await Promise.all([laptop.close(), device.close(), direct.close()]);
  }
}

export function formatLogin(r: LoginResult): string {
  const s = r.medianS;
  return [
    `\nlogin: ssh … true over laptop–relay ${r.path.laptopRelayMs} ms, relay–device ${r.path.relayDeviceMs} ms each way, device uplink ${r.path.deviceUplinkMbit} Mbit/s; median of ${r.runs} (s)`,
    `  way                       before (${r.before.commit})   after (${r.after.commit})`,
    `  diode proxy (ssh-config)  ${String(s.proxy.before).padStart(8)}   ${String(s.proxy.after).padStart(8)}`,
    `  diode proxy, socksd runs  ${String(s.proxyAgent.before).padStart(8)}   ${String(s.proxyAgent.after).padStart(8)}   (the socksd's state directory)`,
    `  socksd + nc -X 5          ${String(s.socksd.before).padStart(8)}   ${String(s.socksd.after).padStart(8)}`,
    `  proxy − socksd            ${String(r.proxyOverSocksdS.before).padStart(8)}   ${String(r.proxyOverSocksdS.after).padStart(8)}   (one laptop–relay round trip: ${(2 * r.path.laptopRelayMs) / 1000} s)`,
    `  proxy beside socksd − socksd ${String(r.proxyAgentOverSocksdS.before).padStart(5)}   ${String(r.proxyAgentOverSocksdS.after).padStart(8)}`,
    `  node SOCKS client floor   ${''.padStart(8)}   ${String(s.nodeFloor).padStart(8)}   (a bare node as ProxyCommand to the after socksd: Node's own start)`,
    `  OpenSSH jump (ssh -J)     ${String(s.jump).padStart(8)}`,
    `  routed directly           ${String(s.direct).padStart(8)}`,
  ].join('\n') + '\n';
}
