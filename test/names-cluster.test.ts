import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, start, startPublishNamed, tempDir } from './helpers/diode.ts';
import { startSshd, sshOptions } from './helpers/sshd.ts';
import { startRedis } from './helpers/redis.ts';
import { threeRelaysWithGateway, within, type ClusterRelay } from './helpers/cluster.ts';
import { socks5Connect } from './helpers/http.ts';

const run = promisify(execFile);
const DAY_MS = 86_400_000;

const forgedLines = (output: string) => output.split('\n').filter((l) => /the entry of name pantry does not hold a claim/.test(l)).length;

const publishNamed = (t: Parameters<typeof tempDir>[0], relay: ClusterRelay, ports: string[], name: string, home?: string) => startPublishNamed(t, relay.at, ports, [name], home);

test.serial('names across a three-relay cluster on real Redis: claimed on one relay, reached by name through the others and their gateway, refused to another device on a third, renamed away; a forged entry in Redis is ignored; names come back after a Redis restart', async (t) => {
  const redis = await startRedis(t);
  const sshd = await startSshd(t);
  const { relays, gatewayPort } = await threeRelaysWithGateway(t, redis.url);
  const [r1, r2, r3] = relays;

  const kitchen = await publishNamed(t, r2, ['-public', `${sshd.port}:22`], 'kitchen');
  t.regex(kitchen.proc.output(), /name kitchen claimed at relay/);
  // In Redis beside the address map: the device's own signed claim, held for the hold (30 days by default).
  const entry = await redis.cli('get', 'diode:name:kitchen');
  t.regex(entry, new RegExp(`^${kitchen.address} 0x04[0-9a-f]{128} 0x[0-9a-f]{128}$`));
  const ttl = Number(await redis.cli('pttl', 'diode:name:kitchen'));
  t.true(ttl > 29 * DAY_MS && ttl <= 30 * DAY_MS, `ttl ${ttl}`);

  // A client on r1 (the device is on r2) and one on r3: ssh pi@kitchen.diode through each socksd.
  for (const relay of [r1, r3]) {
    const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', relay.at, '--home', tempDir(t)]);
    const port = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    await socksd.waitFor(/connected to relay/);
    const { stdout } = await run('ssh', [...sshOptions(sshd, port), `${sshd.user}@kitchen.diode`, 'echo across'], { timeout: 30_000 });
    t.is(stdout, 'across\n');
  }
  // r1's public gateway, by name, with no agent on this side.
  const viaGateway = await run('ssh', [...sshOptions(sshd, gatewayPort), `${sshd.user}@kitchen.diode`, 'echo gateway'], { timeout: 30_000 });
  t.is(viaGateway.stdout, 'gateway\n');

  // First claim wins cluster-wide: another device on r3 is refused, with the holder named.
  const other = await publishNamed(t, r3, ['-public', `${sshd.port}:22`], 'kitchen');
  t.regex(other.proc.output(), new RegExp(`name kitchen is held by ${kitchen.address} at relay ${r3.at.replace(/\./g, '\\.')}; publishing without it`));

  // Whoever writes to Redis can point a name only at a device that signed it: kitchen's claim copied to "pantry" is no claim of pantry.
  await redis.cli('set', 'diode:name:pantry', entry);
  t.is((await socks5Connect(gatewayPort, 'pantry.diode', 22)).rep, 0x04);
  await r1.proc.waitFor(/the entry of name pantry does not hold a claim its address signed; ignored/);
  // Any client can make lookups: 40 of the forged name are counted each, logged a line a second.
  const linesBefore = forgedLines(r1.proc.output());
  const floodStart = Date.now();
  for (let i = 0; i < 40; i++) t.is((await socks5Connect(gatewayPort, 'pantry.diode', 22)).rep, 0x04);
  const floodSeconds = Math.ceil((Date.now() - floodStart) / 1000);
  const logged = forgedLines(r1.proc.output()) - linesBefore;
  t.true(logged <= floodSeconds + 1, `${logged} lines for 40 lookups in ${floodSeconds} s`);
  const counted = JSON.parse((await run(process.execPath, [DIODE_BUNDLE, 'status', '--json', '--home', r1.home])).stdout)[0].counters.cluster_name_forged;
  t.true(counted >= 41, `cluster_name_forged ${counted}`);
  await redis.cli('del', 'diode:name:pantry');

  // A claim is the device's complete set: back with another name, kitchen is free for anyone.
  await kitchen.proc.stop();
  const renamed = await publishNamed(t, r1, ['-public', `${sshd.port}:22`], 'pantry', kitchen.home);
  t.regex(renamed.proc.output(), /name pantry claimed at relay/);
  t.is(await redis.cli('get', 'diode:name:kitchen'), '');
  t.is(await redis.cli('get', `diode:names:${kitchen.address.toLowerCase()}`), 'pantry');

  // A Redis restarted without persistence lost every name: the relay holding the device claims its names again.
  await redis.restart();
  await within('pantry back in Redis', 15_000, async () => (await redis.cli('get', 'diode:name:pantry')).startsWith(kitchen.address));
});
