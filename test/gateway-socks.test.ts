import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRelay, startPublish } from './helpers/diode.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { socks5Connect } from './helpers/http.ts';

const run = promisify(execFile);
/** ms: a refusal must come back well within this (no timeouts involved). */
const FAST_MS = 3_000;
const OTHER_CLIENT = '0x0000000000000000000000000000000000000001';

test('real ssh reaches a public sshd through the SOCKS gateway with no agent on the client; private, unpublished and offline are refused fast with their SOCKS codes', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t, ['--gateway-socks', '127.0.0.1:0', '--gateway-domain', 'gw.example.test']);
  const gateway = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`, '-private', `${sshd.port}:2222,${OTHER_CLIENT}`]);
  const opts = sshOptions(sshd, gateway);
  const address = device.address.toLowerCase();

  const viaDiode = await run('ssh', [...opts, `${sshd.user}@${address}.diode`, 'echo through-the-gateway'], { timeout: 30_000 });
  t.is(viaDiode.stdout, 'through-the-gateway\n');
  const viaDomain = await run('ssh', [...opts, `${sshd.user}@${device.address}.gw.example.test`, 'echo by-domain'], { timeout: 30_000 });
  t.is(viaDomain.stdout, 'by-domain\n');

  // A private port: real ssh fails fast, refused as a port the device does not publish (issue 24 item 7).
  const started = Date.now();
  const failed = await run('ssh', [...opts, '-p', '2222', `${sshd.user}@${address}.diode`, 'true'], { timeout: 15_000 }).then(
    () => undefined,
    (err: { stderr?: string }) => String(err.stderr),
  );
  t.truthy(failed, 'ssh to a private port through the gateway must fail');
  t.true(Date.now() - started < FAST_MS, `refusal took ${Date.now() - started} ms`);
  t.regex(failed!, /connection refused|SOCKS error 5\b/i);
  t.regex(relay.proc.output(), /device 0x[0-9a-fA-F]{40} does not publish port 2222/);

  // The exact reply codes, with a bare SOCKS5 client.
  const cases: [string, number, number, string][] = [
    [`${address}.diode`, 2222, 0x05, 'private port → connection refused, as an unpublished one'],
    [`${address}.diode`, 2223, 0x05, 'unpublished port → connection refused'],
    ['0x0000000000000000000000000000000000000bad.diode', 22, 0x04, 'offline device → host unreachable'],
    ['example.org', 22, 0x04, 'not a device name → host unreachable'],
  ];
  for (const [host, port, rep, what] of cases) {
    const reply = await socks5Connect(gateway, host, port);
    reply.socket.destroy();
    t.is(reply.rep, rep, what);
    t.true(reply.ms < FAST_MS, `${what} took ${reply.ms} ms`);
  }
  // A public port answers 0x00 and carries the sshd banner.
  const open = await socks5Connect(gateway, `${address}.diode`, 22);
  t.is(open.rep, 0x00);
  const banner = await new Promise<string>((resolve) => open.socket.once('data', (b: Buffer) => resolve(b.toString())).resume());
  open.socket.destroy();
  t.regex(banner, /^SSH-2\.0-OpenSSH/);
});
