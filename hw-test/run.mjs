#!/usr/bin/env node
// hw-test: boots the built Pi image under QEMU (its own kernel and initrd,
// the image as the disk, user-mode networking) and uses it the way a person
// would: Imager-style files on the boot partition, the address read off the
// (serial) console, then real OpenSSH through a host relay + socksd to
// pi@<address>.diode; a reboot must keep the address and the host key.
//
//   node hw-test/run.mjs [--arch arm64|armhf] [--image FILE] [--timeout-min N] [--keep]
//
// Prints one line per step with the time since power-on, and a summary.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLE = join(ROOT, 'dist/diode.cjs');
/** Per architecture: emulator, machine/CPU, serial device, the uname -m the guest must answer. */
export const MACHINES = Object.freeze({
  arm64: { qemu: 'qemu-system-aarch64', machine: 'virt', cpu: 'cortex-a72', console: 'ttyAMA0', uname: 'aarch64' },
  armhf: { qemu: 'qemu-system-arm', machine: 'virt', cpu: 'cortex-a15', console: 'ttyAMA0', uname: 'armv7l' },
});
/** Guest RAM, as on a 1 GiB Pi 3. */
const GUEST_MEM_MIB = 1024;
/** Extra space given to the card copy, so the first boot's partition growth is visible. */
const GROW_BY = '1G';
/** The guest sees the host's loopback as this address (QEMU user networking). */
const HOST_FROM_GUEST = '10.0.2.2';
/** How often to retry ssh while the guest is coming up. */
const SSH_RETRY_MS = 5000;
const SSH_CONNECT_TIMEOUT_S = 60;
/** A command over ssh (under TCG a sudo can take a while). */
const SSH_COMMAND_TIMEOUT_MS = 5 * 60_000;
/** The login screen line diode-issue writes. */
const ADDRESS_LINE = /diode address: (0x[0-9a-fA-F]{40})/g;

class HwTestError extends Error {}

function parseArgs(argv) {
  const opts = { arch: 'arm64', image: null, timeoutMin: 45, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? (() => { throw new HwTestError(`${a} needs a value`); })();
    if (a === '--arch') opts.arch = value();
    else if (a === '--image') opts.image = value();
    else if (a === '--timeout-min') opts.timeoutMin = Number(value());
    else if (a === '--keep') opts.keep = true;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node hw-test/run.mjs [--arch arm64|armhf] [--image FILE] [--timeout-min N] [--keep]');
      process.exit(0);
    } else throw new HwTestError(`unknown option ${a}`);
  }
  if (!MACHINES[opts.arch]) throw new HwTestError(`unknown arch ${opts.arch}`);
  opts.image ??= join(ROOT, `dist/image/diode-pi-${opts.arch}.img`);
  return opts;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new HwTestError(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new HwTestError(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A long-running child whose output is collected; killed on exit. */
function daemon(name, cmd, args, logFile) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set();
  const onData = (d) => {
    out += d.toString('utf8');
    if (logFile) appendFileSync(logFile, d);
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let exited = false;
  child.once('exit', () => { exited = true; for (const w of waiters) w(); });
  CHILDREN.push(child);
  return {
    child,
    output: () => out,
    /** Resolves with the first match of re in the output from `from` on. */
    waitFor(re, timeoutMs, from = 0) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(check); reject(new HwTestError(`${name}: no ${re} within ${Math.round(timeoutMs / 1000)} s`)); }, timeoutMs);
        const check = () => {
          const m = new RegExp(re.source, re.flags.replace('g', '')).exec(out.slice(from));
          if (m) { clearTimeout(timer); waiters.delete(check); resolve({ match: m, at: from + m.index + m[0].length }); }
          else if (exited) { clearTimeout(timer); waiters.delete(check); reject(new HwTestError(`${name} exited before ${re}:\n${out.slice(-3000)}`)); }
        };
        waiters.add(check);
        check();
      });
    },
  };
}

