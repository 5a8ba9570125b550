import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { performance } from 'node:perf_hooks';
import { finished, type Duplex } from 'node:stream';
import { turnCorker } from './cork.ts';
import { queuedWrites } from './queued-writes.ts';
import { gatherReads, reusableInto, reuseReads, straight, taken, type GatheredReads, type ReusedReads } from './read-buffer.ts';

const noop = (): void => {};

/**
 * Tears `s` down as an abort: a plain TCP socket is reset (RST), so the
 * program on its other end (nc, ssh, a browser) sees the failure at once
 * instead of an orderly FIN it would wait behind; a mux stream is reset
 * (RST); anything else (a TLS socket over a stream) is destroyed.
 */
export function abort(s: Duplex): void {
  quiet(s);
  // A mux stream: reset() is the abort (its destroy() after end() is a graceful close).
  const resettable = s as Duplex & { reset?: () => void };
  if (typeof resettable.reset === 'function') return resettable.reset();
  // TLS over a TCP socket (the end-to-end layer on a data connection): the TCP socket under it is
  // reset, so the relay's splice sees the abort and resets the far leg too. (`_parent` is the
  // socket TLSSocket wraps; Node has kept it for years.)
  const parent = (s as Duplex & { _parent?: unknown })._parent;
  if (parent instanceof Socket && parent !== s) abortSocket(parent);
  if (s instanceof Socket && abortSocket(s)) return;
  s.destroy();
}

/**
 * Errors after an abort are expected and dropped, by one listener however
 * often the stream is aborted (a listener per call tripped Node's
 * MaxListenersExceededWarning on sockets aborted from both legs and by
 * their session's end).
 */
function quiet(s: Duplex): void {
  if (!s.listeners('error').includes(noop)) s.on('error', noop);
}

/**
 * resetAndDestroy() where the socket still has a TCP handle; false where it
 * has none (TLS over a stream, closed). A socket whose writing side was
 * already ended (our FIN went) is closed, not reset: libuv refuses a reset
 * after a shutdown (EINVAL), and Node then leaves the handle open until the
 * peer closes (seen: relay data connections a half-closed pair left behind).
 */
function abortSocket(s: Socket): boolean {
  quiet(s);
  if (s.destroyed) return false;
  if (s.writableEnded) {
    s.destroy();
    return true;
  }
  try {
    s.resetAndDestroy(); // throws for a socket without a TCP handle (TLS over a mux stream)
    return true;
  } catch {
    return false;
  }
}

/** Streams whose end is passed on only once a check says it is a real one (gateEnd). */
const endGates = new WeakMap<Duplex, () => Promise<unknown>>();

/**
 * The end of `s` (its peer's FIN) is passed on by splice only once
 * `confirm` resolves; if it rejects, both sides are aborted instead. For the
 * end-to-end layer on a data connection: a relay that dies ends its TCP
 * connections with a FIN, which Node's TLS reports as an end whether or
 * not the peer's close_notify came first; passed on, it left `nc -X 5`
 * (and ssh behind it) waiting in CLOSE-WAIT. A FIN while the relay link
 * still answers a ping is the peer's own.
 */
export function gateEnd(s: Duplex, confirm: () => Promise<unknown>): void {
  endGates.set(s, confirm);
}

/**
 * A plain TCP source whose read brought this much (a full read of Node's
 * 64 KiB: a bulk flow) reads from then on into a buffer the splice reuses
 * (read-buffer.ts) instead of a fresh one per read. Interactive and idle
 * streams never get one: 1,000 idle spliced pairs would hold 2 × 64 MiB.
 */
const REUSE_READ_AFTER = 64 * 1024;
/**
 * Bytes of a reused read buffer: Node's own read size. 128 KiB cost the
 * relay less CPU per GiB still (0.55 against 0.65 s in loaded bench runs),
 * but a stalled stream's last, partly sent read keeps its whole buffer, and
 * 512 stalled data connections then held the relay's RSS 50-70 MiB up
 * (test/relay-memory.test.ts allows 64), where Node's reads held 25.
 */
const READ_BUFFER_BYTES = 64 * 1024;
/** Bytes a read may take however full the destination is (it is paused right after). */
const MIN_READ_BYTES = 16 * 1024;
/**
 * A TLS source whose record brought this much (a full record's cleartext:
 * a bulk flow) gathers its records into slabs (read-buffer.ts); an
 * interactive stream (an ssh session's keystrokes and screens) never does.
 */
const GATHER_AFTER = 16 * 1024;
/** Bytes of a gathering slab: sixteen full records; two slabs alternate per bulk stream at an agent. */
const GATHER_SLAB_BYTES = 256 * 1024;

