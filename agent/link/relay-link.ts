import { EventEmitter } from 'node:events';
import { MuxSession, type MuxStream } from '../mux/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { formatHostPort } from '../util/hostport.ts';
import { errorMessage, DiodeError } from '../util/errors.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseReply, type PublishedPort } from '../protocol/messages.ts';
import { encodeRelayControl, parseRelayControl, type RelayControl } from '../protocol/relay-control.ts';
import { LEARNED_RELAY_DELAY_MS, type LearnedRelays } from './learned-relays.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { backoffDelay, defaultBackoff, describeBackoff, describeSlowRetries, duration, type BackoffConfig } from './backoff.ts';
import { performance } from 'node:perf_hooks';
import { dialRelay, type RelayConnection } from './dial-relay.ts';
import { RelaysUnreachable, describeFailure, type RelayFailure } from './failure.ts';
import { hasLocalAddress, watchNetwork, type NetworkWatch } from './network-watch.ts';
import { formatRelayEntry, type RelayEntry } from '../config/relay-entry.ts';
import type { LinkStatus } from '../ops/status.ts';
import type { LastError } from '../ops/stream-stats.ts';
import { DataPool } from './data-pool.ts';

/** ms a session must last before a later loss restarts the backoff from the bottom. */
const STABLE_SESSION_MS = 10_000;
/**
 * ms the preferred relays get before the next one in the list is dialled as
 * well (happy eyeballs): a relay that drops packets must not hold us for a
 * whole connect timeout, a relay that answers at once keeps its place.
 */
const FAILOVER_HEAD_START_MS = 1_000;
/** ms between tries of the relays before the current one in the list (full jitter over half of it). */
const PREFERRED_PROBE_MS = 5_000;
/** ms a session we moved away from may keep serving its open streams (after go-away) before it is closed. */
const RETIRE_MAX_MS = 10 * 60_000;
/** ms a ping after a network change may take before the session is taken as dead. */
const NETWORK_CHANGE_PING_MS = 3_000;
/**
 * ms a relay that refused our publish set is passed over (the other relays of
 * the list are dialled instead), doubled at each further refusal up to
 * REFUSED_HOLD_MAX_MS. A refusal is that relay failing (smaller limits, a
 * hostile or broken relay), not ours: our own set was checked at start.
 */
const REFUSED_HOLD_MS = 15_000;
const REFUSED_HOLD_MAX_MS = 10 * 60_000;

export interface RelayLinkOptions {
  /** An order of preference; an entry's `pin` is the address that relay must prove. */
  relays: RelayEntry[];
  identity: Identity;
  log: Logger;
  /** Ports to publish on every (re)connect; omit for a pure client. */
  publish?: PublishedPort[];
  /** Inbound streams (device role). Without it inbound streams are reset. */
  onStream?: (stream: MuxStream, relayAddress: string, data: DataPool | undefined) => void;
  /**
   * Data connections to keep ready per session (CLIENT_DATA_POOL, DEVICE_DATA_POOL; 0 or
   * omitted: none, every stream on the link): each stream between two agents then travels on
   * one of its own, which the relay splices without reading.
   */
  dataPool?: number;
  backoff?: BackoffConfig;
  /** Pin every relay without a pin of its own to this address. */
  expectRelay?: string;
  /** Watch the machine's addresses and retry at once when they change (default true; a function: that watch instead). */
  watchNetwork?: boolean | NetworkWatch;
  /**
   * Relays learned from pinned relays (the state directory's store): they
   * are dialled after the configured ones have failed for
   * LEARNED_RELAY_DELAY_MS, and a relay that retires is tried last. Without
   * it nothing is learned and `retire` is not followed.
   */
  learned?: LearnedRelays;
  /**
   * Open the control stream even without ports to publish (a client: it
   * publishes an empty set), so the relay can tell it of its cluster and of
   * its retirement. Default true; a one-shot command turns it off.
   */
  control?: boolean;
}

