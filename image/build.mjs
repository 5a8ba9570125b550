#!/usr/bin/env node
// Builds the Raspberry Pi SD-card image: dist/image/diode-pi-<arch>.img, its
// .img.xz and SHA-256 sums. No loop mounts: the partitions are made as files
// (mkfs.vfat + mtools, mke2fs -d) and copied into a partitioned image.
//
//   node image/build.mjs [--arch arm64|armhf] [--out DIR] [--no-xz] [--keep-work]
//
// Steps: rootfs (cached mmdebstrap tarball) → binary (cross-build) → tree →
// overlay → check → boot → filesystems → image → compress. Each step prints
// its time; a failed step prints its log and leaves no file under a final name.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync,
  realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, appendFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ARCHES, aptSources, ensureRootfs } from './rootfs.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FILES = join(ROOT, 'image/files');

/** cross-build's target name for each image architecture. */
export const BINARY_TARGET = Object.freeze({ arm64: 'arm64', armhf: 'armv7' });
/** Partition labels Debian's raspi-firmware and our fstab/cmdline expect. */
export const BOOT_LABEL = 'RASPIFIRM';
export const ROOT_LABEL = 'RASPIROOT';
/** Kernel consoles on a Pi 3/4: the GPIO serial port (mini UART), then HDMI, which becomes /dev/console. */
export const CONSOLES = Object.freeze(['ttyS1,115200', 'tty0']);
/**
 * Kernel command line words the image insists on: root mounted read-only
 * first, so the initrd's fsck (and systemd-fsck-root, when the initrd did not
 * check it) runs before anything writes; systemd-remount-fs then remounts it
 * as /etc/fstab says (rw). fsck.repair=yes: a card unplugged mid-write is
 * repaired at boot instead of stopping at an emergency shell nobody sees.
 */
export const CMDLINE_REQUIRED = Object.freeze(['ro', 'fsck.repair=yes', 'rootwait']);
const MIB = 1024 * 1024;
/** The boot partition starts 4 MiB in (SD erase-block aligned). */
const BOOT_START_MIB = 4;
/** Smallest boot partition; it must hold two kernels and initrds during an upgrade. */
const BOOT_MIN_MIB = 256;
/** Free space left in the root file system of the image (it grows to the card at first boot). */
const ROOT_FREE_MIB = 256;
/** Units enabled in the image (ours, and Debian ones that are off by default). */
export const ENABLED_UNITS = Object.freeze([
  'diode-firstboot.service', 'diode-boot-config.service', 'diode.service', 'diode-relays.path', 'diode-issue.service', 'diode-issue.path',
  'ssh.service', 'systemd-networkd.service', 'systemd-resolved.service', 'systemd-timesyncd.service',
]);

class StepError extends Error {}

// ---- the no-baked-secrets check (exported for tests) ---------------------------

/**
 * What must not be in an image tree, or must be: returns a list of problems
 * (empty when the tree is fit to ship). Works on any directory laid out like
 * the root file system.
 */
export function checkTree(root) {
  const problems = [];
  const sshDir = join(root, 'etc/ssh');
  if (existsSync(sshDir)) {
    for (const f of readdirSync(sshDir)) if (f.startsWith('ssh_host_')) problems.push(`baked SSH host key /etc/ssh/${f}`);
  }
  const state = join(root, 'var/lib/diode');
  if (existsSync(state)) for (const f of readdirSync(state)) problems.push(`baked diode state /var/lib/diode/${f}`);
  const machineId = join(root, 'etc/machine-id');
  if (existsSync(machineId) && readFileSync(machineId, 'utf8').trim() !== '') problems.push('/etc/machine-id is not empty');
  for (const p of ['var/lib/dbus/machine-id', 'var/lib/systemd/random-seed', 'root/.ssh/authorized_keys', 'root/.bash_history']) {
    if (existsSync(join(root, p)) || isSymlink(join(root, p))) problems.push(`/${p} must not be in the image`);
  }
  const home = join(root, 'home');
  if (existsSync(home) && readdirSync(home).length) problems.push(`/home is not empty: ${readdirSync(home).join(', ')}`);
  const diode = join(root, 'usr/bin/diode');
  if (!existsSync(diode)) problems.push('/usr/bin/diode is missing');
  else if (!(statSync(diode).mode & 0o111)) problems.push('/usr/bin/diode is not executable');
  const launch = join(root, 'usr/lib/diode/launch');
  if (!existsSync(launch) || !(statSync(launch).mode & 0o111)) problems.push('/usr/lib/diode/launch is missing or not executable');
  for (const unit of ENABLED_UNITS.filter((u) => u.startsWith('diode'))) {
    if (!existsSync(join(root, 'usr/lib/systemd/system', unit))) problems.push(`unit ${unit} is missing`);
    if (!findEnabled(root, unit)) problems.push(`unit ${unit} is not enabled`);
  }
  return problems;
}

