import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { ARCHIVE_FOOTER_BYTES, parseFooter, parseIndex, type ArchiveEntry } from './archive.ts';
import type { ChunkSource } from './loader.ts';

/** Reads `length` bytes at `position` of an open file. */
function pread(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error(`chunk archive: ${length - done} bytes missing at offset ${position + done}`);
    done += n;
  }
  return buf;
}

/**
 * The chunk archive appended to a single executable (see archive.ts), read
 * with pread from `path` (process.execPath). Undefined when the file carries
 * none. The file stays open for the process's life: chunks load on demand,
 * also long after start, and a file replaced by an update is still read as
 * the one this process started from.
 */
export function executableSource(path: string): ChunkSource | undefined {
  const fd = openSync(path, 'r');
  const size = fstatSync(fd).size;
  const footer = size >= ARCHIVE_FOOTER_BYTES ? parseFooter(pread(fd, size - ARCHIVE_FOOTER_BYTES, ARCHIVE_FOOTER_BYTES), size) : undefined;
  if (!footer) {
    closeSync(fd);
    return undefined;
  }
  const indexAt = size - ARCHIVE_FOOTER_BYTES - footer.indexLength;
  const index = parseIndex(pread(fd, indexAt, footer.indexLength).toString('utf8'), indexAt - footer.start);
  const entry = (name: string): ArchiveEntry => {
    const e = index.get(name);
    if (!e) throw new Error(`chunk ${name} is not in ${path}: a damaged or mixed-up executable`);
    return e;
  };
  return {
    source: (name) => {
      const e = entry(name);
      return pread(fd, footer.start + e.offset, e.length).toString('latin1');
    },
    codeCache: (name) => {
      const e = entry(name);
      return e.cacheLength > 0 ? pread(fd, footer.start + e.cacheOffset, e.cacheLength) : undefined;
    },
    filename: (name) => `${path}/${name}`,
  };
}
