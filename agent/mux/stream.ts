import { Duplex, Readable } from 'node:stream';
import { Flag, FrameType } from './frame.ts';
import { MuxError } from './errors.ts';
import type { MuxConfig } from './config.ts';
import type { MuxSession } from './session.ts';
import type { WindowBudget } from './budget.ts';
import { INITIAL_STREAM_WINDOW } from './frame.ts';

/**
 * What a stream needs from its session. The session implements it once (not
 * per stream), so the session's internals stay private.
 */
export interface StreamLink {
  readonly config: Readonly<MuxConfig>;
  /** Shared bound on window growth (a relay's, across its sessions); undefined = grow up to maxWindow. */
  readonly budget: WindowBudget | undefined;
  /** Latest ping round-trip time in ms, or -1 before the first answer. */
  rtt(): number;
  /** False once the session is closing: frames are no longer sent. */
  isOpen(): boolean;
  /** False while the connection's write buffer is full (wait for drain). */
  canSend(): boolean;
  /** Queue one control frame (12-byte header, no payload): never blocked, jumps ahead of waiting data. */
  writeHeader(type: number, flags: number, streamId: number, length: number): void;
  /** Queue a Data frame's header (only while canSend()); its payload follows with writeBody. */
  writeDataHeader(streamId: number, length: number): void;
  /** Queue payload bytes (a view, never copied) right after the header. */
  writeBody(buf: Buffer): void;
  /** Hold this turn's frames one more round of immediates, once (TurnCork's `late`). */
  deferFlush(): void;
  /** Call `stream._flush()` when the connection drains. */
  waitForDrain(stream: MuxStream): void;
  /** Forget the stream (map, backlog, drain waiters); true if it was still registered. */
  release(stream: MuxStream): boolean;
}

/**
 * Where a relay charges the bytes a stream holds (relay/hold.ts): every
 * payload received, every payload sent, and the stream's release. A false
 * from `received` (a cap is hit) resets the stream.
 */
export interface StreamHoldHook {
  received(bytes: number): boolean;
  sent(bytes: number): void;
  /** The reader took `bytes` and they are granted to the peer again. */
  granted(bytes: number): void;
  /** True while whoever the bytes are charged to holds much of its budget: the window does not grow, and shrinks. */
  pressed(): boolean;
  /** The stream was destroyed: what it buffered is gone (its late bytes are dropped as they come). */
  destroyed(stream: MuxStream): void;
  released(stream: MuxStream): void;
}

/** Bytes: the smallest window a stream shrinks to while its relay holder is pressed (StreamHoldHook.pressed). */
const PRESSED_WINDOW = 64 * 1024;

/** Round trips: a window half used faster than this many RTTs is doubled. */
const GROWTH_RTTS = 4;

type WriteCallback = (err?: Error | null) => void;

/**
 * Bytes below which a payload that arrives behind bytes still queued for
 * the reader is copied into the stream's gathering buffer, not queued as a
 * piece of its own. Each queued piece costs a Buffer view, a queue entry
 * (≈ 200 bytes) and keeps its whole TLS record alive, while the window and
 * the relay's budgets count only its bytes: a peer sending 1-byte frames to
 * streams whose reader stalled made a relay hold hundreds of MiB for a few
 * MiB charged. Gathered, queued bytes cost about what they count (as
 * hashicorp's yamux, whose receive buffer is one buffer per stream).
 */
const GATHER_BELOW = 4 * 1024;
/** Bytes of a new gathering buffer; it doubles as it fills, and is queued as one piece at GATHER_MAX. */
const GATHER_START = 1024;
const GATHER_MAX = 16 * 1024;

/** Node's own count of bytes queued in a Readable (MuxStream's readableLength adds what it gathered). */
const nodeReadableLength = Object.getOwnPropertyDescriptor(Readable.prototype, 'readableLength')!.get!;
const queuedLength = (s: Readable): number => nodeReadableLength.call(s) as number;