/** A dialled relay, with its place in the list (0 = most preferred). */
interface Dialled extends RelayConnection {
  target: RelayEntry;
  index: number;
  /** How many relays the list had when it was dialled. */
  of: number;
}

/** A dialled relay whose session is up and took our publish set. */
interface Opened extends Dialled {
  session: MuxSession;
  closed: Promise<Error | undefined>;
}

/** A relay that refused our publish set: passed over until `until` (performance.now() ms). */
interface Hold {
  until: number;
  refusals: number;
}

/**
 * Keeps one authenticated mux session to a relay, forever: starts even when
 * no relay is reachable (a Pi boots before its network), reconnects after any
 * loss with short capped backoff and jitter, and logs a line per state
 * change rather than per attempt.
 *
 * `relays` is an order of preference: every (re)connect tries them in order
 * (each after a short head start of the ones before), a link on a later
 * relay keeps trying the earlier ones and moves back as soon as one answers
 * (the session it leaves says go-away and serves its open streams to their
 * end). A change of the machine's addresses resets the backoff and retries
 * at once, and checks a live session with a ping.
 */
export class RelayLink extends EventEmitter {
  readonly #options: RelayLinkOptions;
  readonly #log: Logger;
  #session: MuxSession | undefined;
  #relayAddress: string | undefined;
  #relayEndpoint: string | undefined;
  #running = false;
  /** Aborted by stop(): dials in flight end at once instead of at their handshake deadline. */
  #dials = new AbortController();
  #stopped: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #lastProblem = '';
  #attempt = 0;
  /** performance.now() of the first failure since the link last worked (or the network changed); undefined: not failing. */
  #failingSince: number | undefined;
  /** The backoff reached its slow phase (logged once per failure). */
  #slowLogged = false;
  /** The session was closed because its local address left the machine: reconnect without waiting. */
  #retryNow = false;
  /** The local address of the current session's connection. */
  #localAddress: string | undefined;
  #stopWatch: (() => void) | undefined;
  readonly #retiring = new Set<MuxSession>();
  /** Unpinned relays already logged as such (once each). */
  readonly #unpinnedLogged = new Set<string>();
  /** Pin refusals already logged (once each). */
  readonly #pinRefusalsLogged = new Set<string>();
  /** Each session's data connections. */
  readonly #pools = new Map<MuxSession, DataPool>();
  /** Relays whose data connections failed, already logged (once each). */
  readonly #dataProblemsLogged = new Set<string>();
  /** For `diode status`: the relay being dialled or in use, since when, and the last failure (kept after recovery). */
  #target: RelayEntry | undefined;
  #since: number | undefined;
  #lastError: LastError | undefined;
  /** Relays (by entry) that refused our publish set, and until when they are passed over. */
  readonly #held = new Map<string, Hold>();
  /** performance.now() since when no configured relay has had a session (undefined: one has one now). */
  #configuredDownSince: number | undefined;
  /** The session whose relay said it retires (the link moves off it as soon as another relay answers). */
  #retiringSession: MuxSession | undefined;
  /** Sessions whose relay said it retires before the session was served. */
  readonly #toldToRetire = new WeakSet<MuxSession>();
  /** Each session's control stream: `moving` goes on it when the link leaves for another relay. */
  readonly #controlOf = new WeakMap<MuxSession, MuxStream>();
  /** Runs the probe for a better relay now (set while a session is served). */
  #probeNow: (() => void) | undefined;
  /** Relays whose `relays`/`retire` were not followed because they are not pinned (logged once each). */
  readonly #notLearnedLogged = new Set<string>();

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

  /** The data connections of the current session (undefined: none kept, or no session). */
  get dataPool(): DataPool | undefined {
    return this.#session && this.#pools.get(this.#session);
  }

  /** "host:port" of the relay of the current (or last) session. */
  get relayEndpoint(): string | undefined {
    return this.#relayEndpoint;
  }

