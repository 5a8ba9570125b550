// Issue 17 item 9: the publish banner shows each local→remote mapping and the ssh line, and
// publish warns at start about a local target that refuses connections or an RPC it cannot reach.
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, start, startRelay, startSocksd, tempDir } from './helpers/diode.ts';
import { freePort, startSshd } from './helpers/sshd.ts';
import { sshLine } from '../agent/device/preflight.ts';

const run = promisify(execFile);
const ADDRESS = '0x9f8B043D1CaeE0C61c92a5394DA08D428BF16Fbe';

test('17.9 the banner maps local to remote ports and prints the ssh line, which works from another machine', async (t) => {
  const sshd = await startSshd(t);
  const relay = await startRelay(t);
  const closed = await freePort();
  const device = start(t, ['publish', '-public', `${sshd.port}:22`, '-private', `${closed}:8080,${ADDRESS}`, '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)]);
  const banner = await device.waitFor(/publishing (.*) as (0x[0-9a-fA-F]{40}) via (.*)\n/);
  t.is(banner[1], `${sshd.port}\u219222 (public), ${closed}\u21928080 (private, 1 address)`);
  t.is(banner[3], `127.0.0.1:${relay.port}`);
  const address = banner[2];
  const line = (await device.waitFor(/from another machine running diode socksd: (ssh .*)\n/))[1];
  t.regex(line, new RegExp(`^ssh -o "ProxyCommand=nc -X 5 -x localhost:1080 %h %p" \\S+@${address.toLowerCase()}\\.diode$`));
  // Only the closed target is warned about, with its port.
  await device.waitFor(new RegExp(`warn  \\[publish\\] local target 127\\.0\\.0\\.1:${closed} of port 8080 refuses connections`));
  t.notRegex(device.output(), new RegExp(`local target 127\\.0\\.0\\.1:${sshd.port}`));
  // The printed line, with this test's socksd port, key and user, logs in.
  await device.waitFor(/connected to relay/);
  const socksd = await startSocksd(t, relay.port);
  const command = line
    .replace('localhost:1080', `127.0.0.1:${socksd.port}`)
    .replace(/ \S+@/, ` -F /dev/null -i ${sshd.clientKey} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR ${sshd.user}@`);
  const { stdout } = await run('sh', ['-c', `${command} echo banner-ok`], { timeout: 30_000 });
  t.is(stdout, 'banner-ok\n');
});

test('17.9 the ssh line names -p when ssh is published on another port, and is absent without an ssh port', (t) => {
  const m = (localPort: number, remotePort: number) => ({ host: '127.0.0.1', localPort, remotePort, mode: 'public' as const, allow: [] });
  t.is(sshLine([m(22, 2222)], ADDRESS, 'pi'), `ssh -p 2222 -o "ProxyCommand=nc -X 5 -x localhost:1080 %h %p" pi@${ADDRESS.toLowerCase()}.diode`);
  t.is(sshLine([m(80, 80), m(2022, 22)], ADDRESS, 'pi'), `ssh -o "ProxyCommand=nc -X 5 -x localhost:1080 %h %p" pi@${ADDRESS.toLowerCase()}.diode`);
  t.is(sshLine([m(80, 80)], ADDRESS, 'pi'), undefined);
});

test('17.9 -protected warns at start when the fleet RPC cannot be reached', async (t) => {
  const home = tempDir(t);
  const rpcPort = await freePort();
  await run(process.execPath, [DIODE_BUNDLE, 'config', '--home', home, '-set', `fleet=${ADDRESS}`, '-set', `rpc=http://127.0.0.1:${rpcPort}`]);
  const relay = await startRelay(t);
  const device = start(t, ['publish', '-protected', `${relay.port}:22`, '--relay', `127.0.0.1:${relay.port}`, '--home', home]);
  await device.waitFor(new RegExp(`warn  \\[publish\\] the fleet RPC http://127\\.0\\.0\\.1:${rpcPort} cannot be reached \\(.*ECONNREFUSED.*\\); protected ports deny every client until it answers`));
  await device.waitFor(/connected to relay/);
  t.notRegex(device.output(), /local target/, 'the relay port itself accepts connections');
});
