import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { performance } from 'node:perf_hooks';
import { runInNewContext } from 'node:vm';

/** How often the heap watch looks, in ms. A full collection of these small heaps takes a few ms. */
export const HEAP_WATCH_MS = 1_000;

export interface HeapWatchLimits {
  /** Bytes of external memory (ArrayBuffers: socket and TLS chunks) allocated since the last full collection after which the next runs. */
  externalBytes: number;
  /** Bytes the heap may grow above its size after the last full collection, busy or not, before the next. */
  busySlackBytes: number;
  /** Bytes it may grow while the process is quiet (see quietUtilization) before a collection gives them back. */
  quietSlackBytes: number;
  /** Event-loop utilization (0..1) over one look below which the process counts as quiet. */
  quietUtilization: number;
  /** Quiet looks in a row before a quiet collection (a lull between two bursts is not the end of one). */
  quietLooks: number;
  /** Quiet looks after a quiet collection before the one follow-up that lets V8 shrink its young generation. */
  settleLooks: number;
}

export const DEFAULT_HEAP_WATCH_LIMITS: Readonly<HeapWatchLimits> = Object.freeze({
  externalBytes: 8 * 1024 * 1024,
  busySlackBytes: 16 * 1024 * 1024,
  quietSlackBytes: 4 * 1024 * 1024,
  quietUtilization: 0.05,
  quietLooks: 3,
  settleLooks: 6,
});

export interface HeapProbe {
  /**
   * V8's total heap size and external memory now (v8.getHeapStatistics: no
   * file descriptor, cannot throw EMFILE). V8 adds to its external-memory
   * count as buffers are allocated and takes off only at a full collection.
   */
  heap(): { total: number; external: number };
  /** Event-loop utilization since the previous call (0..1). */
  utilization(): number;
  /** A full, synchronous collection. */
  collect(): void;
}

export type CollectReason = 'external' | 'busy' | 'quiet' | 'settle';

/**
 * Decides, once per look, whether to run a full collection. V8 itself,
 * with incremental marking off (see tuneGcForStreaming), collects the old
 * generation only when it reaches its limit, which it sets from the heap
 * size and the mutator's speed: garbage of a busy tunnel, and of an attack
 * burst, stayed in RSS long after the live heap was back to its 10 MB.
 *
 * - external: `externalBytes` of ArrayBuffers (socket and TLS chunks,
 *   64 KiB each behind a JS object of a few dozen bytes) were allocated
 *   since the last full collection. The young generation fills only after
 *   gigabytes of such chunks, so dead ones piled up in malloc's arena
 *   (tens of MB), and every new high-water mark stayed in RSS; promoted
 *   ones (data that waited for a slow reader) are freed only by a full
 *   collection. A scavenge instead would promote the chunks still in
 *   flight: measured, it made it worse.
 * - busy: the heap grew `busySlackBytes` above its size after the last full
 *   collection: bounds the garbage kept under sustained churn.
 * - quiet: after `quietLooks` looks with the event loop almost idle, any
 *   growth above `quietSlackBytes` over the heap's size when it was last at
 *   rest (not after the last busy collection: a burst's collections run with
 *   the young generation at its maximum) is collected.
 * - start-up: the first time the process goes quiet (`quietLooks` looks),
 *   any growth at all since the watch began is collected, as a quiet
 *   collection (with its settle). Start-up allocates fast (chunks compiled,
 *   keys parsed, TLS set up) and V8 grows the young generation for it
 *   (publish: 1 MB to 4 MB of semi-spaces), but less than `quietSlackBytes`
 *   of heap: without this, an idle agent kept ≈ 1.7 MB of young generation
 *   it never used again for its whole life (RssAnon 11.8 -> 10.1 MB).
 * - settle: V8 shrinks the young generation (a burst grows it to its
 *   16 MB semi-spaces) only in a full collection that finds the allocation
 *   rate since the previous one low, which the first quiet collection after
 *   a burst cannot (the burst is in its sample). So one more follows after
 *   `settleLooks` quiet looks; the young generation is back to ≈ 1 MB and
 *   its pages go back to the OS: memory comes back ≈ 10 s after a burst.
 *
 * At most one full collection per look (a few ms for these heaps, up to
 * ≈ 50 ms on a loaded 2-core machine).
 */
