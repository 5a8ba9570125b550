// Stage 1 of the image build: the Debian root file system, built once per
// (architecture, package list, recipe) and cached as a tarball under
// .cache/image/. Everything that makes a card *this* product (the diode
// binary, units, first-boot script) is layered on later by build.mjs, so
// editing those never costs another 30-minute mmdebstrap run.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Stands in for update-initramfs while packages install (see mmdebstrapArgs). */
const STUB = join(dirname(fileURLToPath(import.meta.url)), 'update-initramfs-stub.sh');

/** Debian release the image follows. */
export const SUITE = 'bookworm';
/** raspi-firmware and firmware-brcm80211 live in non-free-firmware. */
export const COMPONENTS = ['main', 'non-free-firmware'];
export const MIRROR = 'http://deb.debian.org/debian';
export const SECURITY_MIRROR = 'http://deb.debian.org/debian-security';

/** Packages on every image, on top of `--variant=minbase`. Keep it short: each one runs its maintainer scripts under qemu-user. */
export const COMMON_PACKAGES = Object.freeze([
  'systemd-sysv', 'udev', 'dbus', 'libpam-systemd', // init, devices, logind for ssh sessions
  'systemd-resolved', 'systemd-timesyncd',         // DNS for networkd, clock (a Pi has no RTC)
  'openssh-server', 'sudo',
  'raspi-firmware', 'initramfs-tools', 'kmod',      // Pi boot firmware, config.txt/cmdline.txt hooks
  'firmware-brcm80211', 'wireless-regdb', 'wpasupplicant', // Pi 3/4/Zero 2 W Wi-Fi
  'iproute2', 'netbase',
  'fdisk', 'e2fsprogs',                             // first boot grows the root partition (sfdisk + resize2fs); fsck.ext4 for the initrd
  'nano', 'less',                                   // maintenance on the device: an editor and a pager
]);

/** The kernel per architecture (Debian's generic kernels carry the Pi device trees). */
export const KERNEL_PACKAGE = Object.freeze({ arm64: 'linux-image-arm64', armhf: 'linux-image-armmp' });

/** What the diode binary (a Node SEA) needs beyond minbase: armv7 Node links libatomic. */
export const ARCH_PACKAGES = Object.freeze({ arm64: [], armhf: ['libatomic1'] });

export const ARCHES = Object.freeze(Object.keys(KERNEL_PACKAGE));

/** Paths dpkg never unpacks: documentation and translations nobody reads on a Pi. */
export const DPKG_EXCLUDES = Object.freeze([
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
  'path-exclude=/usr/share/lintian/*',
]);

/**
 * initramfs-tools' fsck hook finds the root file system's type by resolving
 * the root device, which does not exist in a chroot: it then leaves fsck out
 * of the initrd and every boot says "fsck not present, so skipping root file
 * system". Naming the type makes it copy fsck, logsave and fsck.ext4.
 */
export const INITRAMFS_FSTYPE_CONF = Object.freeze({ path: 'etc/initramfs-tools/conf.d/diode-root-fstype', text: 'FSTYPE=ext4' });

/** Bumped whenever the mmdebstrap invocation changes in a way the lists above do not show. */
export const ROOTFS_RECIPE_VERSION = 3;

export function packagesFor(arch) {
  if (!KERNEL_PACKAGE[arch]) throw new Error(`unknown architecture ${arch}; known: ${ARCHES.join(', ')}`);
  return [...COMMON_PACKAGES, KERNEL_PACKAGE[arch], ...ARCH_PACKAGES[arch]];
}

/** The APT sources of the image (build.mjs writes them into /etc/apt/sources.list too). */
export function aptSources({ security = true } = {}) {
  return [
    `deb ${MIRROR} ${SUITE} ${COMPONENTS.join(' ')}`,
    `deb ${MIRROR} ${SUITE}-updates ${COMPONENTS.join(' ')}`,
    ...(security ? [`deb ${SECURITY_MIRROR} ${SUITE}-security ${COMPONENTS.join(' ')}`] : []),
  ];
}

/**
 * The mmdebstrap argument vector that builds `arch`'s root file system into
 * `output`. `security: false` leaves out ${SUITE}-security at build time (for
 * a mirror whose security index is inconsistent); the image's sources.list
 * always has it.
 */
