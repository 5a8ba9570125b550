import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { formatHostPort, parseHostPort, type HostPort } from '../../util/hostport.ts';
import { toChecksumAddress } from '../../identity/checksum.ts';
import { formatRelayEntry, type RelayEntry } from '../../config/relay-entry.ts';
import { MAX_ANNOUNCED_RELAYS } from '../../protocol/limits.ts';
import type { RedisStore } from './redis-store.ts';

/** Refreshes a relay may miss before the others stop naming it to their agents. */
const STALE_AFTER_REFRESHES = 3;
/** ms after which a roster entry nobody refreshed is deleted (a relay that died unannounced long ago). */
const PRUNE_AFTER_MS = 24 * 3_600_000;

export interface RosterOptions {
  store: RedisStore;
  /** This relay's address. */
  self: string;
  /** Where agents reach this relay (--advertise-agents, else --advertise). */
  agentsAt: HostPort;
  /** Relays that may be named to agents: --cluster-allow (this one is always named). */
  allow: ReadonlySet<string>;
  refreshIntervalMs: number;
  log: Logger;
}

/**
 * The relays of the cluster as agents should know them: each relay writes
 * its pinned entry into the roster in Redis (a hash, `<prefix>relays`) at
 * start and every refresh, and reads everyone's. A relay names to its
 * agents only relays on its --cluster-allow list, refreshed lately, at most
 * MAX_ANNOUNCED_RELAYS of them. A relay that retires removes itself.
 */
export class RelayRoster {
  readonly #o: RosterOptions;
  readonly #listeners = new Set<(relays: RelayEntry[]) => void>();
  #relays: RelayEntry[] = [];
  #timer: NodeJS.Timeout | undefined;
  #retired = false;
  #reading: Promise<void> | undefined;

  constructor(options: RosterOptions) {
    this.#o = options;
    this.#relays = [this.#selfEntry()];
    options.store.on('roster', () => void this.#read());
    options.store.on('resync', () => void this.#refresh(false));
  }

  get relays(): RelayEntry[] {
    return this.#relays;
  }

  async start(): Promise<void> {
    this.#timer = setInterval(() => void this.#refresh(false), this.#o.refreshIntervalMs);
    this.#timer.unref();
    await this.#refresh(true);
  }

  watch(listener: (relays: RelayEntry[]) => void): () => void {
    this.#listeners.add(listener);
    listener(this.#relays);
    return () => this.#listeners.delete(listener);
  }

  /** Leaves the roster for good: the other relays stop naming this one. */
  async retire(): Promise<void> {
    this.#retired = true;
    await this.#o.store.rosterWrite(undefined, true).catch((err) => this.#o.log.warn(`cluster roster: cannot remove this relay: ${errorMessage(err)}`));
    await this.#read();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    // A relay that stops leaves the roster at once (it writes itself again when it starts).
    if (!this.#retired && this.#o.store.up) await this.#o.store.rosterWrite(undefined, true).catch(() => {});
  }

  #selfEntry(): RelayEntry {
    return { ...this.#o.agentsAt, pin: this.#o.self };
  }

  async #refresh(announce: boolean): Promise<void> {
    if (!this.#retired && this.#o.store.up) {
      try {
        await this.#o.store.rosterWrite(`${Date.now()} ${formatHostPort(this.#o.agentsAt)}`, announce);
      } catch (err) {
        this.#o.log.debug(`cluster roster: cannot write this relay: ${errorMessage(err)}`);
      }
    }
    await this.#read();
  }

  #read(): Promise<void> {
    this.#reading ??= this.#readOnce().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  async #readOnce(): Promise<void> {
    if (!this.#o.store.up) return;
    let raw: Record<string, string>;
    try {
      raw = await this.#o.store.rosterRead();
    } catch (err) {
      this.#o.log.debug(`cluster roster: cannot read it: ${errorMessage(err)}`);
      return;
    }
    const now = Date.now();
    const staleMs = STALE_AFTER_REFRESHES * this.#o.refreshIntervalMs;
    const found: RelayEntry[] = [];
    const prune: string[] = [];
    for (const [field, value] of Object.entries(raw)) {
      const m = /^(\d{1,16}) (\S{1,300})$/.exec(value);
      if (!/^0x[0-9a-fA-F]{40}$/.test(field) || !m) continue;
      const address = toChecksumAddress(field.toLowerCase());
      const age = now - Number(m[1]);
      if (age > PRUNE_AFTER_MS) prune.push(field);
      if (age > staleMs) continue;
      if (address !== this.#o.self && !this.#o.allow.has(address)) continue;
      if (address === this.#o.self && this.#retired) continue;
      try {
        found.push({ ...parseHostPort(m[2], 'roster entry'), pin: address });
      } catch {
        // an entry that is not host:port is skipped
      }
    }
    void this.#o.store.rosterPrune(prune).catch(() => {});
    if (!this.#retired && !found.some((e) => e.pin === this.#o.self)) found.push(this.#selfEntry());
    found.sort((a, b) => formatRelayEntry(a).localeCompare(formatRelayEntry(b)));
    const relays = found.slice(0, MAX_ANNOUNCED_RELAYS);
    const same = relays.length === this.#relays.length && relays.every((r, i) => formatRelayEntry(r) === formatRelayEntry(this.#relays[i]));
    this.#relays = relays;
    if (!same) for (const listener of this.#listeners) listener(relays);
  }
}
