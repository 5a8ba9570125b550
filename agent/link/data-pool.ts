import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { MuxSession } from '../mux/index.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { MAX_TOKENS_PER_REQUEST, parseReply, parseTokensAnswer, type TokensAnswer, type TokensRequest } from '../protocol/messages.ts';
import { DATA_PAIRING_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS, TCP_KEEPALIVE_MS } from '../protocol/limits.ts';
import { DATA_KIND_AGENT, DataRefusal, encodeOpening, parseAnswer, refusalName, type DataKind } from '../data/wire.ts';
import { abort } from '../util/pump.ts';
import { Waiters } from '../data/wait.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { formatHostPort } from '../util/hostport.ts';

/**
 * Data connections a client agent (socksd, bind) keeps ready per relay
 * session when it has seen no larger burst lately: an ssh login and the
 * parallel connections a browser opens to one host (up to six) start without
 * waiting. Streams beyond the ready ones wait a little for one being opened
 * (DataPool.next) or go over the relay link, and the pool grows to the burst
 * (DATA_POOL_MAX).
 */
export const CLIENT_DATA_POOL = 4;
/** The same for a device (`publish`): the streams being set up toward it at once, each replaced as soon as it is taken. */
export const DEVICE_DATA_POOL = 4;
/**
 * The most data connections a pool keeps ready: after a burst of new streams
 * (takes, or streams that found the pool empty, before it was full again) a
 * pool keeps as many ready as that burst, up to this, for DATA_POOL_IDLE_MS,
 * so that the next such burst (a parallel scp or rsync, a browser loading a
 * page, the bench's 64 streams) is spliced without waiting. Within the
 * relay's per-session cap (the `tokens` answer's `max`).
 */
export const DATA_POOL_MAX = 64;
/** The relay's per-session cap when its `tokens` answer does not say it (relays before `max`: their default). */
const RELAY_CAP_UNSAID = 8;
/**
 * Data connections a pool asks for and opens at once (tokens asked plus
 * connections not yet answered): each counts against the relay's handshake
 * cap per source (`--max-handshakes-per-ip`, 64) until its opening is read,
 * which a client and a device behind one address share with their links.
 * A pool growing to a burst opens the rest as these are answered.
 */
const DATA_OPENS_AT_ONCE = 16;
/**
 * ms an idle data connection is kept before it is replaced by a fresh one: TCP keep-alive
 * (TCP_KEEPALIVE_MS) keeps its NAT state, and a connection that a NAT or firewall dropped
 * without a word is gone after this at the latest. Half the relay's DATA_IDLE_MAX_MS.
 */
export const DATA_POOL_IDLE_MS = 5 * 60_000;
/** ms before data connections are tried again after they could not be made; doubled per failure up to DATA_RETRY_MAX_MS. */
const DATA_RETRY_MIN_MS = 5_000;
const DATA_RETRY_MAX_MS = 5 * 60_000;

/** A data connection the relay accepted for this session, with the token it was opened with. */
export interface DataConn {
  token: string;
  socket: Socket;
}

export interface DataPoolOptions {
  /** The relay link session the tokens are asked on (and whose end ends the pool). */
  session: MuxSession;
  /** The relay's address as the link reached it, and the link's local address (the relay checks the source). */
  endpoint: { host: string; port: number; localAddress?: string };
  /** Idle connections to keep ready at least (more after a burst, up to DATA_POOL_MAX). */
  size: number;
  /** A data connection could not be made: one line naming why (the link logs it once per relay). */
  onProblem(reason: string): void;
  /** The opening's kind: an agent's (default), or a relay's for its relay-to-relay link (agent/relay/cluster/peers.ts). */
  kind?: DataKind;
}

/**
 * An agent's data connections to its relay for one link session
 * (docs/PROTOCOL.md, "Data connections"): tokens asked for on the link,
 * plain TCP connections that present them, kept ready in a small pool.
 * A client takes one for each new stream (take); a device is told by the
 * relay's `incoming` which of its own the relay paired (claim). Each taken
 * connection is replaced at once. A connection found closed is dropped and
 * replaced; where none can be made, streams go over the relay link and the
 * pool tries again with backoff.
 */
