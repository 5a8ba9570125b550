// The Pi image's pieces that can be checked without building or booting it
// (the full build + QEMU boot is `npm run image` + `npm run hw-test`):
// the boot-partition reader against Imager-shaped files, the units, and the
// build's no-baked-secrets check on a fake tree.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DIODE_BUNDLE, tempDir } from './helpers/diode.ts';
import { BOOT_CONFIG, FILES, UNIT_DIR, card, bootConfig, issue } from './helpers/card.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const YAML_FLAT = join(FILES, 'usr/lib/diode/yaml-flat.awk');

interface BuildModule {
  checkTree(root: string): string[];
  applyOverlay(tree: string, binary: string, opts?: { debianUnits?: boolean }): void;
  kernelCmdline(text: string): string;
  initrdProblems(listing: string): string[];
  ENABLED_UNITS: readonly string[];
  parseArgs(argv: string[]): { out: string; rootfs?: string };
  fitAgentUnit(unit: string, publishHelp: string): { text: string; dropped: string[] };
}
interface RootfsModule {
  mmdebstrapArgs(arch: string, output: string): string[];
  rootfsKey(arch: string): string;
  packagesFor(arch: string): string[];
  INITRAMFS_FSTYPE_CONF: { path: string; text: string };
}
const build = (await import(join(REPO, 'image/build.mjs'))) as BuildModule;
const rootfs = (await import(join(REPO, 'image/rootfs.mjs'))) as RootfsModule;

const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8l0Lz0n5qv1bq1bq1bq1bq1bq1bq1bq1bq1bq1bq1b alice@laptop';
const KEY_B = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@desk';
const HASH = '$5$Zm9vYmFy$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ';
const PSK = 'a'.repeat(8) + '0123456789abcdef'.repeat(3) + 'b'.repeat(8);

/** user-data exactly as Raspberry Pi Imager's OS customisation writes it (hostname, user + key, locale). */
const IMAGER_USER_DATA = `#cloud-config
hostname: kitchen-pi
manage_etc_hosts: true
packages:
- avahi-daemon
apt:
  conf: |
    Acquire {
      Check-Date "false";
    };

users:
- name: pi
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: false
  passwd: ${HASH}
  ssh_authorized_keys:
    - ${KEY_A}
  sudo: ALL=(ALL) NOPASSWD:ALL

timezone: Europe/London
runcmd:
- sed -i 's/^\\s*REGDOMAIN=\\S*/REGDOMAIN=GB/' /etc/default/crda || true
- localectl set-x11-keymap "gb" pc105
- setupcon -k --force || true

`;

/** network-config as Imager writes it (the password is the PBKDF2 PSK, 64 hex digits). */
const IMAGER_NETWORK_CONFIG = `version: 2
wifis:
  renderer: networkd
  wlan0:
    dhcp4: true
    optional: true
    access-points:
      "Home Net":
        password: "${PSK}"
`;

test('Imager user-data sets the hostname, time zone, user, password hash, key and sudo rule', (t) => {
  const c = card(t, { 'user-data': IMAGER_USER_DATA, 'meta-data': 'instance-id: rpi-imager-1\n' });
  const r = bootConfig(c);
  t.is(r.status, 0);
  t.is(r.errors, '', r.stderr);
  t.is(r.file('etc/hostname'), 'kitchen-pi\n');
  t.regex(r.file('etc/hosts'), /^127\.0\.1\.1\tkitchen-pi$/m);
  t.is(readlinkSync(join(c.root, 'etc/localtime')), '/usr/share/zoneinfo/Europe/London');
  t.true(r.commands.includes('useradd --create-home --user-group --shell /bin/bash pi\n'));
  t.true(r.commands.includes('usermod -a -G users,adm,netdev,video,sudo pi\n'), 'only groups that exist here');
  t.true(r.commands.includes(`usermod -p ${HASH} pi\n`));
  t.is(r.file('home/pi/.ssh/authorized_keys'), `${KEY_A}\n`);
  t.is(statSync(join(c.root, 'home/pi/.ssh/authorized_keys')).mode & 0o777, 0o600);
  t.is(statSync(join(c.root, 'home/pi/.ssh')).mode & 0o777, 0o700);
  t.is(r.file('etc/sudoers.d/90-boot-config-pi'), 'pi ALL=(ALL) NOPASSWD:ALL\n');
  t.false(existsSync(join(c.root, 'etc/sudoers.d/91-diode-key-only-pi')), 'user-data gave its own sudo rule');
  // A password hash was given, but the account has an authorized key: sshd is
  // reachable by anyone who knows the address, so password login stays off.
  t.regex(r.file('etc/ssh/sshd_config.d/50-diode.conf'), /^PasswordAuthentication no$/m);
  t.is(r.notices, '');
  t.regex(r.stderr, /runcmd is not applied/);
});

test('Imager network-config becomes a wpa_supplicant file, a networkd file and an enabled wpa_supplicant@wlan0', (t) => {
  const c = card(t, { 'network-config': IMAGER_NETWORK_CONFIG, 'cmdline.txt': 'console=tty0 root=LABEL=RASPIROOT rw cfg80211.ieee80211_regdom=GB\n' });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  const wpa = r.file('etc/wpa_supplicant/wpa_supplicant-wlan0.conf');
  t.regex(wpa, /^country=GB$/m, 'country from the kernel command line, as Imager sets it');
  t.regex(wpa, /^\tssid="Home Net"$/m);
  t.regex(wpa, new RegExp(`^\\tpsk=${PSK}$`, 'm'), 'a 64-hex PSK is written unquoted');
  t.is(statSync(join(c.root, 'etc/wpa_supplicant/wpa_supplicant-wlan0.conf')).mode & 0o777, 0o600);
  const net = r.file('etc/systemd/network/20-boot-config-wlan0.network');
  t.regex(net, /^Name=wlan0$/m);
  t.regex(net, /^DHCP=ipv4$/m);
  t.regex(net, /^RequiredForOnline=no$/m);
  // Wanted by the interface, not by the boot: no job waits 5 min for a wlan0 that is not there.
  t.is(readlinkSync(join(c.root, 'etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service')), '/lib/systemd/system/wpa_supplicant@.service');
  t.false(existsSync(join(c.root, 'etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service')));
});

