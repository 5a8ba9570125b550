import { MuxSession, type MuxStream } from '../../mux/index.ts';
import type { Identity } from '../../identity/index.ts';
import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { formatHostPort, type HostPort } from '../../util/hostport.ts';
import { dialRelay } from '../../link/dial-relay.ts';
import { KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, PEER_DIAL_TIMEOUT_MS } from '../../protocol/limits.ts';
import type { RelayStats } from '../stats.ts';

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
    this.#stats.count('peer_link_opened');
    this.#log.info(`relay link to ${address} at ${formatHostPort(endpoint)} up`);
    session.once('close', (err?: Error) => {
      if (this.#sessions.get(address) === session) this.#sessions.delete(address);
      if (!this.#closed) this.#log.info(`relay link to ${address} closed${err ? `: ${errorMessage(err)}` : ''}`);
    });
    return session;
  }
}
