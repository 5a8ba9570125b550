import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DIODE_BUNDLE, start, startPublishNamed, tempDir, type Running } from './helpers/diode.ts';
import { socks4aReply, socks5Connect, startOrigin } from './helpers/http.ts';
import { startSshd } from './helpers/sshd.ts';

// "A name that resolves nowhere ... never a DNS lookup" (issue 25 item 1),
// checked where DNS happens: every diode process of this test (relay with
// its gateway, socksd, proxy, query, and ssh through the ssh-config block)
// runs in a mount namespace of its own whose /etc/resolv.conf names a DNS
// server of the test's, on a loopback address of its own. The server counts
// every question it gets; a control (a name socksd --fallback direct must
// resolve) shows the path is live.
//
// The same namespaces make the plain-ssh test plain: ssh reads ~/.ssh/config
// of the account (getpwuid), never $HOME, so a fresh home is mounted over
// the account's and `diode ssh-config --install` and `ssh` run as a person's.

const run = promisify(execFile);
const DOMAIN = 'gw.example.test';

/** Why this machine cannot run the test, or undefined. */
async function refusal(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'mount namespaces need Linux';
  if (process.getuid?.() !== 0) return 'a private /etc/resolv.conf and a DNS server on port 53 need root (run as root, as .ci/run does)';
  try {
    await run('unshare', ['-m', 'sh', '-c', 'mount --bind /dev/null /etc/resolv.conf']);
  } catch (err) {
    return `this machine refuses mount namespaces: ${(err as Error).message.split('\n')[0]}`;
  }
  return undefined;
}

/** A DNS server that answers nothing and records each question's name, on 127.53.x.y:53. */
async function dnsRecorder(t: ExecutionContext): Promise<{ host: string; questions: string[] }> {
  const questions: string[] = [];
  for (let attempt = 0; ; attempt++) {
    const host = `127.53.${1 + Math.floor(Math.random() * 254)}.${1 + Math.floor(Math.random() * 254)}`;
    const socket: UdpSocket = createSocket('udp4');
    socket.on('message', (m) => {
      const labels: string[] = [];
      for (let i = 12; i < m.length && m[i] !== 0 && labels.length < 64; i += m[i] + 1) labels.push(m.subarray(i + 1, i + 1 + m[i]).toString('latin1'));
      questions.push(labels.join('.'));
    });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(53, host, () => resolve());
      });
    } catch (err) {
      socket.close();
      if (attempt < 5) continue;
      throw err;
    }
    t.teardown(() => socket.close());
    return { host, questions };
  }
}

const refused = await refusal();

