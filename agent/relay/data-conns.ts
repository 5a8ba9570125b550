import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../util/log.ts';
import { abort } from '../util/pump.ts';
import { Waiters } from '../data/wait.ts';
import { DATA_IDLE_MAX_MS, DATA_PAIRING_TIMEOUT_MS, DATA_TOKEN_TTL_MS, MAX_EARLY_BYTES } from '../protocol/limits.ts';
import { DATA_ACCEPTED, DATA_HEADER_BYTES, DATA_KIND_AGENT, DataRefusal, encodeRefusal, newToken, parseOpening, refusalName, type DataKind, type DataRefusalCode } from '../data/wire.ts';
import type { ByteMeter } from '../ops/stream-stats.ts';
import type { AgentSession } from './registry.ts';
import type { RelayLimits } from './config.ts';
import type { RelayStats } from './stats.ts';
import type { RefusalLog } from './admission.ts';
import type { Holder } from './hold.ts';

/** ms a refused data connection stays open after its FIN so the reason reaches the agent. */
const REFUSAL_LINGER_MS = 1_000;
/**
 * ms a device's data connection taken for a stream counts as one the device
 * will replace (it asks for a token as soon as its `incoming` arrives), so
 * that a device leg finding none idle waits for that replacement
 * (nextIdle). Well beyond a round trip; a device that does not replace it
 * costs the legs that waited at most their own bound.
 */
const REPLACEMENT_EXPECTED_MS = 2_000;

/**
 * One data connection the relay holds for a session:
 * - `idle`: in the session's pool, for a device leg when the session's device is called;
 * - `early`: bytes arrived on it (a client's ClientHello that overtook the `connect`
 *   naming it); no longer offered as a device leg, it waits for that `connect`.
 *   The relay reads those bytes itself (at most MAX_EARLY_BYTES, charged to the
 *   session's hold) and puts them back for the splice when the `connect` claims it;
 * - `claimed`: given to a stream; the splice owns it from here.
 */
interface Member {
  token: string;
  socket: Socket;
  session: AgentSession;
  source: string;
  state: 'idle' | 'early' | 'claimed';
  timer: NodeJS.Timeout | undefined;
  /** Bytes read off an early member before its `connect` (charged to `holder`). */
  early: Buffer[];
  earlyBytes: number;
  /** The session's hold (HoldBudget), which early bytes are charged to. */
  holder: Holder | undefined;
  /** Watches the waiting connection (removed when it is claimed). */
  onReadable: () => void;
  onEnd: () => void;
}

interface SessionData {
  /** Tokens issued to the session and not presented yet. */
  tokens: Set<string>;
  /** Idle and early members by token. */
  waiting: Map<string, Member>;
  /** Idle members, oldest first (a device leg takes the newest: the least likely to be stale). */
  idle: Member[];
  /** Every data connection of the session in any state: reset when the session ends. */
  all: Set<Socket>;
  /** When each idle connection taken as a device leg stops counting as one whose replacement is coming (oldest first; see REPLACEMENT_EXPECTED_MS). */
  owed: number[];
  /** The session's pool grows when a stream of its comes on its link (its `tokens` requests say `grows`). */
  grows: boolean;
  /** Device legs waiting (bounded) for a connection whose token is out or about to be asked for (nextIdle), first come first served. */
  waiters: Waiters<DeviceLeg>;
  closed: boolean;
}

/** A device's data connection taken for a stream's device leg, with the token `incoming.data` names. */
export interface DeviceLeg {
  socket: Socket;
  token: string;
}

/** What handleSocket hands over with a connection whose first byte says it is a data connection. */
export interface DataOpening {
  /** IPv4 address or IPv6 /64 of the connection. */
  source: string;
  remote: string;
  /** The opening was read (accepted or refused): the connection no longer counts as a handshake. */
  settled(): void;
}