const CHILDREN = [];
function killAll() {
  for (const c of CHILDREN) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Files Raspberry Pi Imager's OS customisation would put on the boot partition for this test. */
export function imagerFiles({ hostname, user, pubkey, ssid, psk, country, relay }) {
  return {
    'user-data': [
      '#cloud-config',
      `hostname: ${hostname}`,
      'manage_etc_hosts: true',
      'packages:',
      '- avahi-daemon',
      'apt:',
      '  conf: |',
      '    Acquire {',
      '      Check-Date "false";',
      '    };',
      '',
      'users:',
      `- name: ${user}`,
      '  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo',
      '  shell: /bin/bash',
      '  lock_passwd: true',
      '  ssh_authorized_keys:',
      `    - ${pubkey}`,
      '  sudo: ALL=(ALL) NOPASSWD:ALL',
      '',
      'timezone: Europe/Berlin',
      'runcmd:',
      `- sed -i 's/^\\s*REGDOMAIN=\\S*/REGDOMAIN=${country}/' /etc/default/crda || true`,
      '',
    ].join('\n'),
    'network-config': [
      'version: 2',
      'wifis:',
      '  renderer: networkd',
      '  wlan0:',
      '    dhcp4: true',
      '    optional: true',
      '    access-points:',
      `      "${ssid}":`,
      `        password: "${psk}"`,
      '',
    ].join('\n'),
    'meta-data': 'instance-id: hw-test\n',
    'diode.conf': `# written by hw-test\nrelays=${relay}\npublish=-public 22:22\n`,
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const m = MACHINES[opts.arch];
  for (const tool of [m.qemu, 'mcopy', 'sfdisk', 'ssh', 'ssh-keygen', 'nc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new HwTestError(`${tool} not found (apt-get install qemu-system-arm mtools fdisk openssh-client netcat-openbsd)`);
  }
  if (!existsSync(opts.image)) throw new HwTestError(`${opts.image} not found; build it first: npm run image -- --arch ${opts.arch} --no-xz`);
  if (!existsSync(BUNDLE)) run(process.execPath, [join(ROOT, 'scripts/build.mjs')]);

  mkdirSync(join(ROOT, '.cache/hw-test'), { recursive: true });
  const work = mkdtempSync(join(ROOT, '.cache/hw-test', `${opts.arch}-`));
  const log = (s) => console.log(s);
  log(`hw-test ${opts.arch}: work dir ${relative(ROOT, work)}`);
  const cleanup = () => { killAll(); if (!opts.keep) rmSync(work, { recursive: true, force: true }); };

  try {
    // The card: a sparse copy of the image, larger than the image (first boot grows into it).
    const card = join(work, 'card.img');
    run('cp', ['--sparse=always', opts.image, card]);
    run('truncate', ['-s', `+${GROW_BY}`, card]);
    const table = JSON.parse(run('sfdisk', ['-J', card])).partitiontable;
    const bootAt = `${card}@@${table.partitions[0].start * 512}`;
    const names = run('mdir', ['-b', '-i', bootAt, '::']).split('\n').map((l) => l.replace(/^::\//, '').trim()).filter(Boolean);
    const kernel = names.find((n) => n.startsWith('vmlinuz'));
    const initrd = names.find((n) => n.startsWith('initrd.img'));
    if (!kernel || !initrd) throw new HwTestError(`no kernel/initrd on the boot partition: ${names.join(' ')}`);
    for (const f of [kernel, initrd]) run('mcopy', ['-n', '-i', bootAt, `::${f}`, join(work, f)]);

    // A key pair for "pi", and Imager-shaped configuration.
    const key = join(work, 'id_ed25519');
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'hw-test@host', '-f', key]);
    const pubkey = readFileSync(`${key}.pub`, 'utf8').trim();
    const key2 = join(work, 'id_legacy');
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'legacy@host', '-f', key2]);

    // Host side: relay (the guest reaches it as 10.0.2.2) and the client's socksd.
    const relay = daemon('relay', process.execPath, [BUNDLE, 'relay', '--listen', '127.0.0.1:0', '--home', join(work, 'relay')], join(work, 'relay.log'));
    const relayPort = Number((await relay.waitFor(/relay 0x[0-9a-fA-F]{40} listening on [\d.]+:(\d+)/, 60_000)).match[1]);
    const socksd = daemon('socksd', process.execPath, [BUNDLE, 'socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', join(work, 'client')], join(work, 'socksd.log'));
    const socksPort = Number((await socksd.waitFor(/listening on [\d.]+:(\d+)/, 60_000)).match[1]);
    log(`  relay on 127.0.0.1:${relayPort} (guest: ${HOST_FROM_GUEST}:${relayPort}), socksd on 127.0.0.1:${socksPort}`);

    const settings = { hostname: 'hwtest-pi', user: 'pi', pubkey, ssid: 'diode test net', psk: 'f'.repeat(16) + '0123456789abcdef'.repeat(3), country: 'DE', relay: `${HOST_FROM_GUEST}:${relayPort}` };
    const files = { ...imagerFiles(settings), authorized_keys: readFileSync(`${key2}.pub`, 'utf8'), ssh: '' };
    // Imager also appends the Wi-Fi country to cmdline.txt.
    const cmdlineTxt = run('mtype', ['-i', bootAt, '::cmdline.txt']).trim() + ` cfg80211.ieee80211_regdom=${settings.country}\n`;
    files['cmdline.txt'] = cmdlineTxt;
    for (const [name, content] of Object.entries(files)) {
      writeFileSync(join(work, name), content);
      run('mcopy', ['-o', '-i', bootAt, join(work, name), `::${name}`]);
    }

    // Power on.
    const append = `root=LABEL=RASPIROOT rw rootwait fsck.repair=yes net.ifnames=0 console=${m.console} cfg80211.ieee80211_regdom=${settings.country}`;
    const qemuArgs = [
      '-M', m.machine, '-cpu', m.cpu, '-smp', '2', '-m', String(GUEST_MEM_MIB),
      '-kernel', join(work, kernel), '-initrd', join(work, initrd), '-append', append,
      '-drive', `file=${card},format=raw,if=none,id=hd0,cache=unsafe`, '-device', 'virtio-blk-device,drive=hd0',
      '-netdev', 'user,id=n0', '-device', 'virtio-net-device,netdev=n0',
      '-device', 'virtio-rng-device',
      '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    ];
    const serialLog = join(work, 'serial.log');
    const t0 = Date.now();
    const since = () => `${((Date.now() - t0) / 1000).toFixed(0)} s`;
    const qemu = daemon('guest', 'nice', ['-n', '5', m.qemu, ...qemuArgs], serialLog);
    log(`  power on (${m.qemu} -M ${m.machine} -cpu ${m.cpu}, TCG); serial log ${relative(ROOT, serialLog)}`);
    const timeoutMs = opts.timeoutMin * 60_000;
    await qemu.waitFor(/Linux version/, timeoutMs);
    log(`  ${since()}: kernel booting`);
    const first = await qemu.waitFor(ADDRESS_LINE, timeoutMs);
    const address = first.match[1];
    const tAddress = Date.now() - t0;
    log(`  ${since()}: the login screen shows diode address ${address}`);

    const knownHosts = join(work, 'known_hosts');
    const sshArgs = (strict) => [
      '-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`,
      '-o', `UserKnownHostsFile=${knownHosts}`, '-o', `StrictHostKeyChecking=${strict}`,
      '-o', 'BatchMode=yes', '-o', `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`, '-o', 'LogLevel=ERROR',
      '-i', key, `pi@${address}.diode`,
    ];
    // Asynchronous, so the guest's serial output keeps being read meanwhile.
    const ssh = (cmd, strict = 'yes', k = key) => new Promise((resolve) => {
      const args = sshArgs(strict);
      args[args.indexOf(key)] = k;
      const child = spawn('ssh', [...args, cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      const timer = setTimeout(() => child.kill('SIGKILL'), SSH_COMMAND_TIMEOUT_MS);
      child.once('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
    });
    const untilSsh = async (strict, deadline) => {
      let last = '';
      while (Date.now() < deadline) {
        const r = await ssh('uname -m', strict);
        if (r.status === 0) return r.stdout.trim();
        last = (r.stderr || '').trim();
        await sleep(SSH_RETRY_MS);
      }
      throw new HwTestError(`ssh pi@${address}.diode did not succeed in time; last error: ${last}`);
    };
    const uname = await untilSsh('accept-new', t0 + timeoutMs);
    const tReach = Date.now() - t0;
    if (uname !== m.uname) throw new HwTestError(`uname -m said ${uname}, expected ${m.uname}`);
    log(`  ${since()}: ssh pi@${address}.diode uname -m → ${uname} (through socksd → relay → guest agent → sshd)`);

    // What the boot partition asked for, as the guest sees it.
    const probe = await ssh([
      'echo "hostname=$(hostname)"',
      'echo "user=$(id -un)"',
      'echo "groups=$(id -Gn | tr " " ,)"',
      'echo "keys=$(wc -l < ~/.ssh/authorized_keys)"',
      'echo "tz=$(readlink /etc/localtime)"',
      'echo "wpa=$(sudo -n cat /etc/wpa_supplicant/wpa_supplicant-wlan0.conf | tr "\\n\\t" "| ")"',
      'echo "wpamode=$(stat -c %a /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)"',
      'echo "wpaunit=$(systemctl is-enabled wpa_supplicant@wlan0.service 2>&1)"',
      'echo "wlannet=$(tr "\\n" "|" < /etc/systemd/network/20-boot-config-wlan0.network)"',
      'echo "rootsize=$(df -B1M --output=size / | tail -n 1 | tr -d " ")"',
      'echo "hostkeys=$(ls /etc/ssh/ssh_host_*_key | wc -l)"',
      'echo "agent=$(systemctl is-active diode.service)"',
      'echo "failed=$(systemctl --failed --plain --no-legend | awk "{print \\$1}" | tr "\\n" ,)"',
      'echo "problems=$(cat /run/diode/boot-config.errors 2>/dev/null | tr "\\n" "|")"',
      'echo "userconf=$(sudo -n ls /boot/firmware)"',
    ].join('; '));
    if (probe.status !== 0) throw new HwTestError(`probe over ssh failed: ${probe.stderr}`);
    const facts = Object.fromEntries(probe.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const imageMiB = Number(JSON.parse(run('sfdisk', ['-J', opts.image])).partitiontable.partitions[1].size) / 2048;
    const checks = [
      ['hostname from user-data', facts.hostname === settings.hostname, facts.hostname],
      ['user pi in sudo', facts.user === 'pi' && facts.groups.split(',').includes('sudo'), `${facts.user} ${facts.groups}`],
      ['authorized keys: user-data + authorized_keys file', facts.keys === '2', facts.keys],
      ['legacy authorized_keys key logs in', (await ssh('true', 'yes', key2)).status === 0, ''],
      ['time zone from user-data', facts.tz === '/usr/share/zoneinfo/Europe/Berlin', facts.tz],
      ['Wi-Fi config from network-config', facts.wpa.includes(`ssid="${settings.ssid}"`) && facts.wpa.includes(`psk=${settings.psk}`) && facts.wpa.includes(`country=${settings.country}`), facts.wpa],
      ['Wi-Fi config is root-only', facts.wpamode === '600', facts.wpamode],
      ['wpa_supplicant@wlan0 enabled', facts.wpaunit === 'enabled', facts.wpaunit],
      ['networkd DHCP on wlan0', facts.wlannet.includes('Name=wlan0') && facts.wlannet.includes('DHCP=ipv4'), facts.wlannet],
      ['root grew to the card', Number(facts.rootsize) > imageMiB + 512, `${facts.rootsize} MiB (image root partition ${imageMiB} MiB)`],
      ['fresh SSH host keys', Number(facts.hostkeys) >= 3, facts.hostkeys],
      ['agent active', facts.agent === 'active', facts.agent],
      ['no failed units', facts.failed === '', facts.failed],
      ['no boot-partition problems', facts.problems === '', facts.problems],
    ];
    for (const [what, ok, detail] of checks) log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
    const failed = checks.filter(([, ok]) => !ok);

    // Reboot: the same address (and the same host key: StrictHostKeyChecking=yes) must come back.
    const before = qemu.output().length;
    await ssh('sudo -n systemctl reboot');
    const tReboot = Date.now();
    log(`  ${since()}: reboot`);
    const again = await qemu.waitFor(ADDRESS_LINE, timeoutMs, before);
    log(`  ${since()}: the login screen shows diode address ${again.match[1]}`);
    if (again.match[1] !== address) throw new HwTestError(`the address changed across a reboot: ${address} → ${again.match[1]}`);
    const uname2 = await untilSsh('yes', Date.now() + timeoutMs);
    const tReach2 = Date.now() - tReboot;
    log(`  ${since()}: ssh again (same host key) → ${uname2}`);
    await ssh('sudo -n systemctl poweroff');

    const summary = {
      arch: opts.arch,
      address,
      powerOnToAddressS: Math.round(tAddress / 1000),
      powerOnToSshS: Math.round(tReach / 1000),
      rebootToSshS: Math.round(tReach2 / 1000),
      checksFailed: failed.map(([w]) => w),
    };
    writeFileSync(join(ROOT, '.cache/hw-test', `result-${opts.arch}.json`), JSON.stringify(summary, null, 2) + '\n');
    log(`\nhw-test ${opts.arch}: power-on → address on console ${summary.powerOnToAddressS} s, → ssh reachable ${summary.powerOnToSshS} s; reboot → ssh ${summary.rebootToSshS} s (QEMU TCG on this machine)`);
    if (failed.length) throw new HwTestError(`${failed.length} check(s) failed: ${failed.map(([w]) => w).join('; ')}`);
    log('hw-test: PASS');
  } catch (err) {
    if (err instanceof HwTestError) console.error(`hw-test: FAIL: ${err.message}\n  (logs kept in ${relative(ROOT, work)})`);
    opts.keep = true;
    throw err;
  } finally {
    cleanup();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    if (!(err instanceof HwTestError)) console.error(err);
    process.exit(1);
  });
}

