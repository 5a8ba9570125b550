import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** ms: the longest gap between two looks at the relayed streams (the idle timeout is enforced to within this). */
const MAX_SWEEP_MS = 30_000;

interface Pair {
  a: Duplex;
  b: Duplex;
  /** A chunk went through since the last sweep. */
  active: boolean;
  lastActive: number;
  /** Bytes the TCP legs had read at the last sweep (see bytesRead). */
  read: number;
}

/**
 * Bytes the pair's TCP legs read so far: a spliced data connection that
 * reads into a reused buffer (util/read-buffer.ts) emits no 'data' events.
 */
function bytesRead(pair: Pair): number {
  let n = 0;
  if (pair.a instanceof Socket) n += pair.a.bytesRead;
  if (pair.b instanceof Socket) n += pair.b.bytesRead;
  return n;
}

/**
 * Resets relayed streams that moved no byte either way for `idleMs`: a
 * stream whose far end stopped reading holds a window and a forward buffer
 * on the relay for as long as it stays open. One timer for all pairs; the
 * hot path only sets a flag per chunk of a mux leg (TCP legs: bytesRead).
 */
export class IdleSweeper {
  readonly #idleMs: number;
  readonly #onIdle: (a: Duplex, b: Duplex, idleMs: number) => void;
  readonly #pairs = new Set<Pair>();
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;

  constructor(idleMs: number, onIdle: (a: Duplex, b: Duplex, idleMs: number) => void, now: () => number = Date.now) {
    this.#idleMs = idleMs;
    this.#onIdle = onIdle;
    this.#now = now;
  }

  /** Watches a spliced pair until either side closes. */
  watch(a: Duplex, b: Duplex): void {
    const pair: Pair = { a, b, active: false, lastActive: this.#now(), read: 0 };
    pair.read = bytesRead(pair);
    const touch = () => {
      pair.active = true;
    };
    // A TCP leg's reads are counted by bytesRead: a listener of its own on it would be one more call
    // (and a copy of the listener list, Node's emit with two) per chunk on the hot path.
    const watched = [a, b].filter((leg) => !(leg instanceof Socket));
    for (const leg of watched) leg.on('data', touch);
    const forget = () => {
      this.#pairs.delete(pair);
      for (const leg of watched) leg.off('data', touch);
      if (this.#pairs.size === 0) this.#stopTimer();
    };
    a.once('close', forget);
    b.once('close', forget);
    this.#pairs.add(pair);
    if (this.#timer === undefined) {
      this.#timer = setInterval(this.sweep, Math.max(50, Math.min(MAX_SWEEP_MS, Math.floor(this.#idleMs / 4)))).unref();
    }
  }

  /** One look at every pair (also called by tests with a fake clock). */
  readonly sweep = (): void => {
    const now = this.#now();
    for (const pair of this.#pairs) {
      const read = bytesRead(pair);
      if (read !== pair.read) pair.active = true;
      pair.read = read;
      if (pair.active) {
        pair.active = false;
        pair.lastActive = now;
      } else if (now - pair.lastActive >= this.#idleMs) {
        this.#pairs.delete(pair);
        try {
          this.#onIdle(pair.a, pair.b, now - pair.lastActive);
        } catch {
          // Nothing in a timer may throw; the pair is forgotten either way.
        }
      }
    }
    if (this.#pairs.size === 0) this.#stopTimer();
  };

  get size(): number {
    return this.#pairs.size;
  }

  close(): void {
    this.#stopTimer();
    this.#pairs.clear();
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
