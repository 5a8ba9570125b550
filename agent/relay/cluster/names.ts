import type { Redis, Cluster } from 'ioredis';
import type { Logger } from '../../util/log.ts';
import { errorMessage } from '../../util/errors.ts';
import { toChecksumAddress } from '../../identity/checksum.ts';
import { PUBLIC_KEY_HEX, SIGNATURE_HEX } from '../../identity/identity.ts';
import { claimant, type SignedName } from '../../names/claim.ts';
import type { ClaimOutcome } from '../../protocol/names.ts';
import type { PublisherChange, SessionSet } from '../registry.ts';
import type { RelayStats } from '../stats.ts';
import { heldBy, overLimit, type NameRecord, type NameTable } from '../names.ts';
import type { RedisStore } from './redis-store.ts';
import { RefusalLog } from '../admission.ts';

/**
 * ms between two refreshes of the names of devices this relay holds: their
 * keys' TTL is the name hold, so a device that went away keeps its names
 * for the hold minus at most this.
 */
export const NAME_REFRESH_MS = 60 * 60_000;

/*
 * The cluster's names, in Redis beside the address map:
 *
 *     <prefix>name:<name>            "<address> <pub> <sig>"   (PX: the name hold)
 *     <prefix>names:<address, lower>  "<name> <name> …"          (PX: the name hold)
 *
 * The first key is the claim (first claim wins, cluster-wide); the second is
 * the address's current set, so that a claim that leaves a name out frees it
 * on whichever relay the claim arrives. A relay refreshes the names of the
 * devices it holds every NAME_REFRESH_MS and once more when one goes, so a
 * name lapses a hold after its device was last seen. Entries read back are
 * checked (the key must have signed the name): whoever can write to Redis
 * can point a name only at a device that claimed it.
 */

/** KEYS[1] a name key; ARGV value, address, ttl. Keeps another address's claim and returns it; else writes ours, returns 1. */
const CLAIM_NAME_LUA = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.match(cur, '^(%S+)')
  if owner and string.lower(owner) ~= string.lower(ARGV[2]) then return cur end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`;

/** KEYS[1] a name key; ARGV address, mode ("touch": PEXPIRE ttl, "release": DEL), ttl. Only if the address holds it. */
const OWNED_NAME_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local owner = string.match(cur, '^(%S+)')
if not owner or string.lower(owner) ~= string.lower(ARGV[1]) then return 0 end
if ARGV[2] == 'release' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`;

/** KEYS[1] an address's set key; ARGV the new set ("" deletes it), ttl. Returns the set it had. */
const SWAP_SET_LUA = `
local old = redis.call('GET', KEYS[1])
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return old
`;

interface NameScripts {
  diodeClaimName(key: string, value: string, address: string, ttl: string): Promise<number | string>;
  diodeOwnedName(key: string, address: string, mode: 'touch' | 'release', ttl: string): Promise<number>;
  diodeSwapNames(key: string, names: string, ttl: string): Promise<string | null>;
}

type Client = (Redis | Cluster) & NameScripts;

export function decodeName(name: string, value: string): NameRecord | undefined {
  const [address, pub, sig, ...rest] = value.split(' ');
  if (rest.length > 0 || !/^0x[0-9a-fA-F]{40}$/.test(address ?? '') || !PUBLIC_KEY_HEX.test(pub ?? '') || !SIGNATURE_HEX.test(sig ?? '')) return undefined;
  return { name, address: toChecksumAddress(address.toLowerCase()), pub, sig };
}

