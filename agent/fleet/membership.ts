// FleetMembership: the device agent's view of a fleet contract, answering
// "may this client address reach a protected port?".
//
// - Answers come from `deviceWhitelist(address)` (eth_call) and are cached
//   for `ttlSeconds`, at most `maxEntries` of them (least recently used go).
// - Fail closed: if the RPC is down, slow or answers nonsense, the answer is
//   false and one log line says why. An error is never cached.
// - Events shorten the wait: over ws(s) the agent subscribes to
//   MemberAdded/MemberRemoved; over http(s) it polls eth_getLogs every
//   `pollSeconds` while it has cached answers. Either way an event drops the
//   cached answer for that address. Without events (or while the feed is
//   down) a change is seen within `ttlSeconds` at worst.
import { Contract, dataSlice, getAddress, type Log } from 'ethers';
import { FLEET_ABI, MEMBER_ADDED_TOPIC, MEMBER_REMOVED_TOPIC } from './artifact.ts';
import { FleetError } from './errors.ts';
import { toFleetError } from './mapError.ts';
import { checkRpcUrl, isWebSocketUrl, openProvider, withTimeout, type FleetProvider } from './rpc.ts';

export interface FleetMembershipConfig {
  /** JSON-RPC URL: http(s):// (events by polling) or ws(s):// (subscription). */
  rpc: string;
  /** Fleet contract address. */
  fleet: string;
  /** How long an answer is trusted, in seconds (0: ask every time). */
  ttlSeconds?: number;
  /** Receives one line per denial caused by an error, and feed changes. */
  log?: (line: string) => void;
  /** Most answers kept in the cache, in entries. */
  maxEntries?: number;
  /** http(s) only: interval between eth_getLogs polls, in seconds (0: no polling). */
  pollSeconds?: number;
  /** Deadline for each RPC request, in seconds. */
  timeoutSeconds?: number;
  /** Wait after a failed connection before trying again, in seconds. */
  reconnectSeconds?: number;
}

export const FLEET_MEMBERSHIP_DEFAULTS = Object.freeze({
  ttlSeconds: 30,
  maxEntries: 10_000,
  pollSeconds: 5,
  timeoutSeconds: 5,
  reconnectSeconds: 2,
});

/** A poll spanning more blocks than this drops the whole cache instead of fetching logs. */
export const MAX_LOG_RANGE_BLOCKS = 5_000;

type Resolved = Required<Omit<FleetMembershipConfig, 'log'>> & { log: (line: string) => void };

/** Fills in defaults and checks the config; throws FleetError on a bad one. */
export function resolveMembershipConfig(config: FleetMembershipConfig): Resolved {
  checkRpcUrl(config.rpc);
  let fleet: string;
  try {
    fleet = getAddress(config.fleet);
  } catch {
    throw new FleetError('EBADADDR', `fleet address "${config.fleet}" is not an address: give 0x followed by 40 hex digits`);
  }
  const resolved: Resolved = {
    ...FLEET_MEMBERSHIP_DEFAULTS,
    ...Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)),
    rpc: config.rpc,
    fleet,
    log: config.log ?? (() => {}),
  } as Resolved;
  for (const key of ['ttlSeconds', 'pollSeconds', 'timeoutSeconds', 'reconnectSeconds', 'maxEntries'] as const) {
    const value = resolved[key];
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`fleet membership: ${key} must be a number >= 0, got ${value}`);
  }
  if (resolved.maxEntries < 1 || resolved.timeoutSeconds <= 0) throw new RangeError('fleet membership: maxEntries must be >= 1 and timeoutSeconds > 0');
  return resolved;
}

interface Entry {
  member: boolean;
  /** Date.now() after which the answer is stale, in ms. */
  expiresAt: number;
}

export class FleetMembership {
  readonly #config: Resolved;
  /** Map order is recency order: a hit moves the entry to the end. */
  readonly #cache = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<boolean>>();
  /** Bumped by every invalidation; a lookup that raced one is not cached. */
  #epoch = 0;
  #closed = false;