function isSymlink(p) {
  try { return lstatSync(p).isSymbolicLink(); } catch { return false; }
}

function findEnabled(root, unit) {
  const etc = join(root, 'etc/systemd/system');
  if (!existsSync(etc)) return false;
  return readdirSync(etc).some((d) => d.endsWith('.wants') && isSymlink(join(etc, d, unit)));
}

/**
 * Puts diode on an unpacked root file system: the files under image/files,
 * the binary, the README, enabled units, and removes whatever would make two
 * cards alike. `debianUnits: false` enables only diode's own units (for trees
 * that are not a real Debian, as in the tests).
 */
export function applyOverlay(tree, binary, { debianUnits = true } = {}) {
  sh('cp', ['-rT', '--preserve=mode', FILES, tree]);
  mkdirSync(join(tree, 'usr/bin'), { recursive: true });
  copyFileSync(binary, join(tree, 'usr/bin/diode'));
  chmodSync(join(tree, 'usr/bin/diode'), 0o755);
  // The same launcher as the Debian package's: updates from the relay, with rollback.
  copyFileSync(join(ROOT, 'packaging/diode-launch'), join(tree, 'usr/lib/diode/launch'));
  chmodSync(join(tree, 'usr/lib/diode/launch'), 0o755);
  const doc = join(tree, 'usr/share/doc/diode');
  mkdirSync(doc, { recursive: true });
  copyFileSync(join(ROOT, 'image/README.md'), join(doc, 'README.md'));
  // systemd-resolved serves the DNS servers networkd learns.
  rmSync(join(tree, 'etc/resolv.conf'), { force: true });
  symlinkSync('../run/systemd/resolve/stub-resolv.conf', join(tree, 'etc/resolv.conf'));
  // The device updates from all suites, security included, whatever the build used.
  mkdirSync(join(tree, 'etc/apt'), { recursive: true });
  writeFileSync(join(tree, 'etc/apt/sources.list'), aptSources().join('\n') + '\n');
  // Kernel upgrades regenerate cmdline.txt from this: keep the root by label.
  const raspiDefault = join(tree, 'etc/default/raspi-firmware');
  if (existsSync(raspiDefault)) {
    const text = readFileSync(raspiDefault, 'utf8');
    const line = `ROOTPART=LABEL=${ROOT_LABEL}`;
    let out = /^#?\s*ROOTPART=.*$/m.test(text) ? text.replace(/^#?\s*ROOTPART=.*$/m, line) : `${text}\n${line}\n`;
    // "auto" cannot see the board in a chroot: the GPIO serial port and HDMI (last = /dev/console).
    const consoles = `CONSOLES="${CONSOLES.join(' ')}"`;
    out = /^#?\s*CONSOLES=.*$/m.test(out) ? out.replace(/^#?\s*CONSOLES=.*$/m, consoles) : `${out}${consoles}\n`;
    writeFileSync(raspiDefault, out);
  }
  // Debian's sshd PAM stack reads ~/.pam_environment (user_readenv=1), which PAM 1.5 deprecates with a
  // warning in the journal at every login ("deprecated reading of user environment enabled").
  const pamSshd = join(tree, 'etc/pam.d/sshd');
  if (existsSync(pamSshd)) writeFileSync(pamSshd, readFileSync(pamSshd, 'utf8').replace(/^(session\s+required\s+pam_env\.so.*?)\s+user_readenv=1\b/gm, '$1'));
  const units = debianUnits ? ENABLED_UNITS : ENABLED_UNITS.filter((u) => u.startsWith('diode'));
  sh('systemctl', [`--root=${tree}`, '--quiet', 'enable', ...units]);
  // Nothing unique may ship: the first boot makes these.
  const ssh = join(tree, 'etc/ssh');
  if (existsSync(ssh)) for (const f of readdirSync(ssh)) if (f.startsWith('ssh_host_')) rmSync(join(ssh, f));
  rmSync(join(tree, 'var/lib/diode'), { recursive: true, force: true });
  writeFileSync(join(tree, 'etc/machine-id'), '');
  for (const p of ['var/lib/dbus/machine-id', 'var/lib/systemd/random-seed']) rmSync(join(tree, p), { force: true });
}

