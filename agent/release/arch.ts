import { closeSync, openSync, readSync } from 'node:fs';

/** The targets releases are built for (cross-build's names, with the OS). */
export type ReleaseArch = 'linux-x64' | 'linux-arm64' | 'linux-armv7';
export const RELEASE_ARCHES: readonly ReleaseArch[] = ['linux-x64', 'linux-arm64', 'linux-armv7'];

/** This process's target, or undefined where no release is built (another OS or CPU). */
export function ownArch(platform: string = process.platform, arch: string = process.arch): ReleaseArch | undefined {
  if (platform !== 'linux') return undefined;
  if (arch === 'x64') return 'linux-x64';
  if (arch === 'arm64') return 'linux-arm64';
  if (arch === 'arm') return 'linux-armv7';
  return undefined;
}

/** ELF e_machine values of the targets (and the word size that goes with each). */
const ELF_MACHINES: Record<number, { arch: ReleaseArch; class: number }> = {
  0x3e: { arch: 'linux-x64', class: 2 },
  0xb7: { arch: 'linux-arm64', class: 2 },
  0x28: { arch: 'linux-armv7', class: 1 },
};

/** bytes of an ELF header read: the ident (16), e_type (2) and e_machine (2). */
const ELF_HEAD_BYTES = 20;

/**
 * What an executable is built for, from its ELF header: an arch, 'other'
 * (an ELF file for another machine), or 'not-elf' (a script, such as a
 * bundle run by node through its #! line).
 */
export function elfArch(head: Buffer): ReleaseArch | 'other' | 'not-elf' {
  if (head.length < ELF_HEAD_BYTES || head.readUInt32BE(0) !== 0x7f454c46) return 'not-elf';
  const littleEndian = head[5] === 1;
  const machine = littleEndian ? head.readUInt16LE(18) : head.readUInt16BE(18);
  const known = ELF_MACHINES[machine];
  return known && known.class === head[4] && littleEndian ? known.arch : 'other';
}

/** The first bytes of a file (enough for elfArch). */
export function readHead(path: string): Buffer {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(ELF_HEAD_BYTES);
    const n = readSync(fd, head, 0, ELF_HEAD_BYTES, 0);
    return head.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}