/**
 * The relay's data connections (docs/PROTOCOL.md, "Data connections"): the
 * tokens it issues on sessions' relay links, the connections that present
 * them, each session's pool of waiting connections, and the caps on all of
 * it. Pairing itself is the router's: it claims the client's connection by
 * the token its `connect` names and takes one of the device's for the other
 * leg; the relay then only copies bytes between the two sockets.
 */
export class DataConns {
  readonly #limits: RelayLimits;
  readonly #stats: RelayStats;
  readonly #refusals: RefusalLog;
  readonly #log: Logger;
  readonly #traffic: ByteMeter | undefined;
  /** Tokens not presented yet: the session they were issued to, and the kind of opening that may present them. */
  readonly #tokens = new Map<string, { session: AgentSession; kind: DataKind; timer: NodeJS.Timeout }>();
  readonly #sessions = new WeakMap<AgentSession, SessionData>();
  /** Waiting (idle or early) members per source. */
  readonly #perSource = new Map<string, number>();
  #waiting = 0;
  readonly #live = new Set<SessionData>();

  readonly #holderOf: (session: AgentSession) => Holder | undefined;

  constructor(options: { limits: RelayLimits; stats: RelayStats; refusals: RefusalLog; log: Logger; traffic?: ByteMeter; holderOf?: (session: AgentSession) => Holder | undefined }) {
    this.#holderOf = options.holderOf ?? (() => undefined);
    this.#limits = options.limits;
    this.#stats = options.stats;
    this.#refusals = options.refusals;
    this.#log = options.log;
    this.#traffic = options.traffic;
  }