/**
 * The agent's unit fitted to the executable in the image: an option of its
 * ExecStart's `publish` that the executable's own `publish --help` does not
 * list is dropped, with its value. An older executable given with --binary (to
 * compare its figures on today's image) exits at an unknown option such as
 * `--status-file`, and systemd would restart it forever. Returns the unit's
 * text and the options dropped (none for the executable the image is built for).
 */
export function fitAgentUnit(unit, publishHelp) {
  const listed = (opt) => new RegExp(`^\\s*${opt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?=[\\s=,]|$)`, 'm').test(publishHelp);
  const dropped = [];
  const text = unit.replace(/^(ExecStart=\S+ publish)( .*)$/m, (_, head, tail) => {
    const words = tail.trim().split(/\s+/);
    const kept = [];
    for (let i = 0; i < words.length; i++) {
      const opt = words[i].split('=')[0];
      if (!opt.startsWith('--') || listed(opt)) { kept.push(words[i]); continue; }
      dropped.push(opt);
      // Its value, when given as the next word (not another option or the publish arguments' variable).
      if (!words[i].includes('=') && i + 1 < words.length && !/^[-$]/.test(words[i + 1])) i++;
    }
    return [head, ...kept].join(' ');
  });
  return { text, dropped };
}

/**
 * The image's cmdline.txt from the one raspi-firmware wrote: the consoles
 * (serial, then HDMI), root by label, and CMDLINE_REQUIRED (`ro` replaces
 * raspi-firmware's `rw`; /etc/default/raspi-extra-cmdline keeps `ro` when a
 * kernel upgrade regenerates the file, since the later word wins).
 */
export function kernelCmdline(text) {
  const words = text.trim().split(/\s+/).filter((w) => w && !w.startsWith('console=') && !w.startsWith('root=') && !/^(ro|rw|fsck\.repair=.*)$/.test(w));
  const rest = words.filter((w) => !CMDLINE_REQUIRED.includes(w));
  return [...CONSOLES.map((c) => `console=${c}`), `root=LABEL=${ROOT_LABEL}`, ...CMDLINE_REQUIRED, ...rest].join(' ');
}

/**
 * Lists the initrd's files with the tree's own lsinitramfs (qemu-user via
 * binfmt here) and returns what is missing for a root file system check.
 */
export function initrdProblems(listing) {
  const files = new Set(listing.split('\n').map((l) => l.trim().replace(/^\.?\/?/, '')));
  const has = (p) => files.has(p) || files.has(`usr/${p}`);
  return ['sbin/fsck', 'sbin/fsck.ext4', 'sbin/logsave'].filter((p) => !has(p)).map((p) => `the initrd has no ${p}: the root file system would never be checked at boot`);
}

// ---- options ----------------------------------------------------------------------

function usage() {
  return `usage: node image/build.mjs [--arch ${ARCHES.join('|')}] [--out DIR] [--no-xz] [--keep-work]

  --arch ARCH   arm64 (Pi 3, 4, 400, Zero 2 W, CM3/CM4) or armhf (Pi 2, 3, 4 in 32-bit); default arm64
  --out DIR     where the image goes (default dist/image)
  --no-xz       skip the .img.xz (the hw-test only needs the .img)
  --keep-work   keep the unpacked tree and partition files under .cache/image/work-ARCH
  --rootfs TAR  use this root file system tarball instead of the cached mmdebstrap one
  --no-security build the rootfs without bookworm-security (a mirror with an inconsistent
                security index); the image's sources.list still lists it
  --binary FILE put this diode executable in the image instead of dist/bin's (e.g. an older
                build, to compare the agent's figures on the same image)`;
}

