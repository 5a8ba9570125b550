/** The chunk files of a build (scripts/build.mjs wrote them to `dir`). */
export function chunkNames(dir: string): string[];
/** The archive for the chunks in `dir`, to be appended at `start` (the executable's size before it). */
export function chunkArchive(dir: string, start: number, caches?: Record<string, Buffer>): Buffer;
