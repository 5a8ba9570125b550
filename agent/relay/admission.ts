import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { ConnectionLimiter, sourceKey, type Refusal } from '../util/sources.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import type { RelayLimits } from './config.ts';
import type { RelayStats } from './stats.ts';

export { sourceKey };

/** ms: lines of one kind (a refusal, a publish, a change of publisher) are logged at most once per this interval, with the count since the last line. */
const LINE_INTERVAL_MS = 1_000;

/**
 * One log line per kind and second ("…; 1,234 more since the last line"),
 * so a flood (of refusals, of publish sets, of publisher changes) costs a
 * counter increment each, not a write: what a peer can make the relay log
 * stays a few lines a second whatever it sends. The counters (RelayStats)
 * still count every single one.
 */
export class RefusalLog {
  readonly #log: Logger;
  readonly #last = new Map<string, { at: number; lines: number; suppressed: number }>();

  constructor(log: Logger) {
    this.#log = log;
  }

  refused(kind: string, message: string, now = Date.now()): void {
    this.line('info', kind, `refused: ${message}`, `${kind} refusals`, now);
  }

  /**
   * A line of `kind` at `level`, unless `perInterval` of that kind went out in
   * the current second; `what` names the suppressed ones in the next line.
   * Most kinds allow one a second; a kind whose lines each say something an
   * operator needs apart (which device's session ended) allows a few more.
   */
  line(level: 'info' | 'warn', kind: string, message: string, what = `${kind} lines`, now = Date.now(), perInterval = 1): void {
    let last = this.#last.get(kind);
    if (last && now - last.at < LINE_INTERVAL_MS) {
      if (last.lines >= perInterval) {
        last.suppressed++;
        return;
      }
      last.lines++;
    } else {
      last = { at: now, lines: 1, suppressed: last?.suppressed ?? 0 };
      this.#last.set(kind, last);
    }
    const more = last.suppressed > 0 ? ` (${last.suppressed} more ${what} since the last line)` : '';
    last.suppressed = 0;
    this.#log[level](`${message}${more}`);
  }
}

/** The counter and refusal kind of each level (a source, its IPv6 /56 or /48, everyone). */
const LEVEL: Readonly<Record<Refusal, string>> = Object.freeze({ 'per-ip': 'per_ip', 'per-56': 'per_prefix', 'per-48': 'per_prefix', total: 'total' });

/**
 * The agent port's admission: connections still in TLS or hello and
 * authenticated sessions, per source, per IPv6 /56 and /48 of sources, and
 * in total. Every `admit…` that returns true needs exactly one matching
 * release.
 */
export class Admission {
  readonly #limits: RelayLimits;
  readonly #stats: RelayStats;
  readonly #refusals: RefusalLog;
  readonly #handshakes: ConnectionLimiter;
  readonly #sessions: ConnectionLimiter;

  constructor(limits: RelayLimits, stats: RelayStats, refusals: RefusalLog) {
    this.#limits = limits;
    this.#stats = stats;
    this.#refusals = refusals;
    this.#handshakes = new ConnectionLimiter(limits.maxHandshakes, limits.maxHandshakesPerIp);
    this.#sessions = new ConnectionLimiter(limits.maxSessions, limits.maxSessionsPerIp);
  }

