import type { MuxSession } from '../mux/index.ts';
import type { PublishedPort } from '../protocol/messages.ts';

/** One authenticated agent connected to this relay. */
export interface AgentSession {
  address: string;
  mux: MuxSession;
  /** Published ports by remote port number; empty for a pure client. */
  ports: Map<number, PublishedPort>;
  remote: string;
  connectedAt: number;
}

/**
 * address → session of the agents connected here. The embedded default is
 * in memory; a cluster adds a shared address → relay map on top.
 */
export class Registry {
  readonly #sessions = new Map<string, AgentSession>();

  get(address: string): AgentSession | undefined {
    return this.#sessions.get(address);
  }

  /** Registers a session and returns the one it replaces, if any. */
  add(session: AgentSession): AgentSession | undefined {
    const previous = this.#sessions.get(session.address);
    this.#sessions.set(session.address, session);
    return previous;
  }

  /** Removes the session only if it is still the registered one (a replaced session must not evict its successor). */
  remove(session: AgentSession): boolean {
    if (this.#sessions.get(session.address) !== session) return false;
    this.#sessions.delete(session.address);
    return true;
  }

  get size(): number {
    return this.#sessions.size;
  }

  all(): IterableIterator<AgentSession> {
    return this.#sessions.values();
  }
}
