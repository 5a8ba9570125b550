// Smoke tests of the single executables from cross-build/build.mjs: each
// target starts (ARM under qemu-user), knows its version and commit, makes a
// key, and an ARM binary publishes a port through an x64 relay to an x64
// socksd. The build is reused when bundle, runtimes and recipe are unchanged
// (content hash), so only the first run after a change pays for it.
//
// Host needs: cross-build/setup-host.sh (qemu-user-static, arm64/armhf libs).
// Missing pieces make these tests fail with the reason, never skip.
import test from 'ava';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TARGETS, cannotRun, runTarget, spawnTarget, type Target } from './helpers/qemu-user.ts';

const ROOT = join(import.meta.dirname, '..');
const BIN_DIR = join(ROOT, 'dist/bin');
const BUNDLE = join(ROOT, 'dist/sea/diode.cjs');
const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
/** A cold build (fetching the three runtimes) took ≈ 35 s here; allow for a slow CI box. */
const BUILD_TIMEOUT_MS = 10 * 60_000;
/** One command under qemu-user starts in 1–4 s here. */
const RUN_TIMEOUT_MS = 90_000;
/**
 * How long one round trip may take end to end (qemu start-up, registration,
 * retries). ≈ 15 s on an idle 2-core box; qemu start-up alone went from 1.5
 * to 30 s when the box was shared with other test suites.
 */
const ROUND_TRIP_DEADLINE_MS = 240_000;
/** Pause between SOCKS attempts while the device registers with the relay. */
const RETRY_INTERVAL_MS = 500;
/** One SOCKS handshake + CONNECT attempt; the relay answers "not connected" at once. */
const SOCKS_ATTEMPT_TIMEOUT_MS = 30_000;
const ADDRESS_RE = /\b0x[0-9a-fA-F]{40}\b/;

const execFileAsync = promisify(execFile);
const binary = (t: Target) => join(BIN_DIR, `diode-linux-${t}`);
const tempHome = (label: string) => mkdtempSync(join(tmpdir(), `diode-xb-${label}-`));

interface BuildStamp { commit: string; version: string; sha256: string; size: number }
let buildError: string | undefined;
const stamps = new Map<Target, BuildStamp>();

test.before('build the single executables (reused when unchanged)', async (t) => {
  t.timeout(BUILD_TIMEOUT_MS + 10_000); // a cold build outlasts ava's 3-minute inactivity timeout on a busy box
  try {
    await execFileAsync(process.execPath, [join(ROOT, 'cross-build/build.mjs')], {
      cwd: ROOT, timeout: BUILD_TIMEOUT_MS, maxBuffer: 16 << 20,
    });
    for (const t of TARGETS) {
      stamps.set(t, JSON.parse(readFileSync(join(BIN_DIR, `.diode-linux-${t}.build.json`), 'utf8')));
    }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    // Keep the line naming the failed step and what follows it.
    const lines = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n');
    const at = lines.findIndex((l) => l.includes('failed:'));
    buildError = `cross-build failed:\n${(at >= 0 ? lines.slice(at, at + 25) : lines.slice(-25)).join('\n') || e.message}`;
  }
});

/** Fails the test (with the reason) when the binaries are missing or cannot run here. */
function ready(t: { fail(msg: string): void }, target: Target): boolean {
  if (buildError) {
    t.fail(buildError);
    return false;
  }
  const why = cannotRun(target);
  if (why) {
    t.fail(`cannot run linux-${target} binaries on this host: ${why}`);
    return false;
  }
  return true;
}

test('SHA256SUMS lists every binary with its digest', (t) => {
  if (buildError) return t.fail(buildError);
  const sums = readFileSync(join(BIN_DIR, 'SHA256SUMS'), 'utf8');
  for (const target of TARGETS) {
    const stamp = stamps.get(target)!;
    t.true(sums.includes(`${stamp.sha256}  diode-linux-${target}\n`), `diode-linux-${target} in SHA256SUMS`);
    t.is(statSync(binary(target)).size, stamp.size);
  }
});

