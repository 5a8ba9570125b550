#!/usr/bin/env node
// hw-test: boots the built Pi image under QEMU (its own kernel and initrd,
// the image as the disk, user-mode networking) and uses it the way a person
// would: Imager-style files on the boot partition, the address read off the
// (serial) console, then real OpenSSH through a host relay + socksd to
// pi@<address>.diode; a reboot must keep the address and the host key.
//
//   node hw-test/run.mjs [--arch arm64|armhf] [--image FILE] [--timeout-min N] [--card-writes-min N] [--keep] [--no-update]
//
// Prints one line per step with the time since power-on, and a summary.
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StringDecoder } from 'node:string_decoder';
import { decodeQr, renderScreen, LINUX_CONSOLE, SMALL_CONSOLE } from './screen.mjs';
import { prepareRelease, updateGuest } from './update.mjs';

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
/** ms between the host's queries for the device after the second power-on. */
const PUBLISHED_POLL_MS = 1000;
/** ms the guest's agent idles with its relay session before its memory is read (its heap watch settles in ≈ 10 s). */
const AGENT_SETTLE_MS = 30_000;
/** Minutes the card's writes are measured while the device is idle and connected (issue 29 item 6; 0: not measured). */
const CARD_WRITES_MIN = 10;
/** The most an idle, connected device may write to its card (issue 29 item 6), MiB per hour. */
const CARD_WRITES_MAX_MIB_PER_HOUR = 1;
/** A relay setting with a typo in its name (issue 29 item 3): the login screen must say what is wrong. */
const MISTYPED_RELAY = 'relay.exmaple.org:41046';
/** The login screen line diode-issue writes. */
const ADDRESS_LINE = /diode address: (0x[0-9a-fA-F]{40})/g;

class HwTestError extends Error {}

