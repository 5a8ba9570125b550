import type { MuxStream } from '../mux/index.ts';
import type { Logger } from '../util/log.ts';
import { writeFrame } from '../protocol/frames.ts';
import { encodeRelayControl, parseMoving, type RelayControl } from '../protocol/relay-control.ts';
import { formatRelayEntry, type RelayEntry } from '../config/relay-entry.ts';
import type { AgentSession } from './registry.ts';
import type { RelayStats } from './stats.ts';

/**
 * The relay's side of its agents' control streams after the publish answer:
 * it tells each agent the pinned relays of its cluster (`relays`, on
 * connect and whenever the list changes) and, once it retires, where to go
 * (`retire`); it reads `moving` from an agent that leaves for another relay.
 */
export class ControlChannels {
  readonly #streams = new Map<AgentSession, MuxStream>();
  /** Sessions that said they moved to another relay (each counted once). */
  readonly #moved = new WeakSet<AgentSession>();
  readonly #stats: RelayStats;
  readonly #log: Logger;
  #relays: RelayEntry[] = [];
  #retireTo: RelayEntry[] | undefined;

  constructor(stats: RelayStats, log: Logger) {
    this.#stats = stats;
    this.#log = log;
  }

  /** Agents with a control stream now. */
  get size(): number {
    return this.#streams.size;
  }

  /** A session's control stream after its first publish answer: it gets the current list (and the retirement). */
  attach(session: AgentSession, stream: MuxStream): void {
    if (this.#streams.has(session)) return;
    this.#streams.set(session, stream);
    stream.once('close', () => this.#streams.delete(session));
    if (this.#relays.length > 0) this.#send(stream, { t: 'relays', relays: this.#relays });
    if (this.#retireTo) this.#send(stream, { t: 'retire', to: this.#retireTo });
  }

  /** A frame after the first on a control stream that is not a publish set. Returns false if it is not ours. */
  onMessage(session: AgentSession, message: Record<string, unknown>): boolean {
    if (message.t !== 'moving') return false;
    const moving = parseMoving(message);
    if (!this.#moved.has(session)) {
      this.#moved.add(session);
      this.#stats.count('agent_moved');
    }
    this.#log.debug(`${session.address} from ${session.remote} moved to relay ${formatRelayEntry(moving.to)}`);
    return true;
  }

  moved(session: AgentSession): boolean {
    return this.#moved.has(session);
  }

  /** The cluster's pinned relays changed: every agent gets the new list. */
  setRelays(relays: RelayEntry[]): void {
    const same = relays.length === this.#relays.length && relays.every((r, i) => formatRelayEntry(r) === formatRelayEntry(this.#relays[i]));
    this.#relays = relays;
    if (same || relays.length === 0) return;
    for (const stream of this.#streams.values()) this.#send(stream, { t: 'relays', relays });
  }

  /** This relay retires: every agent (and every agent that connects from now on) is told to move. */
  retire(to: RelayEntry[]): void {
    this.#retireTo = to;
    for (const stream of this.#streams.values()) this.#send(stream, { t: 'retire', to });
  }

  #send(stream: MuxStream, message: RelayControl): void {
    if (!stream.destroyed && stream.writable) writeFrame(stream, encodeRelayControl(message));
  }
}