test('a card configured by an older image: its multi-user wpa_supplicant@wlan0 link is replaced by the device one', (t) => {
  const c = card(t, { 'network-config': IMAGER_NETWORK_CONFIG });
  t.is(bootConfig(c).errors, '');
  const old = join(c.root, 'etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service');
  mkdirSync(dirname(old), { recursive: true });
  symlinkSync('/lib/systemd/system/wpa_supplicant@.service', old);
  writeFileSync(join(c.boot, 'network-config'), IMAGER_NETWORK_CONFIG + '\n');
  t.is(bootConfig(c).errors, '');
  t.throws(() => lstatSync(old), { code: 'ENOENT' }, 'the old boot-time link is gone');
  t.is(readlinkSync(join(c.root, 'etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service')), '/lib/systemd/system/wpa_supplicant@.service');
});

test('netplan forms beyond Imager: top-level network:, ethernets with static addresses, open and quoted Wi-Fi', (t) => {
  const c = card(t, {
    'network-config': `network:
  version: 2
  ethernets:
    eth0:
      addresses: [192.168.1.50/24]
      gateway4: 192.168.1.1
      nameservers:
        addresses: [192.168.1.1, 1.1.1.1]
  wifis:
    wlan0:
      dhcp4: true
      regulatory-domain: de
      access-points:
        cafe: {}
        'Bob''s "net"':
          auth:
            key-management: psk
            password: "pass word \\"x\\""
          hidden: true
`,
  });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  const eth = r.file('etc/systemd/network/20-boot-config-eth0.network');
  t.regex(eth, /^DHCP=no$/m);
  t.regex(eth, /^Address=192\.168\.1\.50\/24$/m);
  t.regex(eth, /^Gateway=192\.168\.1\.1$/m);
  t.regex(eth, /^DNS=1\.1\.1\.1$/m);
  const wpa = r.file('etc/wpa_supplicant/wpa_supplicant-wlan0.conf');
  t.regex(wpa, /^country=DE$/m);
  t.regex(wpa, /ssid="cafe"\n\tkey_mgmt=NONE\n/);
  // An SSID with a double quote is written in hex.
  t.regex(wpa, new RegExp(`ssid=${Buffer.from('Bob\'s "net"').toString('hex')}\\n\\tpsk="pass word "x""\\n\\tscan_ssid=1`));
});

test('bad content is reported, the rest still applies, and the reader exits 0', (t) => {
  const c = card(t, {
    'user-data': '#cloud-config\nhostname: not_a_host!\ntimezone: Mars/Olympus\nusers:\n- name: pi\n  ssh_authorized_keys:\n  - not a key\n  - ' + KEY_A + '\n',
    'network-config': 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n    mtu: 9000\nwifis:\n  wlan0:\n    access-points:\n      "short":\n        password: "1234"\n',
    'diode.conf': 'relays=relay.example.org\nfleet=0xnothex\npublish=-public 22:22; rm -rf /\ncolour=blue\njust some words\n',
  });
  const r = bootConfig(c);
  t.is(r.status, 0);
  const lines = r.errors.trim().split('\n');
  for (const expected of [
    /user-data: hostname "not_a_host!" is not a valid host name/,
    /user-data: timezone "Mars\/Olympus" is not in the time zone database/,
    /user-data: line 1 is not an SSH public key/,
    /network-config: eth0: "mtu" is not supported/,
    /network-config: wlan0: the password of "short" must be 8 to 63 characters/,
    /network-config: wlan0: no usable access-points/,
    /diode\.conf:2: fleet: "0xnothex" is not a 0x-prefixed hex address/,
    /diode\.conf:3: publish: .* is not like -public 22:22/,
    /diode\.conf:4: unknown key "colour"/,
    /diode\.conf:5: expected key=value/,
  ]) t.true(lines.some((l) => expected.test(l)), `${expected} in:\n${r.errors}`);
  // What was fine still applied.
  t.is(r.file('etc/hostname'), 'diode\n');
  t.is(r.file('home/pi/.ssh/authorized_keys'), `${KEY_A}\n`);
  t.regex(r.file('etc/systemd/network/20-boot-config-eth0.network'), /^DHCP=ipv4$/m);
  t.false(existsSync(join(c.root, 'etc/wpa_supplicant/wpa_supplicant-wlan0.conf')) && /network=/.test(r.file('etc/wpa_supplicant/wpa_supplicant-wlan0.conf')));
  t.is(JSON.parse(readFileSync(join(c.state, 'config.json'), 'utf8')).relays, 'relay.example.org:41046');
  t.is(readFileSync(join(c.run, 'publish.env'), 'utf8'), 'DIODE_PUBLISH_ARGS=-public 22:22\n', 'the default, since the given spec was refused');
});

test('diode.conf sets the release keys the device takes updates from (update-keys, update-rate)', (t) => {
  const key = '0x63115a27c3d1b549011198c69f4120ca4ea12ee9';
  const c = card(t, { 'diode.conf': `relays=relay.example.org\nupdate-keys=${key}\nupdate-rate=64\n` });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  const config = JSON.parse(readFileSync(join(c.state, 'config.json'), 'utf8'));
  t.is(config['update-keys'].toLowerCase(), key);
  t.is(config['update-rate'], '64');
  const bad = card(t, { 'diode.conf': 'update-keys=0xnothex\n' });
  t.regex(bootConfig(bad).errors, /diode\.conf:1: update-keys: "0xnothex" is not a 0x-prefixed hex address/);
});

