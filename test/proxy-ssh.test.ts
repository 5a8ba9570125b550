import test from 'ava';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { start, startRelay, startPublish, tempDir, DIODE_BUNDLE } from './helpers/diode.ts';
import { startSshd } from './helpers/sshd.ts';

const run = promisify(execFile);
const FAIL_FAST_MS = 10_000;

async function clientHome(t: Parameters<typeof tempDir>[0]): Promise<{ home: string; address: string }> {
  const home = tempDir(t);
  const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'address', '--home', home]);
  return { home, address: stdout.trim() };
}

test('plain ssh with the printed ssh-config reaches a private sshd through diode proxy (no socksd); a refused key, a bad name and an offline device fail fast with one line', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const [alice, bob] = await Promise.all([clientHome(t), clientHome(t)]);
  const device = await startPublish(t, relay.port, ['-private', `${sshd.port}:22,${alice.address}`]);

  const configFor = async (home: string) => {
    const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
    t.regex(stdout, /^# >>> diode .*\nHost \*\.diode\n {2}ProxyCommand \/\S+ \/\S+diode\.cjs proxy %h %p --relay 127\.0\.0\.1:\d+ --home \/\S+\n# <<< diode <<<\n$/);
    const file = join(home, 'ssh_config');
    writeFileSync(file, stdout + ['Host *', `  IdentityFile ${sshd.clientKey}`, '  IdentitiesOnly yes', '  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null', '  BatchMode yes', '  LogLevel ERROR', '  ConnectTimeout 10', ''].join('\n'));
    return file;
  };
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;

  const { stdout } = await run('ssh', ['-F', await configFor(alice.home), host, 'echo via-proxy; uname -s'], { timeout: 30_000 });
  t.is(stdout, 'via-proxy\nLinux\n');

  const started = Date.now();
  const err = await run('ssh', ['-F', await configFor(bob.home), host, 'true'], { timeout: FAIL_FAST_MS + 5000 }).then(
    () => undefined,
    (e: { stderr?: string }) => e,
  );
  t.truthy(err, 'ssh as a key that is not listed must fail');
  t.true(Date.now() - started < FAIL_FAST_MS, `refused ssh took ${Date.now() - started} ms`);
  const lines = String(err?.stderr ?? '').split('\n').filter((l) => l.startsWith('diode:'));
  t.is(lines.length, 1, String(err?.stderr));
  t.regex(lines[0], new RegExp(`diode: proxy: cannot reach ${device.address.toLowerCase()}\\.diode port 22: device ${device.address} does not publish port 22`));

  // Bad name, offline device: one line each, non-zero exit.
  const proxy = (args: string[]) => {
    const proc = start(t, ['proxy', ...args, '--relay', `127.0.0.1:${relay.port}`, '--home', bob.home]);
    return proc.exited().then((code) => ({ code, out: proc.output() }));
  };
  const [bad, offline] = await Promise.all([proxy(['example.com', '22']), proxy(['0x0000000000000000000000000000000000000bad.diode', '22'])]);
  t.is(bad.code, 2);
  t.is(bad.out, 'diode: proxy: "example.com" is not a device: it does not end in .diode (write <name>.diode, or 0x and 40 hex digits then .diode)\n');
  t.is(offline.code, 1);
  t.regex(offline.out, /^diode: proxy: cannot reach 0x0+bad\.diode port 22: device 0x0+BAD is not connected\n$/i);
});
