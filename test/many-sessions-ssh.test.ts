import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRelay, startPublish, startSocksd, tempDir, DIODE_BUNDLE } from './helpers/diode.ts';
import { startSshd, sshOptions, writeProxySshConfig } from './helpers/sshd.ts';

const exec = promisify(execFile);
/** execFile that puts the command's stderr into the error (ssh says why it failed there). */
const run = (file: string, args: string[], options: { timeout: number }) =>
  exec(file, args, options).catch((err: Error & { stderr?: string }) => {
    throw new Error(`${file} ${args.slice(-2).join(' ')}: ${err.message}\nstderr: ${err.stderr ?? ''}`);
  });

/**
 * One key, many sessions (issue 13 item 4), with real OpenSSH: the laptop's
 * socksd, two ssh windows through `diode proxy` and an scp during an open
 * session all hold sessions of the same address at the relay at once; none
 * knocks another off. On the device, `diode proxy` with the device's own
 * home opens a second session of the device's address beside its publish.
 */
test('socksd, two concurrent ssh through diode proxy and a 16 MiB scp with one key all complete; diode proxy with the device home leaves its publish alone', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const laptop = tempDir(t);
  const laptopAddress = (await run(process.execPath, [DIODE_BUNDLE, 'address', '--home', laptop], { timeout: 30_000 })).stdout.trim();
  const device = await startPublish(t, relay.port, ['-private', `${sshd.port}:22,${laptopAddress}`, '-public', `${sshd.port}:2222`]);
  const socks = await startSocksd(t, relay.port, laptop);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;

  // ssh through diode proxy with the laptop's key (the ProxyCommand ssh-config --install writes).
  const proxyConfig = writeProxySshConfig(sshd, laptop, `127.0.0.1:${relay.port}`, 30);

  const viaProxy = ['-F', proxyConfig];

  // An interactive session through socksd that stays open throughout.
  const session = spawn('ssh', [...sshOptions(sshd, socks.port), host, 'cat'], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => session.kill('SIGKILL'));
  let echoed = '';
  session.stdout.on('data', (c: Buffer) => (echoed += c.toString()));
  session.stdin.on('error', () => {}); // a dead ssh fails the echo check below, not the worker (EPIPE)
  const echo = async (line: string) => {
    session.stdin.write(`${line}\n`);
    const until = Date.now() + 20_000;
    while (!echoed.includes(line)) {
      if (Date.now() > until) throw new Error(`no echo of ${line}; got ${JSON.stringify(echoed)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await echo('first');

  // Meanwhile: two ssh sessions through diode proxy at once, and an scp of 16 MiB through diode proxy.
  const dir = tempDir(t);
  const up = join(dir, 'up.bin');
  const data = randomBytes(16 * 1024 * 1024);
  writeFileSync(up, data);
  const sum = createHash('sha256').update(data).digest('hex');
  const remote = join(sshd.dir, `copy-${process.pid}.bin`);
  const [a, b] = await Promise.all([
    run('ssh', [...viaProxy, host, 'sleep 1; echo window-a'], { timeout: 60_000 }),
    run('ssh', [...viaProxy, host, 'sleep 1; echo window-b'], { timeout: 60_000 }),
    run('scp', [...viaProxy, '-q', up, `${host}:${remote}`], { timeout: 120_000 }),
  ]);
  t.is(a.stdout, 'window-a\n');
  t.is(b.stdout, 'window-b\n');
  t.is((await run('ssh', [...viaProxy, host, `sha256sum ${remote}`], { timeout: 60_000 })).stdout.split(' ')[0], sum);
  await echo('second, after all of that');

  // On the device: diode proxy with the device's own home (same key as publish) reaches its public port.
  const own = await run('ssh', [...sshOptions(sshd, 1).slice(0, -2), '-o', `ProxyCommand=${process.execPath} ${DIODE_BUNDLE} proxy %h %p --relay 127.0.0.1:${relay.port} --home ${device.home}`, '-p', '2222', host, 'echo from-the-device'], { timeout: 60_000 });
  t.is(own.stdout, 'from-the-device\n');
  await echo('third');

  // Nobody was knocked off: the publish and socksd kept their first relay session.
  t.notRegex(device.proc.output(), /lost relay|reconnect/);
  t.notRegex(socks.proc.output(), /lost relay|reconnect/);
  t.is(device.proc.output().match(/connected to relay/g)?.length, 1);
  t.notRegex(relay.proc.output(), /published by \d+ sessions/, 'client sessions are not publishers');
  session.stdin.end();
});

test('the same key publishing twice (a cloned card): the newest publisher serves, the older stands by and takes over, one warning names both endpoints', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const socks = await startSocksd(t, relay.port);
  const first = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`]);
  const second = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`], first.home);
  const host = `${sshd.user}@${first.address.toLowerCase()}.diode`;
  const warning = await relay.proc.waitFor(new RegExp(`${first.address} is published by 2 sessions: streams go to the newest, from (127\\.0\\.0\\.1:\\d+); standby: (127\\.0\\.0\\.1:\\d+)`, 'i'));
  t.not(warning[1], warning[2]);
  t.is((await run('ssh', [...sshOptions(sshd, socks.port), host, 'echo newest'], { timeout: 60_000 })).stdout, 'newest\n');
  await second.proc.stop();
  await relay.proc.waitFor(/standby session from 127\.0\.0\.1:\d+ takes over/);
  t.is((await run('ssh', [...sshOptions(sshd, socks.port), host, 'echo standby'], { timeout: 60_000 })).stdout, 'standby\n');
  t.is(relay.proc.output().match(/is published by/g)?.length, 1);
  t.notRegex(first.proc.output(), /lost relay/);
});
