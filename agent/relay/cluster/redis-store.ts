import { EventEmitter } from 'node:events';
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis';
import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { formatHostPort, parseHostPort, type HostPort } from '../../util/hostport.ts';
import { toChecksumAddress } from '../../identity/checksum.ts';
import { describeRedisTarget, type RedisTarget } from './config.ts';

/**
 * The Redis side of the cluster's address → relay map.
 *
 * Key `<prefix>dev:<address, lower case>` holds
 *
 *     "<since> <relay address> <host:port>"
 *
 * (since: ms since the epoch when that relay's session began publishing the
 * address; host:port: where other relays reach that relay), with a TTL that
 * the holding relay refreshes. Every change of a key is announced on the
 * channel `<prefix>moves` as "<address> <value>" or "<address> -". The
 * changes are Lua scripts, so a claim, its compare and its announcement are
 * one step even on a Redis Cluster (each script touches one key).
 */
export interface MapEntry {
  /** Checksummed address of the relay that holds the device. */
  relay: string;
  /** Where that relay accepts relay-to-relay links. */
  endpoint: HostPort;
  /** When its session began publishing (ms since the epoch, the holder's clock): the newest claim wins. */
  since: number;
  /** The raw value, compared byte for byte by the scripts. */
  value: string;
}

export function encodeEntry(relay: string, endpoint: HostPort, since: number): string {
  return `${since} ${relay} ${formatHostPort(endpoint)}`;
}

export function decodeEntry(value: string): MapEntry | undefined {
  const m = /^(\d{1,16}) (0x[0-9a-fA-F]{40}) (\S+)$/.exec(value);
  if (!m) return undefined;
  try {
    return { since: Number(m[1]), relay: toChecksumAddress(m[2].toLowerCase()), endpoint: parseHostPort(m[3], 'map entry'), value };
  } catch {
    return undefined;
  }
}

/**
 * claim: KEYS[1] the device's key; ARGV value, since, ttl ms, channel, device address, our relay
 * address, the latest `since` to believe (our clock plus MAX_CLOCK_SKEW_MS), the relays of
 * --cluster-allow (",0x…,0x…,", lower case).
 * Keeps a newer (or equally old) claim of another relay and returns it; otherwise writes ours,
 * announces it if it changed, and returns 1. A claim that names a relay not on the list, or a
 * `since` past the skew (what a writer to Redis that is no relay of ours could forge), is no
 * claim: ours replaces it.
 */
const CLAIM_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if cur then
  local since, owner = string.match(cur, '^(%d+) (%S+)')
  local believed = owner and tonumber(since) <= tonumber(ARGV[7]) and string.find(ARGV[8], ',' .. string.lower(owner) .. ',', 1, true)
  if believed and string.lower(owner) ~= string.lower(ARGV[6]) and tonumber(since) >= tonumber(ARGV[2]) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. ARGV[1])
return 1
`;

/**
 * release: KEYS[1]; ARGV match, mode ("exact": the value must equal match; "owner": its relay must), channel, device address.
 * Deletes and announces the deletion; returns 1 if it deleted.
 */
const RELEASE_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[2] == 'exact' then
  if cur ~= ARGV[1] then return 0 end
else
  local owner = string.match(cur, '^%d+ (%S+)')
  if not owner or string.lower(owner) ~= string.lower(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' -')
return 1
`;

interface Scripts {
  diodeClaim(key: string, value: string, since: string, ttl: string, channel: string, address: string, relay: string, latest: string, allow: string): Promise<number | string>;
  diodeRelease(key: string, match: string, mode: 'exact' | 'owner', channel: string, address: string): Promise<number>;
}

type Client = (Redis | Cluster) & Scripts;

export interface RedisStoreOptions {
  target: RedisTarget;
  /** This relay: its address and where others reach it. */
  relay: string;
  advertise: HostPort;
  keyPrefix: string;
  entryTtlMs: number;
  refreshIntervalMs: number;
  /** The relays of the cluster (--cluster-allow): a claim of another relay is believed only from them. */
  allow: ReadonlySet<string>;
  log: Logger;
}

