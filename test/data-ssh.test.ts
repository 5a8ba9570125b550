// Issue 27 item 9: real OpenSSH over data connections (the relay splices the
// two agents' TCP connections; the end-to-end TLS runs natively on each).
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { relayCounters, startRelay, startPublish, startSocksd, tempDir } from './helpers/diode.ts';
import { digestServer } from './helpers/agents.ts';
import { scpBothWays, startSshd, sshOptions } from './helpers/sshd.ts';

const run = promisify(execFile);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

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