  /** Data connections waiting in pools (idle or early), relay-wide. */
  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Bytes the relay holds in user space for data connections right now:
   * what waits to be written to each and what was read from each but not
   * passed on yet (the pump bounds both, see docs/OPERATING.md).
   */
  buffered(): number {
    let bytes = 0;
    for (const d of this.#live) for (const s of d.all) bytes += s.writableLength + s.readableLength;
    return bytes;
  }

  /**
   * Issues up to `n` tokens to `session`, or says why none. `kind`: the
   * opening that may present them: an agent's (its relay link session), or
   * DATA_KIND_RELAY for a relay of the cluster (its relay-to-relay link
   * session, standing in as `session`); a token is refused with the other.
   */
  issue(session: AgentSession, n: number, kind: DataKind = DATA_KIND_AGENT, grows = false): string[] | string {
    const max = this.#limits.maxDataPerSession;
    if (max === 0) return 'this relay takes no data connections (--max-data-per-session 0): streams stay on the relay link';
    const d = this.#of(session);
    if (d.closed) return 'the session is closing';
    if (grows) d.grows = true;
    const room = max - d.tokens.size - d.waiting.size;
    if (room <= 0) {
      this.#stats.count('refused_data_per_session');
      const why = `${session.address} from ${session.remote} already holds ${d.tokens.size} tokens and ${d.waiting.size} waiting data connections (--max-data-per-session ${max})`;
      this.#refusals.refused('data_per_session', `tokens for ${why}`);
      return why;
    }
    const tokens: string[] = [];
    // Replacements asked for: they count as tokens out from here.
    d.owed.splice(0, Math.min(n, room));
    for (let i = 0; i < Math.min(n, room); i++) {
      const token = newToken();
      const timer = setTimeout(() => this.#expire(token), DATA_TOKEN_TTL_MS).unref();
      this.#tokens.set(token, { session, kind, timer });
      d.tokens.add(token);
      tokens.push(token);
    }
    this.#stats.count('data_tokens_issued', tokens.length);
    return tokens;
  }

  /** Takes over a connection whose first byte is the data magic: reads its opening, then accepts or refuses it. */
  accept(raw: Socket, opening: DataOpening): void {
    raw.on('error', () => {});
    let buffered: Buffer = Buffer.alloc(0);
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = raw.read() as Buffer | null) !== null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        if (buffered.length < DATA_HEADER_BYTES) continue;
        raw.off('readable', onReadable);
        const rest = buffered.subarray(DATA_HEADER_BYTES);
        if (rest.length > 0) raw.unshift(rest);
        opening.settled();
        this.#opened(raw, buffered.subarray(0, DATA_HEADER_BYTES), opening);
        return;
      }
    };
    raw.on('readable', onReadable);
    onReadable();
  }

  /**
   * The client leg of a `connect` naming `token`: a waiting data connection
   * of this very session (undefined: unknown, of another session, or gone).
   */
  claim(session: AgentSession, token: string): Socket | undefined {
    const member = this.#sessions.get(session)?.waiting.get(token);
    if (!member || !usable(member.socket)) return undefined;
    this.#take(member);
    // What arrived early goes back in front of the socket's buffer: the splice passes it on first.
    if (member.early.length > 0) member.socket.unshift(Buffer.concat(member.early));
    this.#dropEarly(member);
    return member.socket;
  }

  /** A device leg: the newest idle data connection of the device's session, if it has one. */
  takeIdle(session: AgentSession): DeviceLeg | undefined {
    const d = this.#sessions.get(session);
    if (!d) return undefined;
    for (let member = d.idle.pop(); member; member = d.idle.pop()) {
      if (!usable(member.socket)) continue;
      this.#take(member);
      d.owed.push(performance.now() + REPLACEMENT_EXPECTED_MS);
      return { socket: member.socket, token: member.token };
    }
    return undefined;
  }

  /**
   * An end-to-end stream's device leg went on the device's link (none of its
   * connections ready or on their way): a device whose pool grows asks for
   * one more connection when that stream arrives, which the next leg may
   * wait for (as for a replacement).
   */
  missed(session: AgentSession): void {
    const d = this.#sessions.get(session);
    if (d?.grows && !d.closed) d.owed.push(performance.now() + REPLACEMENT_EXPECTED_MS);
  }

  /** Connections on their way to the session's pool: tokens out, and taken ones the device is about to replace. */
  #coming(d: SessionData): number {
    const now = performance.now();
    while (d.owed.length > 0 && d.owed[0] <= now) d.owed.shift();
    return d.tokens.size + d.owed.length;
  }

  /**
   * A device leg when none is idle: the next data connection the session
   * opens, if one is on its way (a token out, or a replacement the device is
   * about to ask for) that no earlier leg waits for, within `ms`; else (or
   * then) undefined, and the leg goes on the device's link.
   */
  nextIdle(session: AgentSession, ms: number): Promise<DeviceLeg | undefined> {
    const d = this.#sessions.get(session);
    if (!d || d.closed || this.#coming(d) <= d.waiters.length) return Promise.resolve(undefined);
    return d.waiters.wait(ms, () => this.#stats.count('data_device_wait_timeout'));
  }

  /** Legs waiting beyond the connections still on their way get none (their streams go on the link); all of them once the session ends. */
  #settleWaiters(d: SessionData): void {
    d.waiters.settle(d.closed ? 0 : this.#coming(d));
  }

  /** A device answered that it no longer holds the data connection paired for it (its leg goes to the next). */
  stale(): void {
    this.#stats.count('data_device_stale');
  }

  /** The session ended: its tokens lapse and every data connection it holds, paired or not, is reset. */
  sessionClosed(session: AgentSession): void {
    const d = this.#sessions.get(session);
    if (!d) return;
    d.closed = true;
    this.#live.delete(d);
    for (const token of d.tokens) this.#expire(token);
    this.#settleWaiters(d);
    for (const socket of [...d.all]) abort(socket);
  }

  close(): void {
    for (const d of [...this.#live]) {
      d.closed = true;
      for (const socket of [...d.all]) abort(socket);
    }
    this.#live.clear();
    for (const { timer } of this.#tokens.values()) clearTimeout(timer);
    this.#tokens.clear();
  }

  #of(session: AgentSession): SessionData {
    let d = this.#sessions.get(session);
    if (!d) {
      d = { tokens: new Set(), waiting: new Map(), idle: [], all: new Set(), owed: [], grows: false, waiters: new Waiters<DeviceLeg>(), closed: session.mux.closed };
      this.#sessions.set(session, d);
      if (!d.closed) this.#live.add(d);
    }
    return d;
  }

  /** The token is out no more (lapsed, used, or its session ended); `settle`: legs that waited for it get none (not when its connection just came). */
  #expire(token: string, settle = true): void {
    const entry = this.#tokens.get(token);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.#tokens.delete(token);
    const d = this.#sessions.get(entry.session);
    d?.tokens.delete(token);
    if (d && settle) this.#settleWaiters(d);
  }

  #opened(raw: Socket, header: Buffer, opening: DataOpening): void {
    const parsed = parseOpening(header);
    if ('refusal' in parsed) return this.#refuse(raw, parsed.refusal, `${opening.remote}: ${parsed.reason}`, parsed.reason);
    const entry = this.#tokens.get(parsed.token);
    const d = entry && this.#sessions.get(entry.session);
    // A relay's token in an agent's opening (or the other way round) is no token of that kind.
    if (!entry || !d || d.closed || entry.kind !== parsed.kind) {
      return this.#refuse(raw, DataRefusal.token, `${opening.remote}: a data connection with an unknown, used or expired token`, 'unknown, used or expired token');
    }
    const { session } = entry;
    if (opening.source !== session.source) {
      // The token stays valid: whoever saw it cannot burn it for its owner from elsewhere.
      const why = `token of ${session.address}'s session from ${session.source} presented from ${opening.source}`;
      return this.#refuse(raw, DataRefusal.source, `${opening.remote}: ${why}`, why);
    }
    if ((this.#perSource.get(opening.source) ?? 0) >= this.#limits.maxDataPerIp) {
      const why = `already ${this.#limits.maxDataPerIp} waiting data connections from ${opening.source} (--max-data-per-ip)`;
      return this.#refuse(raw, DataRefusal.limit, why, why, 'data_per_ip');
    }
    if (this.#waiting >= this.#limits.maxDataConns) {
      const why = `already ${this.#limits.maxDataConns} waiting data connections in total (--max-data-conns)`;
      return this.#refuse(raw, DataRefusal.limit, why, why, 'data_total');
    }
    this.#expire(parsed.token, false);
    raw.allowHalfOpen = true;
    raw.write(Buffer.from([DATA_ACCEPTED]));
    const member: Member = {
      token: parsed.token,
      socket: raw,
      session,
      source: opening.source,
      state: 'idle',
      timer: undefined,
      early: [],
      earlyBytes: 0,
      holder: this.#holderOf(session),
      onReadable: () => this.#onWaitingReadable(member),
      // The agent closed it: forgotten (the close handler takes it out of the pool).
      onEnd: () => raw.destroy(),
    };
    d.waiting.set(member.token, member);
    d.idle.push(member);
    d.all.add(raw);
    this.#perSource.set(member.source, (this.#perSource.get(member.source) ?? 0) + 1);
    this.#waiting++;
    this.#traffic?.add(raw);
    this.#stats.count('data_accepted');
    raw.once('close', () => {
      d.all.delete(raw);
      if (member.state === 'claimed') return;
      this.#dropEarly(member);
      this.#unwait(member);
    });
    member.timer = setTimeout(() => {
      this.#stats.count('data_idle_timeout');
      this.#log.debug(`data connection of ${session.address} from ${opening.remote} closed after ${DATA_IDLE_MAX_MS / 1000} s idle`);
      raw.destroy();
    }, DATA_IDLE_MAX_MS).unref();
    raw.on('readable', member.onReadable);
    raw.once('end', member.onEnd);
    // A device leg waits for it (its token was counted as on its way): taken at once.
    if (d.waiters.hand({ socket: raw, token: member.token })) {
      this.#take(member);
      this.#stats.count('data_device_waited');
    }
  }

  /**
   * A waiting member's socket is readable: its end (the agent closed it) or
   * bytes ahead of the `connect` naming it. Those are read off (so that
   * nothing piles up unseen in the socket's buffer), kept for the splice and
   * charged to the session's hold; more than MAX_EARLY_BYTES (an honest
   * client sends one ClientHello and then waits for the device's answer), or
   * more than the hold allows, and the connection is reset.
   */
  #onWaitingReadable(member: Member): void {
    if (member.state === 'claimed') return;
    if (member.socket.readableLength === 0) {
      member.socket.read(); // lets a pending end be seen
      return;
    }
    if (member.state === 'idle') {
      member.state = 'early';
      const d = this.#sessions.get(member.session)!;
      const at = d.idle.indexOf(member);
      if (at >= 0) d.idle.splice(at, 1);
      clearTimeout(member.timer);
      member.timer = setTimeout(() => {
        this.#stats.count('data_pairing_timeout');
        this.#refusals.refused('data_pairing_timeout', `data connection of ${member.session.address}: bytes arrived but no connect named it within ${DATA_PAIRING_TIMEOUT_MS} ms`);
        this.#dropEarly(member);
        abort(member.socket);
      }, DATA_PAIRING_TIMEOUT_MS).unref();
    }
    let chunk: Buffer | null;
    while ((chunk = member.socket.read() as Buffer | null) !== null) {
      const bytes = member.earlyBytes + chunk.length;
      if (bytes > MAX_EARLY_BYTES) {
        this.#stats.count('refused_data_early_bytes');
        this.#refusals.refused('data_early_bytes', `data connection of ${member.session.address} from ${member.source} reset: ${bytes} bytes arrived before a connect named it (at most ${MAX_EARLY_BYTES})`);
        return this.#resetEarly(member);
      }
      // A refusal is counted and logged by the budget (refused_hold_*).
      if (member.holder && member.holder.take(chunk.length) !== undefined) return this.#resetEarly(member);
      member.earlyBytes = bytes;
      member.early.push(chunk);
    }
  }

  /** An early member over a cap: its bytes dropped, the connection reset. */
  #resetEarly(member: Member): void {
    this.#dropEarly(member);
    abort(member.socket);
  }

  /** Early bytes kept no more (passed on, or dropped with the connection): their charge is given back. */
  #dropEarly(member: Member): void {
    member.holder?.give(member.earlyBytes);
    member.early = [];
    member.earlyBytes = 0;
  }

  #take(member: Member): void {
    this.#unwait(member);
    member.state = 'claimed';
    member.socket.off('readable', member.onReadable);
    member.socket.off('end', member.onEnd);
  }

  /** The member no longer waits in its session's pool (claimed, closed, timed out). */
  #unwait(member: Member): void {
    clearTimeout(member.timer);
    member.timer = undefined;
    const d = this.#sessions.get(member.session);
    if (!d || d.waiting.get(member.token) !== member) return;
    d.waiting.delete(member.token);
    const at = d.idle.indexOf(member);
    if (at >= 0) d.idle.splice(at, 1);
    const n = (this.#perSource.get(member.source) ?? 1) - 1;
    if (n === 0) this.#perSource.delete(member.source);
    else this.#perSource.set(member.source, n);
    this.#waiting--;
  }

  #refuse(raw: Socket, code: DataRefusalCode, logLine: string, reason: string, kind = `data_${refusalName(code)}`): void {
    this.#stats.count(`refused_${kind}`);
    this.#refusals.refused(kind, `data connection ${logLine}`);
    raw.on('error', () => {});
    raw.end(encodeRefusal(code, reason));
    setTimeout(() => raw.destroy(), REFUSAL_LINGER_MS).unref();
  }
}

/** A socket that can still carry a stream. */
function usable(socket: Socket): boolean {
  return !socket.destroyed && socket.readyState === 'open';
}
