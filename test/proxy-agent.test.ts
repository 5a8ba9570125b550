import test, { type ExecutionContext } from 'ava';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { start, startRelay, startPublish, runDiode, tempDir, DIODE_BUNDLE, type Running } from './helpers/diode.ts';
import { startSshd, writeProxySshConfig } from './helpers/sshd.ts';

// Issue 28 item 5: `diode proxy` hands the stream to a running socksd of the
// same user and state directory (its stream socket, ops/stream-protocol.ts)
// instead of opening a relay session of its own; anything else falls back to
// its own session. The relay's session_opened counter tells which way it went.

const run = promisify(execFile);

async function clientHome(t: ExecutionContext, dir = tempDir(t)): Promise<{ home: string; address: string }> {
  const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'address', '--home', dir]);
  return { home: dir, address: stdout.trim() };
}

async function status(home: string): Promise<Array<Record<string, any>>> {
  const r = await runDiode(['status', '--json', '--home', home]);
  return JSON.parse(r.stdout) as Array<Record<string, any>>;
}

/** Agent sessions the relay has accepted so far. */
async function sessionsOpened(relayHome: string): Promise<number> {
  const [relay] = await status(relayHome);
  return relay.counters?.session_opened ?? 0;
}

async function socksdOpened(home: string): Promise<number> {
  const agents = await status(home);
  return agents.find((a) => a.role === 'socksd')?.streams.opened ?? 0;
}

function socksd(t: ExecutionContext, relay: string, home: string): Running {
  return start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', relay, '--home', home]);
}


/** An echo service for the device: what comes in goes back, and its end is passed back (a half-close). */
async function echoServer(t: ExecutionContext): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

/** A relay, a device publishing an echo service as port 7, and a socksd connected in a client home of its own. */
async function echoBesideSocksd(t: ExecutionContext): Promise<{ relay: { home: string }; at: string; device: { address: string; proc: Running }; home: string }> {
  const relay = await startRelay(t);
  const at = `127.0.0.1:${relay.port}`;
  const device = await startPublish(t, relay.port, ['-public', `${await echoServer(t)}:7`]);
  const home = (await clientHome(t)).home;
  await socksd(t, at, home).waitFor(/connected to relay/);
  return { relay, at, device, home };
}

/** `diode proxy` by hand: writes `input`, ends its stdin (a half-close), reads to the end; exit code and output. */
async function proxyEcho(args: string[], input: string): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [DIODE_BUNDLE, 'proxy', ...args]);
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b));
  child.stderr.on('data', (b: Buffer) => (err += b));
  child.stdin.end(input);
  const [code] = await once(child, 'close');
  return { code: code as number | null, out, err };
}

test('plain ssh with `diode proxy` as ProxyCommand rides the running socksd of its home: the relay sees no new session, the socksd counts the stream, its key is the one the device admits', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const at = `127.0.0.1:${relay.port}`;
  const alice = await clientHome(t);
  // A private port: only alice's key gets in, so the stream carries the proxy's own key.
  const device = await startPublish(t, relay.port, ['-private', `${sshd.port}:22,${alice.address}`]);
  const agent = socksd(t, at, alice.home);
  await agent.waitFor(/connected to relay/);
  const before = await sessionsOpened(relay.home);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;
  const { stdout } = await run('ssh', ['-F', writeProxySshConfig(sshd, alice.home, at), host, 'echo via-socksd; uname -s'], { timeout: 30_000 });
  t.is(stdout, 'via-socksd\nLinux\n');
  t.is(await sessionsOpened(relay.home), before, 'no relay session of its own');
  t.is(await socksdOpened(alice.home), 1);

  // Errors read as the proxy's own: one line, exit 1; the socksd counts them as failed.
  const offline = await runDiode(['proxy', '0x0000000000000000000000000000000000000bad.diode', '22', '--relay', at, '--home', alice.home]);
  t.is(offline.code, 1);
  t.regex(offline.stderr, /^diode: proxy: cannot reach 0x0+bad\.diode port 22: device 0x0+BAD is not connected\n$/i);
  const closed = await runDiode(['proxy', `${device.address}.diode`, '2222', '--relay', at, '--home', alice.home]);
  t.is(closed.code, 1);
  t.is(closed.stderr, `diode: proxy: cannot reach ${device.address}.diode port 2222: device ${device.address} does not publish port 2222\n`);
  // A bad host is the agent's refusal: the proxy's own path says it, as always.
  const bad = await runDiode(['proxy', 'example.com', '22', '--relay', at, '--home', alice.home]);
  t.is(bad.code, 2);
  t.is(bad.stderr, 'diode: proxy: "example.com" is not a device: it does not end in .diode (write <name>.diode, or 0x and 40 hex digits then .diode)\n');
  t.is(await sessionsOpened(relay.home), before, 'still none: the failures were the socksd\'s dials');
  const [agentStatus] = await status(alice.home);
  t.deepEqual(agentStatus.streams.failed, { offline: 1, 'no-such-port': 1 });
});

test('through the socksd, an end of stdin is a half-close: the device\'s answer still comes back, then the proxy exits 0', async (t) => {
  const { relay, at, device, home } = await echoBesideSocksd(t);
  const before = await sessionsOpened(relay.home);
  const payload = 'x'.repeat(200_000);
  const r = await proxyEcho([`${device.address}.diode`, '7', '--relay', at, '--home', home], payload);
  t.is(r.err, '');
  t.is(r.code, 0);
  t.is(r.out, payload);
  t.is(await sessionsOpened(relay.home), before);
  t.is(await socksdOpened(home), 1);
});

