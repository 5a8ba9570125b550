import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { Flag, FrameType, GoAwayCode, HEADER_LENGTH, INITIAL_STREAM_WINDOW, MAX_UINT32, encodeHeader, type FrameHeader } from './frame.ts';
import { defaultMuxConfig, validateMuxConfig, type MuxConfig } from './config.ts';
import { FrameDecoder } from './decoder.ts';
import { MuxError } from './errors.ts';
import { MuxStream, type StreamLink } from './stream.ts';
import { turnCorker, type TurnCork } from '../util/cork.ts';
import { queuedWrites } from '../util/queued-writes.ts';
import type { WindowBudget } from './budget.ts';

/**
 * Milliseconds we keep reading (and discarding) after sending go-away and
 * ending the connection, so the peer's last bytes don't turn our close into a
 * TCP RST that could discard the go-away before the peer reads it.
 */
const CLOSE_LINGER_MS = 2_000;

/**
 * Bytes queued on the connection before streams wait for its 'drain'. The
 * socket's own high-water mark (16 KiB) is one TLS record: stopping there
 * sends one frame per event-loop turn and one syscall per record; a few
 * records' worth lets the frames of one turn leave in one writev. It is
 * per connection, not per stream, so a relay's memory stays bounded.
 */
const CONN_WRITE_BUFFER = 256 * 1024;
/**
 * Writes queued on the connection before streams wait, however few bytes
 * they are: each costs a queue entry and a Buffer (≈ 200 bytes), and
 * CONN_WRITE_BUFFER in frames of a 1-byte payload (a header and a body
 * each) was 40 K of them. A bulk turn queues two or three per 16 KiB frame.
 */
const CONN_WRITE_PIECES = 4096;

/**
 * Control frames past maxControlQueue that one read may still add (a 64 KiB
 * chunk of pings is 5,461 frames) before the session is closed at once: we
 * stop reading at the bound, but a chunk already read is processed whole.
 */
const CONTROL_QUEUE_HARD_FACTOR = 8;

/** Liveness checks per keep-alive interval (the tick's granularity). */
const TICKS_PER_INTERVAL = 5;

export type MuxRole = 'client' | 'server';

interface PendingPing {
  resolve: (rttMs: number) => void;
  reject: (err: Error) => void;
  start: number;
}

const noop = (): void => {};

/**
 * A yamux session over one connection (hashicorp spec). Events:
 * - 'stream' (s: MuxStream): an inbound stream; while nobody listens, inbound
 *   streams wait in the accept backlog (bounded; overflow is answered with RST);
 * - 'close' (err?: Error): once, when the session has ended.
 */
export class MuxSession extends EventEmitter {
  private readonly conn: Duplex;
  private readonly role: MuxRole;
  private readonly config: Readonly<MuxConfig>;
  private readonly decoder: FrameDecoder;
  private readonly link: StreamLink;

  // Streams, owned by the read loop and open().
  private readonly streams = new Map<number, MuxStream>();
  private readonly backlog: MuxStream[] = [];
  private nextStreamId: number;

  // Write side: connection backpressure and batching.
  private readonly drainWaiters = new Set<MuxStream>();
  /**
   * True while the connection holds CONN_WRITE_BUFFER or more. Then data
   * waits in its stream and control frames in `controlQueue`; both leave at
   * 'drain', control first. Invariant: controlQueue non-empty => connBlocked.
   */
  private connBlocked = false;
  /** Control frames (12-byte headers) waiting for 'drain'; bounded by maxControlQueue. */
  private readonly controlQueue: Buffer[] = [];
  /** performance.now() when reading was paused because controlQueue hit its bound; -1 = reading. */
  private readPausedAt = -1;
  /** Batches this turn's frames into one writev (see turnCorker). */
  private readonly cork: TurnCork;

  // Session state.
  private isClosed = false;
  private localGoAway = false;
  private remoteGoAway = false;
  private readonly pings = new Map<number, PendingPing>();
  private nextPingId = 0;
  /** Latest ping round-trip time in ms (-1 = none yet); drives window growth. */
  private rtt = -1;

