import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { MuxError, MuxSession, MuxStream, WindowBudget } from '../mux/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { abort, gateEnd, splice } from '../util/pump.ts';
import type { Duplex } from 'node:stream';
import { exchangeHelloAccepting, type PeerProof } from '../protocol/handshake.ts';
import { readFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import { parseReleaseGet, parseReleaseQuery } from '../protocol/release-messages.ts';
import { parseConnect, parseForward, parsePublish, parsePing, parseQuery, parseTokensRequest, errorReply, type Reply, type TokensAnswer } from '../protocol/messages.ts';
import { DATA_KIND_AGENT, DATA_KIND_RELAY, startsLikeData, type DataKind } from '../data/wire.ts';
import { DataConns } from './data-conns.ts';
import { Ahead } from './ahead.ts';
import {
  HANDSHAKE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  KEEPALIVE_TIMEOUT_MS,
  TCP_KEEPALIVE_MS,
  MAX_CONTROL_BYTES,
  MAX_STREAM_HEADER_BYTES,
  STREAM_HEADER_TIMEOUT_MS,
  FRAME_BODY_TIMEOUT_MS,
  DATA_TOKEN_TTL_MS,
} from '../protocol/limits.ts';
import { Registry, type AgentSession, type PublisherChange, type SessionSet } from './registry.ts';
import { checkSuperseded } from './superseded.ts';
import { routeToDevice, routeLocal, moveWaitingStreams, RouteError, type Caller, type Routed } from './router.ts';
import { LocalDirectory, type Directory } from './directory.ts';
import { describeDevice, pingDevice } from './query.ts';
import type { RelayCert } from './cert.ts';
import { RelayStats } from './stats.ts';
import { DEFAULT_RELAY_LIMITS, validateRelayLimits, type RelayLimits } from './config.ts';
import { Admission, RefusalLog, sourceKey } from './admission.ts';
import { CallerShares } from './fair-share.ts';
import { IdleSweeper } from './idle.ts';
import { ByteMeter } from '../ops/stream-stats.ts';
import { TokenBucket } from '../util/token-bucket.ts';
import { ControlChannels } from './control-channels.ts';
import { MemoryNameTable, type NameTable } from './names.ts';
import { answerClaim, answerLookup, type NameService } from './name-requests.ts';
import { ClaimRate } from './claim-rate.ts';
import type { ReleaseShelf } from './releases.ts';
import { HoldBudget, SpliceHold, StreamHold, bufferedIn, type Holder, type HoldLevel } from './hold.ts';

/** Which flag names each hold cap, for the refusal line. */
const HOLD_FLAG: Readonly<Record<HoldLevel, string>> = Object.freeze({ session: '--session-buffer-budget', source: '--source-buffer-budget', total: '--stream-buffer-budget' });

/** Lines a second naming a session closed for a dead path or an unread control stream (a few rows of devices losing one shared path at once each get theirs). */
const SESSION_CLOSED_LINES = 20;

/**
 * Publish sets one session may send: PUBLISH_BURST at once, then
 * PUBLISH_PER_SECOND. An agent sends one per session (and one more per
 * change of its ports); each applied set may change who gets an address's
 * streams, which in a cluster costs Redis calls and an announcement to
 * every relay. A set over the rate is answered `unavailable` and not applied.
 */
const PUBLISH_BURST = 4;
const PUBLISH_PER_SECOND = 1;
/** Standby sessions named in the line about an address published by several (the rest are counted). */
const STANDBY_LISTED = 3;

/** ms a connection whose hello was refused stays open so the one-line reason reaches the peer. */
const REFUSAL_LINGER_MS = 1_000;

export interface RelayServerOptions {
  identity: Identity;
  cert: RelayCert;
  log: Logger;
  registry?: SessionSet;
  /** Caps per source, session and caller; DEFAULT_RELAY_LIMITS for what is not given. */
  limits?: Partial<RelayLimits>;
  /** Where devices are: default LocalDirectory over the registry (a relay on its own); a cluster's ClusterDirectory. */
  directory?: Directory;
  /** Where names are: default MemoryNameTable over the registry; a cluster's names in Redis. */
  names?: NameTable;
  stats?: RelayStats;
  /** Releases this relay serves its agents (--releases DIR). */
  releases?: ReleaseShelf;
}

/**
 * The relay core. It is handed accepted TCP sockets and never listens
 * itself (the CLI owns flags and listening): TLS 1.3, hello, then a mux
 * session whose streams are either the agent's control stream (publish set)
 * or data streams to route. Where a device is comes from the directory
 * alone; peers that prove the role `relay` (cluster members the directory
 * admits) send `forward` streams for this relay's own devices.
 */
export class RelayServer {
  readonly registry: SessionSet;
  readonly directory: Directory;
  readonly names: NameTable;
  readonly stats: RelayStats;
  /** Wire bytes of authenticated sessions (rx: from agents, tx: to them). */
  readonly traffic = new ByteMeter();
  #streamsOpen = 0;
  readonly identity: Identity;
  readonly #log: Logger;
  readonly #context: SecureContext;
  readonly #pending = new Set<Socket>();
  readonly limits: Readonly<RelayLimits>;
  readonly refusals: RefusalLog;
  readonly #admission: Admission;
  /** Streams per caller toward each device (pending and open), for the gateway too. */
  readonly shares: CallerShares;
  /** Relayed streams with no byte either way for --stream-idle-timeout are reset. */
  readonly #idle: IdleSweeper;
  /** Receive window all agent sessions' streams may hold beyond 256 KiB each (--stream-buffer-budget). */
  readonly windowBudget: WindowBudget;
  /** Bytes streams make the relay hold, per session, per source and in total (--session/--source/--stream-buffer-budget). */
  readonly holds: HoldBudget;
  /** Streams each session opened (connect or control), for --max-streams-per-session. */
  readonly #streamsOf = new WeakMap<AgentSession, number>();
  /** What each session holds (HoldBudget). */
  readonly #holderOf = new WeakMap<AgentSession, Holder>();
  /** Each session's one control stream (the only stream whose first frame may be a publish set). */
  readonly #controlOf = new WeakMap<AgentSession, MuxStream>();
  /** Relay-to-relay sessions other relays opened to this one. */
  readonly #peers = new Set<MuxSession>();
  /** Agents' control streams: the cluster's relays and a retirement go out on them. */
  readonly controls: ControlChannels;
  readonly #unwatchRelays: () => void;
  readonly #nameService: NameService;
  readonly #releases: ReleaseShelf | undefined;
  /** Data connections: tokens, each session's waiting pool, their caps. */
  readonly data: DataConns;

  constructor(options: RelayServerOptions) {
    this.identity = options.identity;
    this.registry = options.registry ?? new Registry();
    this.stats = options.stats ?? new RelayStats();
    this.directory = options.directory ?? new LocalDirectory(this.registry);
    this.#log = options.log;
    this.registry.onPublisherChange((change) => this.#onPublisherChange(change));
    this.limits = Object.freeze(validateRelayLimits({ ...DEFAULT_RELAY_LIMITS, ...options.limits }));
    this.refusals = new RefusalLog(this.#log);
    this.#admission = new Admission(this.limits, this.stats, this.refusals);
    this.shares = new CallerShares(this.limits, this.stats, this.refusals);
    this.windowBudget = new WindowBudget(this.limits.streamBufferBudget, () => {
      this.stats.count('window_growth_denied');
      this.refusals.refused('window_budget', `stream window not grown: relayed streams hold ${this.windowBudget.used} bytes of window beyond 256 KiB each (--stream-buffer-budget ${this.limits.streamBufferBudget / 1048576} MiB)`);
    });
    const { streamBufferBudget: total, sourceBufferBudget, sessionBufferBudget } = this.limits;
    const source = Math.min(sourceBufferBudget, total);
    this.holds = new HoldBudget({ total, source, session: Math.min(sessionBufferBudget, source) }, (level, holder) => {
      this.stats.count(`refused_hold_${level}`);
      const held = level === 'session' ? holder.used : level === 'source' ? this.holds.usedBy(holder.source) : this.holds.used;
      const cap = this.holds.limits[level];
      this.refusals.refused(`hold_${level}`, `stream of ${holder.who} from ${holder.source} reset: ${level === 'total' ? 'all streams' : `its ${level}`} hold ${held} bytes the far side has not taken (${HOLD_FLAG[level]} ${cap / 1048576} MiB)`);
    });
    this.#idle = new IdleSweeper(this.limits.streamIdleTimeoutMs, (a, b, ms) => {
      this.stats.count('stream_idle_timeout');
      this.refusals.refused('stream_idle', `relayed stream reset after ${Math.round(ms / 1000)} s with no byte either way (--stream-idle-timeout)`);
      abort(a);
      abort(b);
    });
    this.names = options.names ?? new MemoryNameTable({ sessions: this.registry, holdMs: this.limits.nameHoldMs });
    this.#nameService = { names: this.names, limits: this.limits, stats: this.stats, refusals: this.refusals, log: this.#log, rate: new ClaimRate(this.limits.nameClaimsPerIp) };
    this.#context = createSecureContext({ key: options.cert.key, cert: options.cert.cert, minVersion: 'TLSv1.3' });
    this.controls = new ControlChannels(this.stats, this.#log);
    this.#releases = options.releases;
    this.#unwatchRelays = this.directory.watchRelays((relays) => this.controls.setRelays(relays));
    this.data = new DataConns({ limits: this.limits, stats: this.stats, refusals: this.refusals, log: this.#log, traffic: this.traffic, holderOf: (session) => this.#holderOf.get(session) });
  }

  get address(): string {
    return this.identity.address;
  }

  /** Agent streams spliced to a device right now. */
  get streamsOpen(): number {
    return this.#streamsOpen;
  }

  /**
   * Takes over an accepted TCP connection: a relay link (TLS, whose first
   * byte is a handshake record's 0x16) or a data connection (the data
   * magic, docs/PROTOCOL.md "Data connections"), told apart by the first
   * byte. Both count as handshakes until authenticated (the link's hello,
   * the data connection's token), under one deadline.
   */
  handleSocket(raw: Socket): void {
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    const source = sourceKey(raw.remoteAddress);
    if (!this.#admission.admitHandshake(source)) {
      raw.on('error', () => {});
      raw.resetAndDestroy();
      return;
    }
    const accepted = performance.now();
    this.#pending.add(raw);
    raw.setNoDelay(true);
    raw.setKeepAlive(true, TCP_KEEPALIVE_MS);
    // TLS not completed (not TLS, a protocol or cipher it may not use, closed before it finished):
    // counted once as handshake_tls, logged at debug only (port scanners make most of them).
    // Settled: the handshake's outcome is counted (secure, failed, data, or the deadline's timeout).
    let settled = false;
    const tlsFailed = (why: string) => {
      if (settled) return;
      settled = true;
      this.stats.count('handshake_tls');
      this.#log.debug(`connection ${remote}: ${why}`);
    };
    // One deadline for TCP → TLS → hello (or the data connection's opening): a peer that stalls
    // anywhere before it is authenticated is dropped.
    const deadline = setTimeout(() => {
      settled = true;
      this.stats.count('handshake_timeout');
      this.refusals.refused('handshake_timeout', `${remote}: no TLS handshake and hello within ${HANDSHAKE_TIMEOUT_MS} ms`);
      raw.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    let released = false;
    const cleanup = () => {
      clearTimeout(deadline);
      this.#pending.delete(raw);
      if (!released) this.#admission.releaseHandshake(source);
      released = true;
    };
    raw.once('close', cleanup);
    raw.once('close', () => tlsFailed('closed before the TLS handshake finished'));
    raw.on('error', () => {}); // reported by the TLS socket or the data connection's reader
    const sniff = () => {
      const first = raw.read() as Buffer | null;
      if (first === null) return;
      raw.off('readable', sniff);
      raw.unshift(first);
      if (!startsLikeData(first)) return this.#startTls(raw, { remote, source, accepted, tlsFailed, cleanup, settle: () => (settled = true) });
      settled = true;
      this.data.accept(raw, {
        source,
        remote,
        settled: () => {
          cleanup();
          raw.off('close', cleanup);
        },
      });
    };
    raw.on('readable', sniff);
  }

  /** A relay link: TLS 1.3, then the hello (an agent's session, or a relay of the cluster). */
  #startTls(raw: Socket, c: { remote: string; source: string; accepted: number; tlsFailed: (why: string) => void; cleanup: () => void; settle: () => void }): void {
    const { remote, source, accepted, tlsFailed, cleanup } = c;
    const tls = new TLSSocket(raw, { isServer: true, secureContext: this.#context });
    let secured = false;
    tls.on('error', (err) => {
      if (secured) this.#log.debug(`connection ${remote}: ${errorMessage(err)}`);
      else tlsFailed(`TLS handshake failed: ${errorMessage(err)}`);
      tls.destroy();
    });
    tls.once('secure', () => {
      secured = true;
      c.settle();
      // A relay-to-relay link is refused inside the hello exchange, so the peer reads why.
      const admitPeer = ({ address, role }: PeerProof) => {
        const refusal = role === 'relay' ? this.directory.refusesRelay(address) : undefined;
        if (refusal) this.stats.count('peer_rejected');
        return refusal;
      };
      exchangeHelloAccepting(tls, this.identity, 'relay', ['agent', 'relay'], HANDSHAKE_TIMEOUT_MS, admitPeer).then(
        ({ address, role }) => {
          cleanup();
          raw.off('close', cleanup);
          if (role === 'relay') this.#admitPeer(tls, address, remote, source);
          else {
            this.stats.observe('admission', (performance.now() - accepted) / 1000);
            this.traffic.add(raw);
            this.#admit(tls, address, remote, source);
          }
        },
        (err) => {
          this.stats.count('hello_rejected');
          this.refusals.refused('hello_rejected', `${remote}: hello rejected: ${errorMessage(err)}`);
          // A refused hello was answered with its reason and an end (the FIN leaves at once): the
          // socket is destroyed REFUSAL_LINGER_MS later, so that the line reaches the peer.
          if (tls.writableEnded) setTimeout(() => tls.destroy(), REFUSAL_LINGER_MS).unref();
          else tls.destroy();
        },
      );
    });
  }

  #admit(tls: TLSSocket, address: string, remote: string, source: string): void {
    if (tls.destroyed) return;
    if (!this.#admission.admitSession(source, address)) {
      tls.destroy();
      return;
    }
    tls.once('close', () => this.#admission.releaseSession(source));
    const mux = new MuxSession(tls, { role: 'server', windowBudget: this.windowBudget, maxWindow: this.limits.maxStreamWindow, keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
    const session: AgentSession = { address, mux, ports: new Map(), remote, source, connectedAt: Date.now() };
    this.#holderOf.set(session, this.holds.holder(source, address));
    // Every authenticated session is kept: one that publishes nothing displaces nothing (see SessionSet).
    this.registry.add(session);
    this.stats.count('session_opened');
    this.#log.debug(`${address} connected from ${remote} (${this.registry.sessionsOf(address).length} session(s) of this address)`);
    mux.on('stream', (stream: MuxStream) => this.#onStream(session, stream));
    mux.once('close', (err?: Error) => {
      if (err instanceof MuxError && (err.code === 'ECONTROLSTALL' || err.code === 'ETIMEDOUT')) {
        // A peer that floods us without reading, or a path that died: worth a line and a counter.
        this.stats.count(err.code === 'ECONTROLSTALL' ? 'session_control_stall' : 'session_timeout');
        // Which device lost its path is what an operator looks for: up to SESSION_CLOSED_LINES a second, each its own line.
        this.refusals.line('info', 'session_closed', `closed the session of ${address} from ${remote}: ${errorMessage(err)}`, 'sessions closed', Date.now(), SESSION_CLOSED_LINES);
      }
      // Its data connections go with it, paired or not: a tunnel lives no longer than its sessions.
      this.data.sessionClosed(session);
      if (this.registry.remove(session)) this.#log.debug(`${address} disconnected${err ? `: ${errorMessage(err)}` : ''}`);
    });
  }

  /**
   * A relay of the cluster linked to us: its streams are `forward`s for our
   * own devices, and `tokens` for its relay data connections (kind 02, §9),
   * which belong to this link as an agent's belong to its session.
   */
  #admitPeer(tls: TLSSocket, address: string, remote: string, source: string): void {
    const mux = new MuxSession(tls, { role: 'server', maxWindow: this.limits.maxStreamWindow, keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
    this.#peers.add(mux);
    this.stats.count('peer_session_opened');
    this.#log.info(`relay ${address} linked from ${remote}`);
    // That relay charges its callers; here only the relay-wide total applies to what its streams hold.
    const holder = this.holds.holder(`relay ${address}`, `relay ${address}`, { sessionCap: this.holds.limits.total, sourced: false });
    // The link as the owner of its data connections (tokens, pool, caps): never in the registry, never a device.
    const link: AgentSession = { address, mux, ports: new Map(), remote, source, connectedAt: Date.now() };
    this.#holderOf.set(link, holder);
    mux.on('stream', (stream: MuxStream) => {
      stream.on('error', () => {});
      const hold = new StreamHold(holder);
      hold.attach(stream);
      readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS)
        .then((first) => (first.t === 'tokens' ? this.#onTokens(link, stream, first, DATA_KIND_RELAY) : this.#onForward(link, stream, first, hold)))
        .catch((err) => {
          this.stats.count('bad_stream');
          this.#log.info(`stream from relay ${address} closed: ${errorMessage(err)}`);
          refuse(stream, errorReply('bad-request', errorMessage(err)));
        });
    });
    mux.once('close', (err?: Error) => {
      this.#peers.delete(mux);
      // Its data connections go with it, paired or not, as an agent's go with its session.
      this.data.sessionClosed(link);
      this.#log.info(`relay ${address} unlinked${err ? `: ${errorMessage(err)}` : ''}`);
    });
  }

  #onStream(session: AgentSession, stream: MuxStream): void {
    stream.on('error', () => {});
    const open = this.#streamsOf.get(session) ?? 0;
    if (open >= this.limits.maxStreamsPerSession) {
      this.stats.count('refused_streams_per_session');
      this.refusals.refused('streams_per_session', `stream from ${session.address}: already ${open} streams open in this session (--max-streams-per-session)`);
      stream.reset();
      return;
    }
    this.#streamsOf.set(session, open + 1);
    stream.once('close', () => this.#streamsOf.set(session, (this.#streamsOf.get(session) ?? 1) - 1));
    // Every byte it holds counts against the session, its source and the total, from the first.
    const hold = new StreamHold(this.#holderOf.get(session)!);
    hold.attach(stream);
    // One control stream per session: the first stream whose first frame is a publish set claims it (and with
    // it the MAX_CONTROL_BYTES allowance) until it closes; on every other stream a frame stays within 4 KiB.
    const claim = () => {
      const control = this.#controlOf.get(session);
      if (control !== undefined && control !== stream) return false;
      if (control === undefined) {
        this.#controlOf.set(session, stream);
        stream.once('close', () => this.#controlOf.get(session) === stream && this.#controlOf.delete(session));
      }
      return true;
    };
    // The frame's kind picks its limit, not the stream's order: a publish set may be up to MAX_CONTROL_BYTES.
    readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS, { large: { kind: 'publish', maxBytes: MAX_CONTROL_BYTES, claim } }).then(
      (first) => {
        if (first.t === 'publish') {
          if (!claim()) {
            this.stats.count('refused_control_streams');
            throw new Error('this session already has its control stream: send publish sets on it');
          }
          this.#onControl(session, stream, first, hold);
        } else if (first.t === 'connect') this.#onConnect(session, stream, first, hold);
        else if (first.t === 'query') this.#onQuery(session, stream, first);
        else if (first.t === 'ping') this.#onPing(session, stream, first);
        else if (first.t === 'tokens') this.#onTokens(session, stream, first);
        else if (first.t === 'claim') return answerClaim(this.#nameService, session, stream, first);
        else if (first.t === 'lookup') return answerLookup(this.#nameService, stream, first);
        else if (first.t === 'releases') this.#onReleases(stream, first);
        else if (first.t === 'release-get') this.#onReleaseGet(session, stream, first);
        else throw new Error(`unexpected first message "${String(first.t)}"`);
      },
    ).catch((err) => {
      this.stats.count('bad_stream');
      this.refusals.refused('bad_stream', `stream from ${session.address}: ${errorMessage(err)}`);
      refuse(stream, errorReply('bad-request', errorMessage(err)));
    });
  }

  #onControl(session: AgentSession, stream: MuxStream, first: Record<string, unknown>, hold: StreamHold): void {
    const rate = new TokenBucket(PUBLISH_PER_SECOND, PUBLISH_BURST);
    const apply = (message: Record<string, unknown>) => {
      // The frame is consumed: what the stream holds now is what is buffered behind it (and queued toward the agent).
      hold.settle(bufferedIn(stream), 'none');
      if (this.controls.onMessage(session, message)) return;
      const publish = parsePublish(message);
      if (!rate.take()) {
        this.stats.count('refused_publish_rate');
        const why = `publish set of ${session.address} not applied: more than ${PUBLISH_BURST} at once or ${PUBLISH_PER_SECOND} a second from one session`;
        this.refusals.refused('publish_rate', why);
        reply(stream, errorReply('unavailable', why));
        return;
      }
      this.registry.publish(session, publish.ports);
      reply(stream, { t: 'ok', address: session.address });
      // A client's control stream publishes nothing: not worth an info line per proxy.
      const line = `${session.address} published ${publish.ports.map((p) => `${p.port}/${p.mode}`).join(', ') || 'nothing'}`;
      if (publish.ports.length > 0) this.refusals.line('info', 'publish', line, 'publish sets');
      else this.#log.debug(line);
    };
    apply(first);
    this.controls.attach(session, stream);
    readFrames(stream, MAX_CONTROL_BYTES, FRAME_BODY_TIMEOUT_MS, apply).catch((err) => {
      // The control stream ends with the session; an explicit close withdraws the publish set.
      this.registry.publish(session, []);
      if (session.mux.closed) return;
      this.refusals.line('info', 'control_ended', `control stream of ${session.address} ended: ${errorMessage(err)}`, 'control streams ended');
      // Closed with it: a frame cut off (too large, malformed, past its deadline) is not waited for again.
      refuse(stream, errorReply('bad-request', `control stream closed: ${errorMessage(err)}`));
    });
  }

  #onConnect(session: AgentSession, stream: MuxStream, first: Record<string, unknown>, hold: StreamHold): void {
    const connect = parseConnect(first);
    const caller: Caller = { kind: 'agent', address: session.address, source: session.source, hold };
    const started = performance.now();
    let client: Duplex = stream;
    if (connect.data !== undefined) {
      // The stream's bytes travel on one of this session's data connections; this stream carries the answer.
      const socket = this.data.claim(session, connect.data);
      if (!socket) {
        this.stats.count('route_data-closed');
        refuse(stream, errorReply('data-closed', `data connection ${connect.data.slice(0, 8)}… is not held for this session (closed, or never accepted); dial again`));
        return;
      }
      client = socket;
      this.#holdStreamSlot(session, socket);
    }
    const route = routeToDevice({ directory: this.directory, relayAddress: this.address, caller, to: connect.to, port: connect.port, e2e: connect.e2e === true, shares: this.shares, ahead: new Ahead(client, client === stream ? undefined : (bytes) => hold.received(bytes)), data: this.data });
    this.#answer({ answer: stream, client, route, who: session.address, target: `${connect.to}:${connect.port}`, counter: 'stream_routed', started, hold, e2e: connect.e2e === true, session });
  }

  /** A stream of `session` on a data connection counts against --max-streams-per-session until it closes, as one on the link. */
  #holdStreamSlot(session: AgentSession, socket: Duplex): void {
    this.#streamsOf.set(session, (this.#streamsOf.get(session) ?? 0) + 1);
    socket.once('close', () => this.#streamsOf.set(session, (this.#streamsOf.get(session) ?? 1) - 1));
  }

  /** Tokens for data connections (docs/PROTOCOL.md §10), then the stream ends. */
  #onTokens(session: AgentSession, stream: MuxStream, first: Record<string, unknown>, kind: DataKind = DATA_KIND_AGENT): void {
    const request = parseTokensRequest(first);
    const tokens = this.data.issue(session, request.n, kind, request.grows === true);
    if (typeof tokens === 'string') reply(stream, errorReply('unavailable', `no data connections: ${tokens}`));
    else if (stream.writable) writeFrame(stream, { t: 'tokens', tokens, ttl: DATA_TOKEN_TTL_MS, max: this.limits.maxDataPerSession } satisfies TokensAnswer);
    finish(stream);
  }

  /**
   * A stream another relay forwards for a caller it authenticated: only to a
   * device this relay holds (one hop at most). With `data` its bytes travel
   * on one of that link's relay data connections (§9), and this stream
   * carries only the answer.
   */
  #onForward(link: AgentSession, stream: MuxStream, first: Record<string, unknown>, hold: StreamHold): void {
    const peer = link.address;
    const forward = parseForward(first);
    let client: Duplex = stream;
    if (forward.data !== undefined) {
      const socket = this.data.claim(link, forward.data);
      if (!socket) {
        this.stats.count('route_data-closed');
        refuse(stream, errorReply('data-closed', `relay data connection ${forward.data.slice(0, 8)}… is not held for this link (closed, or never accepted); forward again`));
        return;
      }
      client = socket;
      this.stats.count('forward_data_claimed');
    }
    const caller: Caller = forward.gateway
      ? { kind: 'gateway', remote: `gateway of relay ${peer}`, via: peer, hold }
      : { kind: 'agent', address: forward.from, via: peer, hold };
    const offline = () => new RouteError('offline', `device ${forward.to} is not connected to relay ${this.address}`);
    const ahead = new Ahead(client, client === stream ? undefined : (bytes) => hold.received(bytes));
    let route: Promise<Routed>;
    if (!this.registry.publisher(forward.to)) {
      this.directory.notHeld(forward.to);
      route = Promise.reject(offline());
    } else {
      // Held here, unless a newer session of the device is on another relay (the directory knows).
      route = this.directory.locate(forward.to).then((where) => {
        if (where?.kind !== 'local') throw offline();
        const e2e = forward.e2e === true;
        return routeLocal(where.session, { directory: this.directory, relayAddress: this.address, caller, to: forward.to, port: forward.port, e2e, shares: this.shares, ahead, data: this.data });
      });
    }
    this.#answer({ answer: stream, client, route, who: `${forward.from} via relay ${peer}`, target: `${forward.to}:${forward.port}`, counter: 'forward_routed', started: performance.now(), hold, e2e: forward.e2e === true, session: client === stream ? undefined : link });
  }

  /**
   * Passes the route's answer back on the caller's stream, then splices the
   * caller's leg (that stream, or its data connection) with the device's.
   * From then on the relay only copies bytes between the two.
   */
  #answer(a: { answer: MuxStream; client: Duplex; route: Promise<Routed>; who: string; target: string; counter: string; started: number; hold: StreamHold; e2e: boolean; session?: AgentSession }): void {
    const { answer, client, hold } = a;
    a.route.then(
      ({ stream: device, e2e, leg, confirm, forwarded }) => {
        this.stats.count(a.counter);
        if (a.e2e) this.stats.count(`stream_legs_${client === answer ? 'link' : 'data'}_${leg}`);
        // Toward another relay of the cluster: on a relay-to-relay data connection (spliced) or a link stream.
        if (a.e2e && forwarded) this.stats.count(`forward_legs_${leg}`);
        this.stats.observe('stream_setup', (performance.now() - a.started) / 1000);
        reply(answer, e2e ? { t: 'ok', e2e } : { t: 'ok' });
        // A data connection's FIN is passed on only while its session answers a ping: an agent killed
        // with -9 ends its TCP connections with a FIN, which must reach the other end as a reset.
        if (client !== answer && a.session) gateEnd(client, () => a.session!.mux.ping());
        if (confirm) gateEnd(device, confirm);
        // The answer was all the caller's stream was for when its bytes are on its data connection.
        if (client !== answer) finish(answer);
        // The headers are consumed: the pair holds what its mux legs buffer. Two mux legs give back what
        // they send on; one beside a data connection gives back what the splice reads off it. Where a leg
        // is a data connection the splice itself charges what it holds (each chunk until the other leg
        // took it) to the same holder: stalled data connections meet the same caps (docs/PROTOCOL.md §10).
        const muxLegs = [client, device].filter((s): s is MuxStream => s instanceof MuxStream);
        hold.settle(bufferedIn(...muxLegs), muxLegs.length === 2 ? 'sent' : 'granted');
        const meter = muxLegs.length === 2 ? undefined : new SpliceHold(hold.holder);
        this.#streamsOpen++;
        splice(
          client,
          device,
          () => {
            this.#streamsOpen--;
            meter?.close();
          },
          meter,
        );
        this.#idle.watch(client, device);
      },
      (err) => {
        const code = err instanceof RouteError ? err.reply : 'unavailable';
        this.stats.count(`route_${code}`);
        this.refusals.refused(`route_${code}`, `${a.who} → ${a.target}: ${errorMessage(err)}`);
        refuse(answer, errorReply(code, errorMessage(err)));
        if (client !== answer) abort(client);
      },
    );
  }

  /** `diode query`: answered from the session set, never reaching the device. */
  #onQuery(session: AgentSession, stream: MuxStream, first: Record<string, unknown>): void {
    const query = parseQuery(first);
    this.stats.count('query');
    describeDevice(this.registry, this.directory, session.address, query.address).then(
      (info) => {
        if (stream.writable) writeFrame(stream, info);
        finish(stream);
      },
      (err) => {
        reply(stream, errorReply('unavailable', errorMessage(err)));
        finish(stream);
      },
    );
  }

  /** `diode query --ping`: one round trip to the device and back. */
  #onPing(session: AgentSession, stream: MuxStream, first: Record<string, unknown>): void {
    const ping = parsePing(first, 'relay');
    this.stats.count('ping');
    pingDevice({ registry: this.registry, relayAddress: this.address, caller: { kind: 'agent', address: session.address, source: session.source }, to: ping.to!, shares: this.shares }).then(
      () => {
        reply(stream, { t: 'ok' });
        finish(stream);
      },
      (err) => {
        const code = err instanceof RouteError ? err.reply : 'unavailable';
        reply(stream, errorReply(code, errorMessage(err)));
        finish(stream);
      },
    );
  }

  /** An agent asks which releases this relay serves for its architecture (none without --releases). */
  #onReleases(stream: MuxStream, first: Record<string, unknown>): void {
    if (this.#releases) return this.#releases.answerQuery(stream, first);
    parseReleaseQuery(first);
    if (stream.writable) writeFrame(stream, { t: 'releases', releases: [] });
    finish(stream);
  }

  #onReleaseGet(session: AgentSession, stream: MuxStream, first: Record<string, unknown>): void {
    if (this.#releases) return this.#releases.serve(session, stream, first);
    parseReleaseGet(first);
    reply(stream, errorReply('unavailable', 'this relay serves no releases'));
    finish(stream);
  }

  /** One line per change of who gets an address's streams; a warning when several sessions publish it. */
  #onPublisherChange({ address, active, previous, standby }: PublisherChange): void {
    if (active && standby.length > 0 && standby.includes(previous!)) {
      this.stats.count('publisher_duplicate');
      const listed = standby.slice(0, STANDBY_LISTED).map((s) => s.remote).join(', ');
      const more = standby.length > STANDBY_LISTED ? ` and ${standby.length - STANDBY_LISTED} more` : '';
      this.refusals.line(
        'warn',
        'publisher_duplicate',
        `${address} is published by ${standby.length + 1} sessions: streams go to the newest, from ${active.remote}; ` +
          `standby: ${listed}${more} (an agent restarted before its old connection died, or a cloned key)`,
        'changes of publisher',
      );
      // The device moved (a new address, a restart): its old session is most likely dead. Streams still
      // waiting for its answer go to the new one; the old one is asked, briefly, whether it still lives.
      const old = previous!;
      moveWaitingStreams(old);
      checkSuperseded(old, (why) => {
        this.stats.count('publisher_superseded_dead');
        this.#log.info(`closed the session of ${address} from ${old.remote}: ${why}`);
        old.mux.close(new DiodeError('ESUPERSEDED', why));
      });
    } else if (active && previous && !this.registry.sessionsOf(address).includes(previous)) {
      this.stats.count('publisher_takeover');
      this.refusals.line('info', 'publisher_takeover', `${address}: the session from ${previous.remote} is gone; standby session from ${active.remote} takes over its streams`, 'takeovers');
    }
  }

  /** Closes every session and pending handshake. */
  close(): void {
    this.#unwatchRelays();
    this.#releases?.close();
    this.#idle.close();
    this.data.close();
    for (const raw of this.#pending) raw.destroy();
    for (const session of [...this.registry.all()]) session.mux.close();
    for (const peer of [...this.#peers]) peer.close();
  }
}

function reply(stream: MuxStream, message: Reply): void {
  if (!stream.destroyed && stream.writable) writeFrame(stream, message);
}

/**
 * Answers a stream the relay will not carry and closes it: the peer reads
 * the answer, and anything it sends after its header is dropped as it
 * arrives instead of waiting in the stream (closed after our FIN, a stream
 * lingers until the peer's FIN, reading nothing).
 */
function refuse(stream: MuxStream, message: Reply): void {
  reply(stream, message);
  stream.end(() => stream.destroy());
}

/**
 * A stream whose one answer was sent: our FIN, and whatever the peer still
 * sends is read to its FIN, so the stream closes (and stops counting
 * against its session) once both ends are done.
 */
function finish(stream: MuxStream): void {
  stream.end();
  stream.resume();
}