  #provider: FleetProvider | null = null;
  #contract: Contract | null = null;
  #connecting: Promise<FleetProvider> | null = null;
  #retryAt = 0;
  #lastConnectError = '';

  #pollTimer: NodeJS.Timeout | null = null;
  #lastBlock = 0;
  #pollFailing = false;

  constructor(config: FleetMembershipConfig) {
    this.#config = resolveMembershipConfig(config);
  }

  /** True only when the fleet contract lists `address` (a failed lookup is false). */
  async isMember(address: string): Promise<boolean> {
    if (this.#closed) return false;
    let member: string;
    try {
      member = getAddress(address);
    } catch {
      this.#config.log(`fleet: deny "${address}": not an address`);
      return false;
    }
    const entry = this.#cache.get(member);
    if (entry) {
      this.#cache.delete(member);
      if (entry.expiresAt > Date.now()) {
        this.#cache.set(member, entry);
        return entry.member;
      }
    }
    let pending = this.#inflight.get(member);
    if (!pending) {
      pending = this.#lookup(member).finally(() => this.#inflight.delete(member));
      this.#inflight.set(member, pending);
    }
    return pending;
  }

  /** Number of cached answers (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  /** Stops polling and subscriptions and closes the RPC connection. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#pollTimer) clearTimeout(this.#pollTimer);
    this.#pollTimer = null;
    this.#cache.clear();
    const provider = this.#provider ?? (await this.#connecting?.catch(() => null)) ?? null;
    this.#dropProvider();
    if (provider) await provider.destroy();
  }

  async #lookup(member: string): Promise<boolean> {
    const epoch = this.#epoch;
    const { timeoutSeconds, ttlSeconds } = this.#config;
    let answer: boolean;
    try {
      await this.#connected();
      answer = await withTimeout(
        this.#contract!.getFunction('deviceWhitelist').staticCall(member) as Promise<boolean>,
        timeoutSeconds * 1_000,
        () => new FleetError('ERPC', `RPC ${this.#config.rpc} gave no answer within ${timeoutSeconds} s`),
      );
      if (typeof answer !== 'boolean') throw new FleetError('ENOTCONTRACT', `fleet ${this.#config.fleet} answered deviceWhitelist with a non-boolean`);
    } catch (error) {
      const why = toFleetError(error, { action: 'deviceWhitelist', rpc: this.#config.rpc, fleet: this.#config.fleet }).message;
      this.#config.log(`fleet: deny ${member}: ${why}`);
      return false;
    }
    if (!this.#closed && epoch === this.#epoch && ttlSeconds > 0) this.#remember(member, answer);
    return answer;
  }

  #remember(member: string, answer: boolean): void {
    if (this.#cache.size >= this.#config.maxEntries) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(member, { member: answer, expiresAt: Date.now() + this.#config.ttlSeconds * 1_000 });
  }

  #invalidate(member: string): void {
    this.#epoch++;
    this.#cache.delete(member);
  }

  #invalidateAll(): void {
    this.#epoch++;
    this.#cache.clear();
  }

  async #connected(): Promise<FleetProvider> {
    if (this.#provider) return this.#provider;
    if (this.#connecting) return this.#connecting;
    if (Date.now() < this.#retryAt) {
      throw new FleetError('ERPC', `${this.#lastConnectError} (next try in ${Math.ceil((this.#retryAt - Date.now()) / 1_000)} s)`);
    }
    this.#connecting = this.#connect().finally(() => {
      this.#connecting = null;
    });
    return this.#connecting;
  }

  async #connect(): Promise<FleetProvider> {
    const { rpc, fleet, timeoutSeconds, reconnectSeconds } = this.#config;
    const timeoutMs = timeoutSeconds * 1_000;
    let provider: FleetProvider | null = null;
    try {
      provider = await openProvider(rpc, timeoutMs);
      const code = await withTimeout(provider.getCode(fleet), timeoutMs, () => new FleetError('ERPC', `RPC ${rpc} gave no answer within ${timeoutSeconds} s`));
      if (code === '0x') throw new FleetError('ENOTCONTRACT', `no contract at fleet address ${fleet} on ${rpc}: check the fleet address and the RPC's chain`);
      if (this.#closed) throw new FleetError('ERPC', 'fleet membership closed');
      await this.#startEvents(provider);
    } catch (error) {
      if (provider) void provider.destroy();
      this.#retryAt = Date.now() + reconnectSeconds * 1_000;
      this.#lastConnectError = toFleetError(error, { action: 'connecting', rpc, fleet }).message;
      throw error;
    }
    this.#provider = provider;
    this.#contract = new Contract(fleet, FLEET_ABI, provider);
    return provider;
  }

  #dropProvider(): void {
    this.#provider = null;
    this.#contract = null;
  }

  async #startEvents(provider: FleetProvider): Promise<void> {
    const filter = { address: this.#config.fleet, topics: [[MEMBER_ADDED_TOPIC, MEMBER_REMOVED_TOPIC]] };
    if (isWebSocketUrl(this.#config.rpc)) {
      await provider.on(filter, (log: Log) => this.#onLog(log));
      const socket = (provider as unknown as { websocket: { addEventListener(type: string, listener: () => void): void } }).websocket;
      socket.addEventListener('close', () => {
        if (this.#closed || this.#provider !== provider) return;
        this.#config.log(`fleet: lost the websocket to ${this.#config.rpc}; answers expire within ${this.#config.ttlSeconds} s, reconnecting on the next lookup`);
        this.#dropProvider();
        void provider.destroy();
      });
      return;
    }
    if (this.#config.pollSeconds <= 0) return;
    this.#lastBlock = await provider.getBlockNumber();
    this.#schedulePoll(provider);
  }

  #onLog(log: Pick<Log, 'topics'>): void {
    const member = log.topics[1];
    if (member) this.#invalidate(getAddress(dataSlice(member, 12)));
  }

  #schedulePoll(provider: FleetProvider): void {
    if (this.#closed) return;
    this.#pollTimer = setTimeout(() => {
      void this.#poll(provider).finally(() => this.#schedulePoll(provider));
    }, this.#config.pollSeconds * 1_000);
    this.#pollTimer.unref();
  }

  async #poll(provider: FleetProvider): Promise<void> {
    const { rpc, fleet, timeoutSeconds } = this.#config;
    const timeoutMs = timeoutSeconds * 1_000;
    const late = () => new FleetError('ERPC', `RPC ${rpc} gave no answer within ${timeoutSeconds} s`);
    try {
      const latest = await withTimeout(provider.getBlockNumber(), timeoutMs, late);
      if (latest <= this.#lastBlock) return this.#pollOk();
      if (this.#cache.size > 0) {
        if (latest - this.#lastBlock > MAX_LOG_RANGE_BLOCKS) {
          this.#invalidateAll();
        } else {
          const logs = await withTimeout(
            provider.getLogs({ address: fleet, topics: [[MEMBER_ADDED_TOPIC, MEMBER_REMOVED_TOPIC]], fromBlock: this.#lastBlock + 1, toBlock: latest }),
            timeoutMs,
            late,
          );
          for (const log of logs) this.#onLog(log);
        }
      }
      this.#lastBlock = latest;
      this.#pollOk();
    } catch (error) {
      if (this.#closed || this.#pollFailing) return;
      this.#pollFailing = true;
      const why = toFleetError(error, { action: 'polling membership events', rpc, fleet }).message;
      this.#config.log(`fleet: cannot poll events (${why}); answers expire within ${this.#config.ttlSeconds} s`);
    }
  }

  #pollOk(): void {
    if (!this.#pollFailing) return;
    this.#pollFailing = false;
    this.#config.log(`fleet: polling events on ${this.#config.rpc} again`);
  }
}