  // Liveness (the tick): bytes in prove the path; queued bytes must keep leaving.
  private livenessTimer: NodeJS.Timeout | undefined;
  /** Chunks received so far; the tick compares it with the last value it saw (no clock read per chunk). */
  private rxChunks = 0;
  private rxSeen = 0;
  /**
   * When the last received bytes arrived, as the tick sees it: the tick before the one that saw
   * them (they came after it), but never more than one tick's period back (a tick that ran late
   * on a busy event loop adds no silence of its own). So the path is declared dead
   * keepAliveTimeout plus at most one tick after its last byte, not two.
   */
  private rxAt = performance.now();
  /** performance.now() of the last tick, and the tick's period (ms). */
  private lastTickAt = this.rxAt;
  private tickMs = 1;
  /** Bytes handed to conn.write() so far; minus conn.writableLength = bytes the transport took. */
  private txQueued = 0;
  private txTaken = 0;
  /** performance.now() when the tick last saw the transport take bytes (or nothing was queued). */
  private txAt = performance.now();
  /** Id and send time of the keep-alive ping in flight (-1 = none). */
  private keepAlivePing = -1;
  private keepAlivePingAt = 0;

  /**
   * The session reads from its connection (always, unless the constructor's
   * readAfter is still pending or failed: then nothing the peer sent was
   * taken as ours, and a closed session never reached the peer's routing).
   */
  get readStarted(): boolean {
    return this.reading;
  }
  private reading = false;

  /** Shared window budget (see WindowBudget), from the constructor's options. */
  private readonly budget: WindowBudget | undefined;

  /**
   * `readAfter`: read nothing from conn until it resolves (the session is
   * closed with its error if it rejects); streams may be opened and written
   * meanwhile. An agent that pipelines its first streams behind its hello
   * (link/dial-relay.ts) still has the relay's hello and verdict to read
   * off the connection first.
   */
  constructor(conn: Duplex, options: { role: MuxRole; windowBudget?: WindowBudget; readAfter?: Promise<void> } & Partial<MuxConfig>) {
    super();
    const { role, windowBudget, readAfter, ...overrides } = options;
    this.budget = windowBudget;
    if (role !== 'client' && role !== 'server') throw new MuxError('ECONFIG', `invalid mux role ${String(role)}`);
    const config: MuxConfig = { ...defaultMuxConfig };
    for (const key of Object.keys(defaultMuxConfig) as Array<keyof MuxConfig>) {
      if (overrides[key] !== undefined) config[key] = overrides[key];
    }
    this.config = Object.freeze(validateMuxConfig(config));
    this.conn = conn;
    this.cork = turnCorker(conn, 'connection');
    this.role = role;
    this.nextStreamId = role === 'client' ? 1 : 2;
    this.decoder = new FrameDecoder(this.config.maxWindow, this.onFrame);
    this.link = this.makeLink();

    const read = () => {
      if (this.isClosed) return;
      this.reading = true;
      conn.on('data', this.onData);
      conn.on('end', this.onEnd);
      conn.resume(); // a handshake before us may have paused it; 'data' alone would not resume then
      if (conn.destroyed) process.nextTick(this.onConnClose);
    };
    conn.on('drain', this.onDrain);
    conn.on('error', this.onConnError);
    conn.on('close', this.onConnClose);
    this.on('newListener', this.onNewListener);
    this.reading = readAfter === undefined;
    if (readAfter) readAfter.then(read, (err: unknown) => this.close(err instanceof Error ? err : new MuxError('ECONNCLOSED', String(err))));
    else read();
    if (conn.destroyed && this.reading) process.nextTick(this.onConnClose);
    // One ping at start measures the RTT that adaptive window growth needs.
    this.ping().then(noop, noop);
    const { keepAliveInterval, writeTimeout, controlStallTimeout } = this.config;
    this.tickMs = Math.max(1, Math.floor(Math.min(keepAliveInterval || Infinity, writeTimeout || Infinity, controlStallTimeout) / TICKS_PER_INTERVAL));
    this.livenessTimer = setInterval(this.onTick, this.tickMs).unref();
  }