  status(): LinkStatus {
    const connected = this.#session !== undefined && !this.#session.closed;
    const learned = this.#options.learned;
    return {
      connected,
      ...(this.#target ? { relay: formatHostPort(this.#target) } : {}),
      ...(connected && this.#relayAddress ? { relayAddress: this.#relayAddress } : {}),
      pinned: (this.#target?.pin ?? this.#options.expectRelay) !== undefined,
      ...(connected && this.#since !== undefined ? { since: this.#since } : {}),
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
      configured: this.#options.relays.map(formatRelayEntry),
      ...(learned ? { learned: learned.relays.map((r) => ({ relay: formatRelayEntry(r.entry), lastSeen: r.lastSeen })) } : {}),
      ...(learned && learned.retired.length > 0 ? { retired: learned.retired.map((r) => r.address) } : {}),
      ...(this.#target && this.#isLearned(this.#target) ? { onLearned: true } : {}),
    };
  }

  /** A pinned address for this entry: its own pin, or the link's expectRelay. */
  #pinOf(entry: RelayEntry): string | undefined {
    return entry.pin ?? this.#options.expectRelay;
  }

  #isLearned(entry: RelayEntry): boolean {
    const key = formatRelayEntry(entry);
    return !this.#options.relays.some((r) => formatRelayEntry(r) === key);
  }

  /**
   * The relays to dial, in order of preference: the configured ones that did
   * not retire; then the learned ones, once the configured ones have failed
   * for LEARNED_RELAY_DELAY_MS (at once if none is left, or when the relay in
   * use retires); then the relays that retired, as a last resort.
   */
  candidates(): RelayEntry[] {
    const learned = this.#options.learned;
    const configured = this.#options.relays;
    if (!learned) return [...configured];
    const retired = (e: RelayEntry) => learned.isRetired(this.#pinOf(e));
    const active = configured.filter((e) => !retired(e));
    const downFor = this.#configuredDownSince === undefined ? 0 : performance.now() - this.#configuredDownSince;
    const useLearned = active.length === 0 || downFor >= LEARNED_RELAY_DELAY_MS || this.#retiringSession !== undefined;
    const known = new Set(configured.map(formatRelayEntry));
    const fromStore = learned.relays.map((r) => r.entry).filter((e) => !known.has(formatRelayEntry(e)));
    return [
      ...active,
      ...(useLearned ? fromStore.filter((e) => !retired(e)) : []),
      ...configured.filter(retired),
      ...fromStore.filter(retired),
    ];
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#dials = new AbortController();
    this.#configuredDownSince = performance.now();
    const watch = this.#options.watchNetwork;
    if (watch !== false) this.#stopWatch = (typeof watch === 'function' ? watch : watchNetwork)(this.#onNetworkChange);
    this.#stopped = this.#run();
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#dials.abort();
    this.#stopWatch?.();
    this.#wake?.();
    this.#session?.close();
    for (const s of this.#retiring) s.close();
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

  readonly #onNetworkChange = (): void => {
    this.#resetBackoff();
    const session = this.#session;
    if (session === undefined) {
      this.#log.info('network changed; retrying the relays now');
      this.#wake?.();
      return;
    }
    // The session's own address left the machine (a phone-like address change): it is dead, no ping needed.
    const local = this.#localAddress;
    if (local !== undefined && !hasLocalAddress(local)) {
      this.#log.warn(`network changed: this machine no longer has the address ${local} of its relay connection; reconnecting now`);
      this.#retryNow = true;
      session.close(new DiodeError('ENETCHANGE', `local address ${local} gone`));
      return;
    }
    // The path may have moved under a live session: one ping tells.
    const timer = setTimeout(() => {
      this.#log.warn('network changed and the relay does not answer; reconnecting');
      session.close(new DiodeError('ETIMEDOUT', `no ping answer within ${NETWORK_CHANGE_PING_MS} ms after a network change`));
    }, NETWORK_CHANGE_PING_MS).unref();
    session.ping().then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
  };

  async #run(): Promise<void> {
    let next: Opened | undefined;
    while (this.#running) {
      let opened = next;
      next = undefined;
      const started = performance.now();
      if (opened === undefined) {
        let list = this.candidates();
        if (this.#session === undefined) this.#target = list[0];
        // Every relay refused our publish set: the first hold to end is the backoff.
        const heldFor = this.#heldFor(list);
        if (heldFor > 0) {
          await this.#sleep(heldFor);
          list = this.candidates();
        }
        if (!this.#running) break;
        let dialled: Dialled | undefined;
        try {
          dialled = await this.#dialInOrder(list, list.length);
          if (this.#running) opened = await this.#open(dialled);
          else dialled.socket.destroy();
        } catch (err) {
          const text = errorMessage(err);
          const first = err instanceof RelaysUnreachable ? err.failures[0] : dialled && { target: dialled.target, err };
          this.#problem(!dialled || text.startsWith(formatHostPort(dialled.target)) ? text : `relay ${formatHostPort(dialled.target)}: ${text}`, first);
        }
      }
      if (opened !== undefined && this.#running) {
        const sessionStart = performance.now();
        next = await this.#serve(opened);
        if (performance.now() - sessionStart >= STABLE_SESSION_MS) this.#resetBackoff();
        if (next !== undefined) continue;
      } else if (opened !== undefined) {
        opened.session.close();
      }
      if (!this.#running) break;
      if (this.#retryNow) {
        this.#retryNow = false;
        continue;
      }
      // Time spent failing to connect (a timeout) counts toward the wait.
      const delay = this.#nextDelay() - (performance.now() - started);
      if (delay > 0) await this.#sleep(delay);
    }
  }

  /** The link works again, or the network changed: the next failure starts the backoff from the bottom. */
  #resetBackoff(): void {
    this.#attempt = 0;
    this.#failingSince = undefined;
    this.#slowLogged = false;
  }

  /** ms to wait before the next try (backoff.ts: short while the failure is recent, up to a minute after). */
  #nextDelay(): number {
    const config = this.#options.backoff ?? defaultBackoff;
    const now = performance.now();
    this.#failingSince ??= now;
    const failingFor = now - this.#failingSince;
    if (!this.#slowLogged && config.patienceMs !== undefined && config.slowMaxMs !== undefined && failingFor >= config.patienceMs) {
      this.#slowLogged = true;
      this.#log.warn(`no relay reached for ${duration(Math.round(failingFor / 1000) * 1000)}; retrying ${describeSlowRetries(config)} from now on (at once when the network changes)`);
    }
    return backoffDelay(this.#attempt++, config, Math.random, failingFor);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => (this.#wake = undefined));
  }

  /**
   * Dials relays[0..limit) in order of preference, each FAILOVER_HEAD_START_MS
   * after the one before (or at once when it failed); the first to finish its
   * hello wins and the others are dropped.
   */
  #dialInOrder(relays: RelayEntry[], limit: number): Promise<Dialled> {
    const { identity, expectRelay } = this.#options;
    // Relays that refused our publish set wait their hold out, unless every one of them is held.
    const now = performance.now();
    const order = Array.from({ length: limit }, (_, i) => i).filter((i) => (this.#held.get(formatRelayEntry(relays[i]))?.until ?? 0) <= now);
    if (order.length === 0) return Promise.reject(new DiodeError('ENORELAY', 'every relay we would try refused our publish set recently'));
    limit = order.length;
    return new Promise((resolve, reject) => {
      let next = 0;
      let pending = 0;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const errors: string[] = [];
      const failures: RelayFailure[] = [];
      const launch = (): void => {
        clearTimeout(timer);
        if (done || next >= limit) return;
        const index = order[next++];
        const target = relays[index];
        pending++;
        dialRelay(target, identity, target.pin ?? expectRelay, { pipeline: true, signal: this.#dials.signal }).then(
          (conn) => {
            pending--;
            if (done) return void conn.socket.destroy();
            done = true;
            clearTimeout(timer);
            resolve({ ...conn, target, index, of: relays.length });
          },
          (err) => {
            pending--;
            const text = errorMessage(err);
            const line = text.startsWith(formatHostPort(target)) ? text : `relay ${formatHostPort(target)}: ${text}`;
            errors.push(line);
            failures.push({ target, err });
            // A relay that is not who it is pinned as is worth its own line (once), even when the next one serves us.
            if (err instanceof DiodeError && err.code === 'EPINNED' && !this.#pinRefusalsLogged.has(line)) {
              this.#pinRefusalsLogged.add(line);
              this.#log.warn(line);
            }
            if (done) return;
            if (next < limit) launch();
            else if (pending === 0) {
              done = true;
              reject(new RelaysUnreachable(errors.join('; '), failures));
            }
          },
        );
        if (next < limit) timer = setTimeout(launch, FAILOVER_HEAD_START_MS);
      };
      launch();
    });
  }

  /**
   * Starts a session on a dialled relay and publishes our set there; throws
   * if that fails. A relay that refuses the set is passed over for a while
   * (REFUSED_HOLD_MS, doubling), so the next relay of the list serves us.
   */
  async #open(dialled: Dialled): Promise<Opened> {
    const { socket, relayAddress, target } = dialled;
    const endpoint = formatHostPort(target);
    if (!this.#pinOf(target) && !this.#unpinnedLogged.has(endpoint)) {
      this.#unpinnedLogged.add(endpoint);
      this.#log.info(`relay ${endpoint} is not pinned: it proved ${relayAddress}, taken on trust; pin it with --relay ${relayAddress}@${endpoint}`);
    }
    // A pipelined dial (a relay whose certificate is bound to its address): streams may go out at once; what the relay
    // sends is read once its hello and verdict are (dialled.verified).
    const session = new MuxSession(socket, { role: 'client', keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS, readAfter: dialled.verified });
    const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
    session.on('stream', (stream: MuxStream) => {
      if (this.#options.onStream) this.#options.onStream(stream, relayAddress, this.#pools.get(session));
      else stream.reset();
    });
    const key = formatRelayEntry(target);
    try {
      if (this.#options.publish) await this.#publish(session, this.#options.publish);
      else if (this.#options.control !== false) this.#openControl(session, []);
    } catch (err) {
      session.close();
      if (err instanceof DiodeError && err.code === 'EPUBLISH') throw this.#hold(key, dialled.of, endpoint, err);
      throw err;
    }
    this.#held.delete(key);
    const control = this.#controlOf.get(session);
    if (control) this.#readControl(session, control, dialled);
    if (this.#options.dataPool) {
      const pool = new DataPool({ session, endpoint: dialled.endpoint, size: this.#options.dataPool, onProblem: (reason) => this.#dataProblem(endpoint, relayAddress, reason) });
      this.#pools.set(session, pool);
      session.once('close', () => this.#pools.delete(session));
    }
    return { ...dialled, session, closed };
  }

  /** ms until the first relay of the list is no longer held (0: one is free now). */
  #heldFor(relays: RelayEntry[]): number {
    const now = performance.now();
    let first = Infinity;
    for (const entry of relays) first = Math.min(first, (this.#held.get(formatRelayEntry(entry))?.until ?? 0) - now);
    return Math.max(0, first);
  }

  /** Passes a relay over for a while after it refused our publish set; returns the error to report. */
  #hold(key: string, of: number, endpoint: string, err: DiodeError): DiodeError {
    const refusals = (this.#held.get(key)?.refusals ?? 0) + 1;
    const ms = Math.min(REFUSED_HOLD_MAX_MS, REFUSED_HOLD_MS * 2 ** (refusals - 1));
    this.#held.set(key, { until: performance.now() + ms, refusals });
    const others = of > 1 ? 'trying the other relays' : 'retrying';
    return new DiodeError('EPUBLISH', `relay ${endpoint}: ${errorMessage(err)}; passed over for ${Math.round(ms / 1000)} s, ${others}`);
  }

  /**
   * Runs one session to its end. Resolves with a more preferred relay's
   * session when the link moves there (this one then retires), or undefined
   * when the session ended.
   */
  async #serve(opened: Opened): Promise<Opened | undefined> {
    const { relayAddress, target, index, of, session, closed } = opened;
    const endpoint = formatHostPort(target);
    const previous = this.#session;
    this.#session = session;
    this.#relayAddress = relayAddress;
    this.#relayEndpoint = endpoint;
    this.#lastProblem = '';
    this.#target = target;
    this.#since = Date.now();
    const learned = this.#isLearned(target);
    if (!learned) this.#configuredDownSince = undefined;
    if (this.#toldToRetire.has(session)) this.#retiringSession = session;
    this.#localAddress = opened.socket.localAddress;
    const what = this.#options.publish ? `; published ${describePorts(this.#options.publish)}` : '';
    const place = of > 1 ? ` [relay ${index + 1} of ${of}${learned ? ', learned' : ''}]` : learned ? ' [learned]' : '';
    const connected = `connected to relay ${endpoint} (${relayAddress})${place} as ${this.#options.identity.address}${what}`;
    // A pipelined session is up for streams at once; it is connected once the relay's hello has been checked.
    if (opened.verified) opened.verified.then(() => this.#log.info(connected), () => {});
    else this.#log.info(connected);
    this.emit('up', session);
    if (previous !== undefined && previous !== session) this.#leave(previous, target, relayAddress);

    // Not on the most preferred relay (a fallback, a learned one, or one that retires): keep trying the better ones.
    let moveTo: Opened | undefined;
    let probeTimer: NodeJS.Timeout | undefined;
    let probing = false;
    const jitter = () => PREFERRED_PROBE_MS * (0.5 + 0.5 * Math.random());
    const moved = new Promise<void>((resolve) => {
      const probe = (delay: number): void => {
        clearTimeout(probeTimer);
        probeTimer = setTimeout(() => {
          if (!this.#running || session.closed) return resolve();
          const list = this.candidates();
          const key = formatRelayEntry(target);
          const at = list.findIndex((e) => formatRelayEntry(e) === key);
          const better = at < 0 ? list.length : at;
          if (better === 0) return probe(jitter());
          probing = true;
          // A better relay counts once it took our publish set (one that refuses it is passed over).
          this.#dialInOrder(list, better).then((found) => this.#open(found)).then(
            (found) => {
              probing = false;
              if (!this.#running || session.closed) {
                found.session.close();
                return resolve();
              }
              const why = this.#retiringSession === session ? `relay ${endpoint} retires; moving to it` : 'it is reachable again; moving back to it';
              this.#log.info(`relay ${formatHostPort(found.target)} answers (${why} from ${endpoint})`);
              moveTo = found;
              resolve();
            },
            (err) => {
              probing = false;
              if (err instanceof DiodeError && err.code === 'EPUBLISH') this.#problem(errorMessage(err));
              probe(jitter());
            },
          );
        }, delay);
      };
      this.#probeNow = () => {
        if (!probing) probe(0);
      };
      probe(this.#retiringSession === session ? 0 : jitter());
    });
    const err = await Promise.race([closed, moved.then(() => undefined)]);
    clearTimeout(probeTimer);
    this.#probeNow = undefined;
    if (moveTo !== undefined && !session.closed) return moveTo; // #serve(moveTo) leaves this session once the new one is up
    moveTo?.session.close();
    if (this.#retiringSession === session) this.#retiringSession = undefined;
    if (this.#session === session) {
      this.#session = undefined;
      this.#since = undefined;
      if (!learned) this.#configuredDownSince ??= performance.now();
      this.emit('down');
    }
    if (this.#running && !session.readStarted) {
      // A pipelined session whose relay failed its hello: a failed dial, not a lost relay.
      const text = errorMessage(err ?? new DiodeError('ECLOSED', 'closed before its hello'));
      this.#problem(text.startsWith(endpoint) ? text : `relay ${endpoint}: ${text}`);
    } else if (this.#running) {
      const text = `lost relay ${endpoint}${err ? `: ${errorMessage(err)}` : ''}`;
      this.#lastError = { at: Date.now(), message: text };
      this.#log.warn(`${text}; reconnecting`);
    }
    return undefined;
  }

  /** The link moved to `to`: tell the relay we leave (it counts the agents that moved), then go-away. */
  #leave(session: MuxSession, to: RelayEntry, toAddress: string): void {
    if (this.#retiringSession === session) this.#retiringSession = undefined;
    const control = this.#controlOf.get(session);
    if (control && !control.destroyed && control.writable) {
      writeFrame(control, encodeRelayControl({ t: 'moving', to: { ...to, pin: to.pin ?? toAddress } }));
    }
    this.#retire(session);
  }

  /**
   * Reads what the relay sends on the control stream after its answer:
   * `relays` (its cluster) and `retire`. Both are followed only from a relay
   * this link pinned: an unpinned one could be anyone at that host:port.
   */
  #readControl(session: MuxSession, control: MuxStream, dialled: Dialled): void {
    const endpoint = formatHostPort(dialled.target);
    const from = dialled.relayAddress;
    const pinned = this.#pinOf(dialled.target) !== undefined;
    const onMessage = (m: Record<string, unknown>): void => {
      // A client's publish answer (its empty set): nothing to do, unless the relay refused it.
      if (m.t === 'ok') return;
      if (m.t === 'error') return this.#log.debug(`relay ${endpoint} answered the control stream: ${String(m.message ?? m.code)}`);
      let message: RelayControl;
      try {
        message = parseRelayControl(m);
      } catch (err) {
        this.#log.info(`relay ${endpoint}: control message ignored: ${errorMessage(err)}`);
        return;
      }
      const learned = this.#options.learned;
      if (!learned) return;
      if (!pinned) {
        if (!this.#notLearnedLogged.has(endpoint)) {
          this.#notLearnedLogged.add(endpoint);
          this.#log.info(`relay ${endpoint} is not pinned: the relays it names${message.t === 'retire' ? ' (it retires)' : ''} are not learned; pin it with --relay ${from}@${endpoint}`);
        }
        return;
      }
      if (message.t === 'relays') {
        // The configured relays are known already (and stay first): only the others are learned.
        const configured = new Set(this.#options.relays.map(formatRelayEntry));
        const added = learned.learn(message.relays.filter((e) => !configured.has(formatRelayEntry(e))), from);
        if (added.length > 0) {
          this.#log.info(`learned ${added.length} relay${added.length === 1 ? '' : 's'} from relay ${from}: ${added.map(formatRelayEntry).join(', ')} (tried after the configured relays have failed for ${LEARNED_RELAY_DELAY_MS / 1000} s)`);
        }
        return;
      }
      learned.learn(message.to, from);
      learned.markRetired(from, message.to);
      this.#log.warn(`relay ${endpoint} (${from}) retires; moving to ${message.to.map(formatRelayEntry).join(' or ')}`);
      if (this.#session === session && !session.closed) {
        this.#retiringSession = session;
        this.#probeNow?.();
      } else this.#toldToRetire.add(session);
    };
    void (async () => {
      for (;;) {
        const m = await readFrame(control, MAX_STREAM_HEADER_BYTES, 2 ** 31 - 1);
        onMessage(m);
      }
    })().catch((err) => {
      if (!session.closed) this.#log.debug(`relay ${endpoint}: control stream ended: ${errorMessage(err)}`);
    });
  }

  /** Go-away on a session we moved from: no new streams; closed when only its control stream is left (and no stream on a data connection). */
  #retire(session: MuxSession): void {
    this.#retiring.add(session);
    session.goAway();
    const pool = this.#pools.get(session);
    pool?.retire();
    const started = performance.now();
    const check = setInterval(() => {
      if (session.closed || (session.streamCount <= 1 && (pool?.active ?? 0) === 0) || performance.now() - started > RETIRE_MAX_MS) {
        clearInterval(check);
        this.#retiring.delete(session);
        session.close();
      }
    }, 1_000).unref();
  }

  async #publish(session: MuxSession, ports: PublishedPort[]): Promise<void> {
    const control = this.#openControl(session, ports);
    const reply = parseReply(await readFrame(control, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS));
    if (reply.t === 'error') throw new DiodeError('EPUBLISH', `relay refused the publish set: ${reply.message || reply.code}`);
    // The control stream stays open for the session's life; the relay drops the set when it closes.
  }

  /**
   * The control stream: the publish set first (empty for a client, whose
   * answer is read with the relay's later messages and not waited for).
   */
  #openControl(session: MuxSession, ports: PublishedPort[]): MuxStream {
    const control = session.open();
    control.on('error', () => {});
    writeFrame(control, { t: 'publish', ports });
    this.#controlOf.set(session, control);
    return control;
  }

  /**
   * A stream found its data connection dead (no answer on it after the
   * relay's ok) and went over the link instead: said once per relay, as
   * other data connection problems are.
   */
  dataFailed(reason: string): void {
    const endpoint = this.#relayEndpoint ?? 'unknown';
    const key = `failed ${endpoint}`;
    if (this.#dataProblemsLogged.has(key)) return this.#log.debug(`relay ${endpoint}: a stream's data connection failed: ${reason}`);
    this.#dataProblemsLogged.add(key);
    this.#log.warn(`relay ${endpoint} (${this.#relayAddress ?? 'unknown address'}): a stream's data connection failed (${reason}); it went over the relay link instead`);
  }

  /**
   * Data connections to this relay cannot be made (a relay or network that
   * takes no second connection, a refusal): streams go over the relay link
   * meanwhile. One line per relay; the pool retries with backoff.
   */
  #dataProblem(endpoint: string, relayAddress: string, reason: string): void {
    if (this.#dataProblemsLogged.has(endpoint)) {
      this.#log.debug(`relay ${endpoint}: data connection: ${reason}`);
      return;
    }
    this.#dataProblemsLogged.add(endpoint);
    this.#log.warn(`relay ${endpoint} (${relayAddress}): no data connections (${reason}); streams go over the relay link instead (slower: the relay decrypts and re-encrypts them); retrying with backoff`);
  }

  /**
   * A failed try: logged when its text changed; `first` (the most preferred
   * relay's failure) becomes the short line of the 'problem' event, for a
   * login screen or a status file.
   */
  #problem(text: string, first?: RelayFailure): void {
    if (!this.#running) return; // a dial that stop() aborted is no problem to report
    this.#lastError = { at: Date.now(), message: text };
    if (text !== this.#lastProblem) {
      this.#log.warn(`${text}; retrying with backoff (${describeBackoff(this.#options.backoff ?? defaultBackoff)})`);
      this.emit('problem', first ? describeFailure(first) : text);
    }
    this.#lastProblem = text;
  }
}

export function describePorts(ports: PublishedPort[]): string {
  return ports.map((p) => `${p.port} (${p.mode}${p.allow ? ` ${p.allow.length} address${p.allow.length === 1 ? '' : 'es'}` : ''})`).join(', ');
}
