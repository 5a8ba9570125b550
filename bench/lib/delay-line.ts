import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

// A user-space delay line for emulated network paths on loopback (this
// kernel has no sch_netem). A DelayLink is one emulated path between two
// places with a fixed one-way delay each way and an optional rate per
// direction; link.forward(target) listens on 127.0.0.1 and carries every
// connection made to it to `target` over that path.
//
//   const wan = new DelayLink({ oneWayMs: 20, upBitsPerSec: 20e6 });   // device uplink 20 Mbit/s
//   const line = await wan.forward({ port: relayPort });              // the device dials line.port
//   ...
//   await wan.close();
//
// What it emulates, and what not (why a TCP relay and not a TUN pair: see
// bench/README.md, "Emulated paths"):
// - Every byte takes `oneWayMs` from the moment it is read on one side to the
//   moment it is written on the other, in order, per direction; an end (FIN)
//   or a reset travels behind the bytes sent before it, with the same delay.
// - The TCP handshake's round trip: the connection to the target is opened
//   3 one-way delays after the dialer's connect (SYN, SYN-ACK, ACK), and
//   what the dialer sent meanwhile is held until then. So a client that
//   speaks first (TLS) gets its first answer 4 one-way delays after it
//   dialled, a server that speaks first (ssh) is heard after 4 as well: as
//   on a real path. (The dialer's own connect() returns at once, so only its
//   CPU work before its first write overlaps the handshake.)
// - A rate: each direction is one queue shared by every connection of the
//   link (one bottleneck, as a home uplink is). Bytes leave in segments of
//   SEGMENT_PAYLOAD_BYTES, each taking its serialisation time (payload +
//   SEGMENT_OVERHEAD_BYTES) at the rate, then the one-way delay.
// - Not emulated: the endpoints' kernels see loopback, so TCP slow start,
//   congestion windows and Nagle/delayed-ACK stalls over the path do not
//   happen; application-level windows (yamux, ssh channels) do, since their
//   updates travel through the line.

/** TCP payload of one segment on a 1500-byte MTU path with timestamps (1500 − 20 IP − 20 TCP − 12 options). */
export const SEGMENT_PAYLOAD_BYTES = 1448;
/** Bytes on the wire per segment besides the payload (IP and TCP headers with timestamps), counted against the rate. */
export const SEGMENT_OVERHEAD_BYTES = 52;
/** One-way delays the TCP handshake takes before the listener's accept: SYN, SYN-ACK, ACK. */
export const HANDSHAKE_ONE_WAY_DELAYS = 3;
/** A direction without a rate stops reading from its senders past this many bytes in flight (keeps memory bounded: ≈ 1 GB/s at 15 ms). */
export const UNLIMITED_BUFFER_BYTES = 16 * 1024 * 1024;
/** ms of queue a rate-limited direction holds beyond its bandwidth-delay product before senders are paused (a home router's buffer). */
export const DEFAULT_QUEUE_MS = 100;
/** A sender paused for a full buffer is resumed once the buffer is down to this fraction of its size. */
const RESUME_FRACTION = 0.5;
/** Writes to one socket beyond this many buffered bytes pause the far side's reading until it drains. */
const SOCKET_HIGH_WATER_BYTES = 1024 * 1024;

export interface DelayLinkOptions {
  /** One-way delay, ms, the same in both directions. */
  oneWayMs: number;
  /** Rate from the dialer to the target (its uplink), bits/s; undefined: no limit. */
  upBitsPerSec?: number;
  /** Rate from the target to the dialer, bits/s; undefined: no limit. */
  downBitsPerSec?: number;
  /** Bytes one direction holds (queued and on the wire) before it stops reading from senders; default: its BDP plus DEFAULT_QUEUE_MS of queue at its rate, or UNLIMITED_BUFFER_BYTES without a rate. */
  bufferBytes?: number;
}

export interface DelayTarget {
  host?: string;
  port: number;
}

export interface DelayLine {
  /** Where to dial instead of the target: 127.0.0.1:port. */
  readonly port: number;
  /** Stops listening and resets every connection of this line. */
  close(): Promise<void>;
}

export interface DirectionStats {
  /** Payload bytes delivered. */
  bytes: number;
  /** The most bytes the direction held at once. */
  peakBufferedBytes: number;
}

export interface DelayLinkStats {
  connections: number;
  up: DirectionStats;
  down: DirectionStats;
}

type Item =
  | { kind: 'data'; at: number; to: Endpoint; data: Buffer }
  | { kind: 'end' | 'reset'; at: number; to: Endpoint };