for (const target of TARGETS) {
  test(`diode-linux-${target} --version prints the version and the commit it was built from`, async (t) => {
    if (!ready(t, target)) return;
    t.timeout(RUN_TIMEOUT_MS + 10_000);
    const r = await runTarget(target, binary(target), ['--version'], { timeoutMs: RUN_TIMEOUT_MS });
    t.is(r.code, 0, r.stderr);
    t.true(r.stdout.includes(VERSION), `version ${VERSION} in "${r.stdout.trim()}"`);
    const { commit } = stamps.get(target)!;
    t.regex(commit, /^[0-9a-f]{7,}/, 'the build recorded a git commit');
    t.true(r.stdout.includes(commit), `commit ${commit} in "${r.stdout.trim()}"`);
    t.log(`${target}: "${r.stdout.trim()}" in ${Math.round(r.ms)} ms`);
  });

  test(`diode-linux-${target} address --home creates a key and prints the same 0x address on every run`, async (t) => {
    if (!ready(t, target)) return;
    t.timeout(3 * RUN_TIMEOUT_MS + 10_000); // three runs, two of them under qemu
    const home = tempHome(target);
    t.teardown(() => rmSync(home, { recursive: true, force: true }));

    const first = await runTarget(target, binary(target), ['address', '--home', home], { timeoutMs: RUN_TIMEOUT_MS });
    t.is(first.code, 0, `exit status; stderr: ${first.stderr.trim()}`);
    const address = first.stdout.match(ADDRESS_RE)?.[0];
    if (!address) return t.fail(`no 0x address in the output of "address": ${JSON.stringify(first.stdout + first.stderr)}`);

    // The key file (private.key today) is readable by its owner only.
    const files = readdirSync(home).map((f) => ({ f, mode: statSync(join(home, f)).mode & 0o777 }));
    t.true(files.some(({ mode }) => mode === 0o600), `a 0600 key file in --home; found ${JSON.stringify(files)}`);

    const again = await runTarget(target, binary(target), ['address', '--home', home], { timeoutMs: RUN_TIMEOUT_MS });
    t.is(again.stdout.match(ADDRESS_RE)?.[0], address, 'the address is permanent');

    // The key file is portable: the x64 bundle reads it to the same address.
    const { stdout } = await execFileAsync(process.execPath, [BUNDLE, 'address', '--home', home]);
    t.is(stdout.match(ADDRESS_RE)?.[0], address, 'the x64 bundle derives the same address from the same key');
  });
}

// ---- publish → relay → socksd with the ARM binary as the device ------------

