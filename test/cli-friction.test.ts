// Issue 17: what a new user tripped on. Each test runs the real bundle.
import test from 'ava';
import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { runDiode as diode, start, tempDir } from './helpers/diode.ts';
import { listenError } from '../agent/util/listen.ts';
import { loadOrCreateRelayCert } from '../agent/relay/cert.ts';
import { Identity } from '../agent/identity/index.ts';

const ADDRESS = '0x9f8B043D1CaeE0C61c92a5394DA08D428BF16Fbe';

/** A port some other program holds on 127.0.0.1. */
async function takenPort(t: import('ava').ExecutionContext): Promise<number> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

test('17.1 a taken port is one clear line and exit 1 for socksd, relay --listen, the gateways and bind', async (t) => {
  const port = await takenPort(t);
  const at = `127.0.0.1:${port}`;
  const home = tempDir(t);
  const cases: Array<[string[], string]> = [
    [['socksd', '--listen', at, '--relay', '127.0.0.1:1'], `diode: cannot listen on ${at}: address already in use\n`],
    [['relay', '--listen', at], `diode: cannot listen on ${at}: address already in use\n`],
    [['relay', '--listen', '127.0.0.1:0', '--gateway-socks', at], `diode: --gateway-socks: cannot listen on ${at}: address already in use\n`],
    [['relay', '--listen', '127.0.0.1:0', '--gateway-http', at], `diode: --gateway-http: cannot listen on ${at}: address already in use\n`],
    [['bind', `${port}:${ADDRESS}.diode:22`, '--relay', '127.0.0.1:1'], `diode: bind "${port}:${ADDRESS}.diode:22": cannot listen on ${at}: address already in use\n`],
    [['fleet', 'ui', '--listen', at], `diode: fleet ui: cannot listen on ${at}: address already in use\n`],
    // --metrics said "cannot listen: listen EADDRINUSE: address already in use 127.0.0.1:…" (Node's words).
    [['relay', '--listen', '127.0.0.1:0', '--metrics', at], `diode: --metrics: cannot listen on ${at}: address already in use\n`],
    [['socksd', '--listen', '127.0.0.1:0', '--relay', '127.0.0.1:1', '--metrics', at], `diode: --metrics: cannot listen on ${at}: address already in use\n`],
  ];
  for (const [args, line] of cases) {
    const r = await diode([...args, '--home', home, '--log-level', 'error']);
    t.is(r.code, 1, args.join(' '));
    t.is(r.stderr, line, args.join(' '));
    t.notRegex(r.stderr, /internal error|setupListenHandle/);
  }
  const notHere = await diode(['socksd', '--listen', '192.0.2.1:1080', '--allow-remote', '--relay', '127.0.0.1:1', '--home', home, '--log-level', 'error']);
  t.is(notHere.code, 1);
  t.is(notHere.stderr, 'diode: cannot listen on 192.0.2.1:1080: address not available (no interface of this machine has it)\n');
});

test('17.1 EACCES and EADDRNOTAVAIL name the cause in words', (t) => {
  const at = { host: '0.0.0.0', port: 80 };
  t.is(listenError(at, Object.assign(new Error('listen EACCES: permission denied 0.0.0.0:80'), { code: 'EACCES' })).message, 'cannot listen on 0.0.0.0:80: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)');
  t.is(listenError(at, Object.assign(new Error('x'), { code: 'EADDRNOTAVAIL' }), '--metrics').message, '--metrics: cannot listen on 0.0.0.0:80: address not available (no interface of this machine has it)');
  t.is(listenError(at, Object.assign(new Error('x'), { code: 'EADDRNOTAVAIL' })).exitCode, 1);
});