export function mmdebstrapArgs(arch, output, { security = true } = {}) {
  const sources = aptSources({ security });
  return [
    '--variant=minbase',
    `--architectures=${arch}`,
    `--include=${packagesFor(arch).join(',')}`,
    ...DPKG_EXCLUDES.map((o) => `--dpkgopt=${o}`),
    '--aptopt=APT::Install-Recommends "false"',
    // mkinitramfs under qemu-user takes ~40 min (MODULES=most: thousands of
    // emulated helper processes), and dpkg triggers run it two or three times
    // (kernel postinst, then initramfs-tools/udev triggers). Stub it while
    // packages install, and build the initrd once at the end.
    `--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.diode-real --add /usr/sbin/update-initramfs; mkdir -p "$1/usr/sbin"; install -m 755 ${STUB} "$1/usr/sbin/update-initramfs"`,
    `--customize-hook=mkdir -p "$1/${dirname(INITRAMFS_FSTYPE_CONF.path)}"; printf '%s\\n' '${INITRAMFS_FSTYPE_CONF.text}' > "$1/${INITRAMFS_FSTYPE_CONF.path}"`,
    '--customize-hook=rm -f "$1/usr/sbin/update-initramfs" "$1"/boot/initrd.img-*; chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs; for v in $(ls "$1/lib/modules"); do chroot "$1" update-initramfs -c -k "$v" || exit 1; done',
    // Nothing unique may be baked in: the first boot creates these.
    '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
    '--customize-hook=: > "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id "$1"/var/lib/systemd/random-seed',
    SUITE,
    output,
    ...sources,
  ];
}

/** Cache key: everything that decides the root file system's contents. */
export function rootfsKey(arch, opts = {}) {
  const h = createHash('sha256');
  h.update(JSON.stringify({ v: ROOTFS_RECIPE_VERSION, args: mmdebstrapArgs(arch, '', opts).map((a) => a.replace(STUB, 'STUB')) }));
  h.update(readFileSync(STUB));
  return h.digest('hex').slice(0, 16);
}

export function rootfsPath(cacheDir, arch, opts = {}) {
  return join(cacheDir, `rootfs-${arch}-${rootfsKey(arch, opts)}.tar`);
}

/**
 * Returns the cached tarball for `arch`, building it first if needed.
 * Output goes to a temporary name and is renamed when mmdebstrap succeeded.
 * `log` receives the path of the build log.
 */
export async function ensureRootfs({ arch, cacheDir, onLog = () => {}, nice = 10, security = true }) {
  mkdirSync(cacheDir, { recursive: true });
  const out = rootfsPath(cacheDir, arch, { security });
  if (existsSync(out) && statSync(out).size > 0) return { path: out, cached: true };
  const tmp = `${out}.partial.tar`;
  const logPath = `${out}.log`;
  rmSync(tmp, { force: true });
  onLog(logPath);
  const log = createWriteStream(logPath);
  const args = ['-n', String(nice), 'mmdebstrap', ...mmdebstrapArgs(arch, tmp, { security })];
  const code = await new Promise((resolve, reject) => {
    const child = spawn('nice', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    child.once('error', reject);
    child.once('close', resolve);
  });
  await new Promise((r) => log.end(r));
  if (code !== 0) {
    rmSync(tmp, { force: true });
    const err = new Error(`mmdebstrap failed (exit ${code}); log: ${logPath}`);
    err.logPath = logPath;
    throw err;
  }
  renameSync(tmp, out);
  return { path: out, cached: false };
}

// `node image/rootfs.mjs ARCH [--no-security]` builds (or finds) just this stage.
if (import.meta.url === `file://${process.argv[1]}`) {
  const arch = process.argv[2] ?? 'arm64';
  const security = !process.argv.includes('--no-security');
  const cacheDir = join(dirname(STUB), '..', '.cache/image');
  const t0 = Date.now();
  ensureRootfs({ arch, cacheDir, security, onLog: (p) => console.log(`rootfs ${arch}: building, log ${p}`) })
    .then((r) => console.log(`rootfs ${arch}: ${r.path} (${r.cached ? 'cached' : `built in ${Math.round((Date.now() - t0) / 1000)} s`})`))
    .catch((e) => { console.error(e.message); process.exit(1); });
}
