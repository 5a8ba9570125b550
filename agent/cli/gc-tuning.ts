import { setFlagsFromString } from 'node:v8';

/**
 * Turns V8's incremental marking off for this process, measured on the
 * tunnel's hot path (bench/README.md, "GC").
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
 */
export function tuneGcForStreaming(): void {
  setFlagsFromString('--no-incremental-marking');
}
