import test, { type ExecutionContext } from 'ava';
import { performance } from 'node:perf_hooks';
import type { Running } from './helpers/diode.ts';
import { Net, count, within, netnsRefusal, openSsh, outputs, track, publishIn, relayIn, socksdIn, sshBaseline, sshWorksWithin, sshdIn, until, type Host, type SshSession } from './helpers/netns.ts';
import type { Sshd } from './helpers/sshd.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Issue 19 item 6 (and item 2's shaped link): real cuts of a device's path, with
// real OpenSSH through socksd (nc -X 5). One relay and one socksd, each in its
// own network namespace, are shared by the rows; every row has its own device
// namespace (publish + sshd) and cuts only that device's link, so the rows run
// concurrently.
//
//   client ns (socksd, ssh) ── hub ns (router; iptables DROP here) ── relay ns
//                                 └── one ns per device (publish, sshd; link down, tc tbf here)

/** ms: both ends must notice a silent path death within this (idle or busy). */
const NOTICE_MS = 30_000;
/** ms: after the path returns (or the device restarts), the device is reachable again within this. */
const BACK_MS = 5_000;
/** ms: an open session ends within this of its device being killed. */
const END_MS = 5_000;

const refusal = await netnsRefusal();

// The shared part: hub, relay, client with socksd. Hooks cannot hold t.teardown, so a scope of its own.
const scopeFns: Array<() => unknown> = [];
// passed: the shared processes' output is shown with each failed row instead (track), not again at the end.
const scope = { title: 'shared set-up', passed: true, teardown: (fn: () => unknown) => scopeFns.push(fn) } as unknown as ExecutionContext;
let shared: Promise<{ net: Net; relay: Host; client: Host; relayProc: Running; socksd: Running; endpoint: string }> | undefined;

function setup() {
  shared ??= (async () => {
    const home = mkdtempSync(join(tmpdir(), 'diode-faults-'));
    scope.teardown(() => rmSync(home, { recursive: true, force: true }));
    const net = new Net(scope, 'dev');
    const [relay, client] = [await net.host('relay'), await net.host('client')];
    const r = await relayIn(scope, relay, home);
    const socksd = await socksdIn(scope, client, r.endpoint);
    return { net, relay, client, relayProc: r.proc, socksd, endpoint: r.endpoint };
  })();
  return shared;
}

test.after.always(async () => {
  for (const fn of scopeFns.reverse()) await fn();
});

interface Row {
  net: Net;
  device: Host;
  client: Host;
  sshd: Sshd;
  publish: Running;
  address: string;
  home: string;
  relayProc: Running;
  endpoint: string;
}

async function device(t: ExecutionContext, name: string): Promise<Row> {
  const s = await setup();
  const host = await s.net.host(name);
  const sshd = await sshdIn(t, host);
  const p = await publishIn(t, host, s.endpoint);
  track(t, 'relay (shared)', s.relayProc);
  track(t, 'socksd (shared)', s.socksd);
  track(t, 'publish', p.proc);
  track(t, 'sshd', sshd.proc);
  return { net: s.net, device: host, client: s.client, sshd, publish: p.proc, address: p.address, home: p.home, relayProc: s.relayProc, endpoint: s.endpoint };
}

const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** ssh -> device: data flowing all the time (64 KiB every 250 ms), so the path is busy when it is cut. */
const BUSY = 'while :; do head -c 65536 /dev/zero; sleep 0.25; done';
const IDLE = 'sleep 600';

/**
 * The row after a silent cut (`cut` done at `lost`): both ends notice within
 * NOTICE_MS, the open sessions end, and after `restore` the device is back
 * within BACK_MS and a new ssh works.
 */
async function silentDeath(t: ExecutionContext, row: Row, sessions: SshSession[], cut: () => Promise<void>, restore: () => Promise<void>) {
  const lostRelay = count(row.publish, /lost relay/);
  const relaySaw = new RegExp(`closed the session of ${row.address} `, 'i');
  const closedBefore = count(row.relayProc, relaySaw);
  const connected = count(row.publish, /connected to relay/);
  const baseline = await sshBaseline(row.client, row.sshd, row.address);
  const lost = performance.now();
  await cut();
  const [deviceMs, relayMs] = await Promise.all([
    until('the device to notice', () => count(row.publish, /lost relay/) > lostRelay, NOTICE_MS + 10_000).catch(() => Infinity),
    until('the relay to notice', () => count(row.relayProc, relaySaw) > closedBefore, NOTICE_MS + 10_000).catch(() => Infinity),
  ]);
  const ends = await Promise.all(sessions.map((s) => within<{ at: number; code: number | null }>(s.exited, 10_000, () => ({ at: Infinity, code: null }))));
  await restore();
  // Both measured from the path's return, concurrently.
  const [reconnectMs, sshMs] = await Promise.all([
    until('the device to reconnect', () => count(row.publish, /connected to relay/) > connected, 30_000).catch(() => Infinity),
    sshWorksWithin(row.client, row.sshd, row.address, 30_000).catch(() => Infinity),
  ]);
  t.log(`device noticed after ${secs(deviceMs)}, relay after ${secs(relayMs)} (target <= ${secs(NOTICE_MS)})`);
  t.log(`open ssh sessions ended after ${ends.map((e) => `${secs(e.at - lost)} (exit ${e.code})`).join(', ')}`);
  t.log(`after the path returned: device reconnected in ${secs(reconnectMs)} (target <= ${secs(BACK_MS)}), a new ssh worked in ${secs(sshMs)} (target <= ${secs(BACK_MS)} + one ssh's own set-up, ${secs(baseline)} before the cut)`);
  t.true(deviceMs <= NOTICE_MS, 'the device notices within 30 s');
  t.true(relayMs <= NOTICE_MS, 'the relay notices within 30 s');
  for (const e of ends) {
    t.true(e.at - lost <= NOTICE_MS + 1_000, 'the open session ended (with the relay noticing)');
    t.not(e.code, 0, 'an error, not a clean exit');
  }
  t.true(reconnectMs <= BACK_MS, 'the device is back within 5 s of the path');
  t.true(sshMs <= BACK_MS + baseline, 'a new ssh works within 5 s of the path (plus its own set-up)');
}