/**
 * One yamux stream as a Node Duplex. Flow control both ways:
 * - sending: never more than the peer's window (`sendWindow`); the write
 *   callback is held until everything went out, so the writer back-pressures;
 * - receiving: the window is re-granted only as the consumer reads, so a
 *   paused reader stops the remote writer after about one window.
 */
export class MuxStream extends Duplex {
  readonly id: number;
  readonly session: MuxSession;
  private readonly link: StreamLink;

  /** Bytes the peer still lets us send. Starts at the spec's 256 KiB. */
  private sendWindow: number;
  /** Bytes of receive window we currently grant (grows toward maxWindow). */
  private recvWindow: number;
  /** Bytes the peer may still send before exceeding what we granted. */
  private recvAvail: number;
  /** performance.now() of our last window update, to see how fast the window is used. */
  private grantedAt = performance.now();

  private localFin = false;
  private remoteFin = false;
  /** reset() was called: destroy is an abort even after our FIN. */
  private aborting = false;
  /** Set while a closed stream waits for the peer's FIN (see lingerTimeout). */
  private lingerTimer: NodeJS.Timeout | undefined;
  /**
   * @internal False while an inbound stream waits in the accept backlog: nobody
   * holds it yet, so it is destroyed without an error (an unheard 'error' event
   * would crash the process).
   */
  _visible: boolean;

  // The write in progress: a list of chunks, a position in it, its callback.
  private pendList: Buffer[] | null = null;
  private pendIdx = 0;
  private pendOff = 0;
  private pendRemaining = 0;
  private pendCb: WriteCallback | null = null;
  /** Reused by _write so a single chunk needs no array allocation. */
  private readonly one: Buffer[] = [];
  /**
   * While set, frames this stream sends wait one more round of immediates
   * before the connection's write: the end-to-end layer sets it during its
   * handshake, so that TLS records Node hands over one immediate apart (the
   * tickets and the hello, the hello and the verdict) leave together.
   */
  lateFlush = false;
  /** Takes inbound bytes before the readable side does (tapPrefix). */
  private prefixTap: ((chunk: Buffer) => Buffer | undefined) | undefined;
  /** Where the bytes this stream holds are charged (a relay's), and whether the session has let go of it. */
  private hold: StreamHoldHook | undefined;
  private holdReleased = false;
  /** Small payloads that came behind queued bytes (GATHER_BELOW), in order, not yet queued themselves. */
  private gathered: Buffer | undefined;
  private gatheredLength = 0;

  static {
    // Bytes received and not yet read include the gathered ones: the window's grants, the relay's
    // hold counts and anyone asking see them.
    Object.defineProperty(MuxStream.prototype, 'readableLength', {
      configurable: true,
      get(this: MuxStream) {
        return queuedLength(this) + this.gatheredLength;
      },
    });
  }

  /** @internal Created by MuxSession only. */
  constructor(id: number, session: MuxSession, link: StreamLink, sendWindow: number, recvWindow: number, visible: boolean) {
    super({ allowHalfOpen: true, decodeStrings: true });
    this.id = id;
    this.session = session;
    this.link = link;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
    this.recvAvail = recvWindow;
    this._visible = visible;
    link.budget?._move(INITIAL_STREAM_WINDOW, recvWindow);
  }

  /** Send RST and destroy locally: an abort, also after end() (a closed stream still lingering is reset now). */
  reset(): void {
    this.aborting = true;
    if (this.lingerTimer !== undefined) return this._endLinger(true);
    this.destroy(); // _destroy sends the RST because the stream is not fully closed
  }

