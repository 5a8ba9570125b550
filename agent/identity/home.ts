import { lstatSync, mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { DiodeError, UsageError, errorMessage } from '../util/errors.ts';

/** The system agent's state directory (the Pi image's, the Debian package's services). */
export const SYSTEM_HOME = '/var/lib/diode';

/**
 * The state directory holds the identity key, the config and (for a relay)
 * its certificate: ~/.config/diode; for root the system's SYSTEM_HOME, so a
 * system agent and an admin shell agree on one identity (the Pi image runs
 * its agent as root there), but only while root owns it: where it belongs
 * to another user (the Debian package gives it to the user diode), root
 * takes /root/.config/diode instead, never a directory whose links another
 * user may plant. The services name theirs in their units (DIODE_HOME).
 */
export function resolveHome(flag?: string, systemHome = SYSTEM_HOME): string {
  if (flag === '') throw new UsageError('--home is empty; give the state directory (--home DIR), or leave --home out for the default');
  if (flag) return flag;
  if (process.env.DIODE_HOME) return process.env.DIODE_HOME;
  if (typeof process.getuid === 'function' && process.getuid() === 0 && rootMayUse(systemHome)) return systemHome;
  return join(homedir(), '.config', 'diode');
}

/** `dir` is missing (root makes it), or a directory root owns (not a link). */
function rootMayUse(dir: string): boolean {
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === 0;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/**
 * Creates the state directory and its missing parents (mode 0700), one level
 * at a time. Not mkdirSync's `recursive`: on Node 20 it loops forever, at
 * full CPU and deaf to signals, where mkdir fails with ENOENT under a parent
 * that exists (/proc, /sys). Any failure is one line naming the directory.
 */
export function makeHome(home: string): void {
  const missing: string[] = [];
  let dir = resolve(home);
  for (;;) {
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a file further up; walking on finds it.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(dir) !== dir) {
        missing.push(dir);
        dir = dirname(dir);
        continue;
      }
      throw homeError(home, dir, err);
    }
    if (!isDir) throw homeError(home, dir, Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }));
    break;
  }
  for (const level of missing.reverse()) {
    try {
      mkdirSync(level, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && isDirectory(level)) continue; // made at the same moment by another agent
      throw homeError(home, level, err);
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** `at` is the path that failed: the one mkdir could not make, or the file in the way. */
function homeError(home: string, at: string, err: unknown): DiodeError {
  const parent = dirname(at);
  const why: Record<string, string> = {
    EACCES: `no permission to create ${at} (run as a user who may write to ${parent})`,
    EPERM: `${parent} does not allow creating ${at}`,
    EROFS: `${parent} is on a read-only file system`,
    ENOTDIR: `${at} is a file, not a directory`,
    ENOENT: `${parent} is a file system where no directory can be created (such as /proc or /sys)`,
    EEXIST: `${at} exists and is not a directory`,
  };
  const detail = why[(err as NodeJS.ErrnoException).code ?? ''] ?? errorMessage(err);
  return new DiodeError('EHOME', `cannot create the state directory ${home}: ${detail}; pick another with --home DIR or DIODE_HOME`);
}
