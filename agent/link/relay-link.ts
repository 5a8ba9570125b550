import { EventEmitter } from 'node:events';
import { MuxSession, type MuxStream } from '../mux/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { formatHostPort } from '../util/hostport.ts';
import { errorMessage, DiodeError } from '../util/errors.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseReply, type PublishedPort } from '../protocol/messages.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { backoffDelay, defaultBackoff, type BackoffConfig } from './backoff.ts';
import { dialRelay } from './dial-relay.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { LinkStatus } from '../ops/status.ts';
import type { LastError } from '../ops/stream-stats.ts';

/** ms a session must last before a later loss restarts the backoff from the bottom. */
const STABLE_SESSION_MS = 10_000;

export interface RelayLinkOptions {
  /** Tried in order; an entry's `pin` is the address that relay must prove. */
  relays: RelayEntry[];
  identity: Identity;
  log: Logger;
  /** Ports to publish on every (re)connect; omit for a pure client. */
  publish?: PublishedPort[];
  /** Inbound streams (device role). Without it inbound streams are reset. */
  onStream?: (stream: MuxStream, relayAddress: string) => void;
  backoff?: BackoffConfig;
  /** Pin every relay without a pin of its own to this address. */
  expectRelay?: string;
}

/**
 * Keeps one authenticated mux session to a relay, forever: starts even when
 * no relay is reachable (a Pi boots before its network), reconnects after any
 * loss with capped exponential backoff and jitter, walks the relay list, and
 * logs a line per state change rather than per attempt.
 */
export class RelayLink extends EventEmitter {
  readonly #options: RelayLinkOptions;
  readonly #log: Logger;
  #session: MuxSession | undefined;
  #relayAddress: string | undefined;
  #relayEndpoint: string | undefined;
  #running = false;
  #stopped: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #lastProblem = '';
  /** Unpinned relays already logged as such (once each). */
  readonly #unpinnedLogged = new Set<string>();
  /** For `diode status`: the relay being dialled or in use, since when, and the last failure (kept after recovery). */
  #target: RelayEntry | undefined;
  #since: number | undefined;
  #lastError: LastError | undefined;

  constructor(options: RelayLinkOptions) {
    super();
    if (options.relays.length === 0) throw new DiodeError('ENORELAY', 'no relay configured; pass --relay host:port or run: diode config -set relays=host:port');
    this.#options = options;
    this.#log = options.log;
  }

  get session(): MuxSession | undefined {
    return this.#session;
  }

  get relayAddress(): string | undefined {
    return this.#relayAddress;
  }

  /** "host:port" of the relay of the current (or last) session. */
  get relayEndpoint(): string | undefined {
    return this.#relayEndpoint;
  }