  /** @internal The linger is over: the peer's FIN came (false) or did not in time (true: RST). */
  _endLinger(sendRst: boolean): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    if (this.link.release(this) && sendRst && this.link.isOpen()) this.link.writeHeader(FrameType.WindowUpdate, Flag.RST, this.id, 0);
  }

  /**
   * Takes the first inbound bytes off before the readable side sees them:
   * each payload goes to `tap` until it returns the bytes that follow the
   * prefix it wanted (maybe none), which are then read as usual. A client
   * that starts its end-to-end TLS handshake right behind its `connect` reads
   * the relay's answer this way while the TLS socket reads from the first
   * byte after it. End, reset and close reach the readable side as always.
   */
  tapPrefix(tap: (chunk: Buffer) => Buffer | undefined): void {
    this.prefixTap = tap;
  }

  /** Charges this stream's bytes to `hook` from now on; false if the stream is already gone (nothing charged). */
  setHold(hook: StreamHoldHook): boolean {
    if (this.holdReleased) return false;
    this.hold?.released(this);
    this.hold = hook;
    return true;
  }

  // ---- frames from the session ------------------------------------------------

  /** @internal Accepting an inbound stream: ACK it and announce any window above the spec's initial one. */
  _accept(initialWindow: number): void {
    const extra = initialWindow - this.recvWindow;
    this.link.budget?._move(this.recvWindow, initialWindow);
    this.recvWindow += extra;
    this.recvAvail += extra;
    this._visible = true;
    this.link.writeHeader(FrameType.WindowUpdate, Flag.ACK, this.id, extra);
  }

  /** @internal Data payload (a view). False = the peer exceeded our window (protocol error). */
  _onData(payload: Buffer): boolean {
    if (payload.length > this.recvAvail) return false;
    this.recvAvail -= payload.length;
    // After the peer's FIN the readable side is over, and a closed (lingering) stream reads
    // nothing more; late bytes are dropped.
    if (payload.length === 0 || this.remoteFin || this.destroyed) return true;
    if (this.hold !== undefined && !this.hold.received(payload.length)) {
      // Over what the relay lets this caller hold: the stream goes, not the memory.
      this.reset();
      return true;
    }
    const tap = this.prefixTap;
    if (tap !== undefined) {
      const rest = tap(payload);
      if (rest === undefined) return true;
      this.prefixTap = undefined;
      if (rest.length === 0) return true;
      payload = rest;
    }
    this.deliver(payload);
    return true;
  }

  /** Queues `payload` for the reader, or gathers it behind bytes already queued (GATHER_BELOW). */
  private deliver(payload: Buffer): void {
    if (this.gatheredLength > 0) {
      if (this.gatheredLength + payload.length <= GATHER_MAX) return this.gather(payload);
      this.pushGathered();
    }
    if (payload.length < GATHER_BELOW && queuedLength(this) > 0) return this.gather(payload);
    this.push(payload);
  }

  private gather(payload: Buffer): void {
    const need = this.gatheredLength + payload.length;
    let into = this.gathered;
    if (into === undefined || into.length < need) {
      let size = into?.length ?? GATHER_START;
      while (size < need) size *= 2;
      const grown = Buffer.allocUnsafeSlow(Math.min(size, GATHER_MAX));
      into?.copy(grown, 0, 0, this.gatheredLength);
      into = this.gathered = grown;
    }
    payload.copy(into, this.gatheredLength);
    this.gatheredLength = need;
  }

  /** Queues what was gathered, as one piece. */
  private pushGathered(): void {
    if (this.gatheredLength === 0) return;
    const bytes = this.gathered!.subarray(0, this.gatheredLength);
    this.gathered = undefined;
    this.gatheredLength = 0;
    this.push(bytes);
  }

  /** @internal The peer granted `delta` more bytes. */
  _onWindowUpdate(delta: number): void {
    this.sendWindow += delta;
    if (this.pendList !== null) this._flush();
  }

  /** @internal The peer half-closed: our readable ends, our writable stays open. */
  _onFin(): void {
    if (this.remoteFin) return;
    this.remoteFin = true;
    if (this.lingerTimer !== undefined) return this._endLinger(false);
    if (!this.destroyed) {
      this.pushGathered();
      this.push(null);
    }
    if (this.localFin) this.link.release(this);
  }

  /** @internal The peer reset the stream. */
  _onRst(): void {
    if (this.lingerTimer !== undefined) return this._endLinger(false);
    this.link.release(this);
    this._destroyQuietlyIfHidden(new MuxError('ECONNRESET', `stream ${this.id} reset by peer`));
  }

  /** @internal The session forgot this stream: its window no longer counts against the budget. */
  _releaseBudget(): void {
    this.link.budget?._move(this.recvWindow, INITIAL_STREAM_WINDOW);
    this.recvWindow = INITIAL_STREAM_WINDOW;
    this.holdReleased = true;
    const hold = this.hold;
    this.hold = undefined;
    hold?.released(this);
  }

  /** @internal Destroy with `err`, or without one if the user never got this stream. */
  _destroyQuietlyIfHidden(err: Error | undefined): void {
    if (this.lingerTimer !== undefined) return this._endLinger(false); // already closed by its user
    this.destroy(this._visible ? err : undefined);
  }

  // ---- readable side ------------------------------------------------------------

  /**
   * Node calls _read when the consumer has taken data (buffer below the
   * high-water mark). That is the moment to give window back: bytes received
   * minus bytes still buffered are consumed; re-grant once half the window is.
   */
  override _read(): void {
    this.pushGathered();
    this.grantConsumed();
  }

  /**
   * Node calls _read only until it returns without pushing, and then not
   * again before the next push. A reader that takes the last buffered bytes
   * of a full window (the peer sends nothing more until it gets window back)
   * would never reach _read again: the stream stalled. So every read also
   * checks whether half the window has been consumed.
   */
  override read(size?: number): ReturnType<Duplex['read']> {
    const chunk = super.read(size);
    // Node calls _read again only after a push: once its queue is empty, what was gathered goes now.
    if (this.gatheredLength > 0 && queuedLength(this) === 0 && !this.destroyed) this.pushGathered();
    if (chunk !== null) this.grantConsumed();
    return chunk;
  }

  /** Gives window back once at least half of it has been consumed (and grows it, see below). */
  private grantConsumed(): void {
    if (this.remoteFin || !this.link.isOpen()) return;
    const buffered = this.readableLength;
    const consumed = this.recvWindow - this.recvAvail - buffered;
    if (consumed < this.recvWindow / 2) return;
    this.hold?.granted(consumed);
    let delta = consumed;
    // Adaptive growth (as chainsafe does): half a window consumed within a few
    // round trips means the window, not the reader, limits throughput, so double
    // it, up to maxWindow. A slow or paused reader never triggers this.
    const now = performance.now();
    const rtt = this.link.rtt();
    const max = this.link.config.maxWindow;
    // A shared budget (the relay's) caps growth; over it, windows shrink back toward 256 KiB.
    const budget = this.link.budget;
    const grown = Math.min(this.recvWindow * 2, max);
    // Whoever the relay charges this stream to holds half its budget or more: no growth, and windows shrink below the spec's 256 KiB.
    const pressed = this.hold?.pressed() === true;
    const floor = pressed ? PRESSED_WINDOW : INITIAL_STREAM_WINDOW;
    if (!pressed && rtt >= 0 && now - this.grantedAt < GROWTH_RTTS * rtt && this.recvWindow < max && (budget === undefined || budget.canGrow(grown - this.recvWindow))) {
      budget?._move(this.recvWindow, grown);
      delta += grown - this.recvWindow;
      this.recvWindow = grown;
    } else if ((pressed || budget?.over === true) && this.recvWindow > floor) {
      const cut = Math.min(this.recvWindow - Math.max(floor, Math.floor(this.recvWindow / 2)), delta);
      budget?._move(this.recvWindow, this.recvWindow - cut);
      this.recvWindow -= cut;
      delta -= cut;
    }
    this.grantedAt = now;
    if (delta === 0) return;
    this.recvAvail += delta;
    this.link.writeHeader(FrameType.WindowUpdate, 0, this.id, delta);
  }

  // ---- writable side --------------------------------------------------------------

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: WriteCallback): void {
    this.one[0] = chunk;
    this.startWrite(this.one, chunk.length, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: WriteCallback): void {
    const list = new Array<Buffer>(chunks.length);
    let total = 0;
    for (let i = 0; i < chunks.length; i++) {
      list[i] = chunks[i].chunk;
      total += list[i].length;
    }
    this.startWrite(list, total, cb);
  }

  private startWrite(list: Buffer[], total: number, cb: WriteCallback): void {
    this.pendList = list;
    this.pendIdx = 0;
    this.pendOff = 0;
    this.pendRemaining = total;
    this.pendCb = cb;
    this._flush();
  }

  /**
   * @internal Send as much of the pending write as window and connection allow.
   * Resumed by a window update or by the connection's 'drain'; no timers.
   */
  _flush(): void {
    const list = this.pendList;
    if (list === null) return;
    const link = this.link;
    const maxFrame = link.config.maxFrameData;
    while (this.pendRemaining > 0) {
      if (this.sendWindow === 0) return;
      if (!link.canSend()) {
        link.waitForDrain(this);
        return;
      }
      let len = Math.min(this.pendRemaining, this.sendWindow, maxFrame);
      link.writeDataHeader(this.id, len);
      this.hold?.sent(len);
      this.pendRemaining -= len;
      this.sendWindow -= len;
      // Hand the frame's bytes to the connection as views of the user's chunks.
      while (len > 0) {
        const buf = list[this.pendIdx];
        const avail = buf.length - this.pendOff;
        if (avail <= len) {
          if (avail > 0) link.writeBody(this.pendOff === 0 ? buf : buf.subarray(this.pendOff));
          len -= avail;
          this.pendIdx++;
          this.pendOff = 0;
        } else {
          link.writeBody(buf.subarray(this.pendOff, this.pendOff + len));
          this.pendOff += len;
          len = 0;
        }
      }
    }
    if (this.lateFlush) link.deferFlush();
    const cb = this.pendCb!;
    this.pendList = null;
    this.pendCb = null;
    this.one[0] = undefined as unknown as Buffer; // let the chunk be collected
    cb();
  }

  /** All writes are out: half-close with an empty window update carrying FIN. */
  override _final(cb: WriteCallback): void {
    this.localFin = true;
    if (this.link.isOpen()) this.link.writeHeader(FrameType.WindowUpdate, Flag.FIN, this.id, 0);
    if (this.remoteFin) this.link.release(this);
    cb();
  }

  /**
   * Destroyed before both sides finished: tell the peer with RST. Except a
   * close after our FIN (no error, not reset()): as a TCP close after
   * shutdown, everything we sent stays readable for the peer, and the stream
   * lingers until the peer's FIN (or lingerTimeout, then RST). TLS over a
   * stream closes it so once both close_notify alerts passed, which can be
   * before the peer's FIN frame arrives.
   */
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const pending = this.pendCb;
    this.pendList = null;
    this.pendCb = null;
    this.gathered = undefined;
    this.gatheredLength = 0;
    this.hold?.destroyed(this);
    if (!err && !this.aborting && this.localFin && !this.remoteFin && this.link.isOpen()) {
      this.lingerTimer = setTimeout(() => this._endLinger(true), this.link.config.lingerTimeout);
      this.lingerTimer.unref();
    } else if (this.link.release(this) && this.link.isOpen()) {
      this.link.writeHeader(FrameType.WindowUpdate, Flag.RST, this.id, 0);
    }
    if (pending !== null) pending(err ?? new MuxError('ECONNRESET', `stream ${this.id} destroyed`));
    cb(err);
  }
}