/** One side of a relayed connection: what is written to it, and who pauses its reading. */
class Endpoint {
  socket: Socket | undefined;
  /** Items due before the socket exists (the target side during the handshake). */
  readonly early: Item[] = [];
  /** Reasons this endpoint's socket must not be read: a full direction, a far side that is not draining. */
  readonly pausedBy = new Set<string>();
  closed = false;

  constructor(socket?: Socket) {
    this.socket = socket;
  }

  pause(reason: string): void {
    this.pausedBy.add(reason);
    this.socket?.pause();
  }

  resume(reason: string): void {
    this.pausedBy.delete(reason);
    if (this.pausedBy.size === 0 && !this.closed) this.socket?.resume();
  }

  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket?.resetAndDestroy();
  }
}

/** One direction of a link: a FIFO with a one-way delay and an optional rate, shared by all connections. */
class Direction {
  readonly #delayMs: number;
  /** Bytes per ms, or undefined. */
  readonly #rate: number | undefined;
  readonly #bufferBytes: number;
  readonly #queue: Item[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;
  /** ms (performance.now) when the bottleneck is free to send the next segment. */
  #free = 0;
  #buffered = 0;
  /** Senders paused because this direction is full. */
  readonly #paused = new Set<Endpoint>();
  readonly stats: DirectionStats = { bytes: 0, peakBufferedBytes: 0 };
  readonly #name: string;

  constructor(name: string, delayMs: number, bitsPerSec: number | undefined, bufferBytes: number | undefined) {
    this.#name = name;
    this.#delayMs = delayMs;
    this.#rate = bitsPerSec === undefined ? undefined : bitsPerSec / 8 / 1000;
    this.#bufferBytes = bufferBytes ?? (this.#rate === undefined ? UNLIMITED_BUFFER_BYTES : Math.ceil(this.#rate * (2 * delayMs + DEFAULT_QUEUE_MS)));
  }

