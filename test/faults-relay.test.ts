import test, { type ExecutionContext } from 'ava';
import { performance } from 'node:perf_hooks';
import { tempDir, type Running } from './helpers/diode.ts';
import { Net, count, within, netnsRefusal, openSsh, outputs, track, publishIn, relayIn, socksdIn, sshBaseline, sshWorksWithin, sshdIn, until, type Host, type SshSession } from './helpers/netns.ts';
import type { Sshd } from './helpers/sshd.ts';

// Issue 19 item 6: a relay lost under a device and a client, with real OpenSSH
// through socksd (nc -X 5), each agent and each relay in its own network
// namespace around a router namespace. Every row has its own namespaces and
// processes (it kills its relay), so the rows run concurrently.
//
//   client ns (socksd, ssh) ── hub ns ── relay ns (one or two)
//                                └── device ns (publish, sshd)

/** ms: open sessions end within this of the relay's loss (with an error, not a hang). */
const END_MS = 5_000;
/** ms: after the relay is back (or the other relay is there), agents are reachable within this. */
const BACK_MS = 5_000;

const refusal = await netnsRefusal();
const nstest = refusal ? test.skip : test;
if (refusal) test.skip(`network fault tests skipped: ${refusal}`, () => {});
test.afterEach.always((t) => {
  if (!t.passed) console.error(`${t.title}: the processes' last lines\n${outputs(t.title)}`);
});

const BUSY = 'while :; do head -c 65536 /dev/zero; sleep 0.25; done';
const IDLE = 'sleep 600';
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

interface World {
  net: Net;
  relays: Array<{ host: Host; home: string; proc: Running; endpoint: string }>;
  device: Host;
  client: Host;
  sshd: Sshd;
  publish: Running;
  address: string;
  socksd: Running;
}

async function world(t: ExecutionContext, tag: string, relayCount: number): Promise<World> {
  const net = new Net(t, tag);
  const relays = [];
  for (let i = 0; i < relayCount; i++) {
    const host = await net.host(`relay${i}`);
    const home = tempDir(t);
    const r = await relayIn(t, host, home);
    track(t, `relay${i}`, r.proc);
    relays.push({ host, home, proc: r.proc, endpoint: r.endpoint });
  }
  const list = relays.map((r) => r.endpoint).join(',');
  const [device, client] = [await net.host('device'), await net.host('client')];
  const sshd = await sshdIn(t, device);
  const [p, socksd] = await Promise.all([publishIn(t, device, list), socksdIn(t, client, list)]);
  track(t, 'publish', p.proc);
  track(t, 'socksd', socksd);
  track(t, 'sshd', sshd.proc);
  return { net, relays, device, client, sshd, publish: p.proc, address: p.address, socksd };
}

/** An idle and a busy ssh session, data flowing in the busy one. */
async function sessions(t: ExecutionContext, w: World): Promise<SshSession[]> {
  const [busy, idle] = await Promise.all([openSsh(t, w.client, w.sshd, w.address, BUSY), openSsh(t, w.client, w.sshd, w.address, IDLE)]);
  const before = busy.bytes();
  await until('data to flow', () => busy.bytes() > before + 256 * 1024, 15_000);
  return [busy, idle];
}

function ended(list: SshSession[], ms: number) {
  return Promise.all(list.map((s) => within<{ at: number; code: number | null }>(s.exited, ms, () => ({ at: Infinity, code: null }))));
}

