import { createHash } from 'node:crypto';
import { createReadStream, closeSync, openSync, readSync, statSync } from 'node:fs';
import { elfArch, readHead } from './arch.ts';
import { ReleaseError, type ReleaseManifest } from './manifest.ts';
import { isVersion, MAX_VERSION_CHARS } from './version.ts';

/** Size and SHA-256 of a file, read as a stream (an executable is ≈ 90 MB; a Pi has little memory). */
export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

/**
 * The file is the release the manifest signed: its size, then its hash, then
 * (an ELF executable) the machine it is built for. Throws ESIZE, EHASH or
 * EELF naming what differs.
 */
export async function checkReleaseFile(path: string, m: ReleaseManifest): Promise<void> {
  const what = `release ${m.version} for ${m.arch}`;
  const size = statSync(path).size;
  if (size !== m.size) throw new ReleaseError('ESIZE', `${what}: the file has ${size} bytes, the manifest signed ${m.size}`);
  const { sha256 } = await hashFile(path);
  if (sha256 !== m.sha256) throw new ReleaseError('EHASH', `${what}: the file's SHA-256 is ${sha256}, the manifest signed ${m.sha256}`);
  const built = elfArch(readHead(path));
  if (built !== 'not-elf' && built !== m.arch) throw new ReleaseError('EELF', `${what}: the file is an executable for ${built === 'other' ? 'another machine' : built}`);
}

/**
 * The text every build carries once (agent/cli/version.ts): `diode-version=<version>;`.
 * `diode release sign` reads a build's version from it without running it
 * (an arm64 executable on an x64 machine).
 */
export const VERSION_MARK_PREFIX = 'diode-version=';
/** bytes read at a time while looking for the mark. */
const SCAN_CHUNK_BYTES = 4 * 1024 * 1024;

/** The distinct versions marked in a file (one for a diode build; none for anything else). */
export function readVersionMarks(path: string): string[] {
  const prefix = Buffer.from(VERSION_MARK_PREFIX, 'latin1');
  const overlap = prefix.length + MAX_VERSION_CHARS + 1;
  const found = new Set<string>();
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(SCAN_CHUNK_BYTES + overlap);
    let carried = 0;
    let position = 0;
    for (;;) {
      const n = readSync(fd, buf, carried, SCAN_CHUNK_BYTES, position);
      if (n === 0) break;
      position += n;
      const end = carried + n;
      let at = buf.indexOf(prefix, 0);
      while (at >= 0 && at < end) {
        const semi = buf.indexOf(0x3b, at + prefix.length);
        if (semi > 0 && semi < end && semi - at - prefix.length <= MAX_VERSION_CHARS) {
          const version = buf.toString('latin1', at + prefix.length, semi);
          if (isVersion(version)) found.add(version);
        }
        at = buf.indexOf(prefix, at + 1);
      }
      // Keep the tail: a mark may straddle two reads.
      const keep = Math.min(overlap, end);
      buf.copy(buf, 0, end - keep, end);
      carried = keep;
    }
  } finally {
    closeSync(fd);
  }
  return [...found];
}