export class HeapWatch {
  readonly #probe: HeapProbe;
  readonly #limits: HeapWatchLimits;
  /** Heap size right after the last full collection we ran (or at start). */
  #floor: number;
  /** Heap size right after the last collection made while quiet (or at start): the size at rest. */
  #restFloor: number;
  #quiet = 0;
  /** The previous look collected: its own pause is in this look's utilization, which then says nothing. */
  #collected = false;
  /** External memory right after the last full collection we ran (or at start). */
  #externalFloor: number;
  /** Looks since the last quiet collection, while a settle collection is owed (undefined: none owed). */
  #settling: number | undefined;
  /** The process has been quiet for `quietLooks` looks at least once (start-up is over). */
  #startedUp = false;
  readonly counts: Record<CollectReason, number> = { external: 0, busy: 0, quiet: 0, settle: 0 };

  constructor(probe: HeapProbe, limits: HeapWatchLimits = DEFAULT_HEAP_WATCH_LIMITS) {
    this.#probe = probe;
    this.#limits = limits;
    const { total, external } = probe.heap();
    this.#floor = total;
    this.#restFloor = total;
    this.#externalFloor = external;
  }

  /** One look; returns why it collected, if it did. */
  look(): CollectReason | undefined {
    const { total, external } = this.#probe.heap();
    const utilization = this.#probe.utilization();
    if (!this.#collected) {
      const quiet = utilization < this.#limits.quietUtilization;
      this.#quiet = quiet ? this.#quiet + 1 : 0;
      if (!quiet) this.#settling = undefined;
    }
    if (this.#settling !== undefined) this.#settling++;
    this.#collected = false;
    // A heap that shrank by itself (V8 collected) lowers the floor: growth is measured from there.
    if (total < this.#floor) this.#floor = total;
    if (total < this.#restFloor) this.#restFloor = total;
    if (external < this.#externalFloor) this.#externalFloor = external;
    let reason: CollectReason | undefined;
    if (external > this.#externalFloor + this.#limits.externalBytes) reason = 'external';
    else if (total > this.#floor + this.#limits.busySlackBytes) reason = 'busy';
    else if (this.#quiet >= this.#limits.quietLooks && total > this.#restFloor + (this.#startedUp ? this.#limits.quietSlackBytes : 0)) reason = 'quiet';
    else if (this.#settling !== undefined && this.#settling >= this.#limits.settleLooks) reason = 'settle';
    if (this.#quiet >= this.#limits.quietLooks) this.#startedUp = true;
    if (reason === undefined) return undefined;
    this.#probe.collect();
    this.#collected = true;
    this.counts[reason]++;
    this.#settling = reason === 'quiet' ? 0 : undefined;
    const after = this.#probe.heap();
    this.#floor = after.total;
    if (reason === 'quiet' || reason === 'settle') this.#restFloor = after.total;
    this.#externalFloor = after.external;
    return reason;
  }
}

/**
 * Turns V8's incremental marking off for this process, measured on the
 * tunnel's hot path (bench/README.md, "What the tuning found"), and starts
 * the heap watch above in its place.
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
 * single-file executable has no command line for V8); keeping it from
 * growing at all (--semi-space-growth-factor=1 can be set at run time),
 * with incremental marking back on, cost 35-55 % more CPU per GiB in the
 * bench's A/B runs. --no-incremental-marking can be set at run time.
 *
 * Incremental marking was also what reacted to external memory and what
 * gave memory back when a process went quiet (V8's memory reducer); the
 * heap watch takes both roles, at most one full collection per second.
 */
export function tuneGcForStreaming(): void {
  setFlagsFromString('--no-incremental-marking');
  setFlagsFromString('--expose-gc');
  // `gc` exists only in contexts made after --expose-gc: one is made on the first collection, not at
  // start (a new context is ≈ 2 % of a one-shot command's start-up, and most never collect).
  let gc: (() => void) | undefined;
  const collect = () => (gc ??= runInNewContext('gc') as () => void)();
  let elu = performance.eventLoopUtilization();
  const watch = new HeapWatch({
    heap: () => {
      const s = getHeapStatistics();
      return { total: s.total_heap_size, external: s.external_memory };
    },
    utilization: () => {
      const now = performance.eventLoopUtilization();
      const delta = performance.eventLoopUtilization(now, elu);
      elu = now;
      return delta.utilization;
    },
    collect,
  });
  // Nothing in a timer may throw (a relay at its open-files limit must keep running): the probes read no files.
  setInterval(() => {
    try {
      watch.look();
    } catch {
      // skip this look
    }
  }, HEAP_WATCH_MS).unref();
}
