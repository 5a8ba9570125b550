import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDiode as diode, DIODE_BUNDLE, tempDir } from './helpers/diode.ts';

const ANALYZE = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;
/** systemd as PID 1 (what `service install` needs); containers and CI runners often have none. */
const SYSTEMD_RUNS = existsSync('/run/systemd/system');

/** systemd-analyze verify on a unit file: its complaints, or '' when it is clean. */
function verify(dir: string, name: string, unit: string): string {
  const path = join(dir, name);
  writeFileSync(path, unit);
  const r = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
  // Lines about other units on the host (not ours) are not our business.
  const ours = `${r.stderr}${r.stdout}`.split('\n').filter((l) => l.includes(name) || l.includes('diode'));
  return r.status === 0 && ours.length === 0 ? '' : `exit ${r.status}: ${ours.join('\n') || r.stderr}`;
}

test('service install --print publish: Restart=always, the sandbox, the state directory, the flags as given', async (t) => {
  const r = await diode(['service', 'install', '--print', 'publish', '-public', '22:22', '-private', '80:8080,0x63115a27c3d1b549011198c69f4120ca4ea12ee9', '--relay', 'relay.example.org:41046']);
  t.is(r.code, 0, r.stderr);
  const unit = r.stdout;
  t.regex(unit, new RegExp(`^ExecStart=${process.execPath.replace(/[/.]/g, '\\$&')} \\S+diode\\.cjs publish -public 22:22 -private 80:8080,0x63115a27c3d1b549011198c69f4120ca4ea12ee9 --relay relay\\.example\\.org:41046$`, 'm'));
  for (const line of ['Restart=always', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'StateDirectory=diode', 'StateDirectoryMode=0700', 'User=diode', 'Environment=DIODE_HOME=/var/lib/diode', 'WantedBy=multi-user.target', 'StartLimitIntervalSec=0']) {
    t.regex(unit, new RegExp(`^${line}$`, 'm'), line);
  }
  t.notRegex(unit, /LimitNOFILE/);
  t.regex(unit, /^CapabilityBoundingSet=$/m);
  // Issue 28 item 3: an agent's V8 heap is bounded on every board (a relay's is not).
  t.regex(unit, /^Environment=NODE_OPTIONS=--max-old-space-size=128$/m);
});

test('service install --print relay raises LimitNOFILE, may bind ports below 1024, and stays stopped once retired', async (t) => {
  const r = await diode(['service', 'install', '--print', 'relay', '--gateway-http', '0.0.0.0:80', '--gateway-domain', 'example.org', '--metrics', '127.0.0.1:9464']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^LimitNOFILE=1048576$/m);
  t.regex(r.stdout, /^RestartPreventExitStatus=10$/m);
  t.regex(r.stdout, /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m);
  t.notRegex(r.stdout, /NODE_OPTIONS/);
  t.regex(r.stdout, /relay --gateway-http 0\.0\.0\.0:80 --gateway-domain example\.org --metrics 127\.0\.0\.1:9464$/m);
});

test('service install --print --user: a user unit, no system user, the default home', async (t) => {
  const r = await diode(['service', 'install', '--user', '--print', 'socksd', '--relay', 'relay.example.org']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^WantedBy=default\.target$/m);
  t.notRegex(r.stdout, /^User=/m);
  t.notRegex(r.stdout, /DIODE_HOME/);
  t.regex(r.stdout, /^Restart=always$/m);
});

test('service units quote what systemd would otherwise expand', async (t) => {
  const home = '/srv/diode state/100%';
  const r = await diode(['service', 'install', '--print', 'publish', '-public', '22', '--relay', 'r.example.org', '--home', home]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /--home "\/srv\/diode state\/100%%"$/m);
  t.regex(r.stdout, /^ReadWritePaths="\/srv\/diode state\/100%%"$/m);
  t.notRegex(r.stdout, /DIODE_HOME/);
});

(ANALYZE ? test : test.skip)('systemd-analyze verify accepts every unit diode writes' + (ANALYZE ? '' : ' (SKIPPED: systemd-analyze is not installed)'), async (t) => {
  const dir = tempDir(t);
  const cases: [string, string[]][] = [
    ['diode-publish.service', ['publish', '-public', '22:22', '--relay', 'relay.example.org:41046']],
    ['diode-relay.service', ['relay', '--listen', '0.0.0.0:41046', '--gateway-socks', '0.0.0.0:1080']],
    ['diode-socksd.service', ['--user', 'socksd', '--relay', 'relay.example.org']],
    ['diode-bind.service', ['bind', '2222:0x63115a27c3d1b549011198c69f4120ca4ea12ee9.diode:22', '--relay', 'relay.example.org']],
  ];
  for (const [name, args] of cases) {
    const user = args[0] === '--user';
    const r = await diode(['service', 'install', ...(user ? ['--user', '--print', ...args.slice(1)] : ['--print', ...args])]);
    t.is(r.code, 0, r.stderr);
    t.is(verify(dir, name, r.stdout), '', name);
  }
});

test('service install checks the command and its flags before writing anything', async (t) => {
  const bad = await diode(['service', 'install', '--print', 'publish', '-publik', '22']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /publish: unknown flag "-publik"/);
  const noRole = await diode(['service', 'install', '--print', 'fleet']);
  t.is(noRole.code, 2);
  t.regex(noRole.stderr, /name the command to run: publish, socksd, bind, relay \(not "fleet"\)/);
  const sub = await diode(['service', 'reinstall']);
  t.is(sub.code, 2);
  t.regex(sub.stderr, /unknown subcommand "reinstall"/);
});

(SYSTEMD_RUNS ? test.skip : test)('without systemd as PID 1, service install says so and writes nothing', async (t) => {
  const r = await diode(['service', 'install', 'publish', '-public', '22', '--relay', 'relay.example.org']);
  t.is(r.code, 1);
  t.regex(r.stderr, /systemd is not running here; the unit would be \/etc\/systemd\/system\/diode-publish\.service/);
  t.false(existsSync('/etc/systemd/system/diode-publish.service'));
});

(SYSTEMD_RUNS ? test : test.skip)(
  'service install, status and uninstall through systemctl' + (SYSTEMD_RUNS ? '' : ' (SKIPPED: no systemd runs as PID 1 on this machine, so nothing can be enabled or started; the unit files are checked with systemd-analyze verify above)'),
  async (t) => {
    const r = await diode(['service', 'install', 'publish', '-public', '22', '--relay', '127.0.0.1:9']);
    t.is(r.code, 0, r.stderr);
    t.teardown(() => void spawnSync(process.execPath, [DIODE_BUNDLE, 'service', 'uninstall', 'publish']));
    const s = await diode(['service', 'status', 'publish']);
    t.regex(s.stdout, /diode-publish\.service/);
    const u = await diode(['service', 'uninstall', 'publish']);
    t.is(u.code, 0, u.stderr);
    t.false(existsSync('/etc/systemd/system/diode-publish.service'));
  },
);