/** Starts a process and resolves with its first line matching re (stdout or stderr). */
function waitForOutput(child: ChildProcess, re: RegExp, what: string, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer) => {
      seen += d.toString('utf8');
      const m = seen.match(re);
      if (m) {
        done();
        resolve(m);
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      done();
      reject(new Error(`${what} exited (${signal ?? `code ${code}`}) before printing ${re}; output:\n${seen.trim()}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what} printed no ${re} within ${timeoutMs} ms; output:\n${seen.trim()}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('close', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('close', onExit); // 'close', not 'exit': the last output may still be in the pipe at exit
  });
}

/** Collects a process's output for failure messages. */
function transcript(child: ChildProcess): () => string {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d));
  child.stderr?.on('data', (d: Buffer) => (out += d));
  return () => out.trim().split('\n').slice(-20).join('\n');
}

const LISTEN_PORT_RE = /(?:127\.0\.0\.1|localhost):(\d{2,5})\b/;

function echoServer(): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer((s) => s.pipe(s));
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** Reads exactly n bytes; leaves the socket paused with any surplus unshifted for the next read. */
function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        cleanup();
        if (buf.length > n) socket.unshift(buf.subarray(n));
        resolve(buf.subarray(0, n));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`connection closed after ${buf.length} of ${n} bytes`));
    };
    const cleanup = () => {
      socket.pause(); // else the unshifted surplus is emitted to no listener and lost
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onEnd);
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onEnd);
    socket.resume();
  });
}

/** SOCKS5 (no auth) CONNECT to host:port by name; resolves with the open socket or rejects with the reply code. */
async function socksConnect(proxyPort: number, host: string, port: number): Promise<Socket> {
  const socket = connect(proxyPort, '127.0.0.1');
  // One attempt must not hang the retry loop: give up on a silent proxy.
  socket.setTimeout(SOCKS_ATTEMPT_TIMEOUT_MS, () => socket.destroy(new Error(`no SOCKS reply in ${SOCKS_ATTEMPT_TIMEOUT_MS} ms`)));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  try {
    socket.write(Buffer.from([5, 1, 0]));
    const method = await readExactly(socket, 2);
    if (method[0] !== 5 || method[1] !== 0) throw new Error(`SOCKS method reply ${method.toString('hex')}`);
    const name = Buffer.from(host);
    socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([port >> 8, port & 0xff])]));
    const head = await readExactly(socket, 4);
    if (head[1] !== 0) throw new Error(`SOCKS CONNECT reply code ${head[1]}`);
    const rest = head[3] === 1 ? 6 : head[3] === 4 ? 18 : (await readExactly(socket, 1))[0] + 2;
    await readExactly(socket, rest);
    socket.setTimeout(0);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

async function echoOnce(socket: Socket, payload: Buffer): Promise<Buffer> {
  socket.write(payload);
  return readExactly(socket, payload.length);
}

/** Starts the x64 bundle (relay, socksd) under the host node. */
function spawnBundle(args: string[]): ChildProcess {
  return spawn(process.execPath, [BUNDLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

for (const target of ['arm64', 'armv7'] as const) {
  test.serial(`an ${target} device publishes a port through an x64 relay and socksd reaches it by address`, async (t) => {
    if (!ready(t, target)) return;
    // Our own deadline comes first so that a failure carries the three transcripts.
    t.timeout(ROUND_TRIP_DEADLINE_MS + 30_000);
    const deadline = Date.now() + ROUND_TRIP_DEADLINE_MS;
    const left = () => Math.max(1, deadline - Date.now());
    const children: ChildProcess[] = [];
    const homes = ['relay', 'device', 'client'].map((label) => tempHome(`${target}-${label}`));
    const echo = await echoServer();
    t.teardown(() => {
      for (const c of children) c.kill('SIGKILL');
      echo.close();
      for (const h of homes) rmSync(h, { recursive: true, force: true });
    });
    const [relayHome, deviceHome, clientHome] = homes;
    const echoPort = (echo.address() as { port: number }).port;
    const logs: Record<string, () => string> = {};
    const transcripts = () => Object.entries(logs).map(([k, v]) => `--- ${k} ---\n${v()}`).join('\n');

    try {
      const relay = spawnBundle(['relay', '--listen', '127.0.0.1:0', '--home', relayHome]);
      children.push(relay);
      logs['relay (x64 bundle)'] = transcript(relay);
      const relayPort = Number((await waitForOutput(relay, LISTEN_PORT_RE, 'relay', left()))[1]);

      const device = spawnTarget(target, binary(target), [
        'publish', '-public', String(echoPort), '--relay', `127.0.0.1:${relayPort}`, '--home', deviceHome,
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(device);
      logs[`publish (${target} binary)`] = transcript(device);
      const devicePrinted = waitForOutput(device, ADDRESS_RE, `publish (${target})`, left());
      devicePrinted.catch(() => {}); // awaited below; this only keeps an early exit from being an unhandled rejection

      const socksd = spawnBundle(['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', clientHome]);
      children.push(socksd);
      logs['socksd (x64 bundle)'] = transcript(socksd);
      const socksPort = Number((await waitForOutput(socksd, LISTEN_PORT_RE, 'socksd', left()))[1]);
      const address = (await devicePrinted)[0];

      // The device registers once its (emulated) node has started and shaken
      // hands; until then the relay answers "not connected": retry.
      const started = Date.now();
      let socket: Socket | undefined;
      let lastError = '';
      while (!socket && Date.now() < deadline && device.exitCode === null) {
        try {
          socket = await socksConnect(socksPort, `${address}.diode`, echoPort);
        } catch (err) {
          lastError = (err as Error).message;
          await new Promise((r) => setTimeout(r, RETRY_INTERVAL_MS));
        }
      }
      if (!socket) {
        const why = device.exitCode !== null ? `publish exited with ${device.exitCode}` : `deadline ${ROUND_TRIP_DEADLINE_MS} ms`;
        return t.fail(`no stream to ${address}.diode:${echoPort} (${why}; last: ${lastError})\n${transcripts()}`);
      }
      t.log(`${target}: first stream through the tunnel ${Date.now() - started} ms after the device printed its address`);
      const payload = Buffer.from(`hello from x64 to ${target} `.repeat(100));
      t.deepEqual(await echoOnce(socket, payload), payload);
      socket.destroy();

      const rss = readRssKiB(device.pid!);
      if (rss) t.log(`${target}: publish agent RSS under qemu-user ${Math.round(rss / 1024)} MiB (includes qemu's own)`);
    } catch (err) {
      t.fail(`${(err as Error).message}\n${transcripts()}`);
    }
  });
}

function readRssKiB(pid: number): number | undefined {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