/** Bytes a destination may hold queued before the source is paused (a socket's own mark is 16 KiB). */
export const FORWARD_BUFFER = 128 * 1024;
/**
 * Pieces a destination may hold queued before the source is paused, however
 * few bytes they are: each costs a queue entry and a Buffer (≈ 200 bytes),
 * and FORWARD_BUFFER in 1-byte pieces (a peer's tiny mux frames) was 128 K
 * of them per stream. A bulk flow queues a few pieces per 64 KiB.
 */
export const FORWARD_PIECES = 64;

/**
 * Reads of a one-way trickle are gathered, as a NIC's interrupt moderation
 * does: where a source hands over small pieces (under COALESCE_BELOW bytes)
 * one after another (within COALESCE_GAP_MS), and COALESCE_AFTER_BYTES came
 * from it while nothing came the other way, it is a bulk flow arriving one
 * network segment at a time (a
 * 20 Mbit/s uplink delivers a 1,448-byte segment every 0.6 ms), and each
 * segment cost the relay a wake-up, a read and a write: its CPU per byte at
 * real link rates was twice an OpenSSH jump host's. Such a source is not
 * read for as long as COALESCE_TARGET_BYTES take to arrive at its rate (at
 * most COALESCE_MAX_MS; not at all below COALESCE_MIN_MS, a fast flow), so
 * the next read takes what arrived meanwhile. Interactive traffic is
 * untouched: a keystroke after a pause is read at once, and a ping-pong
 * (bytes both ways in turn) never counts as a trickle.
 */
const COALESCE_BELOW = 16 * 1024;
/** ms: small pieces closer than this are one flow. */
const COALESCE_GAP_MS = 2;
/**
 * Bytes one way, with nothing the other way, before a flow counts as a
 * trickle: a TLS handshake's flights (the end-to-end layer's server flight,
 * then its identity hello and verdict: two records written apart, under
 * 4 KiB in all) are pieces one way in quick succession too, and a hold then
 * kept the stream's first bytes back for up to COALESCE_MAX_MS (a new
 * connection on the data path took 15 ms longer than on the link under
 * load). A bulk flow at 20 Mbit/s passes this in 7 ms.
 */
const COALESCE_AFTER_BYTES = 16 * 1024;
/** bytes a held source should have gathered: half a read's 64 KiB. */
const COALESCE_TARGET_BYTES = 32 * 1024;
/** ms: the longest hold (at 20 Mbit/s: 40 KB; a frame of a 60 Hz screen, nothing a person notices in a bulk flow). */
const COALESCE_MAX_MS = 16;
/** ms: a hold shorter than this is not worth its timer (a flow above 32 MB/s). */
const COALESCE_MIN_MS = 1;

/**
 * Holds a plain TCP socket's reading for `ms` without pausing the stream: a
 * paused socket goes on reading from the kernel until it holds its
 * high-water mark, so a trickle would still wake us per segment. Its handle
 * stops reading, while Node's flag says it reads (so Node does not start it
 * again under us); after `ms` it reads again, unless Node stopped it itself
 * meanwhile (backpressure: its own resume starts it then) or it closed.
 * Returns false where it cannot hold (not a plain TCP socket).
 */
type ReadHandle = { reading?: boolean; readStop?: () => number; readStart?: () => number };

function handleOf(s: Duplex): ReadHandle | undefined {
  return (s as Duplex & { _handle?: ReadHandle })._handle;
}

function holdReading(s: Duplex, ms: number, done: () => void, mayStart: () => boolean = () => true): boolean {
  const handle = stoppable(s);
  if (!handle) return false;
  handle.readStop!();
  setTimeout(() => {
    if (mayStart()) restart(s, handle);
    done();
  }, ms);
  return true;
}

/** `s`'s handle where it is a plain TCP socket whose handle reads now (what holdReading and a metered pause stop). */
function stoppable(s: Duplex): ReadHandle | undefined {
  const handle = handleOf(s);
  if (!(s instanceof Socket) || s instanceof TLSSocket || handle?.reading !== true || typeof handle.readStop !== 'function' || typeof handle.readStart !== 'function') return undefined;
  return handle;
}

/** Reads again with a handle stopped by stoppable's caller, unless Node stopped it itself meanwhile or the socket closed. */
function restart(s: Duplex, handle: ReadHandle): void {
  if (!s.destroyed && handleOf(s) === handle && handle.reading === true) handle.readStart!();
}

/**
 * What a splice may hold in user space, charged by the caller (the relay's
 * budgets for the data connections it splices): every chunk read is taken
 * before it is written on and given back once the destination took it.
 */
export interface SpliceMeter {
  /** Charges `bytes` read; false: over a budget (the splice aborts both sides). */
  take(bytes: number): boolean;
  /** `bytes` charged earlier left the destination's buffer (or were dropped). */
  give(bytes: number): void;
  /** True while the budget is pressed: a destination then pauses its source at PRESSED_FORWARD_BUFFER. */
  pressed(): boolean;
}

