import { INITIAL_STREAM_WINDOW } from './frame.ts';

/**
 * Bytes of receive window that the streams of many sessions may hold
 * together beyond the spec's 256 KiB each (what a peer may send us and we
 * must buffer if our reader stalls). A relay shares one among all its agent
 * sessions: past `limit`, windows stop growing and shrink back to 256 KiB
 * as they are re-granted, instead of the relay's memory growing.
 */
export class WindowBudget {
  readonly limit: number;
  #used = 0;

  readonly #onDenied: (() => void) | undefined;

  /** `limit` in bytes (0: no stream grows beyond 256 KiB); `onDenied` hears of every growth refused or window cut. */
  constructor(limit: number, onDenied?: () => void) {
    this.limit = limit;
    this.#onDenied = onDenied;
  }

  get used(): number {
    return this.#used;
  }

  /** True if a window may grow by `bytes` now. */
  canGrow(bytes: number): boolean {
    if (this.#used + bytes <= this.limit) return true;
    this.#onDenied?.();
    return false;
  }

  get over(): boolean {
    return this.#used > this.limit;
  }

  /** @internal A stream's window went from `from` to `to` bytes. */
  _move(from: number, to: number): void {
    this.#used += Math.max(0, to - INITIAL_STREAM_WINDOW) - Math.max(0, from - INITIAL_STREAM_WINDOW);
  }
}