export class DataPool {
  readonly #options: DataPoolOptions;
  /** Ready connections, oldest first (take() gives the newest: the least likely to be stale). */
  readonly #idle: DataConn[] = [];
  /** Connections with bytes already waiting (a client's ClientHello that overtook its `incoming`): claimable only. */
  readonly #early = new Map<string, DataConn>();
  /** Connections opened, not yet answered by the relay: a claim for one waits for the answer. */
  readonly #opening = new Map<string, Promise<DataConn | undefined>>();
  /** Taken connections: reset when the session ends (a tunnel lives no longer than its link, as on the link). */
  readonly #active = new Set<Socket>();
  /** What watches each waiting connection (removed when it is taken). */
  readonly #watching = new Map<Socket, { gone: () => void; onReadable: () => void; timer: NodeJS.Timeout | undefined }>();
  #asking = 0;
  /** Streams that found the pool empty, waiting (bounded) for a connection being opened (next). */
  readonly #waiters = new Waiters<DataConn>();
  /** Streams that wanted a connection (taken or missed) since the pool was last full: the current burst. */
  #burst = 0;
  /** The largest burst lately, and when it was last reached (it counts for DATA_POOL_IDLE_MS). */
  #peak = 0;
  #peakAt = 0;
  /** The relay's cap on this session's tokens outstanding plus connections waiting (`tokens.max`). */
  #relayCap = RELAY_CAP_UNSAID;
  /** A cap the relay's per-source or total limit set on the pool, for DATA_RETRY_MIN_MS. */
  #limited: { cap: number; until: number } | undefined;
  #failures = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #fillScheduled = false;
  #retiring = false;
  #closed = false;

  constructor(options: DataPoolOptions) {
    this.#options = options;
    options.session.once('close', () => this.close());
    this.#scheduleFill();
  }

  get idle(): number {
    return this.#idle.length;
  }

