// The chunk archive a single executable carries after its last ELF byte
// (cross-build appends it; scripts/chunk-archive.mjs writes it). Layout:
//
//   offset        size  field
//   A             L     the chunks' bytes (sources and code caches), back to back
//   A + L         I     index: UTF-8 JSON {"<chunk name>": [offset, length, cacheOffset, cacheLength], ...}
//                       (offsets from A; cacheLength 0: no code cache)
//   A + L + I     8     A, unsigned big-endian (the archive's start in the file)
//   +8            4     I, unsigned big-endian
//   +4            8     magic "DIODECHK"
//
// The loader reads the 20-byte footer, then the index, then each chunk only
// when it is loaded (pread: the executable's other pages are never touched).

export const ARCHIVE_MAGIC = 'DIODECHK';
/** Bytes of the footer: archive start (8), index length (4), magic (8). */
export const ARCHIVE_FOOTER_BYTES = 20;
/** The largest index a loader accepts (≈ 100 bytes per chunk; a program has tens). */
export const MAX_ARCHIVE_INDEX_BYTES = 1024 * 1024;

/** Where one chunk's source and code cache lie, relative to the archive's start. */
export interface ArchiveEntry {
  offset: number;
  length: number;
  cacheOffset: number;
  cacheLength: number;
}

export interface ArchiveFooter {
  start: number;
  indexLength: number;
}

/** Reads the footer (the file's last ARCHIVE_FOOTER_BYTES); undefined when the file carries no archive. */
export function parseFooter(footer: Buffer, fileSize: number): ArchiveFooter | undefined {
  if (footer.length !== ARCHIVE_FOOTER_BYTES || footer.toString('latin1', 12, 20) !== ARCHIVE_MAGIC) return undefined;
  const start = footer.readUInt32BE(0) * 2 ** 32 + footer.readUInt32BE(4);
  const indexLength = footer.readUInt32BE(8);
  if (indexLength > MAX_ARCHIVE_INDEX_BYTES || start + indexLength + ARCHIVE_FOOTER_BYTES > fileSize) return undefined;
  return { start, indexLength };
}

/** The index, checked: every entry inside the archive's bytes (which end where the index begins). */
export function parseIndex(text: string, dataLength: number): Map<string, ArchiveEntry> {
  const raw = JSON.parse(text) as Record<string, unknown>;
  const index = new Map<string, ArchiveEntry>();
  for (const [name, value] of Object.entries(raw)) {
    if (!Array.isArray(value) || value.length !== 4 || !value.every((n) => Number.isSafeInteger(n) && n >= 0)) throw new Error(`chunk archive: bad entry for ${name}`);
    const [offset, length, cacheOffset, cacheLength] = value as number[];
    if (offset + length > dataLength || cacheOffset + cacheLength > dataLength) throw new Error(`chunk archive: entry ${name} lies outside the archive`);
    index.set(name, { offset, length, cacheOffset, cacheLength });
  }
  return index;
}
