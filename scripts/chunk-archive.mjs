// Writes the chunk archive that cross-build appends to each single
// executable (the layout is in agent/boot/archive.ts, which reads it).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const MAGIC = 'DIODECHK';
const FOOTER_BYTES = 20;

/** The chunk files of a build (scripts/build.mjs wrote them to `dir`). */
export function chunkNames(dir) {
  return readdirSync(dir).filter((f) => f.endsWith('.js')).sort();
}

/**
 * The archive for the chunks in `dir`, to be appended at `start` (the
 * executable's size before it): sources, then code caches (`caches`: name →
 * Buffer, optional), then the index and the footer.
 */
export function chunkArchive(dir, start, caches = {}) {
  const parts = [];
  const index = {};
  let offset = 0;
  const put = (buf) => {
    parts.push(buf);
    offset += buf.length;
    return offset - buf.length;
  };
  for (const name of chunkNames(dir)) {
    const source = readFileSync(join(dir, name));
    const at = put(source);
    const cache = caches[name];
    index[name] = [at, source.length, cache ? put(cache) : 0, cache ? cache.length : 0];
  }
  const indexBytes = Buffer.from(JSON.stringify(index), 'utf8');
  const footer = Buffer.alloc(FOOTER_BYTES);
  footer.writeUInt32BE(Math.floor(start / 2 ** 32), 0);
  footer.writeUInt32BE(start % 2 ** 32, 4);
  footer.writeUInt32BE(indexBytes.length, 8);
  footer.write(MAGIC, 12, 'latin1');
  return Buffer.concat([...parts, indexBytes, footer]);
}
