// Issue 27 item 9: real OpenSSH over data connections (the relay splices the
// two agents' TCP connections; the end-to-end TLS runs natively on each).
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, startRelay, startPublish, startSocksd, tempDir } from './helpers/diode.ts';
import { scpBothWays, startSshd, sshOptions } from './helpers/sshd.ts';

const run = promisify(execFile);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The relay's counters, as `diode status --json` reports them. */
async function relayCounters(home: string): Promise<Record<string, number>> {
  const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'status', '--json', '--home', home]);
  return (JSON.parse(stdout) as Array<{ counters?: Record<string, number> }>)[0].counters ?? {};
}

/** A service that reads until the client's end, then answers the sha256 of what it read and closes: half-close or nothing. */
async function digestServer(t: Parameters<typeof tempDir>[0]): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    const hash = createHash('sha256');
    s.on('data', (c: Buffer) => hash.update(c));
    s.once('end', () => s.end(`${hash.digest('hex')}\n`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    sockets.forEach((s) => s.destroy());
    server.close();
  });
  return (server.address() as { port: number }).port;
}

test('ssh, scp of 16 MiB both ways and a half-close through nc -N travel on data connections the relay splices', async (t) => {
  const sshd = await startSshd(t);
  const digestPort = await digestServer(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22,${digestPort}:7000`]);
  const socks = await startSocksd(t, relay.port);
  const opts = sshOptions(sshd, socks.port);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;

  const { stdout } = await run('ssh', [...opts, host, 'echo over-data; uname -s'], { timeout: 30_000 });
  t.is(stdout, 'over-data\nLinux\n');

  const copied = await scpBothWays(opts, host, tempDir(t), 16 * 1024 * 1024);
  t.is(copied.remote, copied.up);
  t.is(copied.down, copied.up);

  // nc -N shuts its sending side down at the end of stdin: the service reads to that end, then answers.
  const payload = randomBytes(3 * 1024 * 1024);
  const answer = await new Promise<string>((resolve, reject) => {
    const nc = spawn('nc', ['-N', '-X', '5', '-x', `127.0.0.1:${socks.port}`, `${device.address.toLowerCase()}.diode`, '7000']);
    let out = '';
    nc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    nc.once('error', reject);
    nc.once('close', () => resolve(out));
    nc.stdin.end(payload);
    setTimeout(() => nc.kill(), 30_000).unref();
  });
  t.is(answer, `${sha256(payload)}\n`);

  const counters = await relayCounters(relay.home);
  t.log(JSON.stringify(counters));
  const onData = counters.stream_legs_data_data ?? 0;
  // ssh, two scp and nc: four streams (ssh's own, no multiplexing), each on a data connection at both ends.
  t.is(onData, 4, JSON.stringify(counters));
  t.is(counters.stream_legs_link_link ?? 0, 0);
});
