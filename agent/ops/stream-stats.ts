import type { Socket } from 'node:net';

/** The last thing that went wrong in an agent, for `diode status`. */
export interface LastError {
  /** ms since the epoch */
  at: number;
  message: string;
}

/** Bytes through this agent's tunnels: rx came out of the tunnel, tx went into it. */
export interface ByteTotals {
  rx: number;
  tx: number;
}

export interface StreamCounters {
  /** Streams that were set up and carried bytes. */
  opened: number;
  /** Streams open right now. */
  open: number;
  /** Streams refused or failed before any byte, by reason (denied, no-such-port, offline, ...). */
  failed: Record<string, number>;
  bytes: ByteTotals;
}

/**
 * Bytes through a set of sockets, read from their own bytesRead/bytesWritten
 * (the socket counts them anyway): live ones at each look, closed ones
 * folded into totals. What a socket reads is tx, what it writes rx.
 */
export class ByteMeter {
  readonly #live = new Set<Socket>();
  #rx = 0;
  #tx = 0;

  add(socket: Socket): void {
    this.#live.add(socket);
    socket.once('close', () => {
      this.#live.delete(socket);
      this.#tx += socket.bytesRead;
      this.#rx += socket.bytesWritten;
    });
  }

  get live(): number {
    return this.#live.size;
  }

  totals(): ByteTotals {
    let rx = this.#rx;
    let tx = this.#tx;
    for (const socket of this.#live) {
      tx += socket.bytesRead;
      rx += socket.bytesWritten;
    }
    return { rx, tx };
  }
}

/**
 * An agent's stream counters, kept off the hot path: a tunnel's bytes are
 * read from its plain TCP leg's own bytesRead/bytesWritten (the kernel
 * socket counts them anyway) while it is open, and folded into the totals
 * when it closes. `diode status` and `--metrics` read the same object.
 */
export class StreamStats {
  #opened = 0;
  readonly #failed = new Map<string, number>();
  readonly #meter = new ByteMeter();
  #lastError: LastError | undefined;
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * Counts a tunnel whose plain TCP leg is `socket` (a device's connection
   * to its local port, a socksd or bind client): what that socket reads goes
   * into the tunnel (tx), what it writes came out of it (rx).
   */
  track(socket: Socket): void {
    this.#opened++;
    this.#meter.add(socket);
  }

  /** A stream refused or failed before it carried bytes; `reason` is a reply code or a short word. */
  fail(reason: string, message?: string): void {
    this.#failed.set(reason, (this.#failed.get(reason) ?? 0) + 1);
    if (message) this.error(message);
  }

  error(message: string): void {
    this.#lastError = { at: this.#now(), message };
  }

  get lastError(): LastError | undefined {
    return this.#lastError;
  }

  bytes(): ByteTotals {
    return this.#meter.totals();
  }

  snapshot(): StreamCounters {
    return { opened: this.#opened, open: this.#meter.live, failed: Object.fromEntries([...this.#failed].sort()), bytes: this.bytes() };
  }
}