const nstest = refusal ? test.skip : test;
if (refusal) test.skip(`network fault tests skipped: ${refusal}`, () => {});
test.afterEach.always((t) => {
  if (!t.passed) console.error(`${t.title}: the processes' last lines\n${outputs(t.title)}`);
});

nstest('packets dropped silently (iptables DROP), idle: both ends notice within 30 s, the open session ends, back within 5 s of the path', async (t) => {
  const row = await device(t, 'idle');
  const session = await openSsh(t, row.client, row.sshd, row.address, IDLE);
  await silentDeath(t, row, [session], () => row.net.cut(row.device), () => row.net.heal(row.device));
});

nstest('packets dropped silently (iptables DROP), busy: both ends notice within 30 s, the open sessions end, back within 5 s of the path', async (t) => {
  const row = await device(t, 'busy');
  const busy = await openSsh(t, row.client, row.sshd, row.address, BUSY);
  const idle = await openSsh(t, row.client, row.sshd, row.address, IDLE);
  const before = busy.bytes();
  await until('data to flow', () => busy.bytes() > before + 256 * 1024, 15_000);
  await silentDeath(t, row, [busy, idle], () => row.net.cut(row.device), () => row.net.heal(row.device));
});

nstest("link down and up (the device's interface): both ends notice within 30 s, the open session ends, back within 5 s of the link", async (t) => {
  const row = await device(t, 'link');
  const session = await openSsh(t, row.client, row.sshd, row.address, IDLE);
  await silentDeath(t, row, [session], () => row.net.linkDown(row.device), () => row.net.linkUp(row.device));
});

nstest('device kill -9: the open ssh sessions end within 5 s; the restarted device is reachable within 5 s', async (t) => {
  const row = await device(t, 'kill');
  const busy = await openSsh(t, row.client, row.sshd, row.address, BUSY);
  const idle = await openSsh(t, row.client, row.sshd, row.address, IDLE);
  const baseline = await sshBaseline(row.client, row.sshd, row.address);
  const killed = performance.now();
  row.publish.child.kill('SIGKILL');
  const ends = await Promise.all([busy, idle].map((s) => within<{ at: number; code: number | null }>(s.exited, END_MS * 4, () => ({ at: Infinity, code: null }))));
  t.log(`open ssh sessions (busy, idle) ended after ${ends.map((e) => `${secs(e.at - killed)} (exit ${e.code})`).join(', ')} (target <= ${secs(END_MS)})`);
  const restarted = performance.now();
  const again = await publishIn(t, row.device, row.endpoint, row.home);
  track(t, 'publish (restarted)', again.proc);
  const upMs = performance.now() - restarted;
  const sshMs = await sshWorksWithin(row.client, row.sshd, again.address, 30_000).catch(() => Infinity);
  // upMs includes starting a node process (5.6 s seen at load 21): reported, not a target.
  t.log(`restarted device connected ${secs(upMs)} after its start; a new ssh worked ${secs(sshMs)} after that (target <= ${secs(BACK_MS)} + one ssh's own set-up, ${secs(baseline)} before the kill)`);
  for (const e of ends) {
    t.true(e.at - killed <= END_MS, 'the open session ended within 5 s');
    t.not(e.code, 0);
  }
  t.true(sshMs <= BACK_MS + baseline, 'and a new ssh works within 5 s (plus its own set-up)');
});

nstest('a slow but live uplink (tc tbf 64 kbit/s) under an ssh download is never declared dead', async (t) => {
  const row = await device(t, 'slow');
  await row.net.shapeUplink(row.device, '64kbit');
  const size = 256 * 1024;
  const lostBefore = count(row.publish, /lost relay/);
  const relaySaw = new RegExp(`closed the session of ${row.address} `, 'i');
  const started = performance.now();
  const download = await openSsh(t, row.client, row.sshd, row.address, `head -c ${size} /dev/urandom`);
  // At 8 KB/s this takes about 37 s; a session declared dead leaves ssh hanging: give up after 120 s.
  const { at, code } = await within<{ at: number; code: number | null }>(download.exited, 120_000, () => ({ at: performance.now(), code: null }));
  const ms = at - started;
  const lost = count(row.publish, /lost relay/) - lostBefore;
  const dropped = count(row.relayProc, relaySaw);
  t.log(
    `${download.bytes()} of ${size + 3} bytes over the 64 kbit/s uplink in ${secs(ms)} (${((download.bytes() * 8) / ms).toFixed(1)} kbit/s), ssh exit ${code}; ` +
      `sessions declared dead: ${lost} by the device, ${dropped} by the relay (keep-alive timeout 25 s, write timeout 20 s)`,
  );
  t.is(code, 0, download.stderr());
  t.is(download.bytes(), size + 3);
  t.true(ms > 30_000, 'the download outlasted the keep-alive timeout (the link was really that slow)');
  t.is(lost, 0, 'the device kept its session');
  t.is(dropped, 0, "the relay kept the device's session");
});