if (refused) {
  test.skip(`names-dns skipped: ${refused}`, () => {});
} else {
  test('a name that resolves nowhere is never a DNS lookup: socksd (SOCKS5 and 4a, also with --fallback direct), diode proxy, query and bind, ssh through ssh-config, the gateway\'s SOCKS and HTTP; kitchen.diode by name asks no DNS either', async (t) => {
    const dns = await dnsRecorder(t);
    const dir = tempDir(t);
    const resolvConf = join(dir, 'resolv.conf');
    writeFileSync(resolvConf, `nameserver ${dns.host}\noptions timeout:1 attempts:1\n`);
    /** argv that runs `command args` with the test's resolv.conf in a mount namespace of its own. */
    const privateDns = (argv: string[]) => ['-m', 'sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolvConf, ...argv];
    const diode = (t2: ExecutionContext, args: string[]): Running => start(t2, privateDns([process.execPath, DIODE_BUNDLE, ...args]), { command: 'unshare' });
    const ran = async (argv: string[]) => {
      try {
        const { stdout, stderr } = await run('unshare', privateDns(argv), { timeout: 60_000 });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code: number; stdout: string; stderr: string };
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    };

    const relay = diode(t, ['relay', '--listen', '127.0.0.1:0', '--home', tempDir(t), '--gateway-socks', '127.0.0.1:0', '--gateway-http', '127.0.0.1:0', '--gateway-domain', DOMAIN]);
    const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const gatewaySocks = Number((await relay.waitFor(/gateway socks listening on 127\.0\.0\.1:(\d+)/))[1]);
    const gatewayHttp = Number((await relay.waitFor(/gateway http listening on 127\.0\.0\.1:(\d+)/))[1]);
    const web = await startOrigin(t, 'web');
    await startPublishNamed(t, `127.0.0.1:${relayPort}`, ['-public', `${web.port}:80`], ['kitchen']);
    const home = tempDir(t);
    const at = ['--relay', `127.0.0.1:${relayPort}`, '--home', home];
    const socksd = diode(t, ['socksd', '--listen', '127.0.0.1:0', '--fallback', 'direct', ...at]);
    const socksPort = Number((await socksd.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    await socksd.waitFor(/connected to relay/);

    // The control: a name that is no device goes direct, so socksd asks DNS, and the recorder hears it.
    const control = await socks5Connect(socksPort, 'leak-check.example', 80);
    control.socket.destroy();
    t.not(control.rep, 0x00);
    t.true(dns.questions.includes('leak-check.example'), `the recorder heard ${JSON.stringify(dns.questions)}`);

    // By name, found: no DNS.
    const found = await socks5Connect(socksPort, 'kitchen.diode', 80);
    found.socket.destroy();
    t.is(found.rep, 0x00);
    // Nobody's names and malformed ones, every way in: one clear refusal each.
    for (const host of ['nobody.diode', 'NOBODY.diode.', 'nobody-80.diode', 'nobody.diode.link', 'kit_chen.diode', 'ab.diode', '0x1234.diode']) {
      const r = await socks5Connect(socksPort, host, 80);
      r.socket.destroy();
      t.is(r.rep, 0x04, host);
    }
    t.is(await socks4aReply(socksPort, 'nobody.diode', 80), 0x5b);
    const proxy = await ran([process.execPath, DIODE_BUNDLE, 'proxy', 'nobody.diode', '22', ...at]);
    t.is(proxy.code, 1);
    t.is(proxy.stderr.trim().split('\n').length, 1, proxy.stderr);
    const query = await ran([process.execPath, DIODE_BUNDLE, 'query', 'nobody', ...at]);
    t.is(query.code, 1);
    // diode bind by a name nobody holds: each connection closed with one line naming the port it came in on.
    const bind = diode(t, ['bind', '0:nobody.diode:22', ...at]);
    const bound = Number((await bind.waitFor(/bind 127\.0\.0\.1:(\d+) → nobody\.diode:22/))[1]);
    const local = connect(bound, '127.0.0.1');
    local.on('error', () => {});
    await new Promise((resolve) => local.once('close', resolve));
    await bind.waitFor(new RegExp(`warn  \\[bind\\] 127\\.0\\.0\\.1:${bound} → nobody\\.diode:22: nobody\\.diode: no device has this name`));
    // Plain ssh through the block ssh-config prints.
    const sshConfig = join(dir, 'ssh_config');
    writeFileSync(sshConfig, (await run(process.execPath, [DIODE_BUNDLE, 'ssh-config', ...at])).stdout + 'Host *\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n');
    const ssh = await ran(['ssh', '-F', sshConfig, 'pi@nobody.diode', 'true']);
    t.is(ssh.code, 255);
    t.regex(ssh.stderr, /nobody\.diode: no device has this name/);
    // The gateway, with no agent on this side.
    for (const host of ['nobody.diode', `nobody.${DOMAIN}`, 'kit_chen.diode']) {
      const r = await socks5Connect(gatewaySocks, host, 80);
      r.socket.destroy();
      t.is(r.rep, 0x04, `gateway ${host}`);
    }
    for (const host of [`nobody.${DOMAIN}`, 'nobody.diode']) {
      const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '20', '-H', `Host: ${host}`, `http://127.0.0.1:${gatewayHttp}/`]);
      t.is(r.stdout, '404', `gateway http ${host}`);
    }

    t.deepEqual([...new Set(dns.questions)], ['leak-check.example'], 'no diode name, found or not, ever reached DNS');
  });

  test('plain ssh pi@kitchen.diode after diode ssh-config --install: no -F, no -o; ssh reads the user\'s own ~/.ssh/config (the account\'s home, a fresh one mounted over it), learns kitchen once, and asks DNS nothing', async (t) => {
    const dns = await dnsRecorder(t);
    const dir = tempDir(t);
    const resolvConf = join(dir, 'resolv.conf');
    writeFileSync(resolvConf, `nameserver ${dns.host}\noptions timeout:1 attempts:1\n`);
    const sshd = await startSshd(t);
    const relay = start(t, ['relay', '--listen', '127.0.0.1:0', '--home', tempDir(t)]);
    const relayPort = Number((await relay.waitFor(/listening on 127\.0\.0\.1:(\d+)/))[1]);
    const kitchen = await startPublishNamed(t, `127.0.0.1:${relayPort}`, ['-public', `${sshd.port}:22`], ['kitchen']);

    // A person's home as a new user has it: the key ssh uses by default, and ssh's own first-use host key prompt answered yes.
    const home = tempDir(t);
    mkdirSync(join(home, '.ssh'), { mode: 0o700 });
    copyFileSync(sshd.clientKey, join(home, '.ssh', 'id_ed25519'));
    copyFileSync(`${sshd.clientKey}.pub`, join(home, '.ssh', 'id_ed25519.pub'));
    writeFileSync(join(home, '.ssh', 'config'), 'Host *\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n', { mode: 0o600 });
    const diodeHome = join(home, 'diode');
    const accountHome = userInfo().homedir;
    // ssh takes ~ from the account (getpwuid), not from $HOME: the fresh home is mounted over the account's, in this namespace only.
    const script = 'mount --bind "$0" "$1" && mount --bind "$2" /etc/resolv.conf && export HOME="$1" && "$3" "$4" ssh-config --install --relay "$5" --home "$6" && exec ssh "$7@kitchen.diode" "echo plain"';
    const { stdout, stderr } = await run('unshare', ['-m', 'sh', '-c', script, home, accountHome, resolvConf, process.execPath, DIODE_BUNDLE, `127.0.0.1:${relayPort}`, diodeHome, sshd.user], { timeout: 60_000 });
    t.regex(stdout, /\.ssh\/config: diode block added[^\n]*\nplain\n$/);
    t.regex(readFileSync(join(home, '.ssh', 'config'), 'utf8'), /^# >>> diode[^\n]*\nHost \*\.diode\n  ProxyCommand .* proxy %h %p /);
    t.is(stderr.split('\n').filter((l) => /pinned in/.test(l)).length, 1, stderr);
    t.regex(readFileSync(join(diodeHome, 'known_names'), 'utf8'), new RegExp(`^kitchen ${kitchen.address} `, 'm'));
    // ssh keeps the host key under the name (hashed, as Debian's ssh does by default).
    t.regex((await run('ssh-keygen', ['-F', 'kitchen.diode', '-f', join(home, '.ssh', 'known_hosts')])).stdout, /ssh-ed25519/);
    t.deepEqual(dns.questions, []);
  });
}
