import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { checkOffer, ReleaseError, type OfferPolicy, type ReleaseManifest } from '../release/manifest.ts';
import { checkReleaseFile } from '../release/file.ts';
import { ownArch } from '../release/arch.ts';
import { compareVersions, isVersion } from '../release/version.ts';
import { releaseVersion } from '../cli/version.ts';
import { readConfigValue } from '../config/read.ts';
import {
  ensureUpdateDir,
  formatSelection,
  giveToOwner,
  pruneReleases,
  readBad,
  readCurrent,
  writeRecord,
  writeUpdateFile,
  type Selection,
} from './layout.ts';

/**
 * ms the new executable's --version may take: a Pi 3 starts node in a second
 * or two; a Pi Zero 2 under load, or QEMU emulating one, takes tens of seconds.
 */
export const VERSION_RUN_TIMEOUT_MS = 120_000;

/** What this agent takes: its update-keys (none: it never updates), its architecture, its version, what was rolled back. */
export function updatePolicy(home: string): OfferPolicy & { keys: string[] } {
  const keys = (readConfigValue(home, 'update-keys') ?? '').split(',').filter(Boolean);
  return { keys, arch: ownArch(), running: runningVersion(home), rolledBack: readBad(home) };
}

/**
 * The version this home's agent runs: the installed update when it is newer
 * than this program (`diode update --from` may be run by the packaged
 * program while the service runs an update), else this program's.
 */
export function runningVersion(home: string): string {
  const own = releaseVersion();
  const current = readCurrent(home)?.version;
  if (!current || !isVersion(current)) return own;
  return !isVersion(own) || compareVersions(current, own) > 0 ? current : own;
}

/** The new executable runs here and says the version its manifest signed. */
function checkRuns(path: string, m: ReleaseManifest): Promise<void> {
  return new Promise((resolve, reject) => {
    // Not on trial and not under the launcher: --version only prints.
    const env = { ...process.env, DIODE_LAUNCHER: '', DIODE_TRIAL: '' };
    execFile(path, ['--version'], { timeout: VERSION_RUN_TIMEOUT_MS, env, maxBuffer: 64 * 1024 }, (err, stdout) => {
      const said = stdout.trim().split('\n')[0] ?? '';
      if (err) return reject(new ReleaseError('ERUN', `release ${m.version}: ${path} --version failed (${err.message.split('\n')[0]})`));
      if (!said.startsWith(`diode ${m.version} `)) return reject(new ReleaseError('ERUN', `release ${m.version}: its --version says "${said.slice(0, 80)}"`));
      resolve();
    });
  });
}

export interface Applied {
  version: string;
  previous: Selection | 'packaged';
}

/**
 * Installs a release: the checks of checkOffer again (signer in update-keys,
 * signature, architecture, newer, never rolled back), then the file (size,
 * SHA-256, ELF machine), then its --version; only then it becomes
 * `update/diode-<version>` and the selection, on trial, keeping the previous
 * one to go back to. `staged` is a file in the update folder (a download) or
 * elsewhere (diode update --from: copied in first, and the copy is checked).
 * Throws a ReleaseError naming the first check that failed; the selection is
 * then untouched.
 */
export async function applyRelease(home: string, staged: string, manifest: ReleaseManifest): Promise<Applied> {
  const policy = updatePolicy(home);
  checkOffer(manifest, policy);
  const dir = ensureUpdateDir(home);
  let copy = staged;
  if (!staged.startsWith(`${dir}/`)) {
    copy = join(dir, `.incoming-${process.pid}`);
    copyFileSync(staged, copy);
  }
  const file = `diode-${manifest.version}`;
  const target = join(dir, file);
  try {
    await checkReleaseFile(copy, manifest);
    chmodSync(copy, 0o755);
    await checkRuns(copy, manifest);
    giveToOwner(home, copy);
    renameSync(copy, target);
  } catch (err) {
    rmSync(copy, { force: true });
    throw err;
  }
  writeUpdateFile(home, `${file}.release.json`, JSON.stringify(manifest, null, 1) + '\n', 0o644);
  const selection: Selection = { version: manifest.version, file, sha256: manifest.sha256 };
  const current = readCurrent(home);
  const previous: Selection | 'packaged' = current && current.file !== file ? current : 'packaged';
  // The trial first, then the switch: a crash between the two leaves a stale trial, which the launcher drops.
  writeUpdateFile(home, 'trial', `${formatSelection(selection)} 0\n${previous === 'packaged' ? 'packaged' : formatSelection(previous)}\n`);
  writeUpdateFile(home, 'current', `${formatSelection(selection)}\n`);
  writeRecord(home, (r) => (r.applied = (r.applied ?? 0) + 1));
  pruneReleases(home, previous === 'packaged' ? [selection] : [selection, previous]);
  return { version: manifest.version, previous };
}
