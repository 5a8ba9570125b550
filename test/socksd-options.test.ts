// Issue 17 items 4 and 10: a relay port that is not a relay; socksd beyond loopback; --fallback.
import test from 'ava';
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { start, startRelay, tempDir } from './helpers/diode.ts';
import { startSshd } from './helpers/sshd.ts';

/** Runs OpenBSD nc through the SOCKS proxy: sends `input`, returns what came back and the exit status. */
function ncThrough(socksPort: number, host: string, port: number, input: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const nc = spawn('nc', ['-N', '-w', '10', '-X', '5', '-x', `127.0.0.1:${socksPort}`, host, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    nc.stdout.on('data', (d) => (out += d));
    nc.stderr.on('data', (d) => (out += d));
    nc.once('close', (code) => resolve({ code, out })); // 'close': after the last output is read
    nc.stdin.on('error', () => {}); // nc refused by the proxy exits before reading its input (EPIPE)
    nc.stdin.end(input);
  });
}

/** A local service that answers what it got, upper-cased, when the client half-closes. */
async function upperEcho(t: import('ava').ExecutionContext): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    let got = '';
    s.on('data', (d) => (got += d));
    s.on('end', () => s.end(got.toUpperCase()));
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as { port: number }).port;
}

test('17.4 a relay port that is an sshd is named as not speaking the relay protocol, and the agent moves on to the next relay', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const proxy = start(t, ['proxy', `0x${'ab'.repeat(20)}.diode`, '22', '--relay', `127.0.0.1:${sshd.port}`, '--home', tempDir(t)]);
  await proxy.exited();
  t.is(proxy.child.exitCode, 1);
  t.regex(proxy.output(), new RegExp(`127\\.0\\.0\\.1:${sshd.port} does not speak the diode relay protocol \\(no TLS\\)`));
  t.notRegex(proxy.output(), /SSL routines|wrong version number|0A00010B/);
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${sshd.port},127.0.0.1:${relay.port}`, '--home', tempDir(t)]);
  await socksd.waitFor(new RegExp(`warn  \\[socksd\\] 127\\.0\\.0\\.1:${sshd.port} does not speak the diode relay protocol \\(no TLS\\); retrying`));
  await socksd.waitFor(new RegExp(`connected to relay 127\\.0\\.0\\.1:${relay.port}`));
  t.notRegex(socksd.output(), /SSL routines/);
});

test('17.10 socksd listens beyond loopback only with --allow-remote, and then warns', async (t) => {
  const relay = await startRelay(t);
  const home = tempDir(t);
  const refused = start(t, ['socksd', '--listen', '0.0.0.0:0', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await refused.exited();
  t.is(refused.child.exitCode, 2);
  t.regex(refused.output(), /^diode: socksd: --listen 0\.0\.0\.0:0 is beyond loopback: anyone who reaches it would act with this machine's key; add --allow-remote/);
  const allowed = start(t, ['socksd', '--listen', '0.0.0.0:0', '--allow-remote', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await allowed.waitFor(/socksd 0x[0-9a-fA-F]{40} listening on 0\.0\.0\.0:\d+/);
  await allowed.waitFor(/warn  \[socksd\] listening beyond loopback \(--allow-remote\): anyone who can reach 0\.0\.0\.0:0 connects with this machine's key 0x/);
  const loopback = start(t, ['socksd', '--listen', 'localhost:0', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await loopback.waitFor(/connected to relay/);
  t.notRegex(loopback.output(), /beyond loopback/);
});

test('17.10 --fallback direct connects other names from this machine; the default refuses them without a lookup', async (t) => {
  const relay = await startRelay(t);
  const echo = await upperEcho(t);
  const home = tempDir(t);
  const strict = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  const strictPort = Number((await strict.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  const refusedName = await ncThrough(strictPort, 'localhost', echo, 'hello');
  t.not(refusedName.code, 0);
  t.notRegex(refusedName.out, /HELLO/);
  await strict.waitFor(/CONNECT localhost:\d+ refused: localhost is not a <name>\.diode or <address>\.diode name/);
  const direct = start(t, ['socksd', '--listen', '127.0.0.1:0', '--fallback', 'direct', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  const directPort = Number((await direct.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  t.is((await ncThrough(directPort, 'localhost', echo, 'hello')).out, 'HELLO');
  t.is((await ncThrough(directPort, '127.0.0.1', echo, 'ip too')).out, 'IP TOO');
  // A malformed diode name is still refused, never looked up.
  const bad = await ncThrough(directPort, '0x12.diode', echo, 'x');
  t.not(bad.code, 0);
  await direct.waitFor(/CONNECT 0x12\.diode:\d+ refused/);
  const wrong = start(t, ['socksd', '--fallback', 'maybe', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await wrong.exited();
  t.is(wrong.child.exitCode, 2);
  t.regex(wrong.output(), /--fallback: "maybe" must be direct or refuse/);
});
