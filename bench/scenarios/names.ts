import { startProcess } from '../lib/procs.ts';
import { sshOptions, sshRun, startSshd } from '../lib/ssh.ts';
import { freePorts, scratch } from '../lib/paths.ts';
import { DelayLink, type DelayLine } from '../lib/delay-line.ts';
import { median, round } from '../lib/stats.ts';
import { SSHD_BINARY, makeSshdKeys } from '../../test/helpers/sshd-files.ts';
import { DEVICE_UPLINK_BITS, LAPTOP_RELAY_MS, RELAY_DEVICE_MS } from './login.ts';

// Issue 25: what a name costs a login. `ssh <user>@kitchen.diode true`
// against `ssh <user>@0x….diode true`, through diode proxy (ssh-config's
// way: one process per login, which asks the relay every time and checks
// the answer against its pin) and through a running socksd with nc -X 5
// (which reuses an answer for 60 s), over the login scenario's emulated
// home-broadband path, in turns so both meet the same moments.

/** ms for the relay, the device agent or socksd to come up. */
const READY_MS = 60_000;

export interface NamesResult {
  path: { laptopRelayMs: number; relayDeviceMs: number; deviceUplinkMbit: number };
  runs: number;
  /** Median seconds of `ssh … true`, by address and by name, per way. */
  medianS: { proxy: { address: number; name: number }; socksd: { address: number; name: number } };
  /** by name / by address, per way (medians). */
  ratio: { proxy: number; socksd: number };
  /** by name − by address through diode proxy, seconds: against one laptop–relay round trip. */
  proxyNameCostS: number;
}

export async function nameLogins(bundle: string, runs: number, log: (line: string) => void): Promise<NamesResult> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const dir = scratch('names-ssh');
  const files = makeSshdKeys(dir);
  const [sshdPort] = await freePorts(1);
  await startSshd('device sshd', files, dir, sshdPort);
  const laptop = new DelayLink({ oneWayMs: LAPTOP_RELAY_MS });
  const device = new DelayLink({ oneWayMs: RELAY_DEVICE_MS, upBitsPerSec: DEVICE_UPLINK_BITS });
  const lines: DelayLine[] = [];
  try {
    const node = (role: string, args: string[]) => startProcess(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'info' } });
    const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', scratch('names-relay')]);
    const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
    const deviceLine = await device.forward({ port: relayPort });
    const laptopLine = await laptop.forward({ port: relayPort });
    lines.push(deviceLine, laptopLine);
    const publish = node('publish', ['publish', '-public', `${sshdPort}:22`, '--name', 'kitchen', '--relay', `127.0.0.1:${deviceLine.port}`, '--home', scratch('names-device')]);
    const address = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/, READY_MS))[1].toLowerCase();
    await publish.waitFor(/name kitchen claimed at relay/, READY_MS);
    const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${laptopLine.port}`, '--home', scratch('names-socksd')]);
    const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/, READY_MS))[1]);
    await socksd.waitFor(/connected to relay/, READY_MS);
    const proxyHome = scratch('names-proxy');
    const proxy = ['-o', `ProxyCommand=${process.execPath} ${bundle} proxy %h %p --relay 127.0.0.1:${laptopLine.port} --home ${proxyHome}`];
    const viaSocksd = ['-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`];
    const ways: Record<string, string[]> = {
      'proxy address': [...sshOptions(files), ...proxy, `${files.user}@${address}.diode`, 'true'],
      'proxy name': [...sshOptions(files), ...proxy, `${files.user}@kitchen.diode`, 'true'],
      'socksd address': [...sshOptions(files), ...viaSocksd, `${files.user}@${address}.diode`, 'true'],
      'socksd name': [...sshOptions(files), ...viaSocksd, `${files.user}@kitchen.diode`, 'true'],
    };
    // One untimed login each: the proxy makes its key and pins kitchen, ssh and sshd warm their caches.
    for (const args of Object.values(ways)) await sshRun(args);
    log(`names: ${runs} rounds of ${Object.keys(ways).length} logins (device ${address} is kitchen)`);
    const times: Record<string, number[]> = {};
    for (let i = 0; i < runs; i++) {
      // Alternate which goes first, so neither way always follows the other.
      const order = i % 2 === 0 ? Object.keys(ways) : Object.keys(ways).reverse();
      for (const way of order) (times[way] ??= []).push(await sshRun(ways[way]));
    }
    const m = (way: string) => round(median(times[way]));
    return {
      path: { laptopRelayMs: LAPTOP_RELAY_MS, relayDeviceMs: RELAY_DEVICE_MS, deviceUplinkMbit: DEVICE_UPLINK_BITS / 1e6 },
      runs,
      medianS: { proxy: { address: m('proxy address'), name: m('proxy name') }, socksd: { address: m('socksd address'), name: m('socksd name') } },
      ratio: { proxy: round(m('proxy name') / m('proxy address')), socksd: round(m('socksd name') / m('socksd address')) },
      proxyNameCostS: round(m('proxy name') - m('proxy address')),
    };
  } finally {
    for (const l of lines) await l.close();
    await Promise.all([laptop.close(), device.close()]);
  }
}

export function formatNames(r: NamesResult): string {
  const s = r.medianS;
  return [
    `\nnames: ssh … true by name and by address over laptop–relay ${r.path.laptopRelayMs} ms, relay–device ${r.path.relayDeviceMs} ms each way, device uplink ${r.path.deviceUplinkMbit} Mbit/s; median of ${r.runs} (s)`,
    `  way                       by address   by name   name / address`,
    `  diode proxy (ssh-config)  ${String(s.proxy.address).padStart(10)}  ${String(s.proxy.name).padStart(8)}   ${r.ratio.proxy}`,
    `  socksd + nc -X 5          ${String(s.socksd.address).padStart(10)}  ${String(s.socksd.name).padStart(8)}   ${r.ratio.socksd}`,
    `  proxy: name − address     ${String(r.proxyNameCostS).padStart(10)}   (one laptop–relay round trip: ${(2 * r.path.laptopRelayMs) / 1000} s)`,
  ].join('\n') + '\n';
}