test('no agent, a stale stream socket, another home, other relays, a replaced key: the proxy opens its own session and gets through', async (t) => {
  const relay = await startRelay(t);
  const at = `127.0.0.1:${relay.port}`;
  const device = await startPublish(t, relay.port, ['-public', `${await echoServer(t)}:7`]);
  const target = `${device.address}.diode`;
  const [home, other] = [(await clientHome(t)).home, (await clientHome(t)).home];
  const through = async (h: string, relayArg = at) => {
    const opened = await sessionsOpened(relay.home);
    const r = await proxyEcho([target, '7', '--relay', relayArg, '--home', h], 'ping');
    t.is(r.err, '');
    t.is(r.code, 0);
    t.is(r.out, 'ping');
    return (await sessionsOpened(relay.home)) - opened;
  };
  t.is(await through(home), 1, 'no agent: its own session');

  // A socksd of another home is not used.
  const agent = socksd(t, at, other);
  await agent.waitFor(/connected to relay/);
  t.is(await through(home), 1, 'another home\'s socksd is not used');
  t.is(await through(other), 0, 'its own home\'s is');
  // Other relays than the agent's (the same relay by another name): refused, own session.
  t.is(await through(other, `localhost:${relay.port}`), 1);
  // A key replaced since the agent started: the proxy would use the new one, so not the agent.
  const keyFile = join(other, 'private.key');
  writeFileSync(keyFile, `0x${'11'.repeat(32)}\n`, { mode: 0o600 });
  t.is(await through(other), 1, 'a replaced key: own session');
  t.is(await socksdOpened(other), 1);

  // Killed without a word: its stream socket stays behind; the proxy falls back and removes it.
  agent.child.kill('SIGKILL');
  await agent.exited();
  const runDir = join(other, 'run');
  t.true(readdirSync(runDir).some((n) => n.endsWith('.streams.sock')));
  t.is(await through(other), 1, 'a stale socket: own session');
  t.false(readdirSync(runDir).some((n) => n.endsWith('.streams.sock')), 'the stale socket is gone');
});

test('a stream through the socksd that breaks mid-way (the device\'s agent killed) ends the proxy with its one line and exit 1, as on its own session', async (t) => {
  const { at, device, home } = await echoBesideSocksd(t);
  const child = spawn(process.execPath, [DIODE_BUNDLE, 'proxy', `${device.address}.diode`, '7', '--relay', at, '--home', home]);
  t.teardown(() => child.kill('SIGKILL'));
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b));
  child.stdin.write('ping');
  t.is(String((await once(child.stdout, 'data'))[0]), 'ping');
  t.is(await socksdOpened(home), 1, 'through the socksd');
  device.proc.child.kill('SIGKILL');
  const [code] = await once(child, 'close');
  t.is(code, 1);
  // The socksd's words for it (its data connection was reset by the relay), not an exit 0 as for an end.
  t.regex(err, /^diode: proxy: the connection broke: .+\n$/);
});

test('another user\'s socksd is not used, not even by root in that user\'s state directory', async (t) => {
  if (process.getuid?.() !== 0) return t.pass('needs root, to run the socksd as nobody');
  const relay = await startRelay(t);
  const at = `127.0.0.1:${relay.port}`;
  const device = await startPublish(t, relay.port, ['-public', `${await echoServer(t)}:7`]);
  const home = mkdtempSync(join(tmpdir(), 'diode-nobody-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  chownSync(home, 65534, 65534);
  // nobody must be able to read the program: the checkout may sit in a directory only root may enter
  // (CI's clone under /root), so it runs from a copy of the bundle in a directory everyone may read.
  const copy = mkdtempSync(join(tmpdir(), 'diode-bundle-'));
  t.teardown(() => rmSync(copy, { recursive: true, force: true }));
  chmodSync(copy, 0o755);
  cpSync(DIODE_BUNDLE, join(copy, basename(DIODE_BUNDLE)));
  cpSync(join(dirname(DIODE_BUNDLE), 'chunks'), join(copy, 'chunks'), { recursive: true });
  const agent = spawn(process.execPath, [join(copy, basename(DIODE_BUNDLE)), 'socksd', '--listen', '127.0.0.1:0', '--relay', at, '--home', home], { uid: 65534, gid: 65534 });
  t.teardown(() => agent.kill('SIGKILL'));
  let output = '';
  agent.stderr.on('data', (b: Buffer) => (output += b));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socksd as nobody did not connect: ${output}`)), 15_000);
    agent.stderr.on('data', () => /connected to relay/.test(output) && (clearTimeout(timer), resolve()));
  });
  t.true(existsSync(join(home, 'run')));
  const opened = await sessionsOpened(relay.home);
  const r = await proxyEcho([`${device.address}.diode`, '7', '--relay', at, '--home', home], 'ping');
  t.is(r.err, '');
  t.is(r.out, 'ping');
  t.is(await sessionsOpened(relay.home), opened + 1, 'root\'s proxy opened its own session');
});

test('a running bind of the home serves diode proxy the same way (its client links, its counters)', async (t) => {
  const relay = await startRelay(t);
  const at = `127.0.0.1:${relay.port}`;
  const device = await startPublish(t, relay.port, ['-public', `${await echoServer(t)}:7`]);
  const home = (await clientHome(t)).home;
  const bind = start(t, ['bind', `0:${device.address}.diode:7`, '--relay', at, '--home', home]);
  await bind.waitFor(/connected to relay/);
  const before = await sessionsOpened(relay.home);
  const r = await proxyEcho([`${device.address}.diode`, '7', '--relay', at, '--home', home], 'ping');
  t.is(r.err, '');
  t.is(r.code, 0);
  t.is(r.out, 'ping');
  t.is(await sessionsOpened(relay.home), before);
  const [agent] = await status(home);
  t.is(agent.role, 'bind');
  t.is(agent.streams.opened, 1);
});