test('17.5 DIODE_LOG and --log-level are checked before anything starts', async (t) => {
  const home = tempDir(t);
  const env = await diode(['address', '--home', home], { DIODE_LOG: 'bogus' });
  t.is(env.code, 2);
  t.is(env.stderr, 'diode: DIODE_LOG: "bogus" is not a log level; use debug, info, warn, error\n');
  const flag = await diode(['address', '--home', home, '--log-level', 'loud']);
  t.is(flag.code, 2);
  t.is(flag.stderr, 'diode: --log-level: "loud" is not a log level; use debug, info, warn, error\n');
  // --log-level wins over DIODE_LOG; "error" silences the relay's info line.
  const relay = start(t, ['relay', '--listen', '127.0.0.1:0', '--home', home, '--log-level', 'debug'], { env: { DIODE_LOG: 'error' } });
  await relay.waitFor(/listening on/);
  await relay.stop();
  t.regex(relay.output(), /info  \[relay\] SIGTERM: shutting down/);
  const quiet = start(t, ['--log-level', 'error', 'relay', '--listen', '127.0.0.1:0', '--home', home]);
  await quiet.waitFor(/listening on/);
  await quiet.stop();
  t.notRegex(quiet.output(), /shutting down/);
});

test('17.6 global flags --home, --relay, --log-level work before the command too', async (t) => {
  const home = tempDir(t);
  const after = await diode(['address', '--home', home]);
  const before = await diode(['--home', home, 'address']);
  t.is(before.code, 0);
  t.is(before.stdout, after.stdout);
  t.is((await diode([`--home=${home}`, 'address'])).stdout, after.stdout);
  const relays = await diode(['--relay', '10.0.0.9:7', '--home', home, 'config', '-list']);
  t.regex(relays.stdout, /relays in effect: 10\.0\.0\.9:7 \(from --relay\)/);
  const level = await diode(['--log-level', 'warn', '--home', home, 'address']);
  t.is(level.code, 0);
  const wrongCommand = await diode(['--relay', '10.0.0.9:7', 'address']);
  t.is(wrongCommand.code, 2);
  t.is(wrongCommand.stderr, 'diode: --relay does not apply to diode address\n');
  const unknown = await diode(['--homme', home, 'address']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown flag "--homme" before the command; global flags: --home, --relay, --log-level/);
  const twice = await diode(['--home', home, 'address', '--home', home]);
  t.regex(twice.stderr, /--home given twice/);
});

