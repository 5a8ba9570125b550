import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, runDiode, start, startPublishNamed, startRelay, tempDir } from './helpers/diode.ts';
import { startSshd, type Sshd } from './helpers/sshd.ts';
import { socks4aReply, socks5Connect, startOrigin } from './helpers/http.ts';
import { makeHome } from './helpers/cluster.ts';

const run = promisify(execFile);
const DOMAIN = 'gw.example.test';

/** An ssh config as `diode ssh-config` prints it for this home and relay, plus the test's key and no prompts. */
async function sshConfig(home: string, relayPort: number, sshd: Sshd): Promise<string> {
  const { stdout } = await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', '--relay', `127.0.0.1:${relayPort}`, '--home', home]);
  const file = join(home, 'ssh_config');
  writeFileSync(file, stdout + ['Host *', `  IdentityFile ${sshd.clientKey}`, '  IdentitiesOnly yes', '  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null', '  BatchMode yes', '  LogLevel ERROR', '  ConnectTimeout 10', ''].join('\n'));
  return file;
}

const publishNamed = (t: Parameters<typeof tempDir>[0], relayPort: number, ports: string[], names: string[], home?: string) => startPublishNamed(t, `127.0.0.1:${relayPort}`, ports, names, home);

const pinnedLines = (stderr: string) => stderr.split('\n').filter((l) => /pinned in/.test(l));

