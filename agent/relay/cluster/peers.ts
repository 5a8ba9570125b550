import { MuxSession, type MuxStream } from '../../mux/index.ts';
import type { Identity } from '../../identity/index.ts';
import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { formatHostPort, type HostPort } from '../../util/hostport.ts';
import { dialRelay } from '../../link/dial-relay.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, PEER_DIAL_TIMEOUT_MS } from '../../protocol/limits.ts';
import type { RelayStats } from '../stats.ts';
import { DataPool, type DataConn } from '../../link/data-pool.ts';
import { DATA_KIND_RELAY } from '../../data/wire.ts';
import { dataWaitMs } from '../../data/wait.ts';

/**
 * Relay-to-relay data connections kept ready per peer relay (docs/PROTOCOL.md
 * §9, "Relay data connections"): a forwarded end-to-end stream takes one
 * instead of a link stream, so neither relay opens or seals its bytes. The
 * size an agent's pool has (an ssh login and a browser's parallel
 * connections); after a larger burst the pool keeps as many as it saw (up
 * to DATA_POOL_MAX and the peer's --max-data-per-session), and a stream that
 * finds none ready waits briefly for one on its way, as a client does.
 */
export const RELAY_DATA_POOL = 4;

/** A ready relay-to-relay data connection taken for one forwarded stream. */
export interface RelayDataLeg extends DataConn {
  /** Resolves while the link to that relay answers a ping: the leg's FIN is passed on as a FIN only then. */
  confirm(): Promise<unknown>;
}

/**
 * This relay's outgoing links to the other relays of its cluster: one mux
 * session per peer address, dialled on first use (TLS + hello with the role
 * `relay` on both sides, the peer's address pinned to the map entry's),
 * kept open with keep-alives and reused by every forwarded stream. Streams
 * go one way on a link: the dialling relay opens them; a peer forwards to
 * us over its own link, so streams it opens here are reset.
 */
export class PeerLinks {
  readonly #identity: Identity;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  readonly #sessions = new Map<string, MuxSession>();
  readonly #dialling = new Map<string, Promise<MuxSession>>();
  /** Each link's pool of relay data connections (gone with the link). */
  readonly #pools = new Map<MuxSession, DataPool>();
  /** Peers already logged as taking no relay data connections (one line per peer relay; the rest at debug). */
  readonly #dataProblemsLogged = new Set<string>();
  #closed = false;

  readonly #maxWindow: number;
  /** The relays this one links to: --cluster-allow (whatever a map entry names). */
  readonly #allow: ReadonlySet<string>;

  constructor(options: { identity: Identity; log: Logger; stats: RelayStats; maxWindow: number; allow: ReadonlySet<string> }) {
    const { identity, log, stats, maxWindow } = options;
    this.#allow = options.allow;
    this.#identity = identity;
    this.#maxWindow = maxWindow;
    this.#log = log;
    this.#stats = stats;
  }

  /** A new stream to the relay `address`, dialling `endpoint` if there is no link yet. */
  async open(address: string, endpoint: HostPort): Promise<MuxStream> {
    const session = await this.#session(address, endpoint);
    return session.open();
  }

  /**
   * A ready data connection to the relay `address`, on the link that is up,
   * or one on its way within a few of the link's round trips (undefined: no
   * link, none in time, or that relay takes none: the stream goes on the
   * link).
   */
  async takeData(address: string): Promise<RelayDataLeg | undefined> {
    const session = this.#sessions.get(address);
    const pool = session && !session.closed ? this.#pools.get(session) : undefined;
    if (!session || !pool) return undefined;
    const conn = pool.take() ?? (await pool.next(dataWaitMs(session.rttMs)));
    if (!conn) return undefined;
    return { ...conn, confirm: () => session.ping() };
  }

  /** Ready relay data connections toward `address` (status and tests). */
  dataReady(address: string): number {
    const session = this.#sessions.get(address);
    return (session && this.#pools.get(session)?.idle) ?? 0;
  }

  get size(): number {
    return this.#sessions.size;
  }

  close(): void {
    this.#closed = true;
    for (const session of this.#sessions.values()) session.close();
    this.#sessions.clear();
  }

  #session(address: string, endpoint: HostPort): Promise<MuxSession> {
    const live = this.#sessions.get(address);
    if (live && !live.closed) return Promise.resolve(live);
    const pending = this.#dialling.get(address);
    if (pending) return pending;
    const dial = this.#dial(address, endpoint).finally(() => this.#dialling.delete(address));
    this.#dialling.set(address, dial);
    return dial;
  }

  async #dial(address: string, endpoint: HostPort): Promise<MuxSession> {
    if (this.#closed) throw new Error('the relay is shutting down');
    if (address === this.#identity.address) throw new Error('a relay does not link to itself');
    // Only the cluster's relays: a map entry naming another (written by whoever can write to Redis) leads nowhere.
    if (!this.#allow.has(address)) throw new Error(`relay ${address} is not on --cluster-allow: not linked to`);
    let connection;
    try {
      connection = await dialRelay(endpoint, this.#identity, address, { role: 'relay', timeoutMs: PEER_DIAL_TIMEOUT_MS });
    } catch (err) {
      this.#stats.count('peer_dial_failed');
      throw new Error(`relay link to ${formatHostPort(endpoint)}: ${errorMessage(err)}`);
    }
    const session = new MuxSession(connection.socket, { role: 'client', maxWindow: this.#maxWindow, keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
    session.on('stream', (stream: MuxStream) => stream.reset());
    this.#sessions.set(address, session);
    // Its data connections come from the link's own local address, to the address it reached: the peer checks the source.
    const pool = new DataPool({ session, endpoint: connection.endpoint, size: RELAY_DATA_POOL, kind: DATA_KIND_RELAY, onProblem: (reason) => this.#dataProblem(address, endpoint, reason) });
    this.#pools.set(session, pool);
    this.#stats.count('peer_link_opened');
    this.#log.info(`relay link to ${address} at ${formatHostPort(endpoint)} up`);
    session.once('close', (err?: Error) => {
      if (this.#sessions.get(address) === session) this.#sessions.delete(address);
      this.#pools.delete(session);
      if (!this.#closed) this.#log.info(`relay link to ${address} closed${err ? `: ${errorMessage(err)}` : ''}`);
    });
    return session;
  }

  /** No relay data connection could be had from that peer: said once per peer relay, then at debug. */
  #dataProblem(address: string, endpoint: HostPort, reason: string): void {
    this.#stats.count('peer_data_unavailable');
    if (this.#dataProblemsLogged.has(address)) {
      this.#log.debug(`relay ${address}: relay data connection: ${reason}`);
      return;
    }
    this.#dataProblemsLogged.add(address);
    this.#log.info(`relay ${address} at ${formatHostPort(endpoint)}: no relay-to-relay data connections (${reason}); streams forwarded to it stay on the relay-to-relay link (each relay opens and seals their bytes); retrying with backoff`);
  }
}
