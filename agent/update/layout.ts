import { chownSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { makeHome } from '../identity/home.ts';
import { writeFileAtomic } from '../util/atomic-file.ts';

/**
 * The state directory's `update/` folder, which the launcher
 * (packaging/diode-launch, installed as /usr/lib/diode/launch) reads:
 *
 *   diode-<version>                 an installed release (0755), with
 *   diode-<version>.release.json    its signed manifest
 *   current      "<version> <file> <sha256>": what the launcher runs (absent: the packaged agent)
 *   trial        "<version> <file> <sha256> <starts>" and, on a second line,
 *                the previous `current` or "packaged": a new update not yet proven
 *   committed    "<version>": the agent on trial reached a relay
 *   bad          versions rolled back, one per line: never tried again
 *   rollback     "<unix s> <from> <to> <reason>": the last rollback
 *   rollbacks    every rollback, one line each
 *   state.json   the agent's own record: the last check and its result, updates applied
 */
export const UPDATE_DIR = 'update';
/** ms after which a half-written download or copy left by a process that died is removed. */
const STALE_TEMPORARY_MS = 10 * 60_000;
/** bytes: the largest of these small files read (they hold a line or a few). */
const MAX_SMALL_FILE_BYTES = 64 * 1024;

export interface Selection {
  version: string;
  file: string;
  sha256: string;
}

export interface Trial extends Selection {
  starts: number;
  previous: Selection | 'packaged';
}

export interface Rollback {
  /** ms since the epoch */
  at: number;
  from: string;
  to: string;
  reason: string;
}

export interface UpdateRecord {
  lastCheck?: { at: number; result: string };
  /** Updates this home switched to (counted when switched, before the trial). */
  applied?: number;
}

export function updateDir(home: string): string {
  return join(home, UPDATE_DIR);
}

/** Makes the folder (0700) inside the state directory; returns its path. */
export function ensureUpdateDir(home: string): string {
  makeHome(home);
  const dir = updateDir(home);
  try {
    mkdirSync(dir, { mode: 0o700 });
    giveToOwner(home, dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return dir;
}

export function readSmall(path: string): string | undefined {
  try {
    if (statSync(path).size > MAX_SMALL_FILE_BYTES) return undefined;
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** "<version> <file> <sha256>" as the launcher checks it. */
export function parseSelection(line: string | undefined): Selection | undefined {
  const m = /^([0-9A-Za-z.-]+) (diode-[0-9][0-9A-Za-z._-]*) ([0-9a-f]{64})\b/.exec((line ?? '').trim());
  return m ? { version: m[1], file: m[2], sha256: m[3] } : undefined;
}

export function formatSelection(s: Selection): string {
  return `${s.version} ${s.file} ${s.sha256}`;
}

export function readCurrent(home: string): Selection | undefined {
  return parseSelection(readSmall(join(updateDir(home), 'current')));
}

export function readTrial(home: string): Trial | undefined {
  const text = readSmall(join(updateDir(home), 'trial'));
  if (!text) return undefined;
  const [first, second] = text.split('\n');
  const selection = parseSelection(first);
  if (!selection) return undefined;
  const starts = Number(first.trim().split(' ')[3] ?? 0);
  const previous = second?.trim() === 'packaged' || !second?.trim() ? 'packaged' : parseSelection(second);
  return { ...selection, starts: Number.isSafeInteger(starts) ? starts : 0, previous: previous ?? 'packaged' };
}

/** Versions rolled back here (never tried again). */
export function readBad(home: string): string[] {
  return (readSmall(join(updateDir(home), 'bad')) ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
}

function parseRollback(line: string): Rollback | undefined {
  const m = /^(\d+) (\S+) (\S+) (.*)$/.exec(line.trim());
  return m ? { at: Number(m[1]) * 1000, from: m[2], to: m[3], reason: m[4] } : undefined;
}

export function readRollbacks(home: string): Rollback[] {
  return (readSmall(join(updateDir(home), 'rollbacks')) ?? '')
    .split('\n')
    .map(parseRollback)
    .filter((r): r is Rollback => r !== undefined);
}

export function readRecord(home: string): UpdateRecord {
  try {
    const parsed = JSON.parse(readSmall(join(updateDir(home), 'state.json')) ?? '{}') as UpdateRecord;
    return parsed && typeof parsed === 'object' ? parsed : {};
  } catch {
    return {};
  }
}

export function writeRecord(home: string, change: (record: UpdateRecord) => void): void {
  const record = readRecord(home);
  change(record);
  writeUpdateFile(home, 'state.json', JSON.stringify(record) + '\n');
}

/**
 * Writes one file of the folder whole. Run as root for a service's home
 * (diode update --from with sudo), the file goes to the home's owner, who
 * runs the agent and the launcher.
 */
export function writeUpdateFile(home: string, name: string, text: string | Buffer, mode = 0o600): string {
  const path = join(ensureUpdateDir(home), name);
  writeFileAtomic(path, text, mode);
  giveToOwner(home, path);
  return path;
}

export function giveToOwner(home: string, path: string): void {
  if (process.getuid?.() !== 0) return;
  const owner = statSync(home);
  if (owner.uid !== 0) chownSync(path, owner.uid, owner.gid);
}

/** Removes installed releases other than the ones named (the current one and the one to go back to). */
export function pruneReleases(home: string, keep: readonly Selection[]): void {
  const dir = updateDir(home);
  const names = new Set(keep.flatMap((s) => [s.file, `${s.file}.release.json`]));
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    if (/^diode-[0-9]/.test(name) && !names.has(name)) rmSync(join(dir, name), { force: true });
    if (name.startsWith('.download-') || name.startsWith('.incoming-')) {
      try {
        if (Date.now() - statSync(join(dir, name)).mtimeMs > STALE_TEMPORARY_MS) rmSync(join(dir, name), { force: true });
      } catch {}
    }
  }
}

/** The agent on trial reached a relay: tell the launcher, which keeps this version. */
export function commitTrial(home: string, version: string): void {
  writeUpdateFile(home, 'committed', `${version}\n`);
}