  /** A new TCP connection from `source`: room for one more unauthenticated peer? */
  admitHandshake(source: string): boolean {
    const refusal = this.#handshakes.admit(source);
    if (refusal === undefined) return true;
    const flag = refusal === 'total' ? '--max-handshakes' : `--max-handshakes-per-ip${refusal === 'per-ip' ? '' : `, × ${this.#handshakes.cap(refusal) / this.#limits.maxHandshakesPerIp} for an IPv6 /${refusal.slice(4)}`}`;
    this.#stats.count(`refused_handshakes_${LEVEL[refusal]}`);
    this.#refusals.refused(`handshakes_${LEVEL[refusal]}`, `connection from ${source}: ${this.#handshakes.describe(refusal, source, 'unauthenticated connections')} (${flag})`);
    return false;
  }

  releaseHandshake(source: string): void {
    this.#handshakes.release(source);
  }

  /** An authenticated agent from `source`: room for one more session? */
  admitSession(source: string, address: string): boolean {
    const refusal = this.#sessions.admit(source);
    if (refusal === undefined) return true;
    const flag = refusal === 'total' ? '--max-sessions' : `--max-sessions-per-ip${refusal === 'per-ip' ? '' : `, × ${this.#sessions.cap(refusal) / this.#limits.maxSessionsPerIp} for an IPv6 /${refusal.slice(4)}`}`;
    this.#stats.count(`refused_sessions_${LEVEL[refusal]}`);
    this.#refusals.refused(`sessions_${LEVEL[refusal]}`, `session of ${address} from ${source}: ${this.#sessions.describe(refusal, source, 'sessions')} (${flag})`);
    return false;
  }

  releaseSession(source: string): void {
    this.#sessions.release(source);
  }

  get handshakes(): number {
    return this.#handshakes.total;
  }
}

/** File descriptors kept free for everything that is not an agent connection (logs, the gateway's listeners, Redis, /proc reads). */
export const FD_RESERVE = 64;

/** The soft RLIMIT_NOFILE of this process, or undefined where /proc/self/limits cannot be read. */
export function openFilesLimit(limits = readProcLimits()): number | undefined {
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!m || m[1] === 'unlimited') return undefined;
  return Number(m[1]);
}

function readProcLimits(): string {
  try {
    return readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return '';
  }
}

/**
 * Keeps a listener from running the process out of file descriptors, and
 * from dying when it does. Accepted connections are counted; when they come
 * within FD_RESERVE of the open-files limit, or an accept fails with
 * EMFILE/ENFILE, the listener is closed (new peers get "connection refused",
 * which agents retry with backoff) and listens again after `pauseMs`, once
 * there is room. Established connections are untouched. Logged once per
 * pause.
 */
export class AcceptGuard {
  readonly #server: Server;
  readonly #host: string;
  readonly #port: number;
  readonly #pauseMs: number;
  readonly #backlog: number | undefined;
  readonly #stats: RelayStats;
  readonly #log: Logger;
  /** Connections above which we stop accepting (undefined: no known limit, rely on EMFILE). */
  readonly #ceiling: number | undefined;
  #open = 0;
  #paused = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: { server: Server; host: string; port: number; backlog?: number; pauseMs: number; stats: RelayStats; log: Logger; fdLimit?: number }) {
    this.#server = options.server;
    this.#host = options.host;
    this.#port = options.port;
    this.#pauseMs = options.pauseMs;
    this.#backlog = options.backlog;
    this.#stats = options.stats;
    this.#log = options.log;
    const limit = options.fdLimit ?? openFilesLimit();
    this.#ceiling = limit === undefined ? undefined : Math.max(1, limit - FD_RESERVE);
    this.#server.on('error', this.#onError);
    this.#server.on('connection', this.#onConnection);
  }

  get paused(): boolean {
    return this.#paused;
  }

  #onConnection = (socket: { once(event: 'close', cb: () => void): unknown }): void => {
    this.#open++;
    socket.once('close', () => this.#open--);
    if (this.#ceiling !== undefined && this.#open >= this.#ceiling) this.#pause(`${this.#open} connections open, the open-files limit leaves room for ${this.#ceiling}`);
  };

  #onError = (err: NodeJS.ErrnoException): void => {
    if (this.#paused) {
      // Listening again failed: try once more after the next pause.
      this.#log.warn(`agent listener: cannot listen again: ${errorMessage(err)}; retrying`);
      if (this.#timer === undefined && !this.#stopped) this.#timer = setTimeout(this.#resume, this.#pauseMs);
    } else if (err.code === 'EMFILE' || err.code === 'ENFILE') {
      this.#pause(`accept failed: ${errorMessage(err)}`);
    } else {
      this.#log.warn(`agent listener: ${errorMessage(err)}`);
    }
  };

  #pause(why: string): void {
    if (this.#paused || this.#stopped) return;
    this.#paused = true;
    this.#stats.count('accept_paused_fd_limit');
    this.#log.warn(`out of file descriptors (${why}): not accepting agent connections for ${this.#pauseMs} ms; raise LimitNOFILE (see README)`);
    this.#server.close();
    this.#timer = setTimeout(this.#resume, this.#pauseMs);
  }

  #resume = (): void => {
    this.#timer = undefined;
    if (this.#stopped) return;
    // Still no room: look again later rather than accept into a full table.
    if (this.#ceiling !== undefined && this.#open > this.#ceiling - Math.min(FD_RESERVE / 2, Math.ceil(this.#ceiling / 10))) {
      this.#timer = setTimeout(this.#resume, this.#pauseMs);
      return;
    }
    try {
      this.#server.listen({ port: this.#port, host: this.#host, backlog: this.#backlog }, () => {
        this.#paused = false;
        this.#log.info(`accepting agent connections again (${this.#open} open)`);
      });
    } catch (err) {
      this.#log.warn(`agent listener: cannot listen again: ${errorMessage(err)}; retrying`);
      this.#timer = setTimeout(this.#resume, this.#pauseMs);
    }
  };

  /** Stops for good (the relay is closing): no more re-listening. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#server.off('connection', this.#onConnection);
  }
}