  /** The latest ping's round-trip time in ms (-1: none answered yet). */
  get rttMs(): number {
    return this.rtt;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Chunks read from the connection so far: a change proves the path alive (any bytes do, not only a ping's answer). */
  get chunksReceived(): number {
    return this.rxChunks;
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** Opens an outbound stream; the SYN (a window update) is sent immediately. */
  open(): MuxStream {
    if (this.isClosed) throw new MuxError('ESESSIONCLOSED', 'session is closed');
    if (this.localGoAway || this.remoteGoAway) throw new MuxError('EGOAWAY', 'session is going away: no new streams');
    if (this.streams.size >= this.config.maxStreams) throw new MuxError('ESTREAMLIMIT', `maxStreams (${this.config.maxStreams}) reached`);
    const id = this.nextStreamId;
    if (id > MAX_UINT32) throw new MuxError('ESTREAMLIMIT', 'stream ids exhausted');
    this.nextStreamId += 2;
    const stream = new MuxStream(id, this, this.link, INITIAL_STREAM_WINDOW, this.config.initialWindow, true);
    this.streams.set(id, stream);
    this.writeHeader(FrameType.WindowUpdate, Flag.SYN, id, this.config.initialWindow - INITIAL_STREAM_WINDOW);
    return stream;
  }

  /** Round-trip time in milliseconds of one ping. */
  ping(): Promise<number> {
    if (this.isClosed) return Promise.reject(new MuxError('ESESSIONCLOSED', 'session is closed'));
    return new Promise<number>((resolve, reject) => {
      this.sendPing({ resolve, reject, start: performance.now() });
    });
  }

  private sendPing(pending: PendingPing): number {
    const id = this.nextPingId;
    this.nextPingId = (id + 1) >>> 0;
    this.pings.set(id, pending);
    this.writeHeader(FrameType.Ping, Flag.SYN, 0, id);
    return id;
  }

  /** Tell the peer we take no new streams; we open none either. Existing streams continue. */
  goAway(code: number = GoAwayCode.Normal): void {
    if (this.isClosed || this.localGoAway) return;
    this.localGoAway = true;
    this.writeHeader(FrameType.GoAway, 0, 0, code);
  }

  /** Go-away if possible, destroy all streams, end the connection, emit 'close' once. */
  close(err?: Error): void {
    this.shutdown(err, err, true);
  }

  // ---- read loop ------------------------------------------------------------------

  private readonly onData = (chunk: Buffer): void => {
    this.rxChunks++;
    try {
      this.decoder.push(chunk);
    } catch (err) {
      const sessionErr = asSessionError(err);
      this.shutdown(sessionErr, sessionErr, true);
    }
  };

  /** Dispatch by frame type (the decoder has rejected unknown types). */
  private readonly onFrame = (h: FrameHeader, payload: Buffer, first: boolean, last: boolean): void => {
    switch (h.type) {
      case FrameType.Data:
      case FrameType.WindowUpdate:
        this.onStreamFrame(h, payload, first, last);
        return;
      case FrameType.Ping:
        this.onPing(h);
        return;
      case FrameType.GoAway:
        this.onGoAway(h);
        return;
    }
  };

  /** A stream frame, or one piece of a Data frame that spans chunks (flags act on the first/last piece). */
  private onStreamFrame(h: FrameHeader, payload: Buffer, first: boolean, last: boolean): void {
    const id = h.streamId;
    const flags = h.flags;
    let stream = this.streams.get(id);
    if (first && (flags & Flag.SYN) !== 0) {
      if (stream !== undefined) throw new MuxError('EPROTOCOL', `SYN for stream ${id}, which is already open`);
      stream = this.incoming(id);
    }
    // Unknown (closed, reset or refused) stream: the payload is simply dropped.
    if (stream === undefined) return;
    if (h.type === FrameType.Data) {
      if (payload.length > 0 && !stream._onData(payload)) {
        throw new MuxError('EPROTOCOL', `stream ${id}: ${payload.length} bytes exceed the receive window`);
      }
    } else if (h.length > 0) {
      stream._onWindowUpdate(h.length);
    }
    if (!last) return;
    if ((flags & Flag.RST) !== 0) stream._onRst();
    else if ((flags & Flag.FIN) !== 0) stream._onFin();
  }

  /** A SYN: register the stream, or refuse it with RST when we are at a limit. */
  private incoming(id: number): MuxStream | undefined {
    const ours = this.role === 'client' ? 1 : 0;
    if (id === 0 || id % 2 === ours) throw new MuxError('EPROTOCOL', `SYN with stream id ${id} of the wrong parity`);
    if (this.localGoAway || this.streams.size >= this.config.maxStreams || this.backlog.length >= this.config.acceptBacklog) {
      this.writeHeader(FrameType.WindowUpdate, Flag.RST, id, 0);
      return undefined;
    }
    const stream = new MuxStream(id, this, this.link, INITIAL_STREAM_WINDOW, INITIAL_STREAM_WINDOW, false);
    this.streams.set(id, stream);
    if (this.backlog.length === 0 && this.listenerCount('stream') > 0) this.accept(stream);
    else this.backlog.push(stream);
    return stream;
  }

  private accept(stream: MuxStream): void {
    stream._accept(this.config.initialWindow);
    this.emit('stream', stream);
  }

  private readonly onNewListener = (event: string | symbol): void => {
    if (event === 'stream' && this.backlog.length > 0) process.nextTick(this.drainBacklog);
  };

  private readonly drainBacklog = (): void => {
    while (!this.isClosed && this.backlog.length > 0 && this.listenerCount('stream') > 0) {
      this.accept(this.backlog.shift()!);
    }
  };

  private onPing(h: FrameHeader): void {
    if ((h.flags & Flag.SYN) !== 0) {
      this.writeHeader(FrameType.Ping, Flag.ACK, 0, h.length);
    } else if ((h.flags & Flag.ACK) !== 0) {
      const ping = this.pings.get(h.length);
      if (ping === undefined) return; // not ours, or already settled
      this.pings.delete(h.length);
      if (h.length === this.keepAlivePing) this.keepAlivePing = -1;
      this.rtt = performance.now() - ping.start;
      ping.resolve(this.rtt);
    }
  }

  private onGoAway(h: FrameHeader): void {
    this.remoteGoAway = true;
    // Like hashicorp: an error go-away ends the session; a normal one lets streams finish.
    if (h.length !== GoAwayCode.Normal) {
      const err = new MuxError('EGOAWAY', `peer sent go-away with error code ${h.length}`);
      this.shutdown(err, err, false);
    }
  }

  // ---- write side -------------------------------------------------------------------

  /**
   * A control frame (everything but a Data frame's own header): written at
   * once while the connection takes bytes, else queued ahead of all waiting
   * data. Ping ACKs, window updates and RSTs are what a peer that never reads
   * can make us produce, so the queue is bounded: at maxControlQueue we stop
   * reading from the peer, and the tick closes a session that stays there.
   */
  private writeHeader(type: number, flags: number, streamId: number, length: number): void {
    if (!this.conn.writable) return;
    const header = Buffer.allocUnsafe(HEADER_LENGTH); // from Node's pool: a slice, not a fresh allocation
    encodeHeader(header, 0, type, flags, streamId, length);
    if (!this.connBlocked) return this.writeBody(header);
    const queue = this.controlQueue;
    const bound = this.config.maxControlQueue;
    if (queue.length >= bound * CONTROL_QUEUE_HARD_FACTOR) {
      // Still coming after we stopped reading (the rest of a chunk already read): drop, and end the session.
      if (!this.overflowing) {
        this.overflowing = true;
        process.nextTick(this.onControlOverflow);
      }
      return;
    }
    queue.push(header);
    if (queue.length >= bound && this.readPausedAt < 0) {
      this.readPausedAt = performance.now();
      this.conn.pause();
    }
  }

  private overflowing = false;

  private readonly onControlOverflow = (): void => {
    const err = new MuxError('ECONTROLSTALL', `peer made us queue over ${this.config.maxControlQueue * CONTROL_QUEUE_HARD_FACTOR} control frames without reading them`);
    this.shutdown(err, err, true);
  };

  /** A Data frame's header: only called when canSend() (so never behind queued control frames). */
  private writeDataHeader(streamId: number, length: number): void {
    const header = Buffer.allocUnsafe(HEADER_LENGTH);
    encodeHeader(header, 0, FrameType.Data, 0, streamId, length);
    this.writeBody(header);
  }

  /** Queues bytes on the corked connection; past CONN_WRITE_BUFFER streams wait for 'drain'. */
  private writeBody(buf: Buffer): void {
    if (!this.conn.writable) return;
    this.cork();
    // The write that fills the queue in pieces ends the wait once done: no 'drain' comes for few bytes.
    const crowded = queuedWrites(this.conn) >= CONN_WRITE_PIECES - 1;
    if (crowded) this.conn.write(buf, this.onPiecesOut);
    else this.conn.write(buf);
    this.txQueued += buf.length;
    if (crowded || this.conn.writableLength >= CONN_WRITE_BUFFER) this.connBlocked = true;
  }

  private readonly onPiecesOut = (): void => {
    if (this.connBlocked && this.conn.writableLength < CONN_WRITE_BUFFER && !this.isClosed) this.onDrain();
  };

  private readonly onDrain = (): void => {
    this.connBlocked = false;
    const queue = this.controlQueue;
    if (queue.length > 0) {
      // Control first, all of it (bounded, 12 bytes a frame), then data.
      for (let i = 0; i < queue.length; i++) this.writeBody(queue[i]);
      queue.length = 0;
      if (this.readPausedAt >= 0) {
        this.readPausedAt = -1;
        if (!this.isClosed) this.conn.resume();
      }
      if (this.connBlocked) return;
    }
    for (const stream of this.drainWaiters) {
      this.drainWaiters.delete(stream);
      stream._flush();
      if (this.connBlocked) return; // the rest wait for the next drain, in order
    }
  };

  private makeLink(): StreamLink {
    return {
      config: this.config,
      budget: this.budget,
      rtt: () => this.rtt,
      isOpen: () => !this.isClosed,
      canSend: () => !this.connBlocked,
      writeHeader: (type, flags, id, length) => this.writeHeader(type, flags, id, length),
      writeDataHeader: (id, length) => this.writeDataHeader(id, length),
      writeBody: (buf) => this.writeBody(buf),
      deferFlush: () => this.cork(true),
      waitForDrain: (stream) => void this.drainWaiters.add(stream),
      release: (stream) => {
        this.drainWaiters.delete(stream);
        if (this.streams.get(stream.id) !== stream) return false;
        this.streams.delete(stream.id);
        stream._releaseBudget();
        const i = this.backlog.indexOf(stream);
        if (i >= 0) this.backlog.splice(i, 1);
        return true;
      },
    };
  }

  // ---- keep-alive -------------------------------------------------------------------

  /**
   * The liveness tick (keepAliveInterval / 5): one timer per session, no
   * clock read on the hot path.
   * - Any chunk received since the last tick proves the path. After
   *   keepAliveInterval of silence we ping (the answer is bytes too); after
   *   keepAliveTimeout of silence the path is dead. A slow link delivers
   *   something (data, window updates, answers) and is never declared dead;
   *   pings never wait for stream windows or behind waiting data.
   * - Bytes queued on the connection must keep leaving: writeTimeout without
   *   the transport taking any (its send buffer full, nothing acknowledged)
   *   closes the session, as TCP_USER_TIMEOUT would.
   * - A control queue held at its bound (the peer does not read) for
   *   controlStallTimeout closes the session with go-away.
   */
  private readonly onTick = (): void => {
    if (this.isClosed) return;
    const now = performance.now();
    const c = this.config;
    if (this.rxChunks !== this.rxSeen) {
      this.rxSeen = this.rxChunks;
      this.rxAt = Math.max(this.lastTickAt, now - this.tickMs);
    }
    this.lastTickAt = now;
    const taken = this.txQueued - this.conn.writableLength;
    if (taken !== this.txTaken || this.conn.writableLength === 0) {
      this.txTaken = taken;
      this.txAt = now;
    }
    let err: MuxError | undefined;
    if (this.readPausedAt >= 0 && now - this.readPausedAt >= c.controlStallTimeout) {
      err = new MuxError('ECONTROLSTALL', `peer left ${this.controlQueue.length} control frames unread for ${c.controlStallTimeout} ms (it sends but does not read)`);
    } else if (this.readPausedAt < 0 && c.keepAliveInterval > 0 && now - this.rxAt >= c.keepAliveTimeout) {
      err = new MuxError('ETIMEDOUT', `nothing received for ${Math.round(now - this.rxAt)} ms (keep-alive timeout ${c.keepAliveTimeout} ms): the path is dead`);
    } else if (c.writeTimeout > 0 && now - this.txAt >= c.writeTimeout) {
      err = new MuxError('ETIMEDOUT', `${this.conn.writableLength} bytes queued and none taken for ${Math.round(now - this.txAt)} ms (write timeout ${c.writeTimeout} ms): the path is dead`);
    }
    if (err !== undefined) return this.shutdown(err, err, true);
    if (c.keepAliveInterval > 0 && now - this.rxAt >= c.keepAliveInterval && (this.keepAlivePing < 0 || now - this.keepAlivePingAt >= c.keepAliveInterval)) {
      if (this.keepAlivePing >= 0) this.pings.delete(this.keepAlivePing); // unanswered: replaced, not piled up
      this.keepAlivePingAt = now;
      this.keepAlivePing = this.sendPing({ resolve: noop, reject: noop, start: now });
    }
  };

  // ---- connection events and teardown ----------------------------------------------

  private readonly onEnd = (): void => {
    const err = new MuxError('ECONNCLOSED', 'connection ended');
    this.shutdown(this.remoteGoAway ? undefined : err, err, true);
  };

  private readonly onConnError = (err: Error): void => {
    // Before readAfter settles, whoever reads the connection (the hello) sees the same failure and says why.
    if (!this.reading) return;
    this.shutdown(err, err, false);
  };

  /** Closed without an error: clean for the session if the peer said go-away first, as with 'end'. */
  private readonly onConnClose = (): void => {
    if (!this.reading) return;
    const err = new MuxError('ECONNCLOSED', 'connection closed');
    this.shutdown(this.remoteGoAway ? undefined : err, err, false);
  };

  /**
   * The one teardown path. `streamErr` is what open streams are destroyed with
   * (undefined = quietly, for a local close); a session error becomes the
   * go-away code and the 'close' event's argument.
   */
  private shutdown(sessionErr: Error | undefined, streamErr: Error | undefined, sendGoAway: boolean): void {
    if (this.isClosed) return;
    if (sendGoAway && !this.localGoAway) {
      this.localGoAway = true;
      const code = sessionErr === undefined ? GoAwayCode.Normal : sessionErr instanceof MuxError ? sessionErr.goAwayCode ?? GoAwayCode.Normal : GoAwayCode.InternalError;
      // Past any queue: the connection is ending, so its buffer no longer needs a bound.
      const header = Buffer.allocUnsafe(HEADER_LENGTH);
      encodeHeader(header, 0, FrameType.GoAway, 0, 0, code);
      this.writeBody(header);
    }
    this.isClosed = true; // from here on streams send nothing
    this.decoder.stop();
    clearInterval(this.livenessTimer);
    this.livenessTimer = undefined;
    this.controlQueue.length = 0;

    const pingErr = sessionErr ?? new MuxError('ESESSIONCLOSED', 'session closed');
    for (const ping of this.pings.values()) ping.reject(pingErr);
    this.pings.clear();
    for (const stream of [...this.streams.values()]) stream._destroyQuietlyIfHidden(streamErr);
    this.streams.clear();
    this.backlog.length = 0;
    this.drainWaiters.clear();

    const conn = this.conn;
    conn.off('data', this.onData);
    conn.off('drain', this.onDrain);
    conn.off('end', this.onEnd);
    conn.off('error', this.onConnError);
    conn.off('close', this.onConnClose);
    this.off('newListener', this.onNewListener);
    lingerAndClose(conn);
    process.nextTick(() => this.emit('close', sessionErr));
  }
}

/**
 * Ends the connection and destroys it once both directions are finished: our
 * FIN flushed and the peer's FIN read (we keep reading and discarding until
 * then), bounded by CLOSE_LINGER_MS.
 */
function lingerAndClose(conn: Duplex): void {
  if (conn.destroyed) return;
  conn.on('error', noop); // late errors of a connection we are done with
  let waiting = 0;
  const done = (): void => {
    if (--waiting === 0) conn.destroy();
  };
  if (!conn.writableFinished) {
    waiting++;
    conn.once('finish', done);
  }
  if (!conn.readableEnded) {
    waiting++;
    conn.once('end', done);
    conn.on('data', noop);
  }
  if (waiting === 0) {
    conn.destroy();
    return;
  }
  const timer = setTimeout(() => conn.destroy(), CLOSE_LINGER_MS).unref();
  conn.once('close', () => clearTimeout(timer));
  if (conn.writable) conn.end();
}

function asSessionError(err: unknown): MuxError {
  if (err instanceof MuxError) return err;
  const e = new MuxError('EINTERNAL', `internal error: ${err instanceof Error ? err.message : String(err)}`);
  (e as { cause?: unknown }).cause = err;
  return e;
}