  /** The ready connections, oldest first (a copy: for status and tests; take() is how a stream gets one). */
  ready(): readonly DataConn[] {
    return [...this.#idle];
  }

  /** Taken connections still open (streams on data connections). */
  get active(): number {
    return this.#active.size;
  }

  /** Connections the pool keeps ready now: its size, or the largest recent burst (up to DATA_POOL_MAX and the relay's cap). */
  get target(): number {
    const now = performance.now();
    const peak = now - this.#peakAt <= DATA_POOL_IDLE_MS ? Math.min(this.#peak, DATA_POOL_MAX) : 0;
    const limited = this.#limited && now < this.#limited.until ? this.#limited.cap : Infinity;
    return Math.min(Math.max(this.#options.size, peak), this.#relayCap, limited);
  }

  /**
   * A ready connection for a new stream of this client, or undefined (then
   * next(), or the link). Either way the stream counts toward the burst the
   * pool grows to.
   */
  take(): DataConn | undefined {
    this.#wanted();
    for (let conn = this.#idle.pop(); conn; conn = this.#idle.pop()) {
      if (!usable(conn.socket)) continue;
      this.#activate(conn);
      return conn;
    }
    return undefined;
  }

  /**
   * After a take() that found none: the next connection the pool gets, if
   * one is being asked for or opened that no earlier stream waits for (the
   * refill that take() scheduled decides), within `ms`; else (or then)
   * undefined, and the stream goes over the link.
   */
  next(ms: number): Promise<DataConn | undefined> {
    // Backing off (none could be made lately): the link, at once.
    if (this.#retiring || (this.#retryTimer !== undefined && this.#opening.size + this.#asking <= this.#waiters.length)) return Promise.resolve(undefined);
    return this.#waiters.wait(ms);
  }

  /** The device's side: the relay sent a stream of ours over the link (none of our connections was ready): it counts toward the burst. */
  missed(): void {
    this.#wanted();
  }

  /** The connection the relay paired for an `incoming` (waiting for the relay's answer if it is still being opened). */
  async claim(token: string): Promise<DataConn | undefined> {
    this.#wanted();
    const opening = this.#opening.get(token);
    if (opening) await opening;
    const early = this.#early.get(token);
    const conn = early ?? this.#idle.find((c) => c.token === token);
    if (!conn || !usable(conn.socket)) return undefined;
    this.#early.delete(token);
    const at = this.#idle.indexOf(conn);
    if (at >= 0) this.#idle.splice(at, 1);
    this.#activate(conn);
    return conn;
  }

  /**
   * A taken connection turned out dead without a word (nothing came back on
   * it): the ready ones were made at about the same time through the same
   * path and may be just as dead, so they are all replaced.
   */
  renew(): void {
    for (const conn of [...this.#idle, ...this.#early.values()]) this.#drop(conn);
  }

  /** No new connections (the session is retiring); idle ones are closed, taken ones live on. */
  retire(): void {
    this.#retiring = true;
    clearTimeout(this.#retryTimer);
    for (const conn of [...this.#idle, ...this.#early.values()]) this.#drop(conn);
    this.#settleWaiters();
  }

  /** The session ended: every connection of the pool, taken ones too, is reset. */
  close(): void {
    if (this.#closed) return;
    this.retire();
    this.#closed = true;
    for (const socket of [...this.#active]) abort(socket);
  }

  /** One more stream of the current burst; the largest burst lately sets the pool's target. */
  #wanted(): void {
    this.#burst++;
    const now = performance.now();
    if (this.#burst >= this.#peak || now - this.#peakAt > DATA_POOL_IDLE_MS) {
      this.#peak = this.#burst;
      this.#peakAt = now;
    }
    this.#scheduleFill();
  }

  /** Waiting streams beyond the connections still coming get none (they go over the link); all of them once the pool retires. */
  #settleWaiters(): void {
    this.#waiters.settle(this.#retiring ? 0 : this.#opening.size + this.#asking);
  }

  /** A new connection goes to the first stream waiting for one, if any (true), else it waits in the pool. */
  #handToWaiter(conn: DataConn): boolean {
    if (!this.#waiters.hand(conn)) return false;
    this.#activate(conn);
    return true;
  }

  #activate(conn: DataConn): void {
    this.#unwatch(conn);
    this.#active.add(conn.socket);
    conn.socket.once('close', () => this.#active.delete(conn.socket));
    this.#scheduleFill();
  }

  #scheduleFill(): void {
    if (this.#fillScheduled || this.#retiring) return;
    this.#fillScheduled = true;
    // Several streams taken in one turn are replaced with one token request.
    setImmediate(() => {
      this.#fillScheduled = false;
      this.#fill();
      this.#settleWaiters();
    });
  }

  /**
   * Asks for the connections the pool lacks: up to its target (plus the
   * streams waiting), never more than the relay's cap leaves (it counts a
   * connection from its token until a `connect` names it), in requests of at
   * most MAX_TOKENS_PER_REQUEST sent at once.
   */
  #fill(): void {
    if (this.#retiring || this.#retryTimer !== undefined || this.#options.session.closed) return;
    const coming = this.#idle.length + this.#opening.size + this.#asking;
    const held = coming + this.#early.size;
    const inFlight = this.#opening.size + this.#asking;
    let want = Math.min(Math.max(this.target, this.#waiters.length + this.#idle.length) - coming, this.#relayCap - held, DATA_OPENS_AT_ONCE - inFlight);
    while (want > 0) {
      const n = Math.min(want, MAX_TOKENS_PER_REQUEST);
      want -= n;
      this.#asking += n;
      this.#requestTokens(n).then(
        (answer) => {
          this.#asking -= n;
          if (answer.max !== undefined) this.#relayCap = answer.max;
          for (const token of answer.tokens) this.#open(token);
          this.#settleWaiters();
        },
        (err) => {
          this.#asking -= n;
          this.#settleWaiters();
          this.#failed(errorMessage(err));
        },
      );
    }
  }

  async #requestTokens(n: number): Promise<TokensAnswer> {
    const stream = this.#options.session.open();
    stream.on('error', () => {});
    writeFrame(stream, { t: 'tokens', n, grows: true } satisfies TokensRequest);
    let frame;
    try {
      frame = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
    } finally {
      stream.end();
      stream.resume();
    }
    if (frame.t === 'error') {
      const reply = parseReply(frame);
      throw new DiodeError('EDATA', reply.t === 'error' ? reply.message || reply.code : 'refused');
    }
    return parseTokensAnswer(frame);
  }

  #open(token: string): void {
    const opened = this.#connect(token).then(
      (conn) => {
        this.#opening.delete(token);
        this.#failures = 0;
        if (this.#retiring) {
          conn.socket.end(() => conn.socket.destroy());
          return undefined;
        }
        if (!this.#handToWaiter(conn)) this.#wait(conn);
        // A pool growing to a burst opens the rest as these are answered (DATA_OPENS_AT_ONCE).
        this.#scheduleFill();
        return conn;
      },
      (err) => {
        this.#opening.delete(token);
        this.#settleWaiters();
        // Over the relay's cap per source or in total while this pool holds or uses connections (grown
        // pools behind one NAT address share it): it asks for no more than it holds for a while (the
        // refused token stays out at the relay until it lapses), no failure line, no backoff.
        const held = this.#idle.length + this.#early.size + this.#opening.size + this.#asking;
        if (err instanceof DiodeError && err.code === 'EDATA_LIMIT' && held + this.#active.size > 0) {
          this.#limited = { cap: held, until: performance.now() + DATA_RETRY_MIN_MS };
        } else this.#failed(errorMessage(err));
        return undefined;
      },
    );
    this.#opening.set(token, opened);
  }

  /** TCP to the relay, the opening with the token, the relay's one-byte answer. */
  #connect(token: string): Promise<DataConn> {
    const { host, port, localAddress } = this.#options.endpoint;
    const where = formatHostPort({ host, port });
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, localAddress, allowHalfOpen: true, noDelay: true });
      let buffered: Buffer = Buffer.alloc(0);
      const finish = (err: Error | undefined) => {
        clearTimeout(timer);
        socket.off('readable', onReadable);
        socket.off('close', onClose);
        if (err) {
          abort(socket);
          reject(err);
        } else resolve({ token, socket });
      };
      const timer = setTimeout(() => finish(new Error(`data connection to ${where}: no answer within ${HANDSHAKE_TIMEOUT_MS} ms`)), HANDSHAKE_TIMEOUT_MS);
      const onClose = () => finish(new Error(`data connection to ${where}: closed before the relay answered`));
      const onReadable = () => {
        let chunk: Buffer | null;
        while ((chunk = socket.read() as Buffer | null) !== null) {
          buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
          const answer = parseAnswer(buffered);
          if (answer === undefined) continue;
          if ('refusal' in answer) {
            const code = answer.refusal === DataRefusal.limit ? 'EDATA_LIMIT' : 'EDATA_REFUSED';
            return finish(new DiodeError(code, `relay refused a data connection (${refusalName(answer.refusal)}): ${answer.reason}`));
          }
          // Bytes right behind the answer: the relay paired it already and a ClientHello follows.
          if (answer.rest.length > 0) socket.unshift(answer.rest);
          return finish(undefined);
        }
      };
      socket.on('error', (err) => {
        if (socket.connecting || buffered.length === 0) finish(new Error(`data connection to ${where}: ${errorMessage(err)}`));
      });
      socket.once('close', onClose);
      socket.once('connect', () => {
        socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
        socket.write(encodeOpening(token, this.#options.kind ?? DATA_KIND_AGENT));
      });
      socket.on('readable', onReadable);
    });
  }

  /** A ready connection waits to be taken; its end, bytes ahead of an `incoming`, or its idle lifetime are watched. */
  #wait(conn: DataConn): void {
    const { socket } = conn;
    socket.on('error', () => {});
    const gone = () => this.#drop(conn);
    const onReadable = () => {
      if (socket.readableLength === 0) {
        socket.read(); // lets a pending end be seen
        return;
      }
      // The device's side: the relay passed a client's ClientHello on before its `incoming` arrived.
      if (this.#early.has(conn.token)) return;
      const at = this.#idle.indexOf(conn);
      if (at >= 0) this.#idle.splice(at, 1);
      this.#early.set(conn.token, conn);
      this.#arm(conn, DATA_PAIRING_TIMEOUT_MS, () => this.#drop(conn, true));
      this.#scheduleFill();
    };
    socket.once('close', gone);
    socket.once('end', gone);
    socket.on('readable', onReadable);
    this.#watching.set(socket, { gone, onReadable, timer: undefined });
    // Replaced after its idle lifetime: keep-alive keeps NAT state, this drops one that was lost silently.
    this.#arm(conn, DATA_POOL_IDLE_MS, () => this.#drop(conn));
    if (socket.readableLength > 0) onReadable();
    else {
      this.#idle.push(conn);
      // Full again: the burst is over (its size stays as the peak).
      if (this.#idle.length >= this.target) this.#burst = 0;
    }
  }

  /** Runs `then` after `ms` unless the connection is taken first. */
  #arm(conn: DataConn, ms: number, then: () => void): void {
    const watch = this.#watching.get(conn.socket);
    if (!watch) return;
    clearTimeout(watch.timer);
    watch.timer = setTimeout(then, ms).unref();
  }

  /** Stops watching a waiting connection (taken, or forgotten). */
  #unwatch(conn: DataConn): void {
    const watch = this.#watching.get(conn.socket);
    if (!watch) return;
    this.#watching.delete(conn.socket);
    clearTimeout(watch.timer);
    conn.socket.off('close', watch.gone);
    conn.socket.off('end', watch.gone);
    conn.socket.off('readable', watch.onReadable);
  }

  /**
   * Forgets a waiting connection (closed, stale, or the pool retires): an
   * orderly close, or a reset when bytes were waiting on it (`abortIt`), and
   * a replacement unless the pool retires.
   */
  #drop(conn: DataConn, abortIt = false): void {
    this.#unwatch(conn);
    const at = this.#idle.indexOf(conn);
    if (at >= 0) this.#idle.splice(at, 1);
    this.#early.delete(conn.token);
    if (abortIt) abort(conn.socket);
    else if (!conn.socket.destroyed) conn.socket.end(() => conn.socket.destroy());
    this.#scheduleFill();
  }

  #failed(reason: string): void {
    if (this.#closed || this.#options.session.closed) return;
    this.#failures++;
    this.#options.onProblem(reason);
    if (this.#retryTimer !== undefined || this.#retiring) return;
    const delay = Math.min(DATA_RETRY_MAX_MS, DATA_RETRY_MIN_MS * 2 ** (this.#failures - 1));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#fill();
    }, delay).unref();
  }
}

/** A socket that can still carry a stream. */
function usable(socket: Socket): boolean {
  return !socket.destroyed && socket.readyState === 'open' && !socket.readableEnded;
}
