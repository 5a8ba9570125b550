import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { startRelay, startPublish, startSocksd, tempDir } from './helpers/diode.ts';
import { scpBothWays, startSshd, sshOptions } from './helpers/sshd.ts';

const run = promisify(execFile);
const FAIL_FAST_MS = 10_000;

async function runFailing(command: string, args: string[]): Promise<{ ms: number; stderr: string }> {
  const started = Date.now();
  try {
    await run(command, args, { timeout: FAIL_FAST_MS + 5000 });
  } catch (err) {
    return { ms: Date.now() - started, stderr: String((err as { stderr?: string }).stderr ?? '') };
  }
  throw new Error(`${command} ${args.join(' ')} succeeded but should have failed`);
}

test('real ssh and scp reach a published sshd through relay and socksd, and failures are fast and clear', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const device = await startPublish(t, relay.port, ['-public', `${sshd.port}:22`]);
  const socks = await startSocksd(t, relay.port);
  const opts = sshOptions(sshd, socks.port);
  const host = `${sshd.user}@${device.address.toLowerCase()}.diode`;

  const { stdout } = await run('ssh', [...opts, host, 'echo hello-from-$(hostname); uname -s'], { timeout: 30_000 });
  t.regex(stdout, /^hello-from-.+\nLinux\n$/);

  // 64 MiB of random bytes each way, checked by hash.
  const copied = await scpBothWays(opts, host, tempDir(t), 64 * 1024 * 1024, 120_000);
  t.is(copied.remote, copied.up);
  t.is(copied.down, copied.up);

  // A wrong address: nobody with that key is connected.
  const wrong = await runFailing('ssh', [...opts, `${sshd.user}@0x0000000000000000000000000000000000000bad.diode`, 'true']);
  t.true(wrong.ms < FAIL_FAST_MS, `wrong address took ${wrong.ms} ms`);
  t.regex(wrong.stderr, /Connection refused/);
  t.regex(socks.proc.output(), /0x0+bad\.diode:22 refused: device 0x0+bad is not connected/i);

  // A port the device does not publish.
  const unpublished = await runFailing('ssh', [...opts, '-p', '2222', host, 'true']);
  t.true(unpublished.ms < FAIL_FAST_MS, `unpublished port took ${unpublished.ms} ms`);
  t.regex(unpublished.stderr, /Connection refused/);
  t.regex(socks.proc.output(), /does not publish port 2222/);

  // A stopped device.
  await device.proc.stop();
  const stopped = await runFailing('ssh', [...opts, host, 'true']);
  t.true(stopped.ms < FAIL_FAST_MS, `stopped device took ${stopped.ms} ms`);
  t.regex(stopped.stderr, /Connection refused/);
});