/** Bytes a destination may hold queued, under a pressed SpliceMeter, before the source is paused. */
export const PRESSED_FORWARD_BUFFER = 16 * 1024;

/** The budget refused a chunk: the splice's error. */
export class SpliceBudgetError extends Error {
  constructor() {
    super('over the splice\'s budget');
    this.name = 'SpliceBudgetError';
  }
}

/** Per direction of a splice: performance.now() of the last piece read, and the bytes read since the other direction read any. */
interface Clock {
  last: [number, number];
  oneWay: [number, number];
}

/**
 * Copies `src` into `dst` like `src.pipe(dst)`, but batches writes where
 * the source hands over small pieces (TLS records of 16 KiB, mux frames):
 * the destination is corked for the rest of the event-loop turn
 * (turnCorker), so one turn's pieces leave in one write. A plain TCP socket
 * hands over whole reads (up to 64 KiB), one per turn, which the cork only
 * delays (measured on a socket-to-socket pump, the relay's data
 * connections: ≈ 15 % more CPU per GiB with it). A one-way trickle is read
 * in gathered reads (COALESCE_MS). Chunks are passed on as they are (no
 * copy); a destination holding FORWARD_BUFFER pauses the source, its
 * 'drain' resumes it, and the source's end ends the destination.
 */