test('kitchen.diode: plain ssh through ssh-config (the name pinned once, said once), curl --socks5-hostname and SOCKS4a through socksd, <name>-<port>, bind by name, the gateway by name (SOCKS and HTTP); unknown and malformed names are one clear line and never a DNS lookup', async (t) => {
  const sshd = await startSshd(t);
  const web = await startOrigin(t, 'web');
  const relay = await startRelay(t, ['--gateway-socks', '127.0.0.1:0', '--gateway-http', '127.0.0.1:0', '--gateway-domain', DOMAIN]);
  const gatewaySocks = Number((await relay.proc.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
  const gatewayHttp = Number((await relay.proc.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
  const device = await publishNamed(t, relay.port, ['-public', `${sshd.port}:22`, '-public', `${web.port}:80`], ['Kitchen']);
  t.regex(device.proc.output(), new RegExp(`publishing .* as ${device.address} named kitchen via`));
  t.regex(device.proc.output(), /name kitchen claimed at relay 127\.0\.0\.1:\d+: this device is kitchen\.diode/);

  // Plain ssh, as a user types it, through the block ssh-config prints (diode proxy %h %p).
  const client = await makeHome(t);
  const config = await sshConfig(client.home, relay.port, sshd);
  const first = await run('ssh', ['-F', config, `${sshd.user}@kitchen.diode`, 'echo by-name'], { timeout: 30_000 });
  t.is(first.stdout, 'by-name\n');
  const said = pinnedLines(first.stderr);
  t.is(said.length, 1, first.stderr);
  t.regex(said[0], new RegExp(`^diode: kitchen\\.diode is ${device.address} \\(from relay ${relay.address} at 127\\.0\\.0\\.1:${relay.port}\\); pinned in .*known_names`));
  t.regex(readFileSync(join(client.home, 'known_names'), 'utf8'), new RegExp(`^kitchen ${device.address} # from relay ${relay.address}`, 'm'));
  const again = await run('ssh', ['-F', config, `${sshd.user}@KITCHEN.diode`, 'echo again'], { timeout: 30_000 });
  t.is(again.stdout, 'again\n');
  t.deepEqual(pinnedLines(again.stderr), [], 'said once only');

  // curl --socks5-hostname: the name goes to socksd unresolved, socksd resolves it.
  const socksd = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relay.port}`, '--home', client.home]);
  const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
  await socksd.waitFor(/connected to relay/);
  const lookupsBefore = (await counters(relay.home)).name_lookup ?? 0;
  const viaSocksd = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, 'http://kitchen.diode/who']);
  t.is(JSON.parse(viaSocksd.stdout).name, 'web');
  // The port in the name wins (kitchen-80.diode:9 is port 80).
  const portInName = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, 'http://kitchen-80.diode:9/who']);
  t.is(JSON.parse(portInName.stdout).name, 'web');
  // SOCKS4a carries the name as SOCKS5 does.
  t.is(await socks4aReply(socksPort, 'kitchen.diode', 80), 0x5a);
  t.is((await counters(relay.home)).name_lookup - lookupsBefore, 1, 'three connections to kitchen, one lookup: socksd reuses the answer for a minute');
  t.is(await socks4aReply(socksPort, 'nobody.diode', 80), 0x5b);
  // diode bind by name.
  const bind = start(t, ['bind', '0:kitchen.diode:80', '--relay', `127.0.0.1:${relay.port}`, '--home', client.home]);
  const bound = Number((await bind.waitFor(/bind 127\.0\.0\.1:(\d+) → kitchen\.diode:80/))[1]);
  t.is(JSON.parse((await run('curl', ['-sS', '--max-time', '20', `http://127.0.0.1:${bound}/who`])).stdout).name, 'web');
  // The gateway: no agent on this side at all.
  const viaGatewaySocks = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${gatewaySocks}`, 'http://kitchen.diode/who']);
  t.is(JSON.parse(viaGatewaySocks.stdout).name, 'web');
  const viaGatewayHttp = await run('curl', ['-sS', '--max-time', '20', '--connect-to', `::127.0.0.1:${gatewayHttp}`, `http://kitchen.${DOMAIN}/who`]);
  t.is(JSON.parse(viaGatewayHttp.stdout).name, 'web');
  t.is(JSON.parse(viaGatewayHttp.stdout).headers['x-forwarded-host'], `kitchen.${DOMAIN}`);
  // <name>-<port> at the gateway too: the port in the host wins over HTTP's.
  const portAtGateway = await run('curl', ['-sS', '--max-time', '20', '-H', `Host: kitchen-80.${DOMAIN}`, `http://127.0.0.1:${gatewayHttp}/who`]);
  t.is(JSON.parse(portAtGateway.stdout).name, 'web');
  const viaGatewaySocksPort = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${gatewaySocks}`, 'http://kitchen-80.diode:9/who']);
  t.is(JSON.parse(viaGatewaySocksPort.stdout).name, 'web');

  // A name nobody holds: SOCKS5 0x04 (socksd and gateway), HTTP 404, proxy exit 1 with one line.
  t.is((await socks5Connect(socksPort, 'nobody.diode', 80)).rep, 0x04);
  t.is((await socks5Connect(gatewaySocks, 'nobody.diode', 80)).rep, 0x04);
  const unknownHttp = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '20', '--connect-to', `::127.0.0.1:${gatewayHttp}`, `http://nobody.${DOMAIN}/`]);
  t.is(unknownHttp.stdout, '404');
  const unknown = await runDiode(['proxy', 'nobody.diode', '22', '--relay', `127.0.0.1:${relay.port}`, '--home', client.home]);
  t.is(unknown.code, 1);
  t.is(unknown.stderr, 'diode: proxy: nobody.diode: no device has this name (looked in your names (diode name list), the relay)\n');
  // Malformed: refused by socksd before any lookup (relay or DNS), and by proxy as a usage error.
  t.is((await socks5Connect(socksPort, 'kit_chen.diode', 80)).rep, 0x04);
  await socksd.waitFor(/kit_chen\.diode is not a <name>\.diode or <address>\.diode name \(a name has only the letters a-z, digits and -; such a name is never looked up in DNS\)/);
  const malformed = await runDiode(['proxy', 'ab.diode', '22', '--relay', `127.0.0.1:${relay.port}`, '--home', client.home]);
  t.is(malformed.code, 2);
  t.is(malformed.stderr, 'diode: proxy: "ab.diode" is not a device: a name has 3-63 characters (write <name>.diode, or 0x and 40 hex digits then .diode)\n');
  const badClaim = await runDiode(['publish', '-public', '22', '--name', '0xabc', '--relay', `127.0.0.1:${relay.port}`, '--home', tempDir(t)]);
  t.is(badClaim.code, 2);
  t.is(badClaim.stderr, 'diode: --name: "0xabc" is not a name: a name may not look like an address (0x…, or 40 hex digits)\n');
  t.regex(relay.proc.output(), /0x[0-9a-fA-F]{40} holds the name kitchen/);
});

test('first claim wins: a second device asking for a held name is refused with one line naming the holder and publishes on; the name survives its holder\'s restart', async (t) => {
  const relay = await startRelay(t);
  const first = await publishNamed(t, relay.port, ['-public', '22'], ['kitchen']);
  const second = await publishNamed(t, relay.port, ['-public', '22'], ['kitchen']);
  const refusal = second.proc.output().split('\n').filter((l) => /name kitchen/.test(l));
  t.is(refusal.length, 1, second.proc.output());
  t.regex(refusal[0], new RegExp(`warn  \\[publish\\] name kitchen is held by ${first.address} at relay 127\\.0\\.0\\.1:${relay.port}; publishing without it`));
  // diode status says where each name stands.
  const status = async (home: string) => (JSON.parse((await runDiode(['status', '--json', '--home', home])).stdout) as Array<{ names?: unknown[] }>)[0].names;
  t.like((await status(first.home))?.[0], { name: 'kitchen', state: 'held', relay: `relay 127.0.0.1:${relay.port}` });
  t.like((await status(second.home))?.[0], { name: 'kitchen', state: 'refused', holder: first.address });
  const client = tempDir(t);
  const relayFlag = ['--relay', `127.0.0.1:${relay.port}`, '--home', client];
  t.is((await runDiode(['query', second.address, ...relayFlag])).code, 0, 'the refused device still publishes');

  // The holder goes away (a reboot): its name stays its own.
  await first.proc.stop();
  const offline = await runDiode(['query', 'kitchen', ...relayFlag]);
  t.is(offline.code, 1);
  t.regex(offline.stdout, new RegExp(`^kitchen \\(${first.address}\\) offline`));
  const third = await publishNamed(t, relay.port, ['-public', '22'], ['kitchen']);
  t.regex(third.proc.output(), new RegExp(`name kitchen is held by ${first.address}`));
  // Back with the same key: it holds kitchen again, and kitchen.diode is it.
  const back = await publishNamed(t, relay.port, ['-public', '22'], ['kitchen'], first.home);
  t.regex(back.proc.output(), /name kitchen claimed at relay/);
  const online = await runDiode(['query', 'kitchen.diode', ...relayFlag]);
  t.is(online.code, 0);
  t.regex(online.stdout, new RegExp(`^kitchen \\(${first.address}\\) online`));
});

/** A relay's counters, read from `diode status --json` in its home. */
async function counters(home: string): Promise<Record<string, number>> {
  const r = await runDiode(['status', '--json', '--home', home]);
  return (JSON.parse(r.stdout) as Array<{ counters?: Record<string, number> }>)[0].counters ?? {};
}

test('a relay that moves a pinned name is refused with both addresses and how to accept it; diode name forget accepts; a local name wins over the relay\'s, which is then never asked', async (t) => {
  const sshd = await startSshd(t);
  const [relayA, relayB] = await Promise.all([startRelay(t), startRelay(t)]);
  const kitchen = await publishNamed(t, relayA.port, ['-public', `${sshd.port}:22`], ['kitchen']);
  // Relay B maps kitchen to another device (a relay that lies, or another relay's namespace).
  const impostor = await publishNamed(t, relayB.port, ['-public', `${sshd.port}:22`], ['kitchen']);
  const client = await makeHome(t);
  const at = (relay: { port: number }) => ['--relay', `127.0.0.1:${relay.port}`, '--home', client.home];

  const configA = await sshConfig(client.home, relayA.port, sshd);
  t.is((await run('ssh', ['-F', configA, `${sshd.user}@kitchen.diode`, 'echo pinned'], { timeout: 30_000 })).stdout, 'pinned\n');
  const moved = await runDiode(['proxy', 'kitchen.diode', '22', ...at(relayB)]);
  t.is(moved.code, 1);
  t.is(
    moved.stderr,
    `diode: proxy: kitchen.diode: relay ${relayB.address} at 127.0.0.1:${relayB.port} now names ${impostor.address}, but this machine pinned kitchen to ${kitchen.address} (${join(client.home, 'known_names')}); refused. If the device really changed, accept it with: diode name forget kitchen\n`,
  );
  const list = await runDiode(['name', 'list', '--home', client.home]);
  t.regex(list.stdout, new RegExp(`^kitchen  ${kitchen.address}  pinned \\(from relay ${relayA.address}`, 'm'));
  const forget = await runDiode(['name', 'forget', 'kitchen', '--home', client.home]);
  t.is(forget.stdout, `forgot kitchen (was pinned to ${kitchen.address}); the next lookup pins what the relay says then\n`);
  const accepted = await runDiode(['query', 'kitchen', ...at(relayB)]);
  t.is(accepted.code, 0, accepted.stderr);
  t.regex(accepted.stdout, new RegExp(`^kitchen \\(${impostor.address}\\) online`));
  t.regex(accepted.stderr, /pinned in/);

  // A local name: kitchen is the first device again on relay B's turf; relay A is not asked at all.
  const set = await runDiode(['name', 'set', 'kitchen', kitchen.address.toLowerCase(), '--home', client.home]);
  t.is(set.stdout, `kitchen.diode → ${kitchen.address} (your name)\nit overrides what a relay said (${impostor.address}, pinned in ${join(client.home, 'known_names')})\n`);
  const lookups = (await counters(relayA.home)).name_lookup ?? 0;
  const local = await run('ssh', ['-F', configA, `${sshd.user}@kitchen.diode`, 'echo local'], { timeout: 30_000 });
  t.is(local.stdout, 'local\n');
  t.deepEqual(pinnedLines(local.stderr), []);
  t.is((await counters(relayA.home)).name_lookup ?? 0, lookups, 'a local name never goes to the relay');
  t.true(lookups >= 1, 'the first ssh did look kitchen up at relay A');
  t.is((await runDiode(['name', 'rm', 'kitchen', '--home', client.home])).code, 0);
  t.is((await runDiode(['name', 'rm', 'kitchen', '--home', client.home])).stderr, `diode: name rm: kitchen is not in ${join(client.home, 'names')}; it is pinned from a relay: diode name forget kitchen\n`);
});

test('a relay restart (an upgrade) frees no name: the name of a device that is offline meanwhile is still refused to another, and its device gets it back (by the name config key)', async (t) => {
  const relay = await startRelay(t);
  const kitchen = await publishNamed(t, relay.port, ['-public', '22'], ['kitchen']);
  await kitchen.proc.stop();
  await relay.proc.stop();
  t.regex(readFileSync(join(relay.home, 'relay-names.json'), 'utf8'), new RegExp(`\\["kitchen","${kitchen.address}"`));
  t.is(statSync(join(relay.home, 'relay-names.json')).mode & 0o777, 0o600);
  const again = await startRelay(t, [], relay.home);
  const other = await publishNamed(t, again.port, ['-public', '22'], ['kitchen']);
  t.regex(other.proc.output(), new RegExp(`name kitchen is held by ${kitchen.address}`));
  // Back with its name in the config (as the image's diode.conf name= leaves it), no --name.
  t.is((await runDiode(['config', '--home', kitchen.home, '-set', 'name=Kitchen'])).code, 0);
  const back = await publishNamed(t, again.port, ['-public', '22'], [], kitchen.home);
  t.regex(back.proc.output(), new RegExp(`publishing .* as ${kitchen.address} named kitchen via`));
  t.regex(back.proc.output(), /name kitchen claimed at relay/);
});