test('a file that is not YAML or not cloud-config is reported and ignored', (t) => {
  const c = card(t, { 'user-data': 'hostname: x\n', 'network-config': 'version: 1\nconfig:\n  - type: physical\n' });
  const r = bootConfig(c);
  t.regex(r.errors, /user-data: first line is not "#cloud-config"/);
  t.regex(r.errors, /network-config: only netplan version 2 is supported \(version: 1\)/);
  t.is(r.file('etc/hostname'), 'diode\n');
});

test('diode.conf sets relays, fleet and rpc with diode config, and publish specs become the agent arguments', (t) => {
  const c = card(t, {
    'diode.conf': '# relays first\r\nrelays = 10.0.2.2:4000, relay2.example.org\npublish=-public 22:22\npublish=-private 80:8080,0x1111111111111111111111111111111111111111\nfleet=0x2222222222222222222222222222222222222222\nrpc=http://127.0.0.1:8545\n',
  });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  const config = JSON.parse(readFileSync(join(c.state, 'config.json'), 'utf8'));
  t.is(config.relays, '10.0.2.2:4000,relay2.example.org:41046');
  t.is(config.fleet.toLowerCase(), '0x2222222222222222222222222222222222222222');
  t.is(config.rpc, 'http://127.0.0.1:8545');
  t.is(readFileSync(join(c.run, 'publish.env'), 'utf8'), 'DIODE_PUBLISH_ARGS=-public 22:22 -private 80:8080,0x1111111111111111111111111111111111111111\n');
  // Unchanged and clean: the next boot does not start diode config again.
  writeFileSync(c.diode, '#!/bin/sh\necho called >&2\nexit 1\n');
  const again = bootConfig(c);
  t.is(again.errors, '');
});