/** Kills relay 0 with SIGKILL, restarts it (same home) after `downMs`, and checks the sessions and the return. */
async function relayOutage(t: ExecutionContext, w: World, downMs: number) {
  const open = await sessions(t, w);
  const baseline = await sshBaseline(w.client, w.sshd, w.address);
  const relay = w.relays[0];
  const devConnected = count(w.publish, /connected to relay/);
  const socksConnected = count(w.socksd, /connected to relay/);
  const lost = performance.now();
  relay.proc.child.kill('SIGKILL');
  const ends = await ended(open, END_MS * 3);
  t.log(`open ssh sessions (busy, idle) ended ${ends.map((e) => `${secs(e.at - lost)} (exit ${e.code})`).join(', ')} after the kill (target <= ${secs(END_MS)})`);
  await new Promise((r) => setTimeout(r, Math.max(0, downMs - (performance.now() - lost))));
  const restarting = performance.now();
  const again = await relayIn(t, relay.host, relay.home);
  relay.proc = track(t, 'relay0 (restarted)', again.proc);
  const back = performance.now();
  const [devMs, socksMs, sshMs] = await Promise.all([
    until('the device to reconnect', () => count(w.publish, /connected to relay/) > devConnected, 30_000).catch(() => Infinity),
    until('socksd to reconnect', () => count(w.socksd, /connected to relay/) > socksConnected, 30_000).catch(() => Infinity),
    sshWorksWithin(w.client, w.sshd, w.address, 30_000).catch(() => Infinity),
  ]);
  t.log(
    `relay down ${secs(restarting - lost)}, listening again ${secs(back - restarting)} after its restart; then: device back in ${secs(devMs)}, ` +
      `socksd in ${secs(socksMs)} (target <= ${secs(BACK_MS)}), a new ssh worked in ${secs(sshMs)} (target <= ${secs(BACK_MS)} + one ssh's own set-up, ${secs(baseline)} before the kill)`,
  );
  for (const e of ends) {
    t.true(e.at - lost <= END_MS, 'the open session ended within 5 s');
    t.not(e.code, 0, 'with an error');
  }
  t.true(devMs <= BACK_MS, 'the device is back within 5 s');
  t.true(socksMs <= BACK_MS, 'socksd is back within 5 s');
  t.true(sshMs <= BACK_MS + baseline, 'a new ssh works within 5 s (plus its own set-up)');
}

nstest('relay kill -9, restarted after 1 s: open ssh sessions end within 5 s, a new ssh works within 5 s', async (t) => {
  const w = await world(t, 'kill', 1);
  await relayOutage(t, w, 1_000);
});

// The backoff is capped at 3 s (agent/link/backoff.ts) and reaches the cap by the
// 4th failed dial, about 3 s into the outage; from there every further second of
// outage leaves the agents in the same state. So 20 s down is the 60 s row.
nstest('relay down 20 s (the backoff has long reached its 3 s cap: the same as 60 s), then back: agents reachable within 5 s', async (t) => {
  const w = await world(t, 'long', 1);
  await relayOutage(t, w, 20_000);
});

nstest("two relays, the device's and socksd's relay killed: open sessions end within 5 s, a new ssh works through the other within 5 s", async (t) => {
  const w = await world(t, 'two', 2);
  const open = await sessions(t, w);
  const baseline = await sshBaseline(w.client, w.sshd, w.address);
  const [first, second] = w.relays;
  const lost = performance.now();
  first.proc.child.kill('SIGKILL');
  const [ends, devMs, socksMs, sshMs] = await Promise.all([
    ended(open, END_MS * 3),
    until('the device on the other relay', () => count(w.publish, new RegExp(`connected to relay ${second.endpoint.replace(/\./g, '\\.')} `)) > 0, 30_000).catch(() => Infinity),
    until('socksd on the other relay', () => count(w.socksd, new RegExp(`connected to relay ${second.endpoint.replace(/\./g, '\\.')} `)) > 0, 30_000).catch(() => Infinity),
    sshWorksWithin(w.client, w.sshd, w.address, 30_000).catch(() => Infinity),
  ]);
  t.log(`open ssh sessions (busy, idle) ended ${ends.map((e) => `${secs(e.at - lost)} (exit ${e.code})`).join(', ')} after the kill (target <= ${secs(END_MS)})`);
  t.log(`device on the other relay after ${secs(devMs)}, socksd after ${secs(socksMs)}, a new ssh worked after ${secs(sshMs)} (target <= ${secs(BACK_MS)} + one ssh's own set-up, ${secs(baseline)} before the kill)`);
  for (const e of ends) {
    t.true(e.at - lost <= END_MS, 'the open session ended within 5 s');
    t.not(e.code, 0, 'with an error');
  }
  t.true(devMs <= BACK_MS, 'the device is on the other relay within 5 s');
  t.true(sshMs <= BACK_MS + baseline, 'a new ssh works through the other relay within 5 s (plus its own set-up)');
});
