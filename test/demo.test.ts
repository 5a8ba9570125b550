// Issue 17 item 12: the demo's ssh line keeps the host keys it learns inside the demo's directory.
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { start, tempDir } from './helpers/diode.ts';

const run = promisify(execFile);
const DEMO = fileURLToPath(new URL('../scripts/demo.mjs', import.meta.url));

test('17.12 npm run demo prints an ssh line whose known-hosts file is in the demo directory, never ~/.ssh/known_hosts', async (t) => {
  const home = tempDir(t);
  const dir = join(tempDir(t), 'demo');
  const demo = start(t, [DEMO], { command: process.execPath, env: { HOME: home, DIODE_DEMO_DIR: dir, DIODE_DEMO_SSHD: 'own' } });
  const line = (await demo.waitFor(/Try it .*\n\n {2}(ssh .*)\n/, 60_000))[1];
  t.regex(demo.output(), /checked: the line below ran "echo" on the device and got "tunnel-ok"/);
  t.true(line.includes(`-o UserKnownHostsFile=${join(dir, 'known_hosts')} -o StrictHostKeyChecking=accept-new`), line);
  t.regex(readFileSync(join(dir, 'known_hosts'), 'utf8'), / ssh-ed25519 AAAA/);
  t.false(existsSync(join(home, '.ssh', 'known_hosts')));
  // The line as printed, run again: the key is known now, so it needs no prompt.
  const { stdout } = await run('sh', ['-c', `${line.replace('ssh ', 'ssh -o BatchMode=yes -o LogLevel=ERROR ')} echo again-ok`], { env: { ...process.env, HOME: home }, timeout: 30_000 });
  t.is(stdout, 'again-ok\n');
  t.false(existsSync(join(home, '.ssh', 'known_hosts')));
  demo.child.kill('SIGINT');
  await demo.exited();
});