  status(): LinkStatus {
    const connected = this.#session !== undefined && !this.#session.closed;
    return {
      connected,
      ...(this.#target ? { relay: formatHostPort(this.#target) } : {}),
      ...(connected && this.#relayAddress ? { relayAddress: this.#relayAddress } : {}),
      pinned: (this.#target?.pin ?? this.#options.expectRelay) !== undefined,
      ...(connected && this.#since !== undefined ? { since: this.#since } : {}),
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
    };
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#stopped = this.#run();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#wake?.();
    this.#session?.close();
    await this.#stopped;
  }

  /** Resolves with the current session, waiting up to timeoutMs for one. */
  waitForSession(timeoutMs: number): Promise<MuxSession> {
    if (this.#session && !this.#session.closed) return Promise.resolve(this.#session);
    return new Promise((resolve, reject) => {
      const onUp = (s: MuxSession) => {
        clearTimeout(timer);
        resolve(s);
      };
      const timer = setTimeout(() => {
        this.off('up', onUp);
        reject(new DiodeError('ENORELAY', `not connected to a relay (${this.#lastProblem || 'still connecting'})`));
      }, timeoutMs);
      this.once('up', onUp);
    });
  }

  async #run(): Promise<void> {
    let attempt = 0;
    let index = 0;
    while (this.#running) {
      const target = this.#options.relays[index % this.#options.relays.length];
      const started = Date.now();
      this.#target = target;
      try {
        await this.#connectOnce(target);
        if (Date.now() - started >= STABLE_SESSION_MS) attempt = 0;
      } catch (err) {
        if (err instanceof DiodeError && err.code === 'EPUBLISH') {
          // A refused publish set is not retried: the same set would be refused again, forever.
          const fatal = new DiodeError('EPUBLISH', `relay ${formatHostPort(target)}: ${errorMessage(err)}; not retrying (fix the published ports and start again)`);
          if (this.listenerCount('fatal') === 0) this.#log.error(fatal.message);
          this.#running = false;
          this.emit('fatal', fatal);
          break;
        }
        const text = errorMessage(err);
        this.#problem(text.startsWith(formatHostPort(target)) ? text : `relay ${formatHostPort(target)}: ${text}`);
        index++;
      }
      if (!this.#running) break;
      const delay = backoffDelay(attempt++, this.#options.backoff ?? defaultBackoff);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Runs one session to its end; throws if it could not be set up. */
  async #connectOnce(target: RelayEntry): Promise<void> {
    const pin = target.pin ?? this.#options.expectRelay;
    const { socket, relayAddress } = await dialRelay(target, this.#options.identity, pin);
    const endpoint = formatHostPort(target);
    if (!pin && !this.#unpinnedLogged.has(endpoint)) {
      this.#unpinnedLogged.add(endpoint);
      this.#log.info(`relay ${endpoint} is not pinned: it proved ${relayAddress}, taken on trust; pin it with --relay ${relayAddress}@${endpoint}`);
    }
    if (!this.#running) {
      socket.destroy();
      return;
    }
    const session = new MuxSession(socket, { role: 'client', keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
    const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
    session.on('stream', (stream: MuxStream) => {
      if (this.#options.onStream) this.#options.onStream(stream, relayAddress);
      else stream.reset();
    });
    try {
      if (this.#options.publish) await this.#publish(session, this.#options.publish);
    } catch (err) {
      session.close();
      throw err;
    }
    this.#session = session;
    this.#relayAddress = relayAddress;
    this.#relayEndpoint = formatHostPort(target);
    this.#lastProblem = '';
    this.#since = Date.now();
    const what = this.#options.publish ? `; published ${describePorts(this.#options.publish)}` : '';
    this.#log.info(`connected to relay ${formatHostPort(target)} (${relayAddress}) as ${this.#options.identity.address}${what}`);
    this.emit('up', session);
    const err = await closed;
    this.#session = undefined;
    this.#since = undefined;
    this.emit('down');
    if (this.#running) {
      const text = `lost relay ${formatHostPort(target)}${err ? `: ${errorMessage(err)}` : ''}`;
      this.#lastError = { at: Date.now(), message: text };
      this.#log.warn(`${text}; reconnecting`);
    }
  }

  async #publish(session: MuxSession, ports: PublishedPort[]): Promise<void> {
    const control = session.open();
    control.on('error', () => {});
    writeFrame(control, { t: 'publish', ports });
    const reply = parseReply(await readFrame(control, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS));
    if (reply.t === 'error') throw new DiodeError('EPUBLISH', `relay refused the publish set: ${reply.message || reply.code}`);
    // The control stream stays open for the session's life; the relay drops the set when it closes.
  }

  #problem(text: string): void {
    this.#lastError = { at: Date.now(), message: text };
    if (text !== this.#lastProblem) this.#log.warn(`${text}; retrying with backoff (up to ${Math.round((this.#options.backoff ?? defaultBackoff).maxMs / 1000)} s)`);
    this.#lastProblem = text;
  }
}

export function describePorts(ports: PublishedPort[]): string {
  return ports.map((p) => `${p.port} (${p.mode}${p.allow ? ` ${p.allow.length} address${p.allow.length === 1 ? '' : 'es'}` : ''})`).join(', ');
}
