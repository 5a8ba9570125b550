import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers/diode.ts';
import { buildVersion, releaseKey, sign } from './helpers/releases.ts';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const DPKG = has('dpkg-deb') && has('dpkg');
const LINTIAN = has('lintian');

async function dpkg(rootDir: string, args: string[]): Promise<string> {
  // Into a scratch root: maintainer scripts run here with DPKG_ROOT set (they act under it only);
  // the root has no libc6/adduser packages, hence --force-depends.
  const { stdout, stderr } = await exec('dpkg', [`--root=${rootDir}`, '--force-script-chrootless', '--force-depends', `--log=${join(rootDir, 'dpkg.log')}`, ...args]);
  return stdout + stderr;
}

/** `dpkg --verify diode` in a scratch root: a line per file of the package that differs from what dpkg installed. */
function dpkgVerify(rootDir: string): string {
  const r = spawnSync('dpkg', [`--root=${rootDir}`, '--verify', 'diode'], { encoding: 'utf8' });
  if (r.error || r.stderr.trim()) throw new Error(`dpkg --verify: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

function scratchRoot(dir: string): string {
  const r = join(dir, 'root');
  for (const d of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'etc']) mkdirSync(join(r, d), { recursive: true });
  writeFileSync(join(r, 'var/lib/dpkg/status'), '');
  writeFileSync(join(r, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(r, 'etc/group'), 'root:x:0:\n');
  writeFileSync(join(r, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o600 });
  writeFileSync(join(r, 'etc/gshadow'), 'root:*::\n', { mode: 0o600 });
  return r;
}

(DPKG ? test : test.skip)(
  'npm run package: the amd64 .deb installs into a scratch root, keeps the key and the edited conffile on upgrade, and purge removes the user and the state' +
    (DPKG ? '' : ' (SKIPPED: dpkg-deb is not installed)'),
  async (t) => {
    t.timeout(15 * 60_000, 'cross-build of x64 when dist/bin has none, then lintian on an 88 MB binary');
    const dir = tempDir(t, 'diode-pkg-');
    const out = join(dir, 'deb');
    // Only amd64, gzip -1: the ARM ones differ only in the binary and take minutes under qemu.
    await exec(process.execPath, [join(root, 'scripts/package.mjs'), '--arch', 'amd64', '--fast', '--out', out], { cwd: root, maxBuffer: 1 << 24 });
    const deb = join(out, `diode_${version}_amd64.deb`);
    t.true(existsSync(deb));
    const lint = LINTIAN ? exec('lintian', ['--tag-display-limit', '0', deb]).then((r) => r.stdout, (e: { stdout: string }) => e.stdout) : undefined;

    const info = (await exec('dpkg-deb', ['--info', deb])).stdout;
    t.regex(info, /Package: diode\n/);
    t.regex(info, new RegExp(`Version: ${version.replace(/\./g, '\\.')}\\n`));
    t.regex(info, /Architecture: amd64\n/);
    t.regex(info, /Depends: adduser, libc6 \(>= 2\.28\)/);
    for (const script of ['postinst', 'prerm', 'postrm', 'conffiles']) t.regex(info, new RegExp(` ${script} `));
    const contents = (await exec('dpkg-deb', ['--contents', deb])).stdout;
    t.regex(contents, /^-rwxr-xr-x root\/root +\d+ .* \.\/usr\/bin\/diode$/m);
    for (const f of ['lib/systemd/system/diode-publish.service', 'lib/systemd/system/diode-relay.service', 'etc/diode/publish.conf', 'etc/diode/relay.conf', 'usr/share/doc/diode/copyright']) {
      t.regex(contents, new RegExp(`^-rw-r--r-- root/root .* \\./${f.replace(/\./g, '\\.')}$`, 'm'), f);
    }
    t.regex(contents, /^drwxr-xr-x root\/root +0 .* \.\/$/m);

    const r = scratchRoot(dir);
    await dpkg(r, ['-i', deb]);
    const passwd = readFileSync(join(r, 'etc/passwd'), 'utf8');
    const user = /^diode:x:(\d+):(\d+):.*:\/var\/lib\/diode:\/usr\/sbin\/nologin$/m.exec(passwd);
    t.truthy(user, passwd);
    const state = statSync(join(r, 'var/lib/diode'));
    t.is(state.mode & 0o777, 0o700);
    t.is(state.uid, Number(user![1]));
    const unit = readFileSync(join(r, 'lib/systemd/system/diode-publish.service'), 'utf8');
    t.regex(unit, /^EnvironmentFile=\/etc\/diode\/publish\.conf$/m);
    t.regex(unit, /^ExecStart=\/usr\/lib\/diode\/launch publish \$DIODE_PUBLISH_FLAGS$/m);
    t.true((statSync(join(r, 'usr/lib/diode/launch')).mode & 0o755) === 0o755);
    t.regex(readFileSync(join(r, 'lib/systemd/system/diode-relay.service'), 'utf8'), /^LimitNOFILE=1048576$/m);
    t.regex(readFileSync(join(r, 'lib/systemd/system/diode-relay.service'), 'utf8'), /^RestartPreventExitStatus=10$/m);
    const ran = await exec(join(r, 'usr/bin/diode'), ['--version']);
    t.regex(ran.stdout, new RegExp(`^diode ${version.replace(/\./g, '\\.')} `));

    // The key made at the first start, an edited conffile: both survive an upgrade.
    writeFileSync(join(r, 'var/lib/diode/private.key'), '0x' + '42'.repeat(32) + '\n', { mode: 0o600 });
    const conf = join(r, 'etc/diode/publish.conf');
    writeFileSync(conf, readFileSync(conf, 'utf8').replace('relay.example.org:41046', 'relay.my.org:41046'));
    // An update the agent selected that is not newer than the package being installed is dropped (the launcher runs /usr/bin/diode).
    const selected = join(r, 'var/lib/diode/update/current');
    mkdirSync(join(r, 'var/lib/diode/update'));
    writeFileSync(selected, `${version} diode-${version} ${'ab'.repeat(32)}\n`);
    const next = `${version}.1`;
    await exec(process.execPath, [join(root, 'scripts/package.mjs'), '--arch', 'amd64', '--fast', '--out', out, '--version', next], { cwd: root, maxBuffer: 1 << 24 });
    const upgrade = await dpkg(r, ['-i', join(out, `diode_${next}_amd64.deb`)]);
    t.false(existsSync(selected), 'a selected update older than the package is dropped on upgrade');
    // A newer one stays (installing the same package again runs postinst again).
    writeFileSync(selected, `9.9.9 diode-9.9.9 ${'ab'.repeat(32)}\n`);
    await dpkg(r, ['-i', join(out, `diode_${next}_amd64.deb`)]);
    t.true(existsSync(selected), 'a selected update newer than the package stays');
    // An update applied by the agent (diode update --from makes the checks and the install an agent makes on a
    // release from its relay) writes only under the state directory: dpkg --verify sees nothing more than
    // before, /usr/bin/diode is the package's byte for byte, and the unit's launcher runs the state directory's copy.
    rmSync(selected);
    const rel = tempDir(t, 'diode-rel-');
    const key = await releaseKey(rel);
    const release = await buildVersion(rel, '90.0.0');
    await sign(key.path, release, ['--arch', 'linux-x64']);
    const home = join(r, 'var/lib/diode');
    const packaged = join(r, 'usr/bin/diode');
    const verified = dpkgVerify(r);
    t.regex(verified, /^\S+ c \/etc\/diode\/publish\.conf$/m, 'dpkg --verify sees the conffile edited above (it sees changes)');
    const packagedSha = sha256(packaged);
    await exec(packaged, ['config', '--home', home, '-set', `update-keys=${key.address}`]);
    const applied = await exec(packaged, ['update', '--from', release, '--home', home]);
    t.regex(applied.stdout, /^installed diode 90\.0\.0 in .*\/update; on trial/m);
    t.is(dpkgVerify(r), verified, 'nothing dpkg installed was changed by the update');
    t.is(sha256(packaged), packagedSha);
    t.is(sha256(join(home, 'update/diode-90.0.0')), sha256(release));
    rmSync(join(home, 'update/trial')); // what the new agent does once it reached a relay (committed)
    const launch = await exec('sh', [join(r, 'usr/lib/diode/launch'), '--version'], { env: { ...process.env, DIODE_HOME: home, DIODE_PACKAGED: packaged } });
    t.regex(launch.stdout, /^diode 90\.0\.0 /);
    // Reinstalling the package keeps the newer update selected and still changes none of the update's files.
    await dpkg(r, ['-i', join(out, `diode_${next}_amd64.deb`)]);
    t.regex(readFileSync(selected, 'utf8'), /^90\.0\.0 diode-90\.0\.0 [0-9a-f]{64}$/m);
    t.is(sha256(join(home, 'update/diode-90.0.0')), sha256(release));

    t.regex(upgrade, new RegExp(`Unpacking diode \\(${next.replace(/\./g, '\\.')}\\) over \\(${version.replace(/\./g, '\\.')}\\)`));
    t.is(readFileSync(join(r, 'var/lib/diode/private.key'), 'utf8'), '0x' + '42'.repeat(32) + '\n');
    t.regex(readFileSync(conf, 'utf8'), /relay\.my\.org/);
    t.is(readFileSync(join(r, 'etc/passwd'), 'utf8').match(/^diode:/gm)?.length, 1);

    await dpkg(r, ['--purge', 'diode']);
    t.false(existsSync(join(r, 'var/lib/diode')));
    t.false(existsSync(join(r, 'usr/bin/diode')));
    t.false(existsSync(conf));
    t.notRegex(readFileSync(join(r, 'etc/passwd'), 'utf8'), /^diode:/m);
    t.notRegex(readFileSync(join(r, 'etc/group'), 'utf8'), /^diode:/m);

    if (lint) {
      const report = await lint;
      t.log(`lintian: ${report.trim().split('\n').length} line(s)\n${report.trim()}`);
      t.deepEqual(report.split('\n').filter((l) => l.startsWith('E:')), [], 'lintian errors');
    } else t.log('lintian is not installed: not run');
  },
);