function forward(src: Duplex, dst: Duplex, clock: Clock, side: 0 | 1, meter: SpliceMeter | undefined, fail: (err: Error) => void): void {
  /** A TLS source's records gathered into slabs once it carries a bulk flow (GATHER_AFTER), written once a turn. */
  let slabs: GatheredReads | undefined;
  const cork = src instanceof Socket && !(src instanceof TLSSocket) ? undefined : turnCorker(dst, 'stream', () => slabs?.flush());
  let held = false;
  /** The source trickles: its reads are held (see COALESCE_MS) until a large piece or bytes the other way. */
  let trickle = false;
  /** A metered source paused for backpressure: its handle stopped too, so nothing piles up unread in its buffer. */
  let stopped: ReadHandle | undefined;
  /** The next piece is the first read after a hold: what the hold gathered. */
  let gathered = false;
  const release = () => {
    held = false;
    gathered = true;
  };
  /** A plain TCP source reads into a reused buffer once it carries a bulk flow (REUSE_READ_AFTER). */
  let reads: ReusedReads | undefined;
  let reuse = cork === undefined && reusableInto(dst);
  let gather = src instanceof TLSSocket && reusableInto(dst) && !meter;
  /** Records `n` bytes read now on this side; returns when this side read before. */
  const counted = (n: number, now: number): number => {
    const last = clock.last[side];
    clock.last[side] = now;
    clock.oneWay[side] += n;
    clock.oneWay[1 - side] = 0;
    return last;
  };
  const onGathered = (n: number) => {
    cork!();
    counted(n, performance.now());
    if (dst.writableLength + slabs!.unflushed >= FORWARD_BUFFER) src.pause();
  };
  const writeRegion = (region: Buffer, done: () => void) => void dst.write(region, done);
  // The reused reads' callbacks are made here, not in onChunk: a closure made in onChunk shares its
  // call's context, which held the chunk that turned reuse on, a 64 KiB read kept for the splice's
  // whole life (320 stalled data connections kept 20 MiB of the relay's RSS so, charged to no budget).
  const readLimit = () => Math.max(MIN_READ_BYTES, (meter?.pressed() ? PRESSED_FORWARD_BUFFER : FORWARD_BUFFER) - dst.writableLength);
  const shedReads = meter ? () => src.isPaused() && meter.pressed() : undefined;
  /** The destination took what it held: the source reads again (its 'drain', or the write that filled FORWARD_PIECES done). */
  const resumeSource = () => {
    src.resume();
    const handle = stopped;
    stopped = undefined;
    if (handle && !held) restart(src, handle);
  };
  const onChunk = (read: Buffer) => {
    cork?.();
    const wasStraight = reads !== undefined && straight(dst as Socket);
    // A read that filled less than half of its reused buffer leaves as a copy of its own size (what
    // Node's reads are): lent, the view would keep the whole buffer for a few bytes in a queue
    // (stalled data connections by the hundred: +18 MiB of relay RSS at 512).
    const chunk = reads !== undefined && read.length < read.buffer.byteLength / 2 ? Buffer.from(read) : read;
    // A write that fills the destination's queue in pieces pauses the source below and resumes it once
    // done: no 'drain' comes for a queue of few bytes.
    const crowded = dst.writableLength > 0 && queuedWrites(dst) >= FORWARD_PIECES - 1;
    if (meter) {
      // The callback keeps the length, never the chunk: a closure made here that named `chunk` kept it
      // (and every closure made in this call with it) alive after the write.
      const n = chunk.length;
      if (!meter.take(n)) return fail(new SpliceBudgetError());
      dst.write(chunk, crowded ? () => (meter.give(n), resumeSource()) : () => meter.give(n));
    } else if (crowded) dst.write(chunk, resumeSource);
    else dst.write(chunk);
    // The chunk is a view of the read buffer: kept queued, the next read must not overwrite it.
    if (reads) {
      if (chunk === read && !taken(dst as Socket, wasStraight)) reads.lend();
    } else if (gather && chunk.length >= GATHER_AFTER) {
      gather = false;
      slabs = gatherReads(src as TLSSocket, GATHER_SLAB_BYTES, onGathered, writeRegion);
    } else if (reuse && chunk.length >= REUSE_READ_AFTER) {
      reuse = false;
      // A read takes at most the room left under the destination's mark: what the splice holds stays
      // within FORWARD_BUFFER (PRESSED_FORWARD_BUFFER) plus MIN_READ_BYTES, less than Node's own reads
      // allowed; a source paused under a pressed budget lets its buffers go (hundreds may stall so).
      reads = reuseReads(src as Socket, READ_BUFFER_BYTES, onChunk, readLimit, shedReads);
    }
    const now = performance.now();
    const last = counted(chunk.length, now);
    if (crowded || dst.writableLength >= (meter?.pressed() ? PRESSED_FORWARD_BUFFER : FORWARD_BUFFER)) {
      src.pause();
      // A paused socket still reads up to its high-water mark plus a read (≈ 80 KiB) that no meter sees.
      if (meter && !stopped) {
        stopped = stoppable(src);
        stopped?.readStop!();
      }
      return;
    }
    const afterHold = gathered;
    gathered = false;
    // A gathered read is large by design; it keeps a trickle a trickle (else every other read was a
    // single segment again: 17 KB per read instead of 32), and the hold below, taken from its rate,
    // ends the gathering by itself once the flow is fast (a hold under COALESCE_MIN_MS is none).
    // A read that filled a reused buffer smaller than a piece of a trickle (the small read of a source
    // resumed after a lend) is no sign of one: more was there. Taken for a piece, it turned a bulk
    // flow into held reads (single stream 109 MB/s against 207 for diode-before in a bench run).
    const small = chunk.length < COALESCE_BELOW && !(reads !== undefined && read.length === read.buffer.byteLength);
    trickle = clock.oneWay[side] >= COALESCE_AFTER_BYTES && ((small && (trickle || now - last < COALESCE_GAP_MS)) || (trickle && afterHold));
    if (!trickle || held) return;
    // This piece arrived over (now - last) ms: the flow's rate, and the hold that gathers the target at it.
    const ms = Math.min(COALESCE_MAX_MS, (COALESCE_TARGET_BYTES * Math.max(now - last, 0.01)) / chunk.length);
    if (ms >= COALESCE_MIN_MS) held = holdReading(src, ms, release, () => stopped === undefined);
  };
  src.on('data', onChunk);
  dst.on('drain', resumeSource);
  src.once('end', () => {
    // What the last records gathered goes out ahead of the end.
    slabs?.flush();
    const gate = endGates.get(src);
    if (!gate) return void dst.end();
    gate().then(
      () => dst.end(),
      () => {
        abort(src);
        abort(dst);
      },
    );
  });
  // As pipe() does: a source paused before (a handshake read in paused mode) starts flowing now.
  src.resume();
}

/**
 * Joins two duplex streams both ways: the tunnel's hot path.
 *
 * Backpressure holds end to end (the mux window on one side, the TCP window
 * on the other). An end in one direction is passed on as an end
 * (half-close), so `ssh` sending EOF while output still flows back works. If
 * either side fails or closes before ending (the tunnel died: session lost,
 * stream reset, relay gone), both are aborted: plain TCP legs are reset, not
 * ended, and nothing stays half-open. With a `meter`, what the splice holds
 * is charged to it chunk by chunk, a paused TCP source stops reading from
 * the kernel, and a chunk the meter refuses aborts both sides.
 */
export function splice(a: Duplex, b: Duplex, onDone?: (err?: Error) => void, meter?: SpliceMeter): void {
  let settled = 0;
  let failed = false;
  const done = (err?: Error | null) => {
    if (err && !failed) {
      failed = true;
      abort(a);
      abort(b);
      onDone?.(err);
      return;
    }
    if (!err && ++settled === 2 && !failed) onDone?.();
  };
  const clock: Clock = { last: [0, 0], oneWay: [0, 0] };
  forward(a, b, clock, 0, meter, done);
  forward(b, a, clock, 1, meter, done);
  // finished() reports an error or a premature close (closed without end).
  finished(a, (err) => done(err));
  finished(b, (err) => done(err));
}