export function parseArgs(argv) {
  const opts = { arch: 'arm64', out: join(ROOT, 'dist/image'), xz: true, keepWork: false, security: true, cache: join(ROOT, '.cache/image') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new StepError(`${a} needs a value\n${usage()}`);
      return v;
    };
    if (a === '--arch' || a.startsWith('--arch=')) {
      opts.arch = value();
      if (!ARCHES.includes(opts.arch)) throw new StepError(`unknown architecture ${opts.arch}; known: ${ARCHES.join(', ')}`);
    } else if (a === '--out' || a.startsWith('--out=')) opts.out = resolve(value());
    else if (a === '--no-xz') opts.xz = false;
    else if (a === '--keep-work') opts.keepWork = true;
    else if (a === '--no-security') opts.security = false;
    else if (a === '--rootfs' || a.startsWith('--rootfs=')) opts.rootfs = resolve(value());
    else if (a === '--binary' || a.startsWith('--binary=')) opts.binary = resolve(value());
    else if (a === '-h' || a === '--help') { console.log(usage()); process.exit(0); }
    else throw new StepError(`unknown option ${a}\n${usage()}`);
  }
  return opts;
}

// ---- running commands with a log ------------------------------------------------------

let LOG = '/dev/null';

function sh(cmd, args, { input, cwd } = {}) {
  appendFileSync(LOG, `$ ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, { input, cwd, encoding: 'utf8', maxBuffer: 64 * MIB });
  appendFileSync(LOG, (r.stdout ?? '') + (r.stderr ?? ''));
  if (r.error) throw new StepError(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new StepError(`${cmd} ${args.slice(0, 3).join(' ')}... exited with ${r.status}`);
  return r.stdout;
}

/** Heavy commands share the machine politely. */
function niceSh(cmd, args, opts) {
  return sh('nice', ['-n', '10', cmd, ...args], opts);
}

function duBytes(dir) {
  return Number(sh('du', ['-sb', '--apparent-size', dir]).split('\t')[0]);
}

const roundUpMiB = (bytes, step = 4) => Math.ceil(bytes / MIB / step) * step;

// ---- steps ------------------------------------------------------------------------

async function build(opts) {
  const { arch } = opts;
  mkdirSync(opts.out, { recursive: true });
  mkdirSync(opts.cache, { recursive: true });
  // The tree by its real path: with .cache/image a link to a shared cache, `systemctl --root`
  // resolved the drop-ins it read to the link's target, outside the root it was given, and
  // refused to enable ssh.service ("Channel number out of range").
  opts.cache = realpathSync(opts.cache);
  const work = join(opts.cache, `work-${arch}`);
  const tree = join(work, 'root');
  const boot = join(work, 'boot');
  LOG = join(opts.cache, `build-${arch}.log`);
  writeFileSync(LOG, `image build ${arch} ${new Date().toISOString()}\n`);
  const name = `diode-pi-${arch}`;
  const img = join(opts.out, `${name}.img`);
  const tmpImg = join(work, `${name}.img.partial`);
  const steps = [];
  const step = (title, fn) => steps.push({ title, fn });
  const state = {};

  step('rootfs (Debian, mmdebstrap; cached)', async () => {
    if (opts.rootfs) {
      if (!existsSync(opts.rootfs)) throw new StepError(`${opts.rootfs} not found`);
      state.rootfs = opts.rootfs;
      return `given: ${relative(process.cwd(), opts.rootfs)}`;
    }
    const r = await ensureRootfs({ arch, cacheDir: opts.cache, security: opts.security, onLog: (p) => { state.rootfsLog = p; console.log(`    building, ~30+ min under qemu-user; log ${relative(process.cwd(), p)}`); } });
    state.rootfs = r.path;
    return r.cached ? `cached ${relative(ROOT, r.path)}` : `built ${relative(ROOT, r.path)}`;
  });

  step('binary (cross-build)', async () => {
    const target = BINARY_TARGET[arch];
    const bin = opts.binary ?? join(ROOT, 'dist/bin', `diode-linux-${target}`);
    if (!existsSync(bin) && !opts.binary) sh(process.execPath, [join(ROOT, 'cross-build/build.mjs'), '--target', target]);
    if (!existsSync(bin)) throw new StepError(`cross-build did not produce ${bin}`);
    state.binary = bin;
    return `${relative(ROOT, bin)} (${Math.round(statSync(bin).size / MIB)} MiB)`;
  });

  step('tree (unpack the rootfs)', async () => {
    rmSync(work, { recursive: true, force: true });
    mkdirSync(tree, { recursive: true });
    // /dev is devtmpfs at run time; nothing in it needs to be in the image.
    sh('tar', ['-x', '-p', '--numeric-owner', '--exclude=./dev/*', '-f', state.rootfs, '-C', tree]);
    return `${Math.round(duBytes(tree) / MIB)} MiB`;
  });

  step('overlay (diode, units, first boot)', async () => {
    applyOverlay(tree, state.binary);
    if (!opts.binary) return `${ENABLED_UNITS.length} units enabled`;
    // A given executable may be older than the units (chroot: qemu-user via binfmt here).
    const unitFile = join(tree, 'usr/lib/systemd/system/diode.service');
    const { text, dropped } = fitAgentUnit(readFileSync(unitFile, 'utf8'), sh('chroot', [tree, '/usr/bin/diode', 'publish', '--help']));
    writeFileSync(unitFile, text);
    return `${ENABLED_UNITS.length} units enabled${dropped.length ? `; diode.service without ${dropped.join(', ')} (the given executable's publish does not know it)` : ''}`;
  });

  step('check (no baked keys, units present)', async () => {
    const problems = checkTree(tree);
    if (problems.length) throw new StepError(`the tree is not fit to ship:\n  ${problems.join('\n  ')}`);
    // The binary must start with the image's own libraries (chroot; qemu-user via binfmt here).
    const v = sh('chroot', [tree, '/usr/bin/diode', '--version']).trim();
    // The initrd checks the root file system only if fsck made it in (rootfs.mjs, FSTYPE).
    const initrds = readdirSync(join(tree, 'boot')).filter((f) => f.startsWith('initrd.img-'));
    if (initrds.length === 0) throw new StepError('no /boot/initrd.img-* in the tree');
    for (const i of initrds) {
      const missing = initrdProblems(sh('chroot', [tree, 'lsinitramfs', `/boot/${i}`]));
      if (missing.length) throw new StepError(`${i}: ${missing.join('; ')}`);
    }
    return `clean; chroot diode --version: ${v}; ${initrds.join(', ')} has fsck.ext4`;
  });

  step('boot (firmware, kernel, initrd, config.txt, cmdline.txt)', async () => {
    const fw = join(tree, 'boot/firmware');
    sh('mv', ['-T', fw, boot]);
    mkdirSync(fw);
    const files = readdirSync(boot);
    const kernel = files.find((f) => f.startsWith('vmlinuz'));
    const initrd = files.find((f) => f.startsWith('initrd.img'));
    for (const need of ['config.txt', 'cmdline.txt', 'start4.elf', 'bootcode.bin']) if (!files.includes(need)) throw new StepError(`boot partition lacks ${need} (raspi-firmware)`);
    if (!kernel || !initrd) throw new StepError('boot partition lacks the kernel or initrd (raspi-firmware copies them from /boot)');
    // raspi-firmware wrote it before ROOTPART was set: point it at the label too.
    let cmdline = readFileSync(join(boot, 'cmdline.txt'), 'utf8').trim();
    cmdline = /\broot=\S+/.test(cmdline) ? cmdline.replace(/\broot=\S+/, `root=LABEL=${ROOT_LABEL}`) : `${cmdline} root=LABEL=${ROOT_LABEL}`;
    cmdline = kernelCmdline(cmdline);
    writeFileSync(join(boot, 'cmdline.txt'), cmdline + '\n');
    state.kernel = kernel;
    state.initrd = initrd;
    return `${kernel}, ${initrd}; cmdline: ${cmdline}`;
  });

  step('filesystems (FAT boot via mtools, ext4 root via mke2fs -d)', async () => {
    const bootMiB = Math.max(BOOT_MIN_MIB, roundUpMiB(duBytes(boot) * 2.5));
    const rootMiB = roundUpMiB(duBytes(tree) * 1.1 + ROOT_FREE_MIB * MIB);
    const bootImg = join(work, 'boot.vfat');
    const rootImg = join(work, 'root.ext4');
    sh('mkfs.vfat', ['-F', '32', '-n', BOOT_LABEL, '-C', bootImg, String(bootMiB * 1024)]);
    sh('mcopy', ['-s', '-p', '-m', '-i', bootImg, ...readdirSync(boot).map((f) => join(boot, f)), '::']);
    niceSh('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', ROOT_LABEL, '-d', tree, rootImg, `${rootMiB}M`]);
    Object.assign(state, { bootImg, rootImg, bootMiB, rootMiB });
    return `boot ${bootMiB} MiB, root ${rootMiB} MiB`;
  });

  step('image (MBR: FAT32 boot + ext4 root)', async () => {
    const { bootMiB, rootMiB } = state;
    const rootStart = BOOT_START_MIB + bootMiB;
    const totalMiB = rootStart + rootMiB;
    rmSync(tmpImg, { force: true });
    sh('truncate', ['-s', `${totalMiB}M`, tmpImg]);
    const sectors = (mib) => mib * 2048;
    const table = [
      'label: dos',
      `label-id: 0x${createHash('sha256').update(`${arch}${Date.now()}`).digest('hex').slice(0, 8)}`,
      `start=${sectors(BOOT_START_MIB)}, size=${sectors(bootMiB)}, type=c, bootable`,
      `start=${sectors(rootStart)}, size=${sectors(rootMiB)}, type=83`,
    ].join('\n');
    sh('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', tmpImg], { input: table + '\n' });
    sh('dd', [`if=${state.bootImg}`, `of=${tmpImg}`, 'bs=4M', `seek=${BOOT_START_MIB / 4}`, 'conv=notrunc,sparse', 'status=none']);
    niceSh('dd', [`if=${state.rootImg}`, `of=${tmpImg}`, 'bs=4M', `seek=${rootStart / 4}`, 'conv=notrunc,sparse', 'status=none']);
    renameSync(tmpImg, img);
    rmSync(`${img}.xz`, { force: true });
    writeSums(opts.out, name, [img]);
    return `${relative(process.cwd(), img)} (${totalMiB} MiB)`;
  });

  if (opts.xz) {
    step('compress (xz)', async () => {
      const tmpXz = join(work, `${name}.img.xz.partial`);
      niceSh('sh', ['-c', 'xz -T0 -6 -c "$1" > "$2"', 'xz', img, tmpXz]);
      renameSync(tmpXz, `${img}.xz`);
      writeSums(opts.out, name, [img, `${img}.xz`]);
      return `${relative(process.cwd(), img)}.xz (${Math.round(statSync(`${img}.xz`).size / MIB)} MiB)`;
    });
  }

  const t0 = Date.now();
  for (const [i, s] of steps.entries()) {
    const ts = Date.now();
    process.stdout.write(`[${i + 1}/${steps.length}] ${s.title}\n`);
    appendFileSync(LOG, `\n=== ${s.title}\n`);
    try {
      const detail = await s.fn();
      console.log(`    ok in ${((Date.now() - ts) / 1000).toFixed(1)} s${detail ? `: ${detail}` : ''}`);
    } catch (err) {
      rmSync(tmpImg, { force: true });
      const logPath = err.logPath ?? LOG;
      console.error(`    FAILED: ${err.message}\n--- last lines of ${logPath}:`);
      console.error(tail(logPath, 40));
      throw new StepError(`step "${s.title}" failed; full log: ${logPath}`);
    }
  }
  if (!opts.keepWork) rmSync(work, { recursive: true, force: true });
  console.log(`done in ${Math.round((Date.now() - t0) / 1000)} s: ${relative(process.cwd(), img)}`);
}

function tail(path, lines) {
  try { return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return '(no log)'; }
}

/** Writes NAME.sha256 (sha256sum format) next to the outputs. */
function writeSums(dir, name, paths) {
  const lines = paths.map((p) => `${sh('sha256sum', [p]).split(' ')[0]}  ${relative(dir, p)}`);
  writeFileSync(join(dir, `${name}.sha256`), lines.join('\n') + '\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    await build(parseArgs(process.argv.slice(2)));
  } catch (err) {
    console.error(err instanceof StepError ? `image: ${err.message}` : err);
    process.exit(1);
  }
}
