// How long a new stream waits for a data connection that is already on its
// way before it takes the relay link instead (docs/PROTOCOL.md §10,
// "Streams beyond the ready ones"). Shared by the client agent (a stream that
// found its pool empty) and the relay (a device leg whose device has
// connections coming), so it lives below both.
//
// Waiting is worth it where the stream would otherwise cross the relay link
// for its whole life: there the relay opens and seals every byte and the
// link's streams share one TCP connection, so a burst of streams beyond the
// ready pool crawls beside the spliced ones. A connection on its way arrives
// within two or three round trips (the `tokens` answer, the TCP handshake,
// the relay's answer to its opening); the bound is a small multiple of the
// round trip the link's pings measure, with a floor for the work a busy
// host does first (a burst's TLS handshakes run on the same cores: on a
// loaded 2-core host a refill took 100 ms in-process) and a ceiling so that a
// slow path adds at most a fraction of a set-up. Only streams beyond the
// ready ones wait; a stream that finds one ready never does.

/** Round trips (the link's ping) a stream waits for a data connection on its way. */
export const DATA_WAIT_RTTS = 3;
/** ms a stream may wait at least, whatever the round trip: what opening a connection costs in work on a loaded host. */
export const DATA_WAIT_MIN_MS = 50;
/** ms a stream waits at most: set-up over a slow path stays within a fraction of its round trips. */
export const DATA_WAIT_MAX_MS = 250;

/** ms to wait for a data connection on its way, given the link's round trip in ms (-1: not measured yet). */
export function dataWaitMs(rttMs: number): number {
  const byRtt = rttMs > 0 ? DATA_WAIT_RTTS * rttMs : 0;
  return Math.round(Math.min(DATA_WAIT_MAX_MS, Math.max(DATA_WAIT_MIN_MS, byRtt)));
}

/**
 * Streams waiting, each for at most its own time, for the next data
 * connection on its way (the client's pool, the relay's device legs): first
 * come first served; one whose time runs out gets undefined.
 */
export class Waiters<T> {
  readonly #list: Array<{ resolve: (value: T | undefined) => void; timer: NodeJS.Timeout }> = [];

  get length(): number {
    return this.#list.length;
  }

  /** The next value handed over within `ms`, else undefined (`onTimeout` runs first). */
  wait(ms: number, onTimeout?: () => void): Promise<T | undefined> {
    return new Promise((resolve) => {
      const waiter = {
        resolve,
        timer: setTimeout(() => {
          const at = this.#list.indexOf(waiter);
          if (at >= 0) this.#list.splice(at, 1);
          onTimeout?.();
          resolve(undefined);
        }, ms),
      };
      this.#list.push(waiter);
    });
  }

  /** Gives `value` to the first one waiting; false when none waits. */
  hand(value: T): boolean {
    const waiter = this.#list.shift();
    if (!waiter) return false;
    clearTimeout(waiter.timer);
    waiter.resolve(value);
    return true;
  }

  /** The ones beyond the first `keep` (the latest come) get undefined now. */
  settle(keep: number): void {
    while (this.#list.length > keep) {
      const waiter = this.#list.pop()!;
      clearTimeout(waiter.timer);
      waiter.resolve(undefined);
    }
  }
}
