// A fleet's return after a relay restart (issue 19 item 3): N devices, each a
// real RelayLink (the agent's reconnect logic: capped backoff with jitter),
// are connected to one relay; the relay is killed (-9) and started again on
// the same port and home after OUTAGE_MS. Measured: how long until all are
// re-admitted (and half, and 90 %), the relay's CPU meanwhile, and what an
// honest user saw: real `ssh` through `nc -X 5` and `diode socksd` to a real
// sshd published by `diode publish`, tried one after another from the restart on.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cpuSeconds, startProcess, type BenchProcess } from '../lib/procs.ts';
import { freePort, scratch } from '../lib/paths.ts';
import { ask as askWorker } from '../lib/ipc.ts';
import { quantile, round, sleep } from '../lib/stats.ts';
import { SSHD_BINARY, makeSshdKeys, writeSshdConfig } from '../../test/helpers/sshd-files.ts';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DEVICES_PER_WORKER = 5_000;
/** ms the relay stays dead. */
const OUTAGE_MS = 1_000;
/** ms allowed for keys, first admission, and the return. */
const PHASE_TIMEOUT_MS = 600_000;
/** ms between two looks at how many devices are back. */
const SAMPLE_MS = 250;
/** s: each ssh try's ConnectTimeout (what a patient user waits). */
const SSH_CONNECT_TIMEOUT_S = 20;

export interface ReadmitResult {
  devices: number;
  /** ms the relay was down. */
  outageMs: number;
  /** ms from the relay listening again until this share of the devices was back (null: not within the timeout). */
  backMs: { half: number | null; ninety: number | null; all: number | null };
  /** Devices back when the measurement ended. */
  upAtEnd: number;
  admitPerSec: number;
  /** Relay CPU seconds from its restart until all were back (or the end). */
  relayCpuSec: number;
  /** The honest ssh: tries one after another from the restart on. */
  ssh: { tries: number; failed: number; firstOkMs: number | null; okP50Ms: number | null; okMaxMs: number | null; firstError?: string };
}

interface Sample {
  ms: number;
  up: number;
}

const ask = <T extends { t: string }>(proc: BenchProcess, t: string, send?: object) => askWorker<T>(proc, t, PHASE_TIMEOUT_MS, send);

