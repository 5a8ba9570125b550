import { performance } from 'node:perf_hooks';
import { rssAnonBytes, rssBytes, startProcess } from '../lib/procs.ts';
import { freePorts, scratch } from '../lib/paths.ts';
import { sshOptions, sshRun, startSshd } from '../lib/ssh.ts';
import { MiB, round, sleep } from '../lib/stats.ts';
import { makeSshdKeys } from '../../test/helpers/sshd-files.ts';

// Issue 28 item 4: memory stays flat over days. An idle publish holds one
// relay session (its keep-alive every interval) for N minutes; once a
// minute someone logs in with plain ssh through `diode proxy` and runs
// `true`. Its RSS at the end must be within +5 % of its RSS at minute 2.

/** The issue's figure: the end within this many % above minute 2. */
export const IDLE_DRIFT_LIMIT_PCT = 5;
/** s between logins. */
const LOGIN_EVERY_S = 60;
/** s between RSS samples. */
const SAMPLE_EVERY_S = 10;
/** The minute whose RSS is the reference (start-up and the first logins' JIT work are done by then). */
const REFERENCE_MINUTE = 2;

export interface IdleSample {
  s: number;
  publishMB: number;
  publishAnonMB: number;
  relayMB: number;
}

export interface IdleResult {
  minutes: number;
  logins: number;
  failedLogins: number;
  firstLoginError?: string;
  publish: { minute2MB: number; endMB: number; maxMB: number; driftPct: number; minute2AnonMB: number; endAnonMB: number };
  relay: { minute2MB: number; endMB: number; driftPct: number };
  pass: boolean;
  samples: IdleSample[];
}

export async function idleMemory(bundle: string, minutes: number, log: (line: string) => void): Promise<IdleResult> {
  const dir = scratch('idle-ssh');
  const files = makeSshdKeys(dir);
  const [sshdPort] = await freePorts(1);
  const sshd = await startSshd('device sshd', files, dir, sshdPort);
  const node = (role: string, args: string[]) => startProcess(role, process.execPath, [bundle, ...args], { env: { ...process.env, DIODE_LOG: 'warn' } });
  const relay = node('relay', ['relay', '--listen', '127.0.0.1:0', '--home', scratch('idle-relay')]);
  try {
    const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const publish = node('publish', ['publish', '-public', `${sshdPort}:22`, '--relay', `127.0.0.1:${relayPort}`, '--home', scratch('idle-device')]);
    const device = (await publish.waitFor(/ as (0x[0-9a-fA-F]{40})/))[1].toLowerCase();
    const proxyHome = scratch('idle-proxy');
    const ssh = [...sshOptions(files), '-o', `ProxyCommand=${process.execPath} ${bundle} proxy %h %p --relay 127.0.0.1:${relayPort} --home ${proxyHome}`, `${files.user}@${device}.diode`, 'true'];
    const start = performance.now();
    const elapsed = () => (performance.now() - start) / 1000;
    const samples: IdleSample[] = [];
    let logins = 0;
    let failed = 0;
    let firstError: string | undefined;
    let nextLogin = 0;
    let nextSample = 0;
    log(`idle: ${minutes} min, ssh through diode proxy every ${LOGIN_EVERY_S} s, RSS every ${SAMPLE_EVERY_S} s`);
    while (elapsed() < minutes * 60) {
      if (elapsed() >= nextLogin) {
        nextLogin += LOGIN_EVERY_S;
        logins++;
        try {
          await sshRun(ssh);
        } catch (err) {
          failed++;
          firstError ??= String(err);
        }
      }
      if (elapsed() >= nextSample) {
        nextSample += SAMPLE_EVERY_S;
        samples.push({ s: round(elapsed()), publishMB: round(rssBytes(publish) / MiB), publishAnonMB: round(rssAnonBytes(publish) / MiB), relayMB: round(rssBytes(relay) / MiB) });
        if (samples.length % 30 === 0) log(`idle: ${Math.round(elapsed() / 60)} min, publish ${samples.at(-1)!.publishMB} MB`);
      }
      await sleep(Math.max(0, Math.min(nextLogin, nextSample) - elapsed()) * 1000);
    }
    const at = (s: number) => samples.reduce((best, x) => (Math.abs(x.s - s) < Math.abs(best.s - s) ? x : best));
    const ref = at(REFERENCE_MINUTE * 60);
    const end = samples[samples.length - 1];
    const drift = (a: number, b: number) => round(((b - a) / a) * 100);
    const driftPct = drift(ref.publishMB, end.publishMB);
    await publish.stop();
    return {
      minutes,
      logins,
      failedLogins: failed,
      ...(firstError ? { firstLoginError: firstError } : {}),
      publish: {
        minute2MB: ref.publishMB,
        endMB: end.publishMB,
        maxMB: Math.max(...samples.map((x) => x.publishMB)),
        driftPct,
        minute2AnonMB: ref.publishAnonMB,
        endAnonMB: end.publishAnonMB,
      },
      relay: { minute2MB: ref.relayMB, endMB: end.relayMB, driftPct: drift(ref.relayMB, end.relayMB) },
      pass: driftPct <= IDLE_DRIFT_LIMIT_PCT && failed === 0,
      samples,
    };
  } finally {
    await relay.stop();
    await sshd.stop();
  }
}

export function formatIdle(r: IdleResult): string {
  const p = r.publish;
  return [
    `\nidle: publish with one relay session for ${r.minutes} min, ${r.logins} ssh logins through diode proxy (${r.failedLogins} failed${r.firstLoginError ? `: ${r.firstLoginError}` : ''})`,
    `  publish RSS minute 2 ${p.minute2MB} MB → end ${p.endMB} MB (${p.driftPct >= 0 ? '+' : ''}${p.driftPct} %, max ${p.maxMB} MB); RssAnon ${p.minute2AnonMB} → ${p.endAnonMB} MB`,
    `  relay RSS minute 2 ${r.relay.minute2MB} MB → end ${r.relay.endMB} MB (${r.relay.driftPct >= 0 ? '+' : ''}${r.relay.driftPct} %)`,
    `  ${r.pass ? 'PASS' : 'FAIL'}  end within +${IDLE_DRIFT_LIMIT_PCT} % of minute 2, every login through`,
  ].join('\n') + '\n';
}