test('17.7 help per command, -v, version listed, config keys named, config -list when nothing is set', async (t) => {
  const top = await diode(['help']);
  t.is(top.code, 0);
  t.regex(top.stdout, /\n {2}version +print the version/);
  t.regex(top.stdout, /\n {2}help \[command\] +/);
  const helpPublish = await diode(['help', 'publish']);
  const publishHelp = await diode(['publish', '--help']);
  t.is(helpPublish.code, 0);
  t.is(helpPublish.stdout, publishHelp.stdout);
  t.regex(helpPublish.stdout, /^publish local ports/);
  t.regex((await diode(['help', 'nosuch'])).stderr, /unknown command "nosuch"/);
  for (const v of ['-v', '--version', 'version']) {
    const r = await diode([v]);
    t.is(r.code, 0, v);
    t.regex(r.stdout, /^diode (\d+\.\d+\.\d+|dev) \(commit /, v);
  }
  const config = await diode(['config', '--help']);
  for (const key of ['relays', 'fleet', 'rpc', 'fleet-ttl']) t.regex(config.stdout, new RegExp(`\\n {2}${key} +\\S`), key);
  t.regex(config.stdout, /relays +comma-separated relays, tried in order: host:port, or 0x<relay address>@host:port/);
  const home = tempDir(t);
  const empty = await diode(['config', '-list', '--home', home]);
  t.is(empty.code, 0);
  t.is(empty.stdout, `nothing set in ${join(home, 'config.json')}\nrelays in effect: none; pass --relay host:port or run diode config -set relays=host:port\n`);
  // help and version are listed as commands, so `diode help <them>` answers too (was: unknown command).
  const helpHelp = await diode(['help', 'help']);
  t.is(helpHelp.code, 0);
  t.is(helpHelp.stdout, top.stdout);
  const helpVersion = await diode(['help', 'version']);
  t.is(helpVersion.code, 0);
  t.regex(helpVersion.stdout, /^print the version and the commit it was built from\n\nusage: diode version/);
  // A hand-edited relays key that every agent refuses is not shown as "in effect".
  const edited = tempDir(t);
  writeFileSync(join(edited, 'config.json'), JSON.stringify({ relays: 'http://127.0.0.1:41046' }));
  const list = await diode(['config', '-list', '--home', edited]);
  t.is(list.code, 0);
  t.regex(list.stdout, /\nrelays in effect: none; the "relays" key in \S+config\.json is refused by every agent \(relay "http:\/\/127\.0\.0\.1:41046": a relay is not a http:\/\/ URL; .*\); fix it with diode config -set relays=host:port\n$/);
});

test('17.3 relay hosts that can never resolve are refused at start, in every place a relay is given', async (t) => {
  const home = tempDir(t);
  const cases: Array<[string, string]> = [
    // Unbracketed IPv6: was read as host "::1:41046" with the default port, and retried forever on ENOTFOUND.
    ['::1:41046', 'diode: relay "::1:41046": "::1:41046" is not an IPv6 address; an IPv6 relay goes in brackets, its port after them: [::1]:41046\n'],
    ['999.1.1.1:41046', 'diode: relay "999.1.1.1:41046": "999.1.1.1" is not an IPv4 address; write host:port, 0x<relay address>@host:port or diode://0x<relay address>@host:port\n'],
    ['relay!.example.org:41046', 'diode: relay "relay!.example.org:41046": "relay!.example.org" is not a host name (letters, digits, dashes and dots); write host:port, 0x<relay address>@host:port or diode://0x<relay address>@host:port\n'],
  ];
  for (const [entry, line] of cases) {
    const r = await diode(['socksd', '--listen', '127.0.0.1:0', '--relay', entry, '--home', home]);
    t.is(r.stderr, line, entry);
    t.is(r.code, 2, entry);
  }
  // Waited for, not given a fixed 2 s: under load a node start alone can take that long.
  const bracketed = start(t, ['socksd', '--listen', '127.0.0.1:0', '--relay', '[::1]:1', '--home', home, '--log-level', 'error']);
  await bracketed.waitFor(/listening on/, 30_000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.regex(bracketed.output(), /^socksd 0x[0-9a-fA-F]{40} listening on 127\.0\.0\.1:\d+\n$/);
  await bracketed.stop();
  // ssh-config baked --relay into the ProxyCommand unchecked: the mistake showed only at ssh time.
  const ssh = await diode(['ssh-config', '--relay', 'http://127.0.0.1:41046', '--home', home]);
  t.is(ssh.code, 2);
  t.is(ssh.stdout, '');
  t.regex(ssh.stderr, /^diode: relay "http:\/\/127\.0\.0\.1:41046": a relay is not a http:\/\/ URL; /);
  const pinned = await diode(['ssh-config', '--relay', `${ADDRESS.toLowerCase()}@relay.example.org`, '--home', home]);
  t.regex(pinned.stdout, new RegExp(` proxy %h %p --relay ${ADDRESS}@relay\\.example\\.org:41046 --home `));
});

test('17.4 a relay port whose service hangs up on the ClientHello is named as such, not with Node\'s TLS words', async (t) => {
  const server = createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const at = `127.0.0.1:${(server.address() as { port: number }).port}`;
  const r = await diode(['proxy', `${ADDRESS}.diode`, '22', '--relay', at, '--home', tempDir(t)]);
  t.is(r.code, 1);
  t.is(r.stderr, `diode: proxy: cannot reach ${ADDRESS}.diode port 22: not connected to a relay (${at} closed the connection before TLS was set up (not a diode relay, or a relay that is full or restarting))\n`);
  t.notRegex(r.stderr, /Client network socket|ECONNRESET/);
});

test('17.5 input checks: bad hosts, stray words, protocol suffixes, addresses without 0x, non-loopback binds, a domain without a gateway', async (t) => {
  const home = tempDir(t);
  const publish = (...flags: string[]) => diode(['publish', ...flags, '--relay', '127.0.0.1:1', '--home', home]);
  const refusals: Array<[Promise<{ code: number; stderr: string }>, string]> = [
    [publish('-public', '999.1.1.1:22:22'), 'diode: -public "999.1.1.1:22:22": "999.1.1.1" is not an IPv4 address or a host name\n'],
    [publish('-public', 'bad_host:22:22'), 'diode: -public "bad_host:22:22": "bad_host" is not an IPv4 address or a host name\n'],
    [publish('-public', '22:22', 'extra'), 'diode: publish: unexpected "extra"; each port item goes after a flag (-public 22:22 -public 80), several in one comma list (-public 22:22,80)\n'],
    [publish('-private', `22:22,${ADDRESS.slice(2)}`), `diode: -private "22:22,${ADDRESS.slice(2)}": "${ADDRESS.slice(2)}" looks like a client address without its 0x; write 0x${ADDRESS.slice(2)}\n`],
    // An address cut short (no 0x) said "is not a port number".
    [publish('-private', `22:22,${ADDRESS.slice(2, 22)}`), `diode: -private "22:22,${ADDRESS.slice(2, 22)}": "${ADDRESS.slice(2, 22)}" is no port number and looks like a client address without its 0x (an address is 0x and 40 hex digits; this has 20)\n`],
    [publish('-public', '22:22:udp'), 'diode: -public "22:22:udp": only tcp is supported (got "udp")\n'],
    [publish('-public', '22:22:tls'), 'diode: -public "22:22:tls": only tcp is supported (got "tls")\n'],
    [
      diode(['bind', `0.0.0.0:2224:${ADDRESS}.diode:22`, '--relay', '127.0.0.1:1', '--home', home]),
      `diode: bind "0.0.0.0:2224:${ADDRESS}.diode:22": bind listens on 127.0.0.1 only (not "0.0.0.0"): a device port is this machine's shortcut, never a service for the network; write 2224:${ADDRESS}.diode:22\n`,
    ],
    [diode(['relay', '--gateway-domain', 'example.org', '--home', home]), 'diode: --gateway-domain names what the gateways serve: add --gateway-http, --gateway-https or --gateway-socks HOST:PORT\n'],
    [diode(['relay', 'extra', '--home', home]), 'diode: relay: unexpected "extra"; flags start with - (diode relay --help)\n'],
    [diode(['address', 'extra', '--home', home]), 'diode: address: unexpected "extra"; write diode address [--qr]\n'],
  ];
  for (const [result, line] of refusals) {
    const r = await result;
    t.is(r.stderr, line);
    t.is(r.code, 2, line);
  }
  // The Diode client's `:tcp` is accepted, and so is a loopback host before a bind.
  const { parsePortFlag } = await import('../agent/device/port-spec.ts');
  t.deepEqual(parsePortFlag('public', '22:22:tcp,192.168.1.20:80:8080:TCP'), [
    { host: '127.0.0.1', localPort: 22, remotePort: 22, mode: 'public', allow: [] },
    { host: '192.168.1.20', localPort: 80, remotePort: 8080, mode: 'public', allow: [] },
  ]);
  const { parseBindSpecs } = await import('../agent/client/target.ts');
  t.is(parseBindSpecs([`127.0.0.1:2224:${ADDRESS}.diode:22:tcp`])[0].localPort, 2224);
});

test('17.1 audit: a certificate that is not PEM is one line before anything listens, not an OpenSSL stack', async (t) => {
  const dir = tempDir(t);
  const notPem = join(dir, 'cert.txt');
  writeFileSync(notPem, 'hello\n');
  const r = await diode(['relay', '--listen', '127.0.0.1:0', '--gateway-https', '127.0.0.1:0', '--gateway-cert', notPem, '--gateway-key', notPem, '--home', dir]);
  t.is(r.code, 2);
  t.is(r.stderr, `diode: --gateway-cert ${notPem} / --gateway-key ${notPem}: not PEM (expected -----BEGIN ...-----)\n`);
  t.is(r.stdout, '');
});

test('17.10 a malformed .diode name is refused with what a diode name is, never the --fallback direct hint (such names never go direct)', async (t) => {
  const { diodeConnector } = await import('../agent/client/socks-connector.ts');
  const { Identity } = await import('../agent/identity/identity.ts');
  const { NameResolver } = await import('../agent/names/resolver.ts');
  const names = new NameResolver({ sources: [] });
  for (const fallback of ['refuse', 'direct'] as const) {
    const connect = diodeConnector([], Identity.random(), names, fallback);
    const err = await t.throwsAsync(connect({ version: 5, command: 1, addressType: 'domain', host: '0x12.diode', port: 22 }, '127.0.0.1:1'));
    t.is(err!.message, '0x12.diode is not a <name>.diode or <address>.diode name (an address is 0x and 40 hex digits; such a name is never looked up in DNS)', fallback);
  }
  const other = await t.throwsAsync(diodeConnector([], Identity.random(), names)({ version: 5, command: 1, addressType: 'domain', host: 'example.org', port: 80 }, '127.0.0.1:1'));
  t.regex(other!.message, /^example\.org is not a <name>\.diode or <address>\.diode name \(socksd --fallback direct connects such names directly\)$/);
});

test('17 audit: a state directory that cannot be made is one line and exit 1, never a hang (Node 20 mkdir -p loops on /proc)', async (t) => {
  // Node 20's mkdirSync(recursive) spun at 100 % CPU on /proc, deaf to SIGTERM: SIGKILL after 10 s.
  const proc = await diode(['--home', '/proc/nope', 'address'], {}, 10_000, 'SIGKILL');
  t.is(proc.signal, undefined, 'still running after 10 s');
  t.is(proc.code, 1);
  t.is(proc.stderr, 'diode: cannot create the state directory /proc/nope: /proc is a file system where no directory can be created (such as /proc or /sys); pick another with --home DIR or DIODE_HOME\n');
  const deeper = await diode(['config', '-list', '--home', '/proc/nope/a/b'], {}, 10_000, 'SIGKILL');
  t.is(deeper.code, 1);
  t.is(deeper.stderr, 'diode: cannot create the state directory /proc/nope/a/b: /proc is a file system where no directory can be created (such as /proc or /sys); pick another with --home DIR or DIODE_HOME\n');
  // Under a regular file: was "cannot read the key file …: ENOTDIR …; fix its permissions".
  const file = join(tempDir(t), 'file');
  writeFileSync(file, 'x');
  for (const [home, args] of [[join(file, 'sub', 'home'), ['address']], [file, ['address']], [join(file, 'home'), ['config', '-list']]] as const) {
    const r = await diode([...args, '--home', home], {}, 10_000, 'SIGKILL');
    t.is(r.code, 1, home);
    t.is(r.stderr, `diode: cannot create the state directory ${home}: ${file} is a file, not a directory; pick another with --home DIR or DIODE_HOME\n`, home);
  }
  // Missing levels are still made, each 0700.
  const fresh = join(tempDir(t), 'a', 'b', 'c');
  const made = await diode(['address', '--home', fresh]);
  t.is(made.code, 0);
  const { statSync } = await import('node:fs');
  t.is(statSync(fresh).mode & 0o777, 0o700);
  t.is(statSync(join(fresh, '..')).mode & 0o777, 0o700);
});

test('17 audit: an empty --home is refused, not taken for the default', async (t) => {
  const line = 'diode: --home is empty; give the state directory (--home DIR), or leave --home out for the default\n';
  for (const args of [['--home', '', 'address'], ['address', '--home', ''], ['--home=', 'address'], ['config', '-list', '--home', ''], ['service', 'install', '--print', 'publish', '-public', '22', '--relay', '127.0.0.1:1', '--home', '']]) {
    const r = await diode(args);
    t.is(r.code, 2, args.join(' '));
    t.is(r.stderr, line, args.join(' '));
    t.is(r.stdout, '', args.join(' '));
  }
});

test('17 audit: a relays key of the wrong JSON type names the key, the file and the fix (was "no relay configured")', async (t) => {
  const home = tempDir(t);
  const path = join(home, 'config.json');
  writeFileSync(path, JSON.stringify({ relays: 5 }));
  const line = `the "relays" key in ${path} holds 5, not a string; fix it with diode config -set relays=host:port`;
  const r = await diode(['proxy', `${ADDRESS}.diode`, '22', '--home', home]);
  t.is(r.code, 2);
  t.is(r.stderr, `diode: ${line}\n`);
  const list = await diode(['config', '-list', '--home', home]);
  t.is(list.code, 0);
  t.is(list.stdout, `relays=5\nrelays in effect: none; ${line}\n`);
  writeFileSync(path, JSON.stringify({ relays: ['127.0.0.1:41046'] }));
  t.is((await diode(['socksd', '--listen', '127.0.0.1:0', '--home', home])).stderr, `diode: the "relays" key in ${path} holds ["127.0.0.1:41046"], not a string; fix it with diode config -set relays=host:port\n`);
  // -set still repairs it.
  t.is((await diode(['config', '-set', 'relays=127.0.0.1:41046', '--home', home])).code, 0);
  t.regex((await diode(['config', '-list', '--home', home])).stdout, /relays in effect: 127\.0\.0\.1:41046 \(from the "relays" key/);
});

test('17 audit: a relay that resets the connection once TLS is under way is one line, not "read ECONNRESET", and is retried', async (t) => {
  let connections = 0;
  const reset = (s: Socket) => {
    connections++;
    s.on('error', () => {});
    s.once('data', () => s.resetAndDestroy());
  };
  const plain = createServer(reset);
  const pems = await loadOrCreateRelayCert(tempDir(t), Identity.random());
  // Completes TLS, then resets before the hello.
  const tls = createServer((raw) => {
    raw.on('error', () => {});
    const secure = new TLSSocket(raw, { isServer: true, key: pems.key, cert: pems.cert });
    secure.on('error', () => {});
    secure.once('secure', () => setTimeout(() => raw.resetAndDestroy(), 50));
  });
  for (const server of [plain, tls]) {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  const at = (server: Server) => `127.0.0.1:${(server.address() as { port: number }).port}`;
  const home = tempDir(t);
  const cases: Array<[Server, string]> = [
    [plain, 'closed the connection during the TLS handshake'],
    [tls, 'closed the connection before the diode hello was done'],
  ];
  for (const [server, what] of cases) {
    const r = await diode(['proxy', `${ADDRESS}.diode`, '22', '--relay', at(server), '--home', home]);
    t.is(r.code, 1);
    // The first stream leaves with the TLS Finished (pipelined): a reset after TLS finds it either still
    // waiting for the session (not connected) or already sent on it (no answer). One line either way.
    const why = `${at(server)} ${what} (not a diode relay, or a relay that is full or restarting)`;
    const expected = [
      `diode: proxy: cannot reach ${ADDRESS}.diode port 22: not connected to a relay (${why})\n`,
      `diode: proxy: cannot reach ${ADDRESS}.diode port 22: no answer from the relay for ${ADDRESS}:22: ${why}\n`,
    ];
    t.true(expected.includes(r.stderr), r.stderr);
    t.notRegex(r.stderr, /ECONNRESET/);
  }
  // publish keeps retrying it like any relay failure.
  connections = 0;
  const publish = start(t, ['publish', '-public', '22:22', '--relay', at(plain), '--home', home]);
  const line = new RegExp(`warn  \\[publish\\] ${at(plain).replace(/\./g, '\\.')} closed the connection during the TLS handshake \\(not a diode relay, or a relay that is full or restarting\\); retrying with backoff`);
  await publish.waitFor(line);
  const deadline = Date.now() + 15_000;
  while (connections < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  t.true(connections >= 2, `${connections} tries`);
  await publish.stop();
  t.notRegex(publish.output(), /ECONNRESET/);
});