test('userconf.txt creates the user with its hash and is deleted; authorized_keys is appended once', (t) => {
  const c = card(t, { 'userconf.txt': `pi:${HASH}\n`, authorized_keys: `${KEY_A}\n# comment\n${KEY_B}\n`, ssh: '' });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  t.true(r.commands.includes('useradd --create-home --user-group --shell /bin/bash pi\n'));
  t.true(r.commands.includes(`usermod -p ${HASH} pi\n`));
  t.false(existsSync(join(c.boot, 'userconf.txt')), 'the hash does not stay on the FAT partition');
  t.is(r.file('home/pi/.ssh/authorized_keys'), `${KEY_A}\n${KEY_B}\n`);
  // The next boot: the user exists now (as useradd would have made it); keys are not duplicated.
  writeFileSync(join(c.root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n');
  writeFileSync(join(c.run, 'commands.log'), '');
  const again = bootConfig(c);
  t.is(again.file('home/pi/.ssh/authorized_keys'), `${KEY_A}\n${KEY_B}\n`);
  t.false(again.commands.includes('useradd'));
});

test('cloud-init files apply once per content and again when edited', (t) => {
  const c = card(t, { 'user-data': IMAGER_USER_DATA });
  bootConfig(c);
  writeFileSync(join(c.root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n');
  writeFileSync(join(c.run, 'commands.log'), '');
  t.is(bootConfig(c).commands, '', 'same files: nothing re-applied');
  writeFileSync(join(c.boot, 'user-data'), IMAGER_USER_DATA.replace('kitchen-pi', 'garage-pi'));
  const r = bootConfig(c);
  t.is(r.file('etc/hostname'), 'garage-pi\n');
  t.false(r.commands.includes('useradd'), 'an existing user is not created again');
});

test('with no configuration at all, user pi is created without a password and the screen says so', (t) => {
  const c = card(t, {});
  const r = bootConfig(c);
  t.is(r.status, 0);
  t.true(r.commands.includes('useradd --create-home --user-group --shell /bin/bash pi\n'));
  t.false(r.commands.includes('usermod -p'));
  t.regex(r.allErrors, /user pi has no password and no key/);
  t.is(readFileSync(join(c.run, 'publish.env'), 'utf8'), 'DIODE_PUBLISH_ARGS=-public 22:22\n');
});

test('yaml-flat reads sequences at the key indentation, quoted keys, flow lists and block scalars', (t) => {
  const dir = tempDir(t);
  const f = join(dir, 'x.yaml');
  writeFileSync(f, 'a:\n- 1\n- "two # not a comment"\nb:\n  "k/ey": v # comment\n  c: [x, \'y\']\n  d: |\n    l1\n    l2\ne: {}\n');
  const out = execFileSync('awk', ['-f', YAML_FLAT, f], { encoding: 'utf8' });
  t.is(out, 'a/1\t1\na/2\ttwo # not a comment\nb/k%2Fey\tv\nb/c/1\tx\nb/c/2\ty\nb/d\tl1\\nl2\ne\t\n');
});

test('the units pass systemd-analyze verify (apart from paths that exist only in the image)', (t) => {
  const units = ['diode-firstboot.service', 'diode-boot-config.service', 'diode.service', 'diode-relays.path', 'diode-relays.service', 'diode-issue.service', 'diode-issue.path'].map((u) => join(UNIT_DIR, u));
  const r = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8' });
  const imageOnly = /^[\w.-]+: Command (\/usr\/lib\/diode\/(firstboot|boot-config|issue|has-relays|launch)|\/usr\/bin\/diode) is not executable: No such file or directory$/;
  const rest = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() && !imageOnly.test(l));
  t.deepEqual(rest, []);
  // The scripts those units run are in the overlay and executable, and parse as POSIX sh.
  for (const s of ['firstboot', 'boot-config', 'issue', 'has-relays']) {
    const p = join(FILES, 'usr/lib/diode', s);
    t.truthy(statSync(p).mode & 0o111, `${s} is executable`);
    t.is(spawnSync('sh', ['-n', p]).status, 0, `${s} parses`);
  }
  t.regex(readFileSync(join(UNIT_DIR, 'diode.service'), 'utf8'), /^Restart=always$/m);
  // The agent starts through the launcher the Debian package uses too (updates with rollback).
  t.regex(readFileSync(join(UNIT_DIR, 'diode.service'), 'utf8'), /^ExecStart=\/usr\/lib\/diode\/launch publish --status-file \/run\/diode-link\/status \$DIODE_PUBLISH_ARGS$/m);
  t.is(spawnSync('sh', ['-n', join(FILES, '../../packaging/diode-launch')]).status, 0, 'the launcher parses');
  t.notRegex(readFileSync(join(UNIT_DIR, 'diode.service'), 'utf8'), /network-online|Wants=network/);
});

test('the overlay on a fresh tree passes the ship check; baked keys and state do not', (t) => {
  const tree = tempDir(t, 'diode-tree-');
  mkdirSync(join(tree, 'etc/ssh'), { recursive: true });
  writeFileSync(join(tree, 'etc/ssh/ssh_host_ed25519_key'), 'baked by openssh-server postinst');
  writeFileSync(join(tree, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  mkdirSync(join(tree, 'var/lib/diode'), { recursive: true });
  writeFileSync(join(tree, 'var/lib/diode/private.key'), 'secret');
  const before = build.checkTree(tree);
  t.true(before.some((p) => p.includes('ssh_host_ed25519_key')));
  t.true(before.some((p) => p.includes('/var/lib/diode/private.key')));
  t.true(before.some((p) => p.includes('machine-id')));
  t.true(before.some((p) => p.includes('/usr/bin/diode is missing')));

  build.applyOverlay(tree, DIODE_BUNDLE, { debianUnits: false });
  t.deepEqual(build.checkTree(tree), []);
  t.truthy(statSync(join(tree, 'usr/lib/diode/launch')).mode & 0o111, 'the launcher is in the image');
  t.true(lstatSync(join(tree, 'etc/systemd/system/sysinit.target.wants/diode-firstboot.service')).isSymbolicLink());
  t.true(lstatSync(join(tree, 'etc/systemd/system/multi-user.target.wants/diode.service')).isSymbolicLink());
  t.is(readFileSync(join(tree, 'etc/machine-id'), 'utf8'), '');
  t.is(readlinkSync(join(tree, 'etc/resolv.conf')), '../run/systemd/resolve/stub-resolv.conf');

  writeFileSync(join(tree, 'etc/ssh/ssh_host_rsa_key.pub'), 'x');
  t.deepEqual(build.checkTree(tree), ['baked SSH host key /etc/ssh/ssh_host_rsa_key.pub']);
});

test('--binary: an older executable whose publish lacks an option of the unit gets the unit without it (it would exit and restart forever)', (t) => {
  const unit = readFileSync(join(UNIT_DIR, 'diode.service'), 'utf8');
  const help = execFileSync(process.execPath, [DIODE_BUNDLE, 'publish', '--help'], { encoding: 'utf8' });
  t.deepEqual(build.fitAgentUnit(unit, help), { text: unit, dropped: [] }, 'today\'s executable keeps the unit as it is');
  // b149bbf's publish --help: the same, less --status-file (added for the login screen's relay line).
  const older = help.split('\n').filter((l) => !/^\s*--status-file\b/.test(l)).join('\n');
  const fitted = build.fitAgentUnit(unit, older);
  t.deepEqual(fitted.dropped, ['--status-file']);
  t.regex(fitted.text, /^ExecStart=\/usr\/lib\/diode\/launch publish \$DIODE_PUBLISH_ARGS$/m);
  t.is(fitted.text.split('\n').filter((l) => !l.startsWith('ExecStart=')).join('\n'), unit.split('\n').filter((l) => !l.startsWith('ExecStart=')).join('\n'), 'nothing else changes');
  t.regex(build.fitAgentUnit('ExecStart=/x publish --status-file=/run/s --log-level info $A\n', older).text, /^ExecStart=\/x publish --log-level info \$A$/m);
});

test('npm run image takes --rootfs and --out as absolute or relative paths (a shared rootfs cache is named by its absolute path)', (t) => {
  const abs = build.parseArgs(['--rootfs', '/work/cache/image/rootfs-arm64-0.tar', '--out', '/tmp/img']);
  t.is(abs.rootfs, '/work/cache/image/rootfs-arm64-0.tar');
  t.is(abs.out, '/tmp/img');
  t.is(build.parseArgs(['--rootfs=r.tar']).rootfs, join(process.cwd(), 'r.tar'));
});

test('the rootfs recipe drops host keys and machine-id, and its cache key follows the package list', (t) => {
  const args = rootfs.mmdebstrapArgs('arm64', '/out.tar');
  t.true(args.some((a) => a.startsWith('--customize-hook=') && a.includes('ssh_host_')));
  t.true(args.some((a) => a.startsWith('--customize-hook=') && a.includes('machine-id')));
  for (const p of ['openssh-server', 'raspi-firmware', 'linux-image-arm64', 'firmware-brcm80211', 'wpasupplicant']) t.true(rootfs.packagesFor('arm64').includes(p), p);
  t.true(rootfs.packagesFor('armhf').includes('linux-image-armmp'));
  t.regex(rootfs.rootfsKey('arm64'), /^[0-9a-f]{16}$/);
  t.not(rootfs.rootfsKey('arm64'), rootfs.rootfsKey('armhf'));
});

test('hw-test boots the image\'s own kernel line (ro, serial not last), and its first card has no relay', async (t) => {
  const hw = (await import(join(REPO, 'hw-test/run.mjs'))) as {
    qemuAppend(cmdline: string, m: { console: string }): string;
    imagerFiles(s: Record<string, string | null>): Record<string, string>;
    MACHINES: Record<string, { console: string }>;
  };
  const line = build.kernelCmdline('console=tty0 console=ttyS1,115200 root=/dev/mmcblk0p2 rw fsck.repair=yes rootwait') + ' cfg80211.ieee80211_regdom=DE';
  const append = hw.qemuAppend(line, hw.MACHINES.arm64).split(' ');
  t.deepEqual(append.filter((w) => w.startsWith('console=')), ['console=ttyAMA0,115200', 'console=tty0'], 'tty0 stays /dev/console, as on a Pi');
  for (const w of ['ro', 'fsck.repair=yes', 'root=LABEL=RASPIROOT', 'cfg80211.ieee80211_regdom=DE']) t.true(append.includes(w), w);
  const files = hw.imagerFiles({ hostname: 'h', user: 'pi', pubkey: KEY_A, ssid: 's', psk: 'p'.repeat(8), country: 'DE', relay: null });
  t.is(files['diode.conf'], '# written by hw-test\npublish=-public 22:22\n');
  const script = readFileSync(join(REPO, 'hw-test/run.mjs'), 'utf8');
  for (const what of ['no relay: agent skipped, not restarting', 'dirty root repaired at boot', 'symlinked ~/.ssh/authorized_keys refused', 'nano and less installed', 'user pi in sudo and adm', 'serial console got boot-config', 'how the other machine gets there']) t.true(script.includes(what), what);
});

test('hw-test reads the agent\'s start-up off the guest\'s journal: systemd\'s last start before the first "connected to relay"', async (t) => {
  const hw = (await import(join(REPO, 'hw-test/run.mjs'))) as { agentStartup(journal: string): { bootToConnectedS: number; startToConnectedS: number } | null };
  const journal = [
    '[   20.501234] hwtest-pi systemd[1]: Starting diode.service - diode agent: publish this device\'s ports through the relay network...',
    '[   20.912345] hwtest-pi systemd[1]: Started diode.service - diode agent: publish this device\'s ports through the relay network.',
    '[   22.100000] hwtest-pi launch[612]: diode-launch: no update selected',
    '[   24.000000] hwtest-pi systemd[1]: Stopping diode.service - diode agent: publish this device\'s ports through the relay network...',
    '[   24.500000] hwtest-pi systemd[1]: Started diode.service - diode agent: publish this device\'s ports through the relay network.',
    // b149bbf's agent stamps its own lines; today's leaves that to journald.
    '[   31.250000] hwtest-pi launch[700]: 2026-12-08T00:22:50.123Z info  [publish] connected to relay 10.0.2.2:41395 (0x34CC) as 0x0291; published 22 (public)',
    '[   90.000000] hwtest-pi launch[700]: <6>connected to relay 10.0.2.2:41395 (0x34CC) as 0x0291; published 22 (public)',
  ].join('\n');
  t.deepEqual(hw.agentStartup(journal), { bootToConnectedS: 31.25, startToConnectedS: 6.75 });
  t.is(hw.agentStartup(journal.split('\n').filter((l) => !l.includes('Started')).join('\n')), null, 'no start line: no figure');
  t.is(hw.agentStartup('-- No entries --'), null);
});

test('the files hw-test puts on the boot partition apply without problems', async (t) => {
  const hw = (await import(join(REPO, 'hw-test/run.mjs'))) as { imagerFiles(s: Record<string, string>): Record<string, string> };
  const psk = 'f'.repeat(16) + '0123456789abcdef'.repeat(3);
  const files = hw.imagerFiles({ hostname: 'hwtest-pi', user: 'pi', pubkey: KEY_A, ssid: 'diode test net', psk, country: 'DE', relay: '10.0.2.2:41046' });
  const c = card(t, { ...files, 'cmdline.txt': 'root=LABEL=RASPIROOT rw cfg80211.ieee80211_regdom=DE\n' });
  mkdirSync(join(c.root, 'usr/share/zoneinfo/Europe'), { recursive: true });
  writeFileSync(join(c.root, 'usr/share/zoneinfo/Europe/Berlin'), 'TZif');
  const r = bootConfig(c);
  t.is(r.allErrors, '', r.stderr);
  t.is(r.file('etc/hostname'), 'hwtest-pi\n');
  t.regex(r.file('etc/wpa_supplicant/wpa_supplicant-wlan0.conf'), new RegExp(`ssid="diode test net"\\n\\tpsk=${psk}\\n`));
  t.false(r.commands.includes('usermod -p'), 'lock_passwd: true sets no password');
});

test('the login screen shows the address, an ssh hint, the QR code and the boot-partition problems', (t) => {
  const c = card(t, {});
  mkdirSync(c.run, { recursive: true });
  writeFileSync(join(c.run, 'boot-config.errors'), 'diode.conf:2: unknown key "a\\b"\n');
  const r = issue(c);
  t.is(r.status, 0, r.stderr);
  const address = execFileSync(process.execPath, [DIODE_BUNDLE, 'address', '--home', c.state], { encoding: 'utf8' }).trim();
  t.regex(r.text, new RegExp(`^diode address: ${address}$`, 'm'));
  t.true(r.text.includes('ssh <user>@<address>.diode'));
  // How the other machine gets there (issue 18 item 4).
  t.regex(r.text, /diode ssh-config --install/);
  t.regex(r.text, /ProxyCommand=nc -X 5 -x localhost:1080 %h %p/);
  t.true(r.text.includes('\u2584') || r.text.includes('\u2580'), 'QR code blocks');
  // agetty treats backslashes as escapes: they are doubled.
  t.true(r.text.includes('unknown key "a\\\\b"'));
});

// ---- issue 18: a device in a drawer --------------------------------------------------

test('item 1: the initrd gets fsck (FSTYPE=ext4 before update-initramfs) and the kernel line mounts root ro first', (t) => {
  const args = rootfs.mmdebstrapArgs('arm64', '/out.tar');
  const conf = rootfs.INITRAMFS_FSTYPE_CONF;
  const writes = args.findIndex((a) => a.startsWith('--customize-hook=') && a.includes(conf.path) && a.includes(conf.text));
  const builds = args.findIndex((a) => a.startsWith('--customize-hook=') && a.includes('update-initramfs -c'));
  t.true(writes >= 0 && builds > writes, 'the fsck type is set before the one initrd build');
  t.is(conf.text, 'FSTYPE=ext4');
  // The hook as mmdebstrap runs it (sh -c with $1 = the root).
  const root = tempDir(t);
  execFileSync('sh', ['-c', args[writes].slice('--customize-hook='.length), 'hook', root]);
  t.is(readFileSync(join(root, conf.path), 'utf8'), 'FSTYPE=ext4\n');
  t.true(rootfs.packagesFor('arm64').includes('e2fsprogs'));

  const raspi = 'console=tty0 console=ttyS1,115200 root=/dev/mmcblk0p2 rw fsck.repair=yes net.ifnames=0 cma=64M rootwait';
  const line = build.kernelCmdline(raspi).split(' ');
  t.deepEqual(line.slice(0, 3), ['console=ttyS1,115200', 'console=tty0', 'root=LABEL=RASPIROOT']);
  t.true(line.includes('ro'));
  t.false(line.includes('rw'));
  t.true(line.includes('fsck.repair=yes'));
  t.is(line.filter((w) => w === 'rootwait').length, 1);
  t.true(line.includes('cma=64M'));
  // Kernel upgrades regenerate cmdline.txt (raspi-firmware writes "rw", then this file: the later word wins).
  t.is(readFileSync(join(FILES, 'etc/default/raspi-extra-cmdline'), 'utf8'), 'ro\n');
  // A first boot with udev still busy must not lose the card's settings (seen under QEMU at load 25:
  // the RASPIFIRM device job timed out after 53 s and boot-config ran with an empty /boot/firmware).
  t.regex(readFileSync(join(FILES, 'etc/fstab'), 'utf8'), /^LABEL=RASPIFIRM\t\/boot\/firmware\tvfat\t[^\t]*nofail[^\t]*x-systemd\.device-timeout=5min/m);
  t.regex(readFileSync(join(FILES, 'etc/systemd/system.conf.d/50-diode.conf'), 'utf8'), /^DefaultDeviceTimeoutSec=5min$/m);
  t.regex(readFileSync(BOOT_CONFIG, 'utf8'), /mountpoint -q "\$BOOT"; then\n\s+mount "\$BOOT"/);
  // fstab: root is checked (pass 1) and remounted rw by systemd-remount-fs.
  t.regex(readFileSync(join(FILES, 'etc/fstab'), 'utf8'), /^LABEL=RASPIROOT\t\/\text4\trw[^\t]*\t0\t1$/m);
  // The build refuses an initrd without fsck (listing as lsinitramfs prints it, merged /usr).
  t.deepEqual(build.initrdProblems('usr/sbin/fsck\nusr/sbin/fsck.ext4\nusr/sbin/logsave\nsbin\n'), []);
  t.is(build.initrdProblems('usr/sbin/e2fsck\n').length, 3);
});

test('item 2: without a relay the agent is skipped, not restarted; diode-relays.path starts it once one is set (and restarts it on a change)', (t) => {
  const unit = readFileSync(join(UNIT_DIR, 'diode.service'), 'utf8');
  t.regex(unit, /^ExecCondition=\/usr\/lib\/diode\/has-relays$/m);
  const path = readFileSync(join(UNIT_DIR, 'diode-relays.path'), 'utf8');
  t.regex(path, /^PathChanged=\/var\/lib\/diode\/config\.json$/m);
  // Issue 29: through a oneshot that restarts it, so a relay fixed by hand takes effect at once.
  t.regex(path, /^Unit=diode-relays\.service$/m);
  t.regex(readFileSync(join(UNIT_DIR, 'diode-relays.service'), 'utf8'), /^ExecStart=\/bin\/systemctl restart diode\.service$/m);
  t.true(build.ENABLED_UNITS.includes('diode-relays.path'));
  t.regex(readFileSync(join(UNIT_DIR, 'diode-issue.path'), 'utf8'), /^PathChanged=\/var\/lib\/diode\/config\.json$/m);

  const c = card(t, {});
  const hasRelays = (state: string) => spawnSync('sh', [join(FILES, 'usr/lib/diode/has-relays')], { encoding: 'utf8', env: { ...process.env, STATE: state } });
  const none = hasRelays(c.state);
  t.is(none.status, 1, 'condition fails (1..254: skipped, not failed)');
  t.regex(none.stderr, /no relay configured: put relays=\.\.\. in diode\.conf on the boot partition/);
  // The same check against what `diode config -set relays=` really writes.
  execFileSync(process.execPath, [DIODE_BUNDLE, 'config', '--home', c.state, '-set', 'fleet-ttl=60']);
  t.is(hasRelays(c.state).status, 1, 'a config without relays');
  execFileSync(process.execPath, [DIODE_BUNDLE, 'config', '--home', c.state, '-set', 'relays=relay.example.org']);
  t.is(hasRelays(c.state).status, 0);

  // The login screen says so until a relay is set.
  const c2 = card(t, {});
  const before = issue(c2);
  t.regex(before.text, /^no relay configured: put relays=\.\.\. in diode\.conf on the boot partition/m);
  t.regex(before.text, /^diode address: 0x[0-9a-fA-F]{40}$/m, 'the address is still shown');
  execFileSync(process.execPath, [DIODE_BUNDLE, 'config', '--home', c2.state, '-set', 'relays=10.0.2.2:4000']);
  t.notRegex(issue(c2).text, /no relay configured/);
});

test('item 3: a key-only pi (authorized_keys alone) joins adm and gets passwordless sudo; password login stays off', (t) => {
  const c = card(t, { authorized_keys: `${KEY_A}\n` });
  const r = bootConfig(c);
  t.is(r.allErrors, '', r.stderr);
  t.true(r.commands.includes('useradd --create-home --user-group --shell /bin/bash pi\n'));
  t.true(r.commands.includes('usermod -a -G sudo,adm pi\n'), r.commands);
  t.is(r.file('etc/sudoers.d/91-diode-key-only-pi'), '# Written by diode-boot-config: pi has no password (key login only).\npi ALL=(ALL) NOPASSWD:ALL\n');
  t.is(statSync(join(c.root, 'etc/sudoers.d/91-diode-key-only-pi')).mode & 0o777, 0o440);
  t.notRegex(r.file('etc/ssh/sshd_config.d/50-diode.conf'), /PasswordAuthentication yes/);
  // Later the card gets a userconf.txt: pi has a password now, so sudo asks for it.
  writeFileSync(join(c.root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n');
  writeFileSync(join(c.boot, 'userconf.txt'), `pi:${HASH}\n`);
  const again = bootConfig(c);
  t.false(existsSync(join(c.root, 'etc/sudoers.d/91-diode-key-only-pi')));
  // It still has its key: password login stays off.
  t.regex(again.file('etc/ssh/sshd_config.d/50-diode.conf'), /^PasswordAuthentication no$/m);
  t.is(again.notices, '');
});

test('item 3: a password and no key turns password login on, and the login screen says -private exists and how', (t) => {
  const c = card(t, { 'userconf.txt': `pi:${HASH}\n` });
  const r = bootConfig(c);
  t.is(r.allErrors, '', r.stderr);
  t.regex(r.file('etc/ssh/sshd_config.d/50-diode.conf'), /^PasswordAuthentication yes$/m);
  t.false(existsSync(join(c.root, 'etc/sudoers.d/91-diode-key-only-pi')), 'sudo asks for the password');
  t.regex(r.notices, /SSH password login is on .*put publish=-private 22:22,0x<your client address> in diode\.conf on the boot partition/);
  const screen = issue(c);
  t.regex(screen.text, /^Note: SSH password login is on/m);
  // Published -private: nothing to warn about.
  const p = card(t, { 'userconf.txt': `pi:${HASH}\n`, 'diode.conf': 'publish=-private 22:22,0x1111111111111111111111111111111111111111\n' });
  t.is(bootConfig(p).notices, '');
});

test('item 4: boot-config messages go to every console (the kernel log), the login prompt does not wait for diode-issue', (t) => {
  const c = card(t, { 'diode.conf': 'colour=blue\n' });
  const r = bootConfig(c);
  t.regex(r.console, /^<3>diode-boot-config: diode\.conf:1: unknown key "colour"/m);
  t.regex(r.stderr, /diode-boot-config: diode\.conf:1: unknown key "colour"/, 'and the journal');
  for (const u of ['diode-boot-config.service', 'diode-firstboot.service']) {
    const text = readFileSync(join(UNIT_DIR, u), 'utf8');
    t.notRegex(text, /\+console/, `${u}: console output would reach only the last console=`);
  }
  t.regex(readFileSync(join(FILES, 'usr/lib/diode/firstboot'), 'utf8'), /\/dev\/kmsg/);
  const unit = readFileSync(join(UNIT_DIR, 'diode-issue.service'), 'utf8');
  t.notRegex(unit, /^(Before|Wants|Requires)=.*getty/m, 'not ordered before the gettys');
  t.regex(unit, /^TimeoutStartSec=\d+(s|min)$/m);

  // A binary that hangs: the screen is written at once, the wait is bounded, and it says so.
  const slow = card(t, {});
  writeFileSync(slow.diode, '#!/bin/sh\nsleep 30\n', { mode: 0o755 });
  const hung = issue(slow, { ADDRESS_TIMEOUT: '1' });
  t.is(hung.status, 0);
  t.true(hung.ms < 10_000, `${hung.ms} ms`);
  t.regex(hung.text, /^diode address: unknown/m);
  // The address is cached per key: the next boot shows it without starting the binary.
  const ok = card(t, {});
  const first = issue(ok);
  const address = /^diode address: (0x[0-9a-fA-F]{40})$/m.exec(first.text)?.[1];
  t.truthy(address, first.text);
  writeFileSync(ok.diode, '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  t.regex(issue(ok).text, new RegExp(`^diode address: ${address}$`, 'm'));
  // A new key invalidates the cache.
  writeFileSync(join(ok.state, 'private.key'), 'another key');
  t.regex(issue(ok).text, /^diode address: unknown/m);
});

test('item 5: nano and less are on the image, and accounts boot-config makes can read the journal (adm)', (t) => {
  for (const arch of ['arm64', 'armhf']) for (const p of ['nano', 'less']) t.true(rootfs.packagesFor(arch).includes(p), `${arch}: ${p}`);
  const c = card(t, {});
  const r = bootConfig(c);
  t.true(r.commands.includes('usermod -a -G sudo,adm pi\n'), r.commands);
  t.is(r.file('etc/sudoers.d/91-diode-key-only-pi'), '# Written by diode-boot-config: pi has no password (key login only).\npi ALL=(ALL) NOPASSWD:ALL\n');
});

test('item 7: the README says to use diode ssh-config --install (or ServerAliveInterval) for an interactive session, and why', (t) => {
  for (const f of ['README.md', 'image/README.md']) {
    const text = readFileSync(join(REPO, f), 'utf8');
    t.regex(text, /diode ssh-config --install/, f);
    t.regex(text, /ServerAliveInterval/, f);
    t.regex(text, /CLOSE-WAIT/, f);
  }
});

// ---- issue 14 item 7: boot-config runs as root in a home the user owns -------------------

test('hostile home: a symlinked ~/.ssh/authorized_keys or ~/.ssh is refused with a console message; root\'s files stay as they were', (t) => {
  for (const planted of ['file', 'dir'] as const) {
    const c = card(t, { authorized_keys: `${KEY_B}\n` });
    writeFileSync(join(c.root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n');
    mkdirSync(join(c.root, 'root/.ssh'), { recursive: true });
    const rootKeys = join(c.root, 'root/.ssh/authorized_keys');
    writeFileSync(rootKeys, `${KEY_A}\n`);
    chmodSync(rootKeys, 0o644);
    mkdirSync(join(c.root, 'home/pi'), { recursive: true });
    if (planted === 'file') {
      mkdirSync(join(c.root, 'home/pi/.ssh'));
      symlinkSync(rootKeys, join(c.root, 'home/pi/.ssh/authorized_keys'));
    } else {
      symlinkSync(join(c.root, 'root/.ssh'), join(c.root, 'home/pi/.ssh'));
    }
    const r = bootConfig(c);
    t.is(r.status, 0);
    t.is(readFileSync(rootKeys, 'utf8'), `${KEY_A}\n`, `${planted}: nothing appended to root's keys`);
    t.is(statSync(rootKeys).mode & 0o777, 0o644, `${planted}: no chmod through the link`);
    const where = planted === 'file' ? '/home/pi/.ssh/authorized_keys' : '/home/pi/.ssh';
    t.regex(r.allErrors, new RegExp(`authorized_keys: ${where.replace(/\./g, '\\.')} is a symbolic link; not followed`), r.allErrors);
    t.regex(r.console, /^<3>diode-boot-config: authorized_keys: .* is a symbolic link/m);
  }
  // Outside --dry-run the keys are written by the user itself (setpriv), not by root.
  const script = readFileSync(BOOT_CONFIG, 'utf8');
  t.regex(script, /setpriv --reuid="\$\{ids%%:\*\}" --regid="\$\{ids#\*:\}" --init-groups/);
  t.notRegex(script, /chown -R/);
});

test('hostile values: a backslash-n in gateway4 injects no networkd section (printf, not echo), control characters are refused', (t) => {
  const c = card(t, {
    'network-config': 'version: 2\nethernets:\n  eth0:\n    addresses: [192.168.1.50/24]\n    gateway4: "192.168.1.1\\n[Network]\\nIPForward=yes"\n    nameservers:\n      addresses: ["1.1.1.1\\n[Network]\\nIPForward=yes", 9.9.9.9]\n      search: [home.lan]\n    routes:\n      - to: 10.9.0.0/16\n        via: "10.0.0.1\\nIPForward=yes"\n',
    'user-data': '#cloud-config\nhostname: "pi\u001b[2J"\nusers:\n- name: pi\n  ssh_authorized_keys:\n  - ' + KEY_A + '\n',
    'diode.conf': 'publish=-public 22:22\nrelays=relay.example.org\u001b]0;owned\u0007\n',
  });
  const r = bootConfig(c);
  t.is(r.status, 0);
  const net = r.file('etc/systemd/network/20-boot-config-eth0.network');
  t.notRegex(net, /IPForward/);
  t.is(net.match(/^\[Network\]$/gm)?.length, 1);
  t.notRegex(net, /^Gateway=/m);
  t.regex(net, /^DNS=9\.9\.9\.9$/m);
  t.notRegex(net, /^DNS=1\.1\.1\.1/m);
  t.regex(net, /^Domains=home\.lan$/m);
  t.notRegex(net, /\[Route\]/);
  t.regex(r.errors, /network-config: eth0: gateway "192\.168\.1\.1\\n\[Network\]\\nIPForward=yes" is not an IP address/);
  t.regex(r.errors, /network-config: eth0: name server .* is not valid/);
  t.regex(r.errors, /network-config: eth0: route to "10\.9\.0\.0\/16" via .* is not ADDRESS/);
  // Control characters: refused, and never copied to the errors file, the consoles or the login screen.
  t.regex(r.errors, /user-data: the value of hostname contains control characters; ignored/);
  t.regex(r.errors, /diode\.conf:2: the line contains control characters; ignored/);
  t.is(r.file('etc/hostname'), 'diode\n');
  t.false(existsSync(join(c.state, 'config.json')) && /owned/.test(readFileSync(join(c.state, 'config.json'), 'utf8')));
  for (const text of [r.allErrors, r.console, issue(c).text]) t.notRegex(text, /[\u0000-\u0008\u000b-\u001f\u007f]/);
});

// ---- issue 25: names -------------------------------------------------------------

test('diode.conf name= becomes the agent\'s name (checked as diode config checks it), and the login screen shows it beside the address with the ssh line by name', (t) => {
  const c = card(t, { 'diode.conf': 'relays=relay.example.org\nname=Kitchen\n' });
  const r = bootConfig(c);
  t.is(r.errors, '', r.stderr);
  t.is(JSON.parse(readFileSync(join(c.state, 'config.json'), 'utf8')).name, 'kitchen');
  const screen = issue(c);
  t.is(screen.status, 0, screen.stderr);
  t.regex(screen.text, /^diode address: 0x[0-9a-fA-F]{40}\ndiode name: {4}kitchen {2}\(first claim wins: see journalctl -u diode\)\n {2}ssh <user>@kitchen\.diode from a machine that ran diode ssh-config --install$/m);

  const bad = card(t, { 'diode.conf': 'relays=relay.example.org\nname=0xabc\n' });
  t.regex(bootConfig(bad).errors, /^diode\.conf:2: name: "0xabc" is not a name: a name may not look like an address \(0x…, or 40 hex digits\)$/m);
  t.notRegex(issue(bad).text, /diode name:/);
  t.regex(issue(bad).text, /ssh <user>@<address>\.diode/);
});