export async function readmit(bundle: string, devices: number, log: (line: string) => void): Promise<ReadmitResult> {
  if (!SSHD_BINARY) throw new Error('sshd not found: apt-get install openssh-server');
  const relayPort = await freePort();
  const relayHome = scratch('readmit-relay');
  // Every simulated device comes from 127.0.0.1: lift the per-source caps (the total handshake cap stays).
  const startRelay = () =>
    startProcess('relay', process.execPath, [bundle, 'relay', '--listen', `127.0.0.1:${relayPort}`, '--home', relayHome, '--max-sessions-per-ip', String(devices + 16), '--max-handshakes-per-ip', '1024'], {
      env: { ...process.env, DIODE_LOG: 'warn' },
    });
  const procs: BenchProcess[] = [];
  let relay = startRelay();
  try {
    await relay.waitFor(/listening on 127\.0\.0\.1:\d+/);
    // The honest user: a real sshd on the device, published; a socksd on the laptop.
    const dir = scratch('readmit-ssh');
    const files = makeSshdKeys(dir);
    const sshdPort = await freePort();
    const sshd = startProcess('sshd', SSHD_BINARY, ['-D', '-e', '-f', writeSshdConfig(dir, files, sshdPort)], { tree: true });
    procs.push(sshd);
    await sshd.waitFor(/Server listening on 127\.0\.0\.1 port/);
    const agent = (name: string, args: string[]) => {
      const p = startProcess(name, process.execPath, [bundle, ...args, '--relay', `127.0.0.1:${relayPort}`, '--home', scratch(`readmit-${name}`)], { env: { ...process.env, DIODE_LOG: 'warn' } });
      procs.push(p);
      return p;
    };
    const publish = agent('publish', ['publish', '-public', `${sshdPort}:22`]);
    const socksd = agent('socksd', ['socksd', '--listen', '127.0.0.1:0']);
    const address = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1];
    const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const sshOnce = async (): Promise<{ ok: boolean; ms: number; error?: string }> => {
      const started = performance.now();
      try {
        await run('ssh', ['-F', '/dev/null', '-i', files.clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
          '-o', `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`, '-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`, `${files.user}@${address.toLowerCase()}.diode`, 'true'], { timeout: (SSH_CONNECT_TIMEOUT_S + 10) * 1000 });
        return { ok: true, ms: performance.now() - started };
      } catch (err) {
        const text = (err as { stderr?: string }).stderr?.trim() || String(err);
        return { ok: false, ms: performance.now() - started, error: text.split('\n')[0] };
      }
    };

    const counts: number[] = [];
    for (let left = devices; left > 0; left -= DEVICES_PER_WORKER) counts.push(Math.min(left, DEVICES_PER_WORKER));
    log(`readmit ${devices}: generating keys in ${counts.length} worker(s)`);
    const workers = counts.map((count, i) => {
      const w = startProcess(`devices-${i}`, process.execPath, ['--import', 'tsx', join(REPO, 'bench/devices.ts'), '--relay', String(relayPort), '--count', String(count), '--link', '1'], {
        cwd: REPO,
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      procs.push(w);
      return w;
    });
    await Promise.all(workers.map((w) => ask(w, 'ready')));
    log(`readmit ${devices}: first admission`);
    const first = performance.now();
    await Promise.all(workers.map((w) => ask(w, 'done', { t: 'go' })));
    log(`readmit ${devices}: all admitted in ${round((performance.now() - first) / 1000, 1)} s; checking the honest ssh`);
    for (let i = 0; !(await sshOnce()).ok; i++) if (i > 20) throw new Error('the honest ssh does not work before the restart');

    log(`readmit ${devices}: relay kill -9, down for ${OUTAGE_MS} ms`);
    relay.child.kill('SIGKILL');
    await new Promise((r) => relay.child.once('exit', r));
    await sleep(OUTAGE_MS);
    relay = startRelay();
    await relay.waitFor(/listening on 127\.0\.0\.1:\d+/);
    const t0 = performance.now();
    const cpu0 = cpuSeconds(relay);
    const since = () => performance.now() - t0;

    const samples: Sample[] = [];
    let lastProblems: Array<[string, number]> = [];
    let allAt: number | null = null;
    let cpuAtAll = 0;
    const sampling = (async () => {
      while (since() < PHASE_TIMEOUT_MS) {
        const replies = await Promise.all(workers.map((w) => ask<{ t: string; up: number; problems: Array<[string, number]> }>(w, 'count', { t: 'count' })));
        const up = replies.reduce((n, r) => n + r.up, 0);
        samples.push({ ms: since(), up });
        lastProblems = replies.flatMap((r) => r.problems);
        if (samples.length % 40 === 0) log(`readmit ${devices}: ${up} back after ${round(since() / 1000, 1)} s; devices' warnings so far: ${lastProblems.slice(0, 4).map(([m, n]) => `${n}× ${m}`).join(' | ')}`);
        if (up >= devices) {
          allAt = since();
          cpuAtAll = cpuSeconds(relay) - cpu0;
          return;
        }
        await sleep(SAMPLE_MS);
      }
    })();
    const tries: Array<{ at: number; ok: boolean; ms: number; error?: string }> = [];
    const probing = (async () => {
      // One try after another until all devices are back and a try succeeded after that.
      while (since() < PHASE_TIMEOUT_MS) {
        const at = since();
        const r = await sshOnce();
        tries.push({ at, ...r });
        if (allAt !== null && r.ok && at >= allAt) return;
      }
    })();
    await Promise.all([sampling, probing]);
    const at = (share: number) => {
      const ms = samples.find((s) => s.up >= devices * share)?.ms;
      return ms === undefined ? null : round(ms);
    };
    const ok = tries.filter((x) => x.ok);
    const firstOk = ok[0];
    const okMs = ok.map((x) => x.ms);
    const result: ReadmitResult = {
      devices,
      outageMs: OUTAGE_MS,
      backMs: { half: at(0.5), ninety: at(0.9), all: allAt === null ? null : round(allAt) },
      upAtEnd: samples.at(-1)?.up ?? 0,
      admitPerSec: allAt === null ? 0 : round(devices / (allAt / 1000)),
      relayCpuSec: round(allAt === null ? cpuSeconds(relay) - cpu0 : cpuAtAll),
      ssh: {
        tries: tries.length,
        failed: tries.length - ok.length,
        // When the first successful try was started, after the restart; its own duration is in okMaxMs.
        firstOkMs: firstOk ? round(firstOk.at + firstOk.ms) : null,
        okP50Ms: okMs.length ? round(quantile(okMs, 0.5)) : null,
        okMaxMs: okMs.length ? round(Math.max(...okMs)) : null,
        ...(tries.find((x) => !x.ok)?.error ? { firstError: tries.find((x) => !x.ok)!.error } : {}),
      },
    };
    const refusals = relay.output().split('\n').filter((l) => /refused|warn|error/.test(l));
    if (refusals.length > 0) log(`readmit ${devices}: the relay logged ${refusals.length} refusal/warning line(s), the last:\n  ${refusals.slice(-8).join('\n  ')}`);
    log(`readmit ${devices}: all back after ${result.backMs.all} ms; ssh ${ok.length}/${tries.length} tries ok, first ok ${result.ssh.firstOkMs} ms after the restart`);
    return result;
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await relay.stop();
  }
}