/**
 * ms: how far ahead of this relay's clock a map entry's `since` may be and
 * still be believed: relays' clocks disagree by a little (NTP keeps them
 * within milliseconds; a relay a minute off is broken). An entry dated
 * later is forged, or from a relay whose clock is wrong: it would win every
 * comparison for as long as it lives.
 */
export const MAX_CLOCK_SKEW_MS = 60_000;

/** ms: a Redis command that gets no answer within this fails (the relay never waits on Redis for long). */
const COMMAND_TIMEOUT_MS = 2_000;
/** ms: TCP connect to a Redis node. */
const CONNECT_TIMEOUT_MS = 2_000;
/** ms: reconnect delays to Redis grow to this ceiling. */
const MAX_RECONNECT_DELAY_MS = 2_000;

export interface RedisStoreEvents {
  /** Another relay changed an entry (or we did): entry undefined = deleted. */
  move: [address: string, entry: MapEntry | undefined];
  /** A claim of ours lost to a newer claim of another relay (its session of the address is more recent). */
  superseded: [address: string, entry: MapEntry];
  /** Redis (re)connected: whatever was cached may have missed announcements. */
  resync: [];
  /** A relay joined or left the roster (`<prefix>relays`): read it again. */
  roster: [];
}

/**
 * Holds this relay's entries in Redis and reads the others'. It never
 * throws at its callers for an outage: claims and releases made while Redis
 * is away are replayed when it is back (a restarted Redis has lost every
 * key, so on every (re)connect the relay writes all its entries again), and
 * lookups fail fast instead of queueing.
 */
export class RedisStore extends EventEmitter<RedisStoreEvents> {
  readonly #options: RedisStoreOptions;
  readonly #log: Logger;
  readonly #client: Client;
  readonly #sub: Redis | Cluster;
  readonly #channel: string;
  /** Announces changes of the roster of relays (the hash `<prefix>relays`). */
  readonly #rosterChannel: string;
  /** address → the value we claimed for it; refreshed every interval for as long as we hold it. */
  readonly #held = new Map<string, string>();
  /** Releases that could not reach Redis: replayed on reconnect. */
  readonly #pendingRelease = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #wasReady = false;
  #subscribed = false;
  #downSince: number | undefined = Date.now();
  /** The current outage (or the wait for the first connection) has been logged. */
  #downLogged = false;
  #closed = false;
  /** Redis calls made (a script call is one), for the bench's ops-per-device figure. */
  calls = 0;