  /** Bytes read from `from` now, for `to`. */
  send(from: Endpoint, to: Endpoint, data: Buffer): void {
    const now = performance.now();
    if (this.#rate === undefined) {
      this.#push({ kind: 'data', at: now + this.#delayMs, to, data });
    } else {
      for (let off = 0; off < data.length; off += SEGMENT_PAYLOAD_BYTES) {
        const segment = data.subarray(off, off + SEGMENT_PAYLOAD_BYTES);
        this.#free = Math.max(this.#free, now) + (segment.length + SEGMENT_OVERHEAD_BYTES) / this.#rate;
        this.#push({ kind: 'data', at: this.#free + this.#delayMs, to, data: segment });
      }
    }
    this.#buffered += data.length;
    this.stats.peakBufferedBytes = Math.max(this.stats.peakBufferedBytes, this.#buffered);
    if (this.#buffered > this.#bufferBytes) {
      from.pause(this.#name);
      this.#paused.add(from);
    }
  }

  /** An end or a reset, behind every byte sent before it. */
  signal(kind: 'end' | 'reset', to: Endpoint): void {
    const now = performance.now();
    const last = this.#queue.length > this.#head ? this.#queue[this.#queue.length - 1].at : 0;
    this.#push({ kind, at: Math.max(last, now + this.#delayMs), to });
  }

  #push(item: Item): void {
    this.#queue.push(item);
    if (this.#timer === undefined) this.#arm();
  }

  #arm(): void {
    if (this.#head >= this.#queue.length) {
      this.#queue.length = 0;
      this.#head = 0;
      this.#timer = undefined;
      return;
    }
    const wait = Math.max(0, this.#queue[this.#head].at - performance.now());
    this.#timer = setTimeout(() => this.#deliver(), wait);
  }

  #deliver(): void {
    // Node's timers have 1 ms granularity: take everything due within half of it.
    const now = performance.now() + 0.5;
    const batches = new Map<Endpoint, Item[]>();
    while (this.#head < this.#queue.length && this.#queue[this.#head].at <= now) {
      const item = this.#queue[this.#head++];
      if (item.kind === 'data') {
        this.#buffered -= item.data.length;
        this.stats.bytes += item.data.length;
      }
      const list = batches.get(item.to);
      if (list) list.push(item);
      else batches.set(item.to, [item]);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    for (const [to, items] of batches) deliverTo(to, items);
    if (this.#buffered <= this.#bufferBytes * RESUME_FRACTION && this.#paused.size > 0) {
      for (const from of this.#paused) from.resume(this.#name);
      this.#paused.clear();
    }
    this.#arm();
  }

  /** Drops what is queued for an endpoint that is gone. */
  forget(to: Endpoint): void {
    this.#paused.delete(to);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.length = 0;
    this.#head = 0;
    this.#buffered = 0;
    this.#paused.clear();
  }
}

/** Writes a batch of due items to one endpoint (or keeps them until its socket exists). */
function deliverTo(to: Endpoint, items: Item[]): void {
  if (to.closed) return;
  const socket = to.socket;
  if (!socket) {
    to.early.push(...items);
    return;
  }
  socket.cork();
  for (const item of items) {
    if (to.closed) break;
    if (item.kind === 'data') socket.write(item.data);
    else if (item.kind === 'end') socket.end();
    else to.reset();
  }
  if (!to.closed) socket.uncork();
}

/** One emulated path: a one-way delay each way and optional rates; forward() puts listeners on it. */
export class DelayLink {
  readonly options: Readonly<DelayLinkOptions>;
  readonly #up: Direction;
  readonly #down: Direction;
  readonly #lines = new Set<DelayLine>();
  #connections = 0;

  constructor(options: DelayLinkOptions) {
    if (!(options.oneWayMs >= 0)) throw new Error(`DelayLink: oneWayMs must be ≥ 0, not ${options.oneWayMs}`);
    for (const rate of [options.upBitsPerSec, options.downBitsPerSec]) {
      if (rate !== undefined && !(rate > 0)) throw new Error(`DelayLink: a rate must be > 0 bits/s, not ${rate}`);
    }
    this.options = Object.freeze({ ...options });
    this.#up = new Direction('up', options.oneWayMs, options.upBitsPerSec, options.bufferBytes);
    this.#down = new Direction('down', options.oneWayMs, options.downBitsPerSec, options.bufferBytes);
  }

  stats(): DelayLinkStats {
    return { connections: this.#connections, up: { ...this.#up.stats }, down: { ...this.#down.stats } };
  }

  /** Listens on 127.0.0.1 (an ephemeral port) and carries each connection to `target` over this path. */
  async forward(target: DelayTarget): Promise<DelayLine> {
    const sockets = new Set<Socket>();
    const timers = new Set<NodeJS.Timeout>();
    const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      this.#connections++;
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      this.#relay(socket, target, sockets, timers);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const line: DelayLine = {
      port: (server.address() as AddressInfo).port,
      close: () => {
        this.#lines.delete(line);
        for (const t of timers) clearTimeout(t);
        for (const s of sockets) s.resetAndDestroy();
        return new Promise((resolve) => server.close(() => resolve()));
      },
    };
    this.#lines.add(line);
    return line;
  }

  /** Closes every listener of the link and resets its connections. */
  async close(): Promise<void> {
    await Promise.all([...this.#lines].map((l) => l.close()));
    this.#up.stop();
    this.#down.stop();
  }

  #relay(dialer: Socket, target: DelayTarget, sockets: Set<Socket>, timers: Set<NodeJS.Timeout>): void {
    const near = new Endpoint(dialer);
    const far = new Endpoint();
    const up = this.#up;
    const down = this.#down;
    wire(near, far, up);
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (near.closed) return;
      const socket = connect({ host: target.host ?? '127.0.0.1', port: target.port, allowHalfOpen: true, noDelay: true });
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      socket.once('connect', () => {
        far.socket = socket;
        wire(far, near, down);
        if (far.pausedBy.size > 0) socket.pause();
        deliverTo(far, far.early.splice(0));
      });
      // A target that refuses: the dialer sees a reset, as with a real RST.
      socket.once('error', () => {
        if (!far.socket) near.reset();
      });
    }, HANDSHAKE_ONE_WAY_DELAYS * this.options.oneWayMs);
    timers.add(timer);
  }
}

/** Bytes, ends and resets read from `from` go to `to` through `direction`; `to`'s backpressure pauses `from`. */
function wire(from: Endpoint, to: Endpoint, direction: Direction): void {
  const socket = from.socket!;
  socket.on('data', (chunk: Buffer) => {
    direction.send(from, to, chunk);
    const out = to.socket;
    if (out && out.writableLength > SOCKET_HIGH_WATER_BYTES && !from.pausedBy.has('drain')) {
      from.pause('drain');
      out.once('drain', () => from.resume('drain'));
    }
  });
  socket.on('end', () => direction.signal('end', to));
  socket.on('error', () => {});
  socket.on('close', () => {
    direction.forget(from);
    // Closed without an end of its own (a reset, or destroyed): the other side is reset too.
    if (!socket.readableEnded) direction.signal('reset', to);
    from.closed = true;
  });
}

/** A link of its own with one forward: the common case of one emulated hop to one target. */
export async function startDelayLine(options: DelayLinkOptions & { target: DelayTarget }): Promise<{ line: DelayLine; link: DelayLink }> {
  const link = new DelayLink(options);
  return { line: await link.forward(options.target), link };
}
