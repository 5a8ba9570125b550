import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createServer, type Server } from 'node:net';
import { chmodSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { DIODE_BUNDLE, startPublish, startRelay, startSocksd, tempDir } from './helpers/diode.ts';
import { socks5Connect } from './helpers/http.ts';

const exec = promisify(execFile);

async function status(home: string, json = false): Promise<{ code: number; stdout: string }> {
  try {
    const { stdout } = await exec(process.execPath, [DIODE_BUNDLE, 'status', '--home', home, ...(json ? ['--json'] : [])]);
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, stdout: e.stdout };
  }
}

async function echoServer(t: { teardown(fn: () => void): void }): Promise<number> {
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {}); // a tunnel torn down resets its legs
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return (server.address() as { port: number }).port;
}

async function until<T>(what: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await what();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('diode status shows each agent of a home: relay, ports, stream counters, bytes, last error; exit 0, 1, 3', async (t) => {
  const echo = await echoServer(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${echo}:7`, '-private', `${echo}:2222,0x63115a27c3d1b549011198c69f4120ca4ea12ee9`]);
  const clientHome = tempDir(t);
  const socksd = await startSocksd(t, relay.port, clientHome);

  // Traffic: one echoed stream of 100 KB, one refused (port not published).
  const open = await socks5Connect(socksd.port, `${device.address}.diode`, 7);
  t.is(open.rep, 0);
  const payload = Buffer.alloc(100_000, 7);
  const echoed = await new Promise<number>((resolve) => {
    let n = 0;
    open.socket.on('data', (c: Buffer) => {
      n += c.length;
      if (n >= payload.length) resolve(n);
    });
    open.socket.resume();
    open.socket.write(payload);
  });
  t.is(echoed, payload.length);
  const refused = await socks5Connect(socksd.port, `${device.address}.diode`, 8);
  t.is(refused.rep, 5);
  refused.socket.destroy();

  const dev = await status(device.home, true);
  t.is(dev.code, 0);
  const [pub] = JSON.parse(dev.stdout);
  t.is(pub.role, 'publish');
  t.is(pub.address, device.address);
  t.is(pub.connected, true);
  t.is(pub.link.relayAddress, relay.address);
  t.is(pub.link.relay, `127.0.0.1:${relay.port}`);
  t.is(pub.link.pinned, false);
  t.true(typeof pub.link.since === 'number' && pub.link.since <= Date.now());
  t.deepEqual(pub.ports, [
    { port: 7, mode: 'public', local: `127.0.0.1:${echo}` },
    { port: 2222, mode: 'private', local: `127.0.0.1:${echo}`, allowed: 1 },
  ]);
  t.is(pub.streams.opened, 1);
  t.is(pub.streams.open, 1);
  t.true(pub.streams.bytes.rx >= payload.length, `device rx ${pub.streams.bytes.rx}`);
  t.true(pub.streams.bytes.tx >= payload.length, `device tx ${pub.streams.bytes.tx}`);

  const cli = JSON.parse((await status(clientHome, true)).stdout)[0];
  t.is(cli.role, 'socksd');
  t.is(cli.streams.opened, 1);
  t.deepEqual(cli.streams.failed, { 'no-such-port': 1 });
  t.regex(cli.lastError.message, /port 8/);
  t.true(cli.streams.bytes.tx >= payload.length);

  const human = await status(device.home);
  t.is(human.code, 0);
  t.regex(human.stdout, new RegExp(`^publish ${device.address}  connected`));
  t.regex(human.stdout, /ports +7 public → 127\.0\.0\.1:\d+,\n +2222 private \(1 allowed\) → /);
  t.regex(human.stdout, /streams +1 opened, 1 open/);
  for (const line of human.stdout.split('\n')) t.true(line.length <= 80, `longer than 80 columns: ${line}`);

  // The socket is the owner's only.
  const dir = join(device.home, 'run');
  t.is(statSync(dir).mode & 0o777, 0o700);
  const [sock] = readdirSync(dir);
  t.regex(sock, new RegExp(`^publish-${device.proc.child.pid}\\.sock$`));
  t.is(statSync(join(dir, sock)).mode & 0o777, 0o600);

  // Relay gone: running but not connected (exit 1), and the loss is the last error.
  open.socket.destroy();
  await relay.proc.stop();
  const down = await until(() => status(device.home), (r) => r.code === 1);
  t.is(down.code, 1);
  t.regex(down.stdout, /NOT CONNECTED/);
  t.regex(down.stdout, /last error +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ (lost relay|relay 127)/);
  for (const line of down.stdout.split('\n')) t.true(line.length <= 80, `longer than 80 columns: ${line}`);

  // Killed without a chance to clean up: the stale socket is removed and nothing runs (exit 3).
  device.proc.child.kill('SIGKILL');
  await device.proc.exited();
  t.true(existsSync(join(dir, sock)));
  const gone = await status(device.home);
  t.is(gone.code, 3);
  t.regex(gone.stdout, /no diode agent runs/);
  t.false(existsSync(join(dir, sock)));
  t.is((await status(device.home, true)).stdout.trim(), '[]');
});

test('diode status of a relay: sessions, routed streams, wire bytes and its counters', async (t) => {
  const relay = await startRelay(t);
  const relayHome = relay.home;
  await startPublish(t, relay.port, ['-public', '22:22']);
  const r = await status(relayHome, true);
  t.is(r.code, 0);
  const [s] = JSON.parse(r.stdout);
  t.is(s.role, 'relay');
  t.is(s.address, relay.address);
  t.is(s.sessions, 1);
  t.deepEqual(s.listening, [`agents 127.0.0.1:${relay.port}`]);
  t.is(s.counters.session_opened, 1);
  t.true(s.streams.bytes.rx > 0);
});

const ROOT = process.getuid?.() === 0;
(ROOT ? test : test.skip)(
  "diode status as another user: 'permission denied' and exit 1, never 'nothing runs' (exit 3)" + (ROOT ? '' : ' (SKIPPED: needs root to run status as another user)'),
  async (t) => {
    const relay = await startRelay(t);
    const device = await startPublish(t, relay.port, ['-public', '22:22']);
    const nobody = async () => {
      try {
        await exec(process.execPath, [DIODE_BUNDLE, 'status', '--home', device.home], { uid: 65534, gid: 65534 });
        return { code: 0, stderr: '' };
      } catch (err) {
        return err as { code: number; stderr: string; stdout: string };
      }
    };
    // The home is 0700 (as /var/lib/diode): its run directory cannot even be listed.
    const dir = await nobody();
    t.is(dir.code, 1);
    t.regex(dir.stderr, new RegExp(`may not read ${device.home.replace(/[/.]/g, '\\$&')}/run \\(permission denied\\): run as the agent's user or root`));
    t.notRegex(dir.stderr + ('stdout' in dir ? dir.stdout : ''), /no diode agent runs/);
    // A listable directory: the 0600 socket itself refuses, and it is not taken for a stale one.
    chmodSync(device.home, 0o755);
    chmodSync(join(device.home, 'run'), 0o755);
    const sock = await nobody();
    t.is(sock.code, 1);
    t.regex(sock.stderr, /may not read \S+\/run\/publish-\d+\.sock \(permission denied\)/);
    t.is(readdirSync(join(device.home, 'run')).length, 1);
    t.is((await status(device.home)).code, 0, 'its owner still reads it');
  },
);
