// Types for qemu-user.mjs (plain JS so that cross-build/build.mjs runs on bare node).
export type ArmArch = 'arm64' | 'armv7';

export interface ArmSpec {
  readonly qemu: string;
  readonly binfmt: string;
  readonly loader: string;
  readonly sysrootEnv: string;
  readonly hostArch: string;
  readonly debArch: string;
}

export const ARM: Readonly<Record<ArmArch, ArmSpec>>;

export class QemuUnavailableError extends Error {
  readonly code: 'QEMU_UNAVAILABLE';
}

export function binfmtRegistered(arch: ArmArch): boolean;
export function sysrootFor(arch: ArmArch): string | undefined;
export function armCommand(
  arch: ArmArch,
  binary: string,
  args?: readonly string[],
): { file: string; args: string[]; env: Record<string, string>; via: 'native' | 'binfmt' | 'qemu' };