function parseArgs(argv) {
  const opts = { arch: 'arm64', image: null, bundle: BUNDLE, timeoutMin: 45, cardWritesMin: CARD_WRITES_MIN, keep: false, update: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? (() => { throw new HwTestError(`${a} needs a value`); })();
    if (a === '--arch') opts.arch = value();
    else if (a === '--image') opts.image = value();
    else if (a === '--bundle') opts.bundle = value();
    else if (a === '--timeout-min') opts.timeoutMin = Number(value());
    else if (a === '--card-writes-min') opts.cardWritesMin = Number(value());
    else if (a === '--keep') opts.keep = true;
    else if (a === '--no-update') opts.update = false;
    else if (a === '-h' || a === '--help') {
      console.log('usage: node hw-test/run.mjs [--arch arm64|armhf] [--image FILE] [--bundle FILE] [--timeout-min N] [--card-writes-min N] [--keep] [--no-update]\n  --bundle FILE  the diode.cjs the host\'s relay, socksd and queries run (default dist/diode.cjs): an older image wants its own (with --no-update)');
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

/**
 * The text of a serial console that arrives in chunks: a chunk may end inside
 * a multi-byte character (the QR code's ▀ ▄ █ are 3 bytes each), so each
 * chunk is not decoded alone (that turned those characters into U+FFFD and
 * the QR unreadable whenever the serial port split them: hw-test's QR checks
 * failed on a screen that scanned).
 */
export function consoleText() {
  const decoder = new StringDecoder('utf8');
  let text = '';
  /** push returns the text the chunk completes. */
  return { push: (chunk) => { const piece = decoder.write(chunk); text += piece; return piece; }, text: () => text };
}

/** A long-running child whose output is collected; killed on exit. */
function daemon(name, cmd, args, logFile) {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const stdout = consoleText();
  const stderr = consoleText();
  let out = '';
  const waiters = new Set();
  const onData = (d, stream) => {
    out += stream.push(d);
    // After cleanup has removed the work directory a killed child may still flush output.
    if (logFile && !LOGS_CLOSED) appendFileSync(logFile, d);
    for (const w of waiters) w();
  };
  child.stdout.on('data', (d) => onData(d, stdout));
  child.stderr.on('data', (d) => onData(d, stderr));
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
let LOGS_CLOSED = false;
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
    'diode.conf': `# written by hw-test\n${relay ? `relays=${relay}\n` : ''}publish=-public 22:22\n`,
  };
}

/**
 * The kernel command line for QEMU: the image's own cmdline.txt (root by
 * label, `ro`, fsck.repair, the Wi-Fi country Imager adds), with the Pi's GPIO
 * serial console swapped for the virt machine's serial port and HDMI (tty0)
 * kept last, as on a Pi: so the test also shows what reaches a serial console
 * that is not /dev/console.
 */
export function qemuAppend(cmdlineTxt, m) {
  return cmdlineTxt.trim().split(/\s+/).map((w) => (/^console=ttyS\d/.test(w) ? `console=${m.console},115200` : w)).join(' ');
}

/**
 * The QR codes on the login screen whose address line ends at `at` in the
 * serial output: that screen, from its first line to its login prompt, drawn
 * as the Linux console draws it (light on black, 80x25) and read by zbarimg,
 * as a phone would read the Pi's screen.
 */
export function loginScreenQr(output, at) {
  const start = output.lastIndexOf('\n', output.lastIndexOf('diode address:', at)) + 1;
  const prompt = output.indexOf('login: ', at);
  return decodeQr(renderScreen(output.slice(start, prompt < 0 ? undefined : prompt + 'login: '.length), { theme: LINUX_CONSOLE, ...SMALL_CONSOLE }));
}

/**
 * From the guest's `journalctl -o short-monotonic -u diode.service`: seconds
 * since boot at which the agent logged "connected to relay" first, and since
 * systemd started the process that did (the last "Started diode" before it).
 * The guest's own clock: the agent's start-up without the host's view of the
 * boot (which the load of a shared host stretches as a whole). Null when
 * either line is missing.
 */
export function agentStartup(journal) {
  let started = NaN;
  for (const line of journal.split('\n')) {
    const m = /^\[\s*(\d+\.\d+)\]/.exec(line);
    if (!m) continue;
    if (/systemd\[1\]: Started diode\.service/.test(line)) started = Number(m[1]);
    else if (/connected to relay /.test(line)) {
      return Number.isNaN(started) ? null : { bootToConnectedS: +Number(m[1]).toFixed(2), startToConnectedS: +(Number(m[1]) - started).toFixed(2) };
    }
  }
  return null;
}

/** A free TCP port on 127.0.0.1 (for QEMU's hostfwd to the guest's sshd: the LAN path). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const m = MACHINES[opts.arch];
  for (const tool of [m.qemu, 'mcopy', 'sfdisk', 'ssh', 'ssh-keygen', 'nc', 'debugfs', 'e2fsck', 'zbarimg']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new HwTestError(`${tool} not found (apt-get install qemu-system-arm mtools fdisk openssh-client netcat-openbsd e2fsprogs zbar-tools)`);
  }
  if (!existsSync(opts.image)) throw new HwTestError(`${opts.image} not found; build it first: npm run image -- --arch ${opts.arch} --no-xz`);
  if (!existsSync(BUNDLE)) run(process.execPath, [join(ROOT, 'scripts/build.mjs')]);

  mkdirSync(join(ROOT, '.cache/hw-test'), { recursive: true });
  const work = mkdtempSync(join(ROOT, '.cache/hw-test', `${opts.arch}-`));
  const log = (s) => console.log(s);
  log(`hw-test ${opts.arch}: work dir ${relative(ROOT, work)}`);
  const cleanup = () => {
    killAll();
    if (!opts.keep) { LOGS_CLOSED = true; rmSync(work, { recursive: true, force: true }); }
  };
  const checks = [];
  const check = (what, ok, detail = '') => { checks.push([what, ok, detail]); log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`); };

  try {
    // The card: a sparse copy of the image, larger than the image (first boot grows into it).
    const card = join(work, 'card.img');
    run('cp', ['--sparse=always', opts.image, card]);
    run('truncate', ['-s', `+${GROW_BY}`, card]);
    const table = JSON.parse(run('sfdisk', ['-J', card])).partitiontable;
    const bootAt = `${card}@@${table.partitions[0].start * 512}`;
    /** The root file system inside the card, as e2fsprogs opens it (no loop device). */
    const rootFs = `${card}?offset=${table.partitions[1].start * 512}`;
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

    // Host side: relay (the guest reaches it as 10.0.2.2, serving a signed release one version newer than the image) and the client's socksd.
    const release = opts.update ? prepareRelease({ arch: opts.arch, work, log }) : undefined;
    const relay = daemon('relay', process.execPath, [opts.bundle, 'relay', '--listen', '127.0.0.1:0', '--home', join(work, 'relay'), ...(release ? ['--releases', release.dir] : [])], join(work, 'relay.log'));
    const relayPort = Number((await relay.waitFor(/relay 0x[0-9a-fA-F]{40} listening on [\d.]+:(\d+)/, 60_000)).match[1]);
    const socksd = daemon('socksd', process.execPath, [opts.bundle, 'socksd', '--listen', '127.0.0.1:0', '--relay', `127.0.0.1:${relayPort}`, '--home', join(work, 'client')], join(work, 'socksd.log'));
    const socksPort = Number((await socksd.waitFor(/listening on [\d.]+:(\d+)/, 60_000)).match[1]);
    const lanPort = await freePort();
    log(`  relay on 127.0.0.1:${relayPort} (guest: ${HOST_FROM_GUEST}:${relayPort}), socksd on 127.0.0.1:${socksPort}, guest sshd on the "LAN" at 127.0.0.1:${lanPort}`);

    // First boot: everything but a relay (issue 18 item 2: the agent must wait, not spin).
    const relaySetting = `${HOST_FROM_GUEST}:${relayPort}`;
    const settings = { hostname: 'hwtest-pi', user: 'pi', pubkey, ssid: 'diode test net', psk: 'f'.repeat(16) + '0123456789abcdef'.repeat(3), country: 'DE', relay: null };
    const files = { ...imagerFiles(settings), authorized_keys: readFileSync(`${key2}.pub`, 'utf8'), ssh: '' };
    // Imager also appends the Wi-Fi country to cmdline.txt.
    const cmdlineTxt = run('mtype', ['-i', bootAt, '::cmdline.txt']).trim() + ` cfg80211.ieee80211_regdom=${settings.country}\n`;
    files['cmdline.txt'] = cmdlineTxt;
    const putOnCard = (name, content) => {
      writeFileSync(join(work, name), content);
      run('mcopy', ['-o', '-i', bootAt, join(work, name), `::${name}`]);
    };
    for (const [name, content] of Object.entries(files)) putOnCard(name, content);

    const append = qemuAppend(cmdlineTxt, m);
    log(`  kernel command line (the image's cmdline.txt): ${append}`);
    const qemuArgs = [
      '-M', m.machine, '-cpu', m.cpu, '-smp', '2', '-m', String(GUEST_MEM_MIB),
      '-kernel', join(work, kernel), '-initrd', join(work, initrd), '-append', append,
      '-drive', `file=${card},format=raw,if=none,id=hd0,cache=unsafe`, '-device', 'virtio-blk-device,drive=hd0',
      '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${lanPort}-:22`, '-device', 'virtio-net-device,netdev=n0',
      '-device', 'virtio-rng-device',
      '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    ];
    const serialLog = join(work, 'serial.log');
    const timeoutMs = opts.timeoutMin * 60_000;
    const powerOn = async (label) => {
      const t0 = Date.now();
      const qemu = daemon('guest', 'nice', ['-n', '5', m.qemu, ...qemuArgs], serialLog);
      log(`  power on, ${label} (${m.qemu} -M ${m.machine} -cpu ${m.cpu}, TCG); serial log ${relative(ROOT, serialLog)}`);
      await qemu.waitFor(/Linux version/, timeoutMs);
      return { qemu, t0, since: () => `${((Date.now() - t0) / 1000).toFixed(0)} s` };
    };
    const waitExit = (qemu, ms) => new Promise((resolve, reject) => {
      if (qemu.child.exitCode !== null || qemu.child.signalCode !== null) { resolve(); return; }
      const timer = setTimeout(() => reject(new HwTestError(`the guest did not power off within ${ms / 1000} s`)), ms);
      qemu.child.once('exit', () => { clearTimeout(timer); resolve(); });
    });

    const knownHosts = join(work, 'known_hosts');
    const common = (strict, k) => [
      '-o', `UserKnownHostsFile=${knownHosts}`, '-o', `StrictHostKeyChecking=${strict}`,
      '-o', 'BatchMode=yes', '-o', `ConnectTimeout=${SSH_CONNECT_TIMEOUT_S}`, '-o', 'LogLevel=ERROR', '-i', k,
    ];
    let address = '';
    // Asynchronous, so the guest's serial output keeps being read meanwhile.
    // via: 'diode' (socksd → relay → agent → sshd) or 'lan' (QEMU's forward to sshd, as from the LAN).
    const ssh = (cmd, { strict = 'yes', k = key, via = 'diode' } = {}) => new Promise((resolve) => {
      const args = via === 'lan'
        ? [...common(strict, k), '-o', 'HostKeyAlias=hwtest-lan', '-p', String(lanPort), 'pi@127.0.0.1']
        : ['-o', `ProxyCommand=nc -X 5 -x 127.0.0.1:${socksPort} %h %p`, ...common(strict, k), `pi@${address}.diode`];
      const child = spawn('ssh', [...args, cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      const timer = setTimeout(() => child.kill('SIGKILL'), SSH_COMMAND_TIMEOUT_MS);
      child.once('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
    });
    const untilSsh = async (opt, deadline) => {
      let last = '';
      while (Date.now() < deadline) {
        const r = await ssh('uname -m', opt);
        if (r.status === 0) return r.stdout.trim();
        last = (r.stderr || '').trim();
        await sleep(SSH_RETRY_MS);
      }
      throw new HwTestError(`ssh ${opt.via === 'lan' ? `-p ${lanPort} pi@127.0.0.1` : `pi@${address}.diode`} did not succeed in time; last error: ${last}`);
    };
    const facts = async (lines, opt) => {
      const r = await ssh(lines.join('; '), opt);
      if (r.status !== 0) throw new HwTestError(`probe over ssh failed: ${r.stderr}`);
      return Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    };

    // ---- first boot, no relay configured ----
    const boot1 = await powerOn('first boot, diode.conf without relays');
    const { qemu } = boot1;
    log(`  ${boot1.since()}: kernel booting`);
    const firstLogin = qemu.waitFor(/login: /, timeoutMs).then(() => Date.now() - boot1.t0, () => NaN);
    const first = await qemu.waitFor(ADDRESS_LINE, timeoutMs);
    address = first.match[1];
    const tAddress = Date.now() - boot1.t0;
    log(`  ${boot1.since()}: the login screen shows diode address ${address}`);
    const tLogin = await firstLogin;
    log(`  login prompt first shown at ${Math.round(tLogin / 1000)} s (the prompt does not wait for diode-issue)`);
    // The screen is whole once the prompt below it is out: the address line comes first, the
    // hints after it (taken at the address line alone, they were sometimes still on the wire).
    await qemu.waitFor(/login: /, 120_000, first.at).catch(() => null);
    const screen1 = qemu.output().slice(first.at, first.at + 4000);
    const qr1 = loginScreenQr(qemu.output(), first.at);
    check('login screen QR code (serial console drawn as the Linux console, zbarimg) reads the address', qr1.length === 1 && qr1[0] === address, JSON.stringify(qr1));
    check('login screen: "no relay configured" with what to put in diode.conf', /no relay configured: put relays=\.\.\. in diode\.conf on the boot partition/.test(screen1));
    check('login screen: how the other machine gets there', screen1.includes('diode ssh-config --install'));

    await untilSsh({ strict: 'accept-new', via: 'lan' }, boot1.t0 + timeoutMs);
    log(`  ${boot1.since()}: ssh on the LAN (QEMU forward to sshd) works`);
    // Long enough for several RestartSec=5 cycles if the agent were spinning.
    await sleep(30_000);
    const idle = await facts([
      'echo "state=$(systemctl show -p ActiveState --value diode.service)"',
      'echo "result=$(systemctl show -p Result --value diode.service)"',
      'echo "restarts=$(systemctl show -p NRestarts --value diode.service)"',
      'echo "pathunit=$(systemctl is-active diode-relays.path)"',
    ], { via: 'lan' });
    check('no relay: agent skipped, not restarting', idle.state === 'inactive' && idle.restarts === '0' && idle.result !== 'exit-code', `ActiveState=${idle.state} Result=${idle.result} NRestarts=${idle.restarts}`);
    check('diode-relays.path waits for a relay setting', idle.pathunit === 'active', idle.pathunit);
    // Issue 29 item 3: a mistyped relay is named on the login screen, and diode status points pi to sudo.
    const beforeTypo = qemu.output().length;
    const typo = await ssh(`sudo -n diode config -set relays=${MISTYPED_RELAY}`, { via: 'lan' });
    if (typo.status !== 0) throw new HwTestError(`diode config -set relays=${MISTYPED_RELAY} failed: ${typo.stderr}`);
    const typoLine = await qemu.waitFor(/relay relay\.exmaple\.org:41046: its name (does not resolve|could not be resolved)/, 180_000, beforeTypo).catch(() => null);
    check('login screen names the mistyped relay and why', Boolean(typoLine), typoLine ? typoLine.match[0] : 'no such line within 180 s');
    const asPi = await ssh('diode status; echo "exit=$?"', { via: 'lan' });
    check('diode status as pi points to sudo (not "no agent runs")', /sudo diode status/.test(asPi.stderr) && /exit=1/.test(asPi.stdout) && !/no diode agent runs/.test(asPi.stdout), `${asPi.stdout.trim()} ${asPi.stderr.trim()}`);
    const asRoot = await ssh('sudo -n diode status; echo "exit=$?"', { via: 'lan' });
    check('sudo diode status shows the agent and its relay problem', /NOT CONNECTED/.test(asRoot.stdout) && /exmaple/.test(asRoot.stdout) && /exit=1/.test(asRoot.stdout), asRoot.stdout.trim().split('\n').slice(0, 3).join(' | '));
    const beforeSet = qemu.output().length;
    // diode-relays.path restarts the running agent with the new setting (issue 29: before, it kept the old one).
    const set = await ssh(`sudo -n diode config -set relays=${relaySetting}`, { via: 'lan' });
    if (set.status !== 0) throw new HwTestError(`diode config -set relays over the LAN failed: ${set.stderr}`);
    const tSet = Date.now();
    const uname = await untilSsh({ strict: 'accept-new' }, Date.now() + timeoutMs);
    const tReach = Date.now() - boot1.t0;
    if (uname !== m.uname) throw new HwTestError(`uname -m said ${uname}, expected ${m.uname}`);
    log(`  ${boot1.since()}: relay set over the LAN → ssh pi@${address}.diode uname -m → ${uname} in ${Math.round((Date.now() - tSet) / 1000)} s (socksd → relay → guest agent → sshd)`);
    const refreshed = await qemu.waitFor(ADDRESS_LINE, 120_000, beforeSet).catch(() => null);
    const screen2 = refreshed ? qemu.output().slice(refreshed.at, refreshed.at + 4000).split('login: ')[0] : '';
    check('login screen refreshed without "no relay configured"', Boolean(refreshed) && !screen2.includes('no relay configured'), refreshed ? '' : 'no refreshed screen within 120 s');
    const connectedLine = await qemu.waitFor(new RegExp(`relay ${HOST_FROM_GUEST.replace(/\./g, '\\.')}:${relayPort}: connected`), 120_000, beforeSet).catch(() => null);
    check('login screen says the agent is connected to its relay', Boolean(connectedLine));
    const qr2 = refreshed ? loginScreenQr(qemu.output(), refreshed.at) : [];
    check('refreshed login screen QR code reads the address', qr2.length === 1 && qr2[0] === address, JSON.stringify(qr2));

    // What the boot partition asked for, as the guest sees it.
    const f = await facts([
      'echo "hostname=$(hostname)"',
      'echo "user=$(id -un)"',
      'echo "groups=$(id -Gn | tr " " ,)"',
      'echo "keys=$(wc -l < ~/.ssh/authorized_keys)"',
      'echo "tz=$(readlink /etc/localtime)"',
      'echo "wpa=$(sudo -n cat /etc/wpa_supplicant/wpa_supplicant-wlan0.conf | tr "\\n\\t" "| ")"',
      'echo "wpamode=$(stat -c %a /etc/wpa_supplicant/wpa_supplicant-wlan0.conf)"',
      'echo "wpalink=$(readlink /etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/wpa_supplicant@wlan0.service)"',
      'echo "wpaboot=$(test -e /etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service && echo linked)"',
      'echo "wlannet=$(tr "\\n" "|" < /etc/systemd/network/20-boot-config-wlan0.network)"',
      'echo "rootsize=$(df -B1M --output=size / | tail -n 1 | tr -d " ")"',
      'echo "hostkeys=$(ls /etc/ssh/ssh_host_*_key | wc -l)"',
      'echo "agent=$(systemctl is-active diode.service)"',
      'echo "failed=$(systemctl --failed --plain --no-legend | awk "{print \\$1}" | tr "\\n" ,)"',
      'echo "problems=$(cat /run/diode/boot-config.errors 2>/dev/null | tr "\\n" "|")"',
      'echo "cmdline=$(cat /proc/cmdline)"',
      'echo "rootopts=$(findmnt -no OPTIONS /)"',
      // initramfs-tools makes /run/initramfs mode 0700: pi sees neither file without sudo.
      'echo "fsckstamp=$(sudo -n test -e /run/initramfs/fsck-root && echo yes)"',
      'echo "fscklog=$(sudo -n cat /run/initramfs/fsck.log 2>/dev/null | tr "\\n" "|")"',
      'echo "journal=$(journalctl -b -q --no-pager -n 1 -u diode-boot-config >/dev/null 2>&1 && journalctl -b -q --no-pager -u diode-boot-config | wc -l)"',
      'echo "tools=$(command -v nano less | tr "\\n" ,)"',
      'echo "pwauth=$(sudo -n sshd -T 2>/dev/null | awk "/^passwordauthentication/ {print \\$2}")"',
      'echo "issue=$(grep -c "diode ssh-config --install" /etc/issue.d/diode.issue)"',
    ]);
    const imageMiB = Number(JSON.parse(run('sfdisk', ['-J', opts.image])).partitiontable.partitions[1].size) / 2048;
    const groups = f.groups.split(',');
    check('hostname from user-data', f.hostname === settings.hostname, f.hostname);
    check('user pi in sudo and adm', f.user === 'pi' && groups.includes('sudo') && groups.includes('adm'), `${f.user} ${f.groups}`);
    check('pi reads the journal without sudo', Number(f.journal) > 0, `${f.journal} lines of diode-boot-config`);
    check('nano and less installed', f.tools.includes('/nano') && f.tools.includes('/less'), f.tools);
    check('authorized keys: user-data + authorized_keys file', f.keys === '2', f.keys);
    check('legacy authorized_keys key logs in', (await ssh('true', { k: key2 })).status === 0);
    check('password login off (the account has keys)', f.pwauth === 'no', f.pwauth);
    check('time zone from user-data', f.tz === '/usr/share/zoneinfo/Europe/Berlin', f.tz);
    check('Wi-Fi config from network-config', f.wpa.includes(`ssid="${settings.ssid}"`) && f.wpa.includes(`psk=${settings.psk}`) && f.wpa.includes(`country=${settings.country}`), f.wpa);
    check('Wi-Fi config is root-only', f.wpamode === '600', f.wpamode);
    check('wpa_supplicant@wlan0 wanted by the wlan0 device, not by the boot', f.wpalink === '/lib/systemd/system/wpa_supplicant@.service' && f.wpaboot === '', `${f.wpalink} ${f.wpaboot}`);
    check('networkd DHCP on wlan0', f.wlannet.includes('Name=wlan0') && f.wlannet.includes('DHCP=ipv4'), f.wlannet);
    check('root grew to the card', Number(f.rootsize) > imageMiB + 512, `${f.rootsize} MiB (image root partition ${imageMiB} MiB)`);
    check('fresh SSH host keys', Number(f.hostkeys) >= 3, f.hostkeys);
    check('kernel line mounts root ro first', /(^| )ro( |$)/.test(f.cmdline) && !/(^| )rw( |$)/.test(f.cmdline), f.cmdline);
    check('the initrd checked root (fsck-root stamp, fsck.log)', f.fsckstamp === 'yes' && f.fscklog.includes('fsck'), `stamp=${f.fsckstamp} log=${f.fscklog.slice(0, 200)}`);
    check('root remounted rw by systemd', f.rootopts.startsWith('rw'), f.rootopts);
    check('serial console got boot-config\'s messages (tty0 is /dev/console)', qemu.output().includes('diode-boot-config: applying cloud-init files'));
    check('no "fsck not present" at boot', !qemu.output().includes('fsck not present'));
    check('agent active once the relay was set', f.agent === 'active', f.agent);
    check('no failed units', f.failed === '', f.failed);
    check('no boot-partition problems', f.problems === '', f.problems);
    check('the login screen file has the ssh-config hint', f.issue === '1', f.issue);

    // issue 14 item 7: pi plants a link to root's authorized_keys (keeping its own keys in authorized_keys2).
    const plant = await ssh('cp ~/.ssh/authorized_keys ~/.ssh/authorized_keys2 && ln -sfn /root/.ssh/authorized_keys ~/.ssh/authorized_keys && sudo -n test ! -e /root/.ssh/authorized_keys && echo planted');
    if (!plant.stdout.includes('planted')) throw new HwTestError(`could not plant the link: ${plant.stderr}`);

    // Power off (as for the drawer), damage the root file system, put the relay into diode.conf, power on.
    await ssh('sudo -n systemctl poweroff');
    await waitExit(qemu, 10 * 60_000);
    log(`  powered off; marking a used block free and the file system not clean (debugfs)`);
    const block = run('debugfs', ['-R', 'bmap <2> 0', rootFs]).trim();
    run('debugfs', ['-w', '-R', `freeb ${block}`, rootFs]);
    run('debugfs', ['-w', '-R', 'ssv state 0', rootFs]);
    const broken = spawnSync('e2fsck', ['-n', rootFs], { encoding: 'utf8' });
    check('the card\'s root file system is damaged before the second boot', broken.status === 4 && /Block bitmap differences/.test(broken.stdout), `e2fsck -n exit ${broken.status}`);
    putOnCard('diode.conf', imagerFiles({ ...settings, relay: relaySetting })['diode.conf']);

    // ---- second boot: the same address and host key, root repaired by the initrd ----
    const boot2 = await powerOn('second boot, damaged root, relays in diode.conf');
    // Power-on → published (issue 28 item 6): the host asks the relay until it has the device, once a second.
    const published = (async () => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        // Asynchronous, so the guest's serial output keeps being read meanwhile.
        const online = await new Promise((resolve) => {
          const q = spawn(process.execPath, [opts.bundle, 'query', address, '--relay', `127.0.0.1:${relayPort}`, '--home', join(work, 'client')], { stdio: 'ignore' });
          const timer = setTimeout(() => q.kill('SIGKILL'), 30_000);
          q.once('close', (status) => { clearTimeout(timer); resolve(status === 0); });
        });
        if (online) return Date.now() - boot2.t0;
        await sleep(PUBLISHED_POLL_MS);
      }
      return NaN;
    })();
    const again = await boot2.qemu.waitFor(ADDRESS_LINE, timeoutMs, boot2.qemu.output().length);
    log(`  ${boot2.since()}: the login screen shows diode address ${again.match[1]}`);
    if (again.match[1] !== address) throw new HwTestError(`the address changed across a power cycle: ${address} → ${again.match[1]}`);
    const uname2 = await untilSsh({ strict: 'yes' }, Date.now() + timeoutMs);
    const tReach2 = Date.now() - boot2.t0;
    log(`  ${boot2.since()}: ssh again (same host key) → ${uname2}`);
    const g = await facts([
      'echo "fscklog=$(sudo -n cat /run/initramfs/fsck.log 2>/dev/null | tr "\\n" "|")"',
      'echo "fsckstamp=$(sudo -n test -e /run/initramfs/fsck-root && echo yes)"',
      'echo "failed=$(systemctl --failed --plain --no-legend | awk "{print \\$1}" | tr "\\n" ,)"',
      'echo "problems=$(cat /run/diode/boot-config.errors 2>/dev/null | tr "\\n" "|")"',
      'echo "rootkeys=$(sudo -n test -e /root/.ssh/authorized_keys && echo present || echo absent)"',
      'echo "link=$(test -L ~/.ssh/authorized_keys && echo still-a-link)"',
      'echo "agent=$(systemctl is-active diode.service)"',
      // Before: wpa_supplicant@wlan0 in multi-user.target.wants made a job wait 5 min for a wlan0 QEMU has not, and
      // (before network.target) held systemd-user-sessions: no login, no login prompt until it timed out.
      'echo "wlanjobs=$(systemctl list-jobs --no-legend --plain | grep -c wlan0)"',
      'echo "wlantimeout=$(journalctl -b -q --no-pager -u sys-subsystem-net-devices-wlan0.device | grep -c "Timed out")"',
    ]);
    check('no boot job waits for a Wi-Fi interface that is not there', g.wlanjobs === '0' && g.wlantimeout === '0', `jobs ${g.wlanjobs}, timeouts ${g.wlantimeout}`);
    check('dirty root repaired at boot by the initrd\'s fsck', g.fsckstamp === 'yes' && /Block bitmap differences|FILE SYSTEM WAS MODIFIED/.test(g.fscklog), g.fscklog.slice(0, 300));
    check('symlinked ~/.ssh/authorized_keys refused: root\'s keys untouched', g.rootkeys === 'absent' && g.link === 'still-a-link', `${g.rootkeys} ${g.link}`);
    check('the refusal is on the login screen', /authorized_keys: \/home\/pi\/\.ssh\/authorized_keys is a symbolic link; not followed/.test(g.problems), g.problems);
    check('second boot: agent active (relays from diode.conf), no failed units', g.agent === 'active' && g.failed === '', `${g.agent} ${g.failed}`);
    const tPublished2 = await published;
    log(`  power-on → published (the relay has the device) ${Math.round(tPublished2 / 1000)} s`);
    // The agent's memory once it has idled a while with its relay session (issue 28 item 6).
    await sleep(AGENT_SETTLE_MS);
    const mem = await facts(['echo "agentmem=$(grep -E "^(VmRSS|RssAnon|RssFile):" /proc/$(systemctl show -p MainPID --value diode.service)/status | awk "{print \\$2}" | tr "\\n" ,)"']);
    const [rssKiB, anonKiB, fileKiB] = mem.agentmem.split(',').map(Number);
    log(`  the agent on the guest: RSS ${(rssKiB / 1024).toFixed(1)} MiB (RssAnon ${(anonKiB / 1024).toFixed(1)}, RssFile ${(fileKiB / 1024).toFixed(1)})`);
    // The same start-up on the guest's clock (pi reads the journal: group adm).
    const agentJournal = (await ssh('journalctl -b -q --no-pager -o short-monotonic -u diode.service')).stdout;
    const startup = agentStartup(agentJournal);
    // What the agent did on its way there (a slow start shows its retries or waits).
    for (const line of agentJournal.split('\n').slice(0, 16)) if (line.trim()) log(`    | ${line.slice(0, 220)}`);
    // And the boot it was part of: where a boot's time went when one run is slower than another.
    const boot = await ssh('systemd-analyze time; systemd-analyze blame --no-pager | head -n 8; systemd-analyze critical-chain --no-pager diode.service');
    for (const line of boot.stdout.split('\n')) if (line.trim()) log(`    > ${line.slice(0, 220)}`);
    log(`  the agent on the guest's clock: ${startup ? `systemd started it → "connected to relay" ${startup.startToConnectedS} s, boot → connected ${startup.bootToConnectedS} s` : 'no "Started diode.service" and "connected to relay" lines in its journal'}`);

    // ---- issue 26: the device updates itself from its relay and keeps the new version across a reboot ----
    let tUpdate = NaN;
    let tRebootOnNew = NaN;
    if (release) {
      const upd = await updateGuest({ release, facts, lanSsh: (c) => ssh(c, { via: 'lan' }), log, since: boot2.since });
      tUpdate = upd.took;
      check(`the agent updated itself from the relay to the signed ${release.version}`, upd.version.startsWith(`${release.version} `), upd.version);
      check('the update was verified, installed, started on trial and stayed (journal)', upd.journal.installed === '1' && upd.journal.stays === '1', upd.journal.timing);
      const viaDiode = await untilSsh({ strict: 'yes' }, Date.now() + timeoutMs);
      check('ssh through diode to the updated agent', viaDiode === m.uname, viaDiode);
      const beforeReboot = boot2.qemu.output().length;
      await ssh('sudo -n systemctl reboot', { via: 'lan' });
      const rebootAt = Date.now();
      await boot2.qemu.waitFor(ADDRESS_LINE, timeoutMs, beforeReboot);
      await untilSsh({ strict: 'yes' }, Date.now() + timeoutMs);
      tRebootOnNew = Date.now() - rebootAt;
      const h = await facts([
        `echo "version=$(sudo -n diode status --json --home /var/lib/diode 2>/dev/null | tr -d '\\n' | sed -n 's/.*"role": *"publish"[^}]*"version": *"\\([^"]*\\)".*/\\1/p')"`,
        'echo "exe=$(sudo -n readlink /proc/$(systemctl show -p MainPID --value diode.service)/exe)"',
        'echo "rollbacks=$(cat /var/lib/diode/update/rollbacks 2>/dev/null | wc -l)"',
        'echo "packaged=$(/usr/bin/diode --version)"',
      ]);
      check(`after a reboot the agent runs ${release.version} from the state directory, the packaged binary untouched`, h.version.startsWith(`${release.version} `) && h.exe.startsWith('/var/lib/diode/update/diode-') && !h.packaged.includes(release.version) && h.rollbacks === '0', `version ${h.version}, exe ${h.exe}, packaged ${h.packaged}, rollbacks ${h.rollbacks}`);
      log(`  ${Math.round(tRebootOnNew / 1000)} s from reboot to ssh on ${release.version}`);
    }

    // Issue 29 item 6: the journal and /var/log in RAM, one time stamp per agent line, no login or networkd noise.
    const j = await facts([
      'echo "varlog=$(findmnt -no FSTYPE /var/log)"',
      'echo "journal=$(journalctl --header -q 2>/dev/null | sed -n "s/^File path: //p" | head -n 1)"',
      'echo "stamped=$(journalctl -b -q --no-pager -o cat -u diode | grep -cE "^[0-9]{4}-[0-9]{2}-[0-9]{2}T")"',
      'echo "agentlines=$(journalctl -b -q --no-pager -o cat -u diode | wc -l)"',
      'echo "noise=$(journalctl -b -q --no-pager | grep -cE "pam_env|potentially unpredictable interface name")"',
      'echo "noisy=$(journalctl -b -q --no-pager -o cat | grep -E "pam_env|potentially unpredictable interface name" | head -n 3 | tr "\\n" "|")"',
    ]);
    check('/var/log is in RAM (tmpfs) and so is the journal', j.varlog === 'tmpfs' && j.journal.startsWith('/run/log/journal/'), `${j.varlog} ${j.journal}`);
    check('agent lines in the journal carry one time stamp (journald\'s)', Number(j.agentlines) > 0 && j.stamped === '0', `${j.stamped} of ${j.agentlines} with their own`);
    check('no pam_env or networkd interface-name noise in the journal', j.noise === '0', `${j.noise} lines${j.noise === '0' ? '' : `: ${j.noisy}`}`);
    let cardWrites;
    if (opts.cardWritesMin > 0) {
      // Idle and connected, with two ssh logins on the way, as the issue measured: sectors written to
      // every disk (/sys/block/*/stat field 7), and the agent's own (/proc/<pid>/io write_bytes).
      const probe = async () => facts([
        'sudo -n sync',
        'echo "sectors=$(cat /sys/block/*/stat | awk "{ s += \\$7 } END { print s }")"',
        'echo "agent=$(sudo -n awk "/^write_bytes/ { print \\$2 }" /proc/$(systemctl show -p MainPID --value diode)/io)"',
        'echo "uptime=$(cut -d " " -f 1 /proc/uptime)"',
      ]);
      const first = await probe();
      const third = (opts.cardWritesMin * 60_000) / 3;
      for (let i = 0; i < 2; i++) {
        await sleep(third);
        await ssh('true');
      }
      await sleep(third);
      const last = await probe();
      const hours = (Number(last.uptime) - Number(first.uptime)) / 3600;
      const mib = ((Number(last.sectors) - Number(first.sectors)) * 512) / 1048576;
      cardWrites = { minutes: Math.round(hours * 60), mibPerHour: Number((mib / hours).toFixed(3)), agentBytes: Number(last.agent) - Number(first.agent) };
      log(`  card writes over ${cardWrites.minutes} min idle and connected, two ssh logins: ${mib.toFixed(3)} MiB = ${cardWrites.mibPerHour} MiB/h; the agent's own: ${cardWrites.agentBytes} bytes`);
      check(`card writes at most ${CARD_WRITES_MAX_MIB_PER_HOUR} MiB/h while idle and connected`, cardWrites.mibPerHour <= CARD_WRITES_MAX_MIB_PER_HOUR, `${cardWrites.mibPerHour} MiB/h`);
      check('the agent itself writes nothing while idle', cardWrites.agentBytes === 0, `${cardWrites.agentBytes} bytes`);
    }
    await ssh('sudo -n systemctl poweroff');
    await waitExit(boot2.qemu, 10 * 60_000);
    const clean = spawnSync('e2fsck', ['-fn', rootFs], { encoding: 'utf8' });
    check('after the second boot the root file system is clean (e2fsck -fn)', clean.status === 0, `exit ${clean.status}`);

    const failed = checks.filter(([, ok]) => !ok);
    const summary = {
      arch: opts.arch,
      address,
      powerOnToAddressS: Math.round(tAddress / 1000),
      powerOnToLoginPromptS: Math.round(tLogin / 1000),
      powerOnToSshS: Math.round(tReach / 1000),
      powerCycleToSshS: Math.round(tReach2 / 1000),
      powerCycleToPublishedS: Math.round(tPublished2 / 1000),
      agentRssMiB: +(rssKiB / 1024).toFixed(1),
      agentRssAnonMiB: +(anonKiB / 1024).toFixed(1),
      agentRssFileMiB: +(fileKiB / 1024).toFixed(1),
      ...(startup ? { agentStartToConnectedS: startup.startToConnectedS, bootToAgentConnectedS: startup.bootToConnectedS } : {}),
      ...(release ? { updateVersion: release.version, updateKeysSetToStayingS: Math.round(tUpdate / 1000), rebootToSshOnNewVersionS: Math.round(tRebootOnNew / 1000) } : {}),
      ...(cardWrites ? { cardWrites } : {}),
      checksFailed: failed.map(([w]) => w),
    };
    writeFileSync(join(ROOT, '.cache/hw-test', `result-${opts.arch}.json`), JSON.stringify(summary, null, 2) + '\n');
    log(`\nhw-test ${opts.arch}: power-on → address on console ${summary.powerOnToAddressS} s (login prompt ${summary.powerOnToLoginPromptS} s), → ssh through diode ${summary.powerOnToSshS} s (relay set over the LAN on the way); power cycle with a damaged root → published ${summary.powerCycleToPublishedS} s, → ssh ${summary.powerCycleToSshS} s; agent RSS ${summary.agentRssMiB} MiB (RssAnon ${summary.agentRssAnonMiB}) (QEMU TCG on this machine)`);
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