  constructor(options: RedisStoreOptions) {
    super();
    this.#options = options;
    this.#log = options.log;
    this.#channel = `${options.keyPrefix}moves`;
    this.#rosterChannel = `${options.keyPrefix}relays`;
    this.#client = createClient(options.target) as Client;
    this.#sub = createClient(options.target);
    for (const client of [this.#client, this.#sub]) {
      client.defineCommand('diodeClaim', { numberOfKeys: 1, lua: CLAIM_LUA });
      client.defineCommand('diodeRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
      client.on('error', (err: Error) => this.#down(err));
    }
    this.#client.on('close', () => this.#down(new Error('connection closed')));
    this.#client.on('ready', () => this.#up());
    this.#sub.on('message', (channel: string, message: string) => {
      if (channel === this.#channel) this.#onMessage(message);
      else if (channel === this.#rosterChannel) this.emit('roster');
    });
    // Commands are never queued while Redis is away (enableOfflineQueue off), so
    // the channel is subscribed on every (re)connect; announcements made while
    // it was away are missed, so the cache must be dropped then.
    this.#sub.on('ready', () => {
      this.#sub.subscribe(this.#channel, this.#rosterChannel).then(
        () => {
          if (this.#subscribed) this.emit('resync');
          this.#subscribed = true;
        },
        (err) => this.#down(err),
      );
    });
  }

  /** Resolves once connected and subscribed, or after CONNECT_TIMEOUT_MS (it keeps retrying in the background either way). */
  async start(): Promise<void> {
    this.#timer = setInterval(() => this.#refreshAll(), this.#options.refreshIntervalMs);
    this.#timer.unref();
    const deadline = Date.now() + CONNECT_TIMEOUT_MS;
    while (!(this.up && this.#subscribed) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  get up(): boolean {
    return this.#client.status === 'ready';
  }

  /** The command connection, for the cluster's other shared keys (names): no offline queue, commands fail at once while Redis is away. */
  get client(): Redis | Cluster {
    return this.#client;
  }

  /** Claims address for this relay (since: when our session began publishing it) and keeps the claim fresh. */
  hold(address: string, since: number): void {
    const value = encodeEntry(this.#options.relay, this.#options.advertise, since);
    this.#held.set(address, value);
    this.#pendingRelease.delete(address);
    void this.#claim(address, value);
  }

  /** This relay no longer holds address: deletes our entry (only if it is still ours). */
  drop(address: string): void {
    const value = this.#held.get(address);
    if (value === undefined) return;
    this.#held.delete(address);
    void this.#release(address, value, 'exact').then((ok) => {
      if (!ok) this.#pendingRelease.set(address, value);
    });
  }

  /** Whether we claimed address (and still refresh it). */
  holds(address: string): boolean {
    return this.#held.has(address);
  }

  get heldCount(): number {
    return this.#held.size;
  }

  /** The entry of address in Redis now. Throws when Redis cannot answer. */
  async lookup(address: string): Promise<MapEntry | undefined> {
    this.calls++;
    const value = await this.#client.get(this.#key(address));
    return value === null ? undefined : decodeEntry(value);
  }

  /**
   * Deletes a stale entry: mode "exact" deletes entry only if it is still
   * that value (a forwarder whose dial to the holder failed), "owner"
   * deletes whatever entry names this relay (we were asked for a device we
   * do not hold). Best effort: false if Redis could not be asked.
   */
  async forget(address: string, match: MapEntry | 'mine'): Promise<boolean> {
    if (match === 'mine') return this.#release(address, this.#options.relay, 'owner');
    return this.#release(address, match.value, 'exact');
  }

  /**
   * The roster of relays: the hash `<prefix>relays`, field = a relay's
   * address, value = "<ms since the epoch> <host:port where agents reach it>",
   * written by each relay at start and every refresh. `announce` publishes
   * on `<prefix>relays` when asked to (a relay joining or leaving), so the
   * others read it again at once. Throws when Redis cannot answer.
   */
  async rosterWrite(value: string | undefined, announce: boolean): Promise<void> {
    const key = `${this.#options.keyPrefix}relays`;
    this.calls++;
    if (value === undefined) await this.#client.hdel(key, this.#options.relay);
    else await this.#client.hset(key, this.#options.relay, value);
    if (announce) await this.#client.publish(this.#rosterChannel, this.#options.relay);
  }

  /** The roster as stored (field → value). Throws when Redis cannot answer. */
  async rosterRead(): Promise<Record<string, string>> {
    this.calls++;
    return this.#client.hgetall(`${this.#options.keyPrefix}relays`);
  }

  /** Deletes roster fields (entries no relay refreshed for long). */
  async rosterPrune(fields: string[]): Promise<void> {
    if (fields.length === 0) return;
    this.calls++;
    await this.#client.hdel(`${this.#options.keyPrefix}relays`, ...fields);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    // Our devices are gone with us: withdraw their entries now rather than at their TTL.
    if (this.up) await Promise.allSettled([...this.#held].map(([address, value]) => this.#release(address, value, 'exact')));
    this.#held.clear();
    this.#client.disconnect();
    this.#sub.disconnect();
  }

  #key(address: string): string {
    return `${this.#options.keyPrefix}dev:${address.toLowerCase()}`;
  }

  async #claim(address: string, value: string): Promise<void> {
    if (!this.up) return; // replayed by #up
    const o = this.#options;
    try {
      this.calls++;
      const allow = `,${[...o.allow].map((a) => a.toLowerCase()).join(',')},`;
      const latest = String(Date.now() + MAX_CLOCK_SKEW_MS);
      const result = await this.#client.diodeClaim(this.#key(address), value, value.slice(0, value.indexOf(' ')), String(o.entryTtlMs), this.#channel, address, o.relay, latest, allow);
      if (typeof result === 'string' && this.#held.get(address) === value) {
        const other = decodeEntry(result);
        if (other) this.emit('superseded', address, other);
      }
    } catch (err) {
      this.#down(err);
    }
  }

  async #release(address: string, match: string, mode: 'exact' | 'owner'): Promise<boolean> {
    if (!this.up) return false;
    try {
      this.calls++;
      await this.#client.diodeRelease(this.#key(address), match, mode, this.#channel, address);
      return true;
    } catch (err) {
      this.#down(err);
      return false;
    }
  }

  #refreshAll(): void {
    if (!this.up) return;
    // Autopipelining sends these in a few batches (grouped per node on a Redis Cluster).
    for (const [address, value] of this.#held) void this.#claim(address, value);
  }

  #onMessage(message: string): void {
    const space = message.indexOf(' ');
    if (space < 0) return;
    const address = message.slice(0, space);
    const rest = message.slice(space + 1);
    if (!/^0x[0-9a-fA-F]{40}$/.test(address)) return;
    this.emit('move', toChecksumAddress(address.toLowerCase()), rest === '-' ? undefined : decodeEntry(rest));
  }

