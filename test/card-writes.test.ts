// Issue 29 item 6: spare the card. What can be checked without booting the
// image: the agent writes nothing while idle, its lines under journald carry
// one time stamp, and the image's settings (journal in RAM, /var/log in RAM,
// no login or networkd noise). hw-test measures the card's bytes written per
// hour on a booted image (/sys/block/*/stat in the guest).
import test from 'ava';
import { openSync, readFileSync, readdirSync, statSync, closeSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { DIODE_BUNDLE, startPublish, startRelay, tempDir } from './helpers/diode.ts';
import { FILES } from './helpers/card.ts';

/** Bytes this process has caused to be written to storage (/proc/<pid>/io write_bytes). */
function storageWrites(pid: number): number {
  return Number(/^write_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
}

/** Every file under dir with its mtime and size. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const st = statSync(join(dir, name));
    if (st.isFile()) out[name] = `${st.mtimeMs} ${st.size}`;
  }
  return out;
}

test('item 6: a connected, idle agent writes nothing to storage (its state is written only when it changes)', async (t) => {
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', '22:22']);
  const pid = device.proc.child.pid!;
  // Past the start's own writes (key, control socket) and a keep-alive round or two.
  await new Promise((r) => setTimeout(r, 2_000));
  const files = snapshot(device.home);
  const before = storageWrites(pid);
  await new Promise((r) => setTimeout(r, 25_000));
  t.is(storageWrites(pid) - before, 0, 'bytes written to storage while idle');
  t.deepEqual(snapshot(device.home), files, 'no file of its state directory changed');
});

test('item 6: under journald (JOURNAL_STREAM names stderr) a line carries no time stamp of its own, and its priority', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'stderr');
  const fd = openSync(log, 'w');
  const st = statSync(log, { bigint: true });
  const run = (env: NodeJS.ProcessEnv) =>
    new Promise<void>((resolve) => {
      const child = spawn(process.execPath, [DIODE_BUNDLE, 'publish', '-public', '22:22', '--relay', '127.0.0.1:1', '--home', join(dir, 'home')], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', fd] });
      setTimeout(() => child.kill('SIGTERM'), 3_000);
      child.once('close', () => resolve());
    });
  await run({ JOURNAL_STREAM: `${st.dev}:${st.ino}` });
  closeSync(fd);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  t.true(lines.length > 0);
  for (const line of lines) t.regex(line, /^<[3467]>(debug|info |warn |error) \[publish\] /, line);
  t.true(lines.some((l) => l.startsWith('<4>warn  [publish] relay 127.0.0.1:1: connection refused')), lines.join('\n'));
  // The variable inherited with stderr elsewhere (a child's redirect): time stamps as usual.
  const other = join(dir, 'other');
  const fd2 = openSync(other, 'w');
  await new Promise<void>((resolve) => {
    const child = spawn(process.execPath, [DIODE_BUNDLE, 'publish', '-public', '22:22', '--relay', '127.0.0.1:1', '--home', join(dir, 'home')], { env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}` }, stdio: ['ignore', 'ignore', fd2] });
    setTimeout(() => child.kill('SIGTERM'), 3_000);
    child.once('close', () => resolve());
  });
  closeSync(fd2);
  t.regex(readFileSync(other, 'utf8'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (info |warn ) \[publish\] /m);
});

test('item 6: the image keeps the journal and /var/log in RAM, with limits, and has no login or networkd noise', (t) => {
  const journald = readFileSync(join(FILES, 'etc/systemd/journald.conf.d/50-diode.conf'), 'utf8');
  for (const line of ['Storage=volatile', 'RuntimeMaxUse=16M', 'RuntimeMaxFileSize=2M', 'RateLimitIntervalSec=30s', 'RateLimitBurst=1000']) t.regex(journald, new RegExp(`^${line}$`, 'm'));
  t.regex(readFileSync(join(FILES, 'etc/fstab'), 'utf8'), /^tmpfs\t\/var\/log\ttmpfs\t[^\t]*size=16M[^\t]*\t0\t0$/m);
  t.regex(readFileSync(join(FILES, 'usr/lib/tmpfiles.d/diode-var-log.conf'), 'utf8'), /^d \/var\/log\/apt 0755 root root -$/m);
  // pam_env read /etc/default/locale at every login ("No such file" in the journal).
  t.is(readFileSync(join(FILES, 'etc/default/locale'), 'utf8'), 'LANG=C.UTF-8\n');
  // networkd: "found matching network ... based on potentially unpredictable interface name".
  const net = readFileSync(join(FILES, 'etc/systemd/network/90-diode-default.network'), 'utf8');
  t.regex(net, /^Type=ether$/m);
  t.notRegex(net, /^Name=/m);
});
