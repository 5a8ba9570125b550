import type { Identity } from '../../identity/index.ts';
import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import type { Directory, Location } from '../directory.ts';
import type { PublisherChange, SessionSet } from '../registry.ts';
import type { RelayStats } from '../stats.ts';
import type { ClusterConfig } from './config.ts';
import { MAX_CLOCK_SKEW_MS, RedisStore, type MapEntry } from './redis-store.ts';
import { RefusalLog } from '../admission.ts';
import { PeerLinks } from './peers.ts';
import { setBounded } from '../../util/bounded-map.ts';
import type { RelayEntry } from '../../config/relay-entry.ts';
import { RelayRoster } from './roster.ts';

/** Entries of other relays' devices kept in memory (from lookups and announcements); the oldest go first beyond it. */
export const MAX_CACHED_ENTRIES = 100_000;
/**
 * ms an address the map does not hold is remembered as such: a client that
 * retries a device that is offline (or a caller trying addresses at random)
 * costs a Redis lookup per address and this long, not one per connect. An
 * announcement of the address ends it at once.
 */
export const ABSENT_TTL_MS = 5_000;

/**
 * The directory of a relay in a cluster: its own session set first, then
 * the address → relay map shared in Redis (cached here, kept current by the
 * map's announcements), and links to the relays it names.
 *
 * - Whenever the session set's active publisher of an address changes, the
 *   map entry is claimed (or released) for this relay.
 * - A local publisher wins unless the map says another relay's session of
 *   the address began publishing later (the device moved and this relay's
 *   session is not known dead yet; the newest session gets the streams,
 *   cluster-wide as on one relay).
 * - While Redis is unreachable, local devices and cached entries keep
 *   working; what is not known is `offline`.
 */
export class ClusterDirectory implements Directory {
  readonly store: RedisStore;
  readonly peers: PeerLinks;
  /** The relays of the cluster as agents reach them (told to this relay's agents). */
  readonly roster: RelayRoster;
  readonly #sessions: SessionSet;
  readonly #self: string;
  readonly #allow: ReadonlySet<string>;
  readonly #log: Logger;
  readonly #stats: RelayStats;
  readonly #cache = new Map<string, MapEntry>();
  /** Addresses the map did not hold when last asked, and until when that answer stands (ABSENT_TTL_MS). */
  readonly #absent = new Map<string, number>();
  readonly #refusals: RefusalLog;
  #unsubscribe: (() => void) | undefined;

