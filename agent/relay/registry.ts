import type { MuxSession } from '../mux/index.ts';
import type { PublishedPort } from '../protocol/messages.ts';

/** One authenticated agent connection to this relay. An address may hold several. */
export interface AgentSession {
  address: string;
  mux: MuxSession;
  /** Published ports by remote port number; empty for a pure client. Changed only through SessionSet.publish. */
  ports: Map<number, PublishedPort>;
  /** "host:port" of the agent's TCP connection, as this relay sees it. */
  remote: string;
  /** IPv4 address or IPv6 /64 the session came from (what per-source limits count). */
  source?: string;
  /** ms since the epoch: when the hello was verified. */
  connectedAt: number;
  /**
   * ms since the epoch: when this session went from publishing nothing to
   * publishing something (undefined while it publishes nothing). Orders the
   * publishers of one address: the newest gets the streams.
   */
  publishingSince?: number;
}

/** What a change of an address's publishers did, for the log. */
export interface PublisherChange {
  address: string;
  /** The session that now gets the address's streams (undefined: nobody publishes it here any more). */
  active: AgentSession | undefined;
  /** The one that had them before (undefined: nobody). */
  previous: AgentSession | undefined;
  /** Other publishing sessions of the address, newest first: they wait and take over when the active one goes. */
  standby: readonly AgentSession[];
}

/** Called whenever the active publisher of an address changes (a cluster keeps its address → relay map from this). */
export type PublisherListener = (change: PublisherChange) => void;

/**
 * Every authenticated session of every address connected to this relay.
 *
 * An address may hold many sessions (a laptop's socksd next to its ssh
 * ProxyCommands, `diode proxy` on the device beside its `publish`, an agent
 * restarted before its old TCP connection is known dead). Sessions that
 * publish nothing never displace anything; among the sessions that publish,
 * the most recent publisher is *active* and gets the address's streams, the
 * others are on standby and the newest of them takes over when it goes.
 *
 * This set is always local (it holds live connections). A relay cluster
 * keeps "which relay holds which address" beside it, fed by
 * onPublisherChange: an address is held here while publisher() is defined.
 */
export interface SessionSet {
  /** Adds a session once its hello verified. It publishes nothing yet, so it displaces nothing. */
  add(session: AgentSession): void;
  /** Forgets a session (its connection closed); if it was active, the newest standby takes over. True if it was known. */
  remove(session: AgentSession): boolean;
  /** Replaces a session's publish set (empty = publishes nothing) and re-elects the address's active publisher. */
  publish(session: AgentSession, ports: readonly PublishedPort[]): void;
  /** The session that gets streams for this address: its most recent publisher, if any. */
  publisher(address: string): AgentSession | undefined;
  /** Every session of an address, oldest first (publishing or not). */
  sessionsOf(address: string): readonly AgentSession[];
  /** Every session, all addresses. */
  all(): IterableIterator<AgentSession>;
  /** Number of sessions (not addresses). */
  readonly size: number;
  /** Number of distinct addresses with at least one session. */
  readonly addressCount: number;
  /** Subscribes to changes of an address's active publisher; returns the unsubscribe function. */
  onPublisherChange(listener: PublisherListener): () => void;
}

/** The in-memory session set every relay uses. */
export class Registry implements SessionSet {
  /** address → its sessions, oldest first. A session count per address stays small (a handful). */
  readonly #byAddress = new Map<string, AgentSession[]>();
  /** address → the active publisher, kept so a change can be reported. */
  readonly #active = new Map<string, AgentSession>();
  readonly #listeners = new Set<PublisherListener>();
  #size = 0;

  add(session: AgentSession): void {
    const list = this.#byAddress.get(session.address);
    if (list?.includes(session)) return;
    if (list) list.push(session);
    else this.#byAddress.set(session.address, [session]);
    this.#size++;
    if (session.ports.size > 0) {
      session.publishingSince ??= Date.now();
      this.#elect(session.address);
    }
  }

  remove(session: AgentSession): boolean {
    const list = this.#byAddress.get(session.address);
    const index = list ? list.indexOf(session) : -1;
    if (!list || index < 0) return false;
    list.splice(index, 1);
    this.#size--;
    if (list.length === 0) this.#byAddress.delete(session.address);
    this.#elect(session.address);
    return true;
  }

  publish(session: AgentSession, ports: readonly PublishedPort[]): void {
    session.ports = new Map(ports.map((p) => [p.port, p]));
    if (session.ports.size === 0) session.publishingSince = undefined;
    else session.publishingSince ??= Date.now();
    if (this.#byAddress.get(session.address)?.includes(session)) this.#elect(session.address);
  }

  publisher(address: string): AgentSession | undefined {
    return this.#active.get(address);
  }

  sessionsOf(address: string): readonly AgentSession[] {
    return this.#byAddress.get(address) ?? [];
  }

  all(): IterableIterator<AgentSession> {
    return [...this.#byAddress.values()].flat().values();
  }

  get size(): number {
    return this.#size;
  }

  get addressCount(): number {
    return this.#byAddress.size;
  }

  onPublisherChange(listener: PublisherListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Newest publisher first; a tie (same ms) goes to the later session in the list. */
  #publishers(address: string): AgentSession[] {
    const list = this.#byAddress.get(address) ?? [];
    return list
      .map((session, order) => ({ session, order }))
      .filter(({ session }) => session.publishingSince !== undefined)
      .sort((a, b) => b.session.publishingSince! - a.session.publishingSince! || b.order - a.order)
      .map(({ session }) => session);
  }

  #elect(address: string): void {
    const [active, ...standby] = this.#publishers(address);
    const previous = this.#active.get(address);
    if (active) this.#active.set(address, active);
    else this.#active.delete(address);
    if (active === previous) return;
    const change: PublisherChange = { address, active, previous, standby };
    for (const listener of this.#listeners) listener(change);
  }
}