  #up(): void {
    const outage = this.#downSince !== undefined && this.#wasReady ? ` after ${Math.round((Date.now() - this.#downSince) / 100) / 10} s away` : '';
    this.#log.info(`cluster map: connected to ${describeRedisTarget(this.#options.target)}${outage}; writing ${this.#held.size} entr${this.#held.size === 1 ? 'y' : 'ies'}`);
    this.#downSince = undefined;
    this.#downLogged = false;
    const pending = [...this.#pendingRelease];
    this.#pendingRelease.clear();
    for (const [address, value] of pending) void this.#release(address, value, 'exact');
    this.#refreshAll();
    if (this.#wasReady) this.emit('resync');
    this.#wasReady = true;
  }

  #down(err: unknown): void {
    if (this.#closed || this.#downLogged) return;
    // Also before the first connection: a relay that cannot log in (WRONGPASS, NOAUTH) says so at once.
    this.#downSince ??= Date.now();
    this.#downLogged = true;
    this.#log.warn(`cluster map: Redis unreachable (${errorMessage(err)}); serving this relay's own devices and the entries it knows, retrying`);
  }
}

function createClient(target: RedisTarget): Redis | Cluster {
  const common: RedisOptions = {
    enableOfflineQueue: false,
    autoResubscribe: false,
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: CONNECT_TIMEOUT_MS,
    retryStrategy: (times: number) => Math.min(100 * times, MAX_RECONNECT_DELAY_MS),
  };
  if (target.kind === 'single') {
    // ioredis takes what the URL says over its options: the password goes into the URL here, in memory only.
    const url = new URL(target.url);
    if (target.password !== undefined) url.password = encodeURIComponent(target.password);
    return new Redis(url.toString(), common);
  }
  if (target.kind === 'sentinel') {
    return new Redis({
      ...common,
      sentinels: target.sentinels,
      name: target.name,
      db: target.db,
      username: target.username,
      password: target.password,
      sentinelUsername: target.username,
      sentinelPassword: target.password,
      ...(target.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
    });
  }
  const { enableOfflineQueue, retryStrategy, enableAutoPipelining, ...redisOptions } = common;
  const options: ClusterOptions = {
    enableOfflineQueue,
    enableAutoPipelining,
    clusterRetryStrategy: retryStrategy,
    redisOptions: { ...redisOptions, username: target.username, password: target.password, ...(target.tls ? { tls: {} } : {}) },
  };
  return new Cluster(target.nodes, options);
}