  /** @param options.maxWindow the largest receive window a stream of a relay link grows to (--max-stream-window) */
  constructor(options: { sessions: SessionSet; identity: Identity; config: ClusterConfig; log: Logger; stats: RelayStats; maxWindow: number }) {
    const { config, identity, log } = options;
    this.#sessions = options.sessions;
    this.#self = identity.address;
    this.#allow = config.allow;
    this.#log = log;
    this.#stats = options.stats;
    this.#refusals = new RefusalLog(log);
    this.store = new RedisStore({
      target: config.redis,
      relay: identity.address,
      advertise: config.advertise,
      keyPrefix: config.keyPrefix,
      entryTtlMs: config.entryTtlMs,
      refreshIntervalMs: config.refreshIntervalMs,
      allow: config.allow,
      log,
    });
    this.peers = new PeerLinks({ identity, log, stats: options.stats, maxWindow: options.maxWindow, allow: config.allow });
    this.roster = new RelayRoster({
      store: this.store,
      self: identity.address,
      agentsAt: config.advertiseAgents ?? config.advertise,
      allow: config.allow,
      refreshIntervalMs: config.refreshIntervalMs,
      log,
    });
    this.store.on('move', (address, entry) => {
      this.#absent.delete(address);
      if (entry && this.#believed(address, entry)) this.#remember(address, entry);
      else this.#cache.delete(address);
    });
    this.store.on('superseded', (address, entry) => {
      if (!this.#believed(address, entry)) return;
      this.#stats.count('cluster_superseded');
      this.#log.warn(`${address} began publishing on relay ${entry.relay} after its session here did: its streams go there`);
      this.#remember(address, entry);
    });
    this.store.on('resync', () => {
      this.#cache.clear();
      this.#absent.clear();
    });
  }

  async start(): Promise<void> {
    this.#unsubscribe = this.#sessions.onPublisherChange((change) => this.#onPublisherChange(change));
    for (const session of this.#sessions.all()) {
      if (this.#sessions.publisher(session.address) === session) this.store.hold(session.address, session.publishingSince ?? Date.now());
    }
    await this.store.start();
    await this.roster.start();
  }

  async close(): Promise<void> {
    this.#unsubscribe?.();
    this.peers.close();
    await this.roster.close();
    await this.store.close();
  }

  watchRelays(listener: (relays: RelayEntry[]) => void): () => void {
    return this.roster.watch(listener);
  }

  retire(): Promise<void> {
    return this.roster.retire();
  }

  refusesRelay(address: string): string | undefined {
    // Both ends of a relay link sign the same text: a peer reflecting our own hello proves our address.
    if (address === this.#self) return `relay ${address} is this relay itself (a reflected hello?)`;
    if (!this.#allow.has(address)) return `relay ${address} is not on the --cluster-allow list of relay ${this.#self}`;
    return undefined;
  }

  notHeld(address: string): void {
    this.#cache.delete(address);
    this.#stats.count('cluster_stale_here');
    void this.store.forget(address, 'mine');
  }

  async locate(address: string, fresh = false): Promise<Location | undefined> {
    const local = this.#sessions.publisher(address);
    let entry = fresh ? undefined : this.#cache.get(address);
    if (local) {
      const newer = entry && entry.relay !== this.#self && entry.since >= (local.publishingSince ?? 0);
      return newer ? this.#remote(address, entry!) : { kind: 'local', session: local };
    }
    if (!entry) {
      if (!fresh && (this.#absent.get(address) ?? 0) > Date.now()) return undefined;
      try {
        entry = await this.store.lookup(address);
      } catch (err) {
        this.#stats.count('cluster_lookup_failed');
        this.#log.debug(`cluster map: lookup of ${address} failed: ${errorMessage(err)}`);
        return undefined;
      }
      if (!entry || !this.#believed(address, entry)) {
        this.#cache.delete(address);
        setBounded(this.#absent, address, Date.now() + ABSENT_TTL_MS, MAX_CACHED_ENTRIES);
        return undefined;
      }
      this.#absent.delete(address);
      this.#remember(address, entry);
    }
    if (entry.relay === this.#self) {
      // The map names us, but no session here publishes it (an entry left from before a restart).
      this.notHeld(address);
      return undefined;
    }
    return this.#remote(address, entry);
  }

  #remote(address: string, entry: MapEntry): Location {
    return {
      kind: 'relay',
      relay: entry.relay,
      open: () => this.peers.open(entry.relay, entry.endpoint),
      takeData: () => this.peers.takeData(entry.relay),
      stale: () => {
        this.#stats.count('cluster_stale_entry');
        if (this.#cache.get(address) === entry) this.#cache.delete(address);
        void this.store.forget(address, entry);
      },
    };
  }

  /**
   * A map entry is trusted only as far as its relay is: one that names a
   * relay not on --cluster-allow, or is dated later than this relay's clock
   * allows (MAX_CLOCK_SKEW_MS), is ignored and counted. Whoever can write to
   * Redis could write it; the relays of the cluster never do.
   */
  #believed(address: string, entry: MapEntry): boolean {
    let why: string | undefined;
    if (entry.relay !== this.#self && !this.#allow.has(entry.relay)) why = `names relay ${entry.relay}, which is not on --cluster-allow`;
    else if (entry.since > Date.now() + MAX_CLOCK_SKEW_MS) why = `is dated ${Math.round((entry.since - Date.now()) / 1000)} s ahead of this relay's clock (more than ${MAX_CLOCK_SKEW_MS / 1000} s)`;
    if (why === undefined) return true;
    this.#stats.count('refused_cluster_entry');
    this.#refusals.refused('cluster_entry', `cluster map entry of ${address} ignored: it ${why} (who else writes to this Redis?)`);
    return false;
  }

  #remember(address: string, entry: MapEntry): void {
    setBounded(this.#cache, address, entry, MAX_CACHED_ENTRIES);
  }

  #onPublisherChange({ address, active }: PublisherChange): void {
    if (active) this.store.hold(address, active.publishingSince ?? Date.now());
    else this.store.drop(address);
  }
}
