// How to run a linux-arm64 or linux-armv7 (armhf) executable on this host.
//
// Order of preference:
//   1. the host is that architecture: run it directly;
//   2. binfmt_misc has qemu registered for it: run it directly, the kernel
//      hands it to qemu (set QEMU_LD_PREFIX if the target's libraries are in
//      a sysroot rather than installed with dpkg multiarch);
//   3. qemu-aarch64-static / qemu-arm-static on PATH: run qemu explicitly,
//      with `-L <sysroot>` when the target's dynamic loader is not installed
//      (sysroot from DIODE_SYSROOT_ARM64 / DIODE_SYSROOT_ARMHF / QEMU_LD_PREFIX).
//      DIODE_QEMU=explicit forces this path even when binfmt is registered.
// Anything else is an error that says what to install
// (cross-build/setup-host.sh does all of it on Debian).
//
// Shared by cross-build/build.mjs (plain node) and test/helpers/qemu-user.ts.
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** @typedef {'arm64' | 'armv7'} ArmArch */

/** Per architecture: qemu names, the dynamic loader node asks for, the env var naming a sysroot. */
export const ARM = Object.freeze({
  arm64: Object.freeze({
    qemu: 'qemu-aarch64-static',
    binfmt: 'qemu-aarch64',
    loader: '/lib/ld-linux-aarch64.so.1',
    sysrootEnv: 'DIODE_SYSROOT_ARM64',
    hostArch: 'arm64',
    debArch: 'arm64',
  }),
  armv7: Object.freeze({
    qemu: 'qemu-arm-static',
    binfmt: 'qemu-arm',
    loader: '/lib/ld-linux-armhf.so.3',
    sysrootEnv: 'DIODE_SYSROOT_ARMHF',
    hostArch: 'arm',
    debArch: 'armhf',
  }),
});

const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';
const SETUP_HINT = 'run `sh cross-build/setup-host.sh` as root (Debian) to install qemu-user-static and the arm64/armhf libraries';

export class QemuUnavailableError extends Error {
  code = 'QEMU_UNAVAILABLE';
  name = 'QemuUnavailableError';
}

/** @param {string} name */
function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** @param {ArmArch} arch @returns {boolean} binfmt_misc has an enabled qemu entry for arch */
export function binfmtRegistered(arch) {
  try {
    if (readFileSync(join(BINFMT_DIR, 'status'), 'utf8').trim() !== 'enabled') return false;
    return readFileSync(join(BINFMT_DIR, ARM[arch].binfmt), 'utf8').startsWith('enabled');
  } catch {
    return false;
  }
}

/**
 * The sysroot to give qemu (-L / QEMU_LD_PREFIX), or undefined when the
 * target's loader is installed on the host (dpkg multiarch) and none is needed.
 * @param {ArmArch} arch
 */
export function sysrootFor(arch) {
  const fromEnv = process.env[ARM[arch].sysrootEnv] || process.env.QEMU_LD_PREFIX;
  if (fromEnv) return fromEnv;
  if (existsSync(ARM[arch].loader)) return undefined;
  throw new QemuUnavailableError(
    `the ${ARM[arch].debArch} dynamic loader ${ARM[arch].loader} is missing and no sysroot is set ` +
      `(${ARM[arch].sysrootEnv}=<rootfs>); ${SETUP_HINT}`,
  );
}

/**
 * How to run `binary args...` for arch on this host.
 * @param {ArmArch} arch
 * @param {string} binary
 * @param {readonly string[]} [args]
 * @returns {{ file: string, args: string[], env: Record<string, string>, via: 'native' | 'binfmt' | 'qemu' }}
 *   `env` holds only what must be added to the caller's environment.
 */
export function armCommand(arch, binary, args = []) {
  const spec = ARM[arch];
  if (!spec) throw new TypeError(`unknown ARM architecture ${arch}`);
  if (process.platform === 'linux' && process.arch === spec.hostArch) {
    return { file: binary, args: [...args], env: {}, via: 'native' };
  }
  const sysroot = sysrootFor(arch);
  // DIODE_QEMU=explicit skips binfmt (to test that path, or if binfmt's qemu is a different build).
  if (process.env.DIODE_QEMU !== 'explicit' && binfmtRegistered(arch)) {
    return { file: binary, args: [...args], env: sysroot ? { QEMU_LD_PREFIX: sysroot } : {}, via: 'binfmt' };
  }
  const qemu = onPath(spec.qemu);
  if (!qemu) {
    throw new QemuUnavailableError(`${spec.qemu} is not on PATH and binfmt_misc has no ${spec.binfmt} entry; ${SETUP_HINT}`);
  }
  return { file: qemu, args: [...(sysroot ? ['-L', sysroot] : []), binary, ...args], env: {}, via: 'qemu' };
}