/** The names of a relay cluster (see above): first claim wins cluster-wide. */
export class ClusterNameTable implements NameTable {
  readonly #store: RedisStore;
  readonly #sessions: SessionSet;
  readonly #holdMs: number;
  readonly #prefix: string;
  readonly #log: Logger;
  /** Forged entries are found by lookups, which any client makes: a line a second, not a line a lookup. */
  readonly #lines: RefusalLog;
  readonly #stats: RelayStats;
  /** The names of the devices this relay holds, as their claims here left them: what the refresh keeps alive and a Redis restart gets back. */
  readonly #mine = new Map<string, SignedName[]>();
  #timer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(options: { store: RedisStore; sessions: SessionSet; holdMs: number; keyPrefix: string; log: Logger; stats: RelayStats }) {
    this.#store = options.store;
    this.#sessions = options.sessions;
    this.#holdMs = options.holdMs;
    this.#prefix = options.keyPrefix;
    this.#log = options.log;
    this.#lines = new RefusalLog(options.log);
    this.#stats = options.stats;
    const client = this.#store.client;
    client.defineCommand('diodeClaimName', { numberOfKeys: 1, lua: CLAIM_NAME_LUA });
    client.defineCommand('diodeOwnedName', { numberOfKeys: 1, lua: OWNED_NAME_LUA });
    client.defineCommand('diodeSwapNames', { numberOfKeys: 1, lua: SWAP_SET_LUA });
    // A Redis that restarted without persistence lost every name: the relays claim their devices' names again.
    this.#store.on('resync', () => this.#reclaim());
  }

  get #client(): Client {
    return this.#store.client as Client;
  }

  async start(): Promise<void> {
    this.#unsubscribe = this.#sessions.onPublisherChange((change) => this.#onPublisherChange(change));
    this.#timer = setInterval(() => this.#refresh(), NAME_REFRESH_MS);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#unsubscribe?.();
  }

  async claim(address: string, claims: readonly SignedName[], maxNames: number): Promise<ClaimOutcome[]> {
    if (!this.#store.up) throw new Error('Redis is unreachable');
    const ttl = String(this.#holdMs);
    const kept: SignedName[] = [];
    const outcomes: ClaimOutcome[] = [];
    for (const [i, claim] of claims.entries()) {
      if (i >= maxNames) {
        outcomes.push(overLimit(claim.name, maxNames));
        continue;
      }
      const result = await this.#client.diodeClaimName(this.#nameKey(claim.name), `${address} ${claim.pub} ${claim.sig}`, address, ttl);
      if (result === 1) {
        kept.push(claim);
        outcomes.push({ name: claim.name, ok: true });
      } else {
        outcomes.push(heldBy(claim.name, decodeName(claim.name, String(result))?.address ?? String(result).split(' ')[0]));
      }
    }
    // The complete set: names the address held before (claimed on any relay) and left out are free now.
    const keptNames = kept.map((c) => c.name);
    const before = (await this.#client.diodeSwapNames(this.#setKey(address), keptNames.join(' '), ttl)) ?? '';
    for (const name of before.split(' ')) {
      if (name !== '' && !keptNames.includes(name)) await this.#client.diodeOwnedName(this.#nameKey(name), address, 'release', ttl);
    }
    if (kept.length > 0) this.#mine.set(address, kept);
    else this.#mine.delete(address);
    return outcomes;
  }

  async lookup(name: string): Promise<NameRecord | undefined> {
    const value = await this.#client.get(this.#nameKey(name));
    if (value === null) return undefined;
    const record = decodeName(name, value);
    let by: string | undefined;
    try {
      by = record && claimant(record);
    } catch {
      by = undefined;
    }
    if (!record || by !== record.address) {
      this.#stats.count('cluster_name_forged');
      this.#lines.line('warn', 'cluster_name_forged', `cluster map: the entry of name ${name} does not hold a claim its address signed; ignored (who else writes to this Redis?)`, 'forged name entries');
      return undefined;
    }
    return record;
  }

  #nameKey(name: string): string {
    return `${this.#prefix}name:${name}`;
  }

  #setKey(address: string): string {
    return `${this.#prefix}names:${address.toLowerCase()}`;
  }

  /** The hold of `address`'s names starts again from now. */
  async #touch(address: string, names: readonly SignedName[]): Promise<void> {
    const ttl = String(this.#holdMs);
    try {
      for (const { name } of names) await this.#client.diodeOwnedName(this.#nameKey(name), address, 'touch', ttl);
      await this.#client.pexpire(this.#setKey(address), this.#holdMs);
    } catch (err) {
      this.#log.debug(`cluster map: names of ${address} not refreshed: ${errorMessage(err)}`);
    }
  }

  #refresh(): void {
    if (!this.#store.up) return;
    for (const [address, names] of this.#mine) {
      if (this.#sessions.publisher(address)) void this.#touch(address, names);
      else this.#mine.delete(address);
    }
  }

  #reclaim(): void {
    for (const [address, claims] of this.#mine) {
      if (!this.#sessions.publisher(address)) continue;
      this.claim(address, claims, claims.length).catch((err) => this.#log.debug(`cluster map: names of ${address} not claimed again: ${errorMessage(err)}`));
    }
  }

  /** A device that leaves this relay: its hold starts now (the relay it moves to, if any, claims again). */
  #onPublisherChange({ address, active }: PublisherChange): void {
    if (active) return;
    const names = this.#mine.get(address);
    if (!names) return;
    this.#mine.delete(address);
    if (this.#store.up) void this.#touch(address, names);
  }
}
