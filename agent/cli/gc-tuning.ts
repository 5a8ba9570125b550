import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Bytes of ArrayBuffer memory (socket and TLS chunks) above which the watch below runs a full collection. */
const EXTERNAL_MEMORY_LIMIT = 32 * 1024 * 1024;
/** How often the watch looks, in ms. A full collection of these small heaps takes a few ms. */
const EXTERNAL_MEMORY_CHECK_MS = 1_000;

/**
 * Turns V8's incremental marking off for this process, measured on the
 * tunnel's hot path (bench/README.md, "What the tuning found").
 *
 * Why: a tunnel allocates fast and keeps little (buffers die young), so its
 * old generation stays small, around 10-15 MB. Once a burst of streams has
 * grown the young generation to its 16 MB maximum, V8 starts incremental
 * marking whenever old-space headroom is below the young generation's size
 * (to be able to promote all of it), which at that heap size is always: a
 * full mark-compact every 50-100 ms that frees nothing, 25-30 % of each
 * agent's CPU and ~40 % more CPU per GiB moved. Without incremental marking
 * a full collection runs only when the old generation has really grown to
 * its limit; with heaps this small it is a pause of a few milliseconds.
 * The young generation's size cannot be capped at run time (and a
 * single-file executable has no command line for V8), this flag can.
 *
 * Incremental marking was also what reacted to external memory: socket
 * chunks that lived long enough to be promoted (data waiting for a slow
 * reader) are freed only by a full collection. A cheap watch takes that
 * role: once a second, if ArrayBuffer memory is above 32 MiB, collect.
 */
export function tuneGcForStreaming(): void {
  setFlagsFromString('--no-incremental-marking');
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  setInterval(() => {
    // memoryUsage() reads /proc/self/stat for the RSS: at the open-files limit it throws EMFILE,
    // and nothing in a timer may throw. Skip this look; the next one may find a free descriptor.
    let arrayBuffers: number;
    try {
      arrayBuffers = process.memoryUsage().arrayBuffers;
    } catch {
      return;
    }
    if (arrayBuffers > EXTERNAL_MEMORY_LIMIT) gc();
  }, EXTERNAL_MEMORY_CHECK_MS).unref();
}
