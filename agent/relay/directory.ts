import type { Socket } from 'node:net';
import type { MuxStream } from '../mux/index.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { AgentSession, SessionSet } from './registry.ts';

/** Where the streams for an address go now. */
export type Location =
  /** A session on this relay publishes it: the newest publisher. */
  | { kind: 'local'; session: AgentSession }
  /** Another relay of the cluster holds it: streams go over a relay-to-relay link. */
  | {
      kind: 'relay';
      /** That relay's proven address. */
      relay: string;
      /** Opens a stream on the link to that relay (dialled on first use). */
      open(): Promise<MuxStream>;
      /** That relay was unreachable or answered `offline`: the entry is stale, forget it. */
      stale(): void;
      /**
       * A ready relay-to-relay data connection to that relay (or one on its
       * way, briefly waited for), for one forwarded end-to-end stream
       * (undefined: none, or that relay takes none: the stream goes on the
       * link). `confirm` resolves while the link answers a ping.
       */
      takeData?(): Promise<{ socket: Socket; token: string; confirm(): Promise<unknown> } | undefined>;
    };

/**
 * address → where its streams go: the one question the relay core asks
 * about routing. Two implementations: LocalDirectory (a relay on its own;
 * its session set is the whole map) and ClusterDirectory
 * (relay/cluster/: the address → relay map shared in Redis beside the
 * session set, and the links to the other relays).
 */
export interface Directory {
  /** undefined: no relay holds the address (offline). fresh: skip any cache (a retry after a stale entry). */
  locate(address: string, fresh?: boolean): Promise<Location | undefined>;
  /** Why a peer that proved `address` in a hello with the role `relay` may not link to this relay; undefined: it may. */
  refusesRelay(address: string): string | undefined;
  /** A peer relay forwarded a stream for an address this relay does not hold: whatever says it does is stale. */
  notHeld(address: string): void;
  /**
   * The pinned entries agents may learn (the relays of the cluster, this one
   * included, as agents reach them): `listener` gets the list now and on each
   * change. Returns the unsubscribe function.
   */
  watchRelays(listener: (relays: RelayEntry[]) => void): () => void;
  /** This relay retires: other relays stop naming it to their agents. */
  retire(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** A relay on its own: the devices it can reach are the ones connected to it. */
export class LocalDirectory implements Directory {
  readonly #sessions: SessionSet;

  constructor(sessions: SessionSet) {
    this.#sessions = sessions;
  }

  async locate(address: string): Promise<Location | undefined> {
    const session = this.#sessions.publisher(address);
    return session ? { kind: 'local', session } : undefined;
  }

  refusesRelay(address: string): string | undefined {
    return `relay ${address}: this relay is not in a cluster (no --cluster)`;
  }

  notHeld(): void {}

  watchRelays(): () => void {
    return () => {};
  }

  async retire(): Promise<void> {}

  async start(): Promise<void> {}

  async close(): Promise<void> {}
}
