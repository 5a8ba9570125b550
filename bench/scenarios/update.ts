import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { openEcho, readExactly, socks5Connect } from '../lib/client.ts';
import { scratch, untilOpen } from '../lib/paths.ts';
import { cpuSeconds, startProcess, type BenchProcess } from '../lib/procs.ts';
import { MiB, quantile, round } from '../lib/stats.ts';

/**
 * Issue 26, item 3: a device downloads a release over its relay link at a
 * bounded rate (update-rate) and "an ssh session through the same link stays
 * usable". Measured as the round trip of 64 bytes through the device's link
 * (client → socksd → relay → device → echo sink and back) with the device
 * idle, then while it downloads a release at update-rate, in the same run;
 * and the rate the download kept.
 */
export interface UpdateSizes {
  /** Bytes of the release downloaded (random bytes: it is refused at its --version check, after the download). */
  releaseBytes: number;
  /** The device's update-rate in KiB/s. */
  rateKiB: number;
  rttCount: number;
  rttWarmup: number;
}

export const UPDATE_SIZES: UpdateSizes = { releaseBytes: 32 * MiB, rateKiB: 512, rttCount: 2_000, rttWarmup: 500 };
export const UPDATE_QUICK_SIZES: UpdateSizes = { releaseBytes: 4 * MiB, rateKiB: 512, rttCount: 300, rttWarmup: 100 };

export interface UpdateResult {
  releaseBytes: number;
  rateKiB: number;
  /** KiB/s the download kept, from the agent's "downloading" line to its verdict on the file. */
  achievedKiBps: number;
  downloadS: number;
  idle: { rttP50us: number; rttP99us: number };
  downloading: { rttP50us: number; rttP99us: number };
  /** Round trip while downloading / idle. */
  ratioP50: number;
  ratioP99: number;
  /** CPU seconds of the device and the relay during the download. */
  deviceCpuSec: number;
  relayCpuSec: number;
}

const REMOTE_PORT = 7;

async function rtts(socket: Socket, count: number, warmup: number): Promise<number[]> {
  const message = Buffer.alloc(64, 0x5a);
  const out: number[] = [];
  for (let i = 0; i < warmup + count; i++) {
    const start = process.hrtime.bigint();
    socket.write(message);
    await readExactly(socket, message.length);
    if (i >= warmup) out.push(Number(process.hrtime.bigint() - start) / 1e3);
  }
  return out;
}

export async function updateDownload(bundle: string, sinkPort: number, sizes: UpdateSizes, log: (line: string) => void): Promise<UpdateResult> {
  const diode = (args: string[]) => execFileSync(process.execPath, [bundle, ...args], { encoding: 'utf8' });
  const node = (role: string, args: string[], env: NodeJS.ProcessEnv = {}) => startProcess(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'info', ...env } });
  // A release of random bytes: the relay serves it, the device downloads and hashes it, then refuses to run it.
  const releases = scratch('releases');
  const file = join(releases, 'diode-linux-x64');
  writeFileSync(file, randomBytes(sizes.releaseBytes));
  const keyFile = join(scratch('release-key'), 'release.key');
  const key = diode(['release', 'keygen', '--key-file', keyFile]).trim();
  diode(['release', 'sign', '--key-file', keyFile, file, '--arch', 'linux-x64', '--release-version', '99.0.0']);
  const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', scratch('relay'), '--releases', releases]);
  const relayPort = Number((await relay.waitFor(/relay 0x[0-9a-fA-F]{40} listening on 127\.0\.0\.1:(\d+)/))[1]);
  const socksd = node('socksd', ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', scratch('client')]);
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const home = scratch('device');
  const device = (): BenchProcess => node('publish', ['publish', '-public', `${sinkPort}:${REMOTE_PORT}`, '--relay', `127.0.0.1:${relayPort}`, '--home', home], { DIODE_LAUNCHER: '1' });
  const measure = async (proc: BenchProcess) => {
    const address = (await proc.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
    const connector = () => socks5Connect(socksPort, `${address}.diode`, REMOTE_PORT);
    await untilOpen(connector, 'update bench path');
    const socket = await openEcho(connector);
    try {
      return await rtts(socket, sizes.rttCount, sizes.rttWarmup);
    } finally {
      socket.destroy();
    }
  };
  try {
    log(`update: ${sizes.rttCount} round trips through an idle device`);
    let proc = device();
    const idle = await measure(proc);
    await proc.stop();
    diode(['config', '--home', home, '-set', `update-keys=${key}`, '-set', `update-rate=${sizes.rateKiB}`]);
    log(`update: the device downloads ${sizes.releaseBytes / MiB} MiB at ${sizes.rateKiB} KiB/s; ${sizes.rttCount} round trips meanwhile`);
    proc = device();
    const began = Date.parse((await proc.waitFor(/(\S+Z) info +\[publish\/update\] release 99\.0\.0 .* downloading/, 60_000))[1]);
    const cpu0 = { device: cpuSeconds(proc), relay: cpuSeconds(relay) };
    const during = await measure(proc);
    const endLine = await proc.waitFor(/(\S+Z) warn +\[publish\/update\] update (?:refused: release 99\.0\.0|to 99\.0\.0 failed)[^\n]*/, (sizes.releaseBytes / 1024 / sizes.rateKiB) * 1000 * 2 + 60_000);
    const ended = Date.parse(endLine[1]);
    if (!/does not run|--version failed/.test(endLine[0])) throw new Error(`the download did not complete: ${endLine[0]}`);
    const cpu1 = { device: cpuSeconds(proc), relay: cpuSeconds(relay) };
    await proc.stop();
    const downloadS = (ended - began) / 1000;
    const p = (xs: number[], q: number) => round(quantile(xs, q), 1);
    const result: UpdateResult = {
      releaseBytes: sizes.releaseBytes,
      rateKiB: sizes.rateKiB,
      achievedKiBps: round(sizes.releaseBytes / 1024 / downloadS, 0),
      downloadS: round(downloadS, 1),
      idle: { rttP50us: p(idle, 0.5), rttP99us: p(idle, 0.99) },
      downloading: { rttP50us: p(during, 0.5), rttP99us: p(during, 0.99) },
      ratioP50: round(quantile(during, 0.5) / quantile(idle, 0.5), 2),
      ratioP99: round(quantile(during, 0.99) / quantile(idle, 0.99), 2),
      deviceCpuSec: round(cpu1.device - cpu0.device, 2),
      relayCpuSec: round(cpu1.relay - cpu0.relay, 2),
    };
    return result;
  } finally {
    await socksd.stop();
    await relay.stop();
  }
}
