import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { MuxError, MuxSession, type MuxStream } from '../mux/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import { exchangeHello } from '../protocol/handshake.ts';
import { readFrame, readFrames, writeFrame } from '../protocol/frames.ts';
import { parseConnect, parsePublish, errorReply, type Reply } from '../protocol/messages.ts';
import {
  HANDSHAKE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  KEEPALIVE_TIMEOUT_MS,
  TCP_KEEPALIVE_MS,
  MAX_CONTROL_BYTES,
  MAX_STREAM_HEADER_BYTES,
  STREAM_HEADER_TIMEOUT_MS,
} from '../protocol/limits.ts';
import { Registry, type AgentSession, type PublisherChange, type SessionSet } from './registry.ts';
import { routeToDevice, RouteError } from './router.ts';
import type { RelayCert } from './cert.ts';
import { RelayStats } from './stats.ts';
import { DEFAULT_RELAY_LIMITS, validateRelayLimits, type RelayLimits } from './config.ts';
import { Admission, RefusalLog, sourceKey } from './admission.ts';
import { CallerShares } from './fair-share.ts';

/** ms a connection whose hello was refused stays open so the one-line reason reaches the peer. */
const REFUSAL_LINGER_MS = 1_000;

export interface RelayServerOptions {
  identity: Identity;
  cert: RelayCert;
  log: Logger;
  registry?: SessionSet;
  /** Caps per source, session and caller; DEFAULT_RELAY_LIMITS for what is not given. */
  limits?: Partial<RelayLimits>;
}

/**
 * The relay core. It is handed accepted TCP sockets and never listens
 * itself (the CLI owns flags and listening): TLS 1.3, hello, then a mux
 * session whose streams are either the agent's control stream (publish set)
 * or data streams to route.
 */
export class RelayServer {
  readonly registry: SessionSet;
  readonly stats = new RelayStats();
  readonly identity: Identity;
  readonly #log: Logger;
  readonly #context: SecureContext;
  readonly #pending = new Set<Socket>();
  readonly limits: Readonly<RelayLimits>;
  readonly refusals: RefusalLog;
  readonly #admission: Admission;
  /** Streams per caller toward each device (pending and open), for the gateway too. */
  readonly shares: CallerShares;
  /** Streams each session opened (connect or control), for --max-streams-per-session. */
  readonly #streamsOf = new WeakMap<AgentSession, number>();

  constructor(options: RelayServerOptions) {
    this.identity = options.identity;
    this.registry = options.registry ?? new Registry();
    this.#log = options.log;
    this.registry.onPublisherChange((change) => this.#onPublisherChange(change));
    this.limits = Object.freeze(validateRelayLimits({ ...DEFAULT_RELAY_LIMITS, ...options.limits }));
    this.refusals = new RefusalLog(this.#log);
    this.#admission = new Admission(this.limits, this.stats, this.refusals);
    this.shares = new CallerShares(this.limits, this.stats, this.refusals);
    this.#context = createSecureContext({ key: options.cert.key, cert: options.cert.cert, minVersion: 'TLSv1.3' });
  }

  get address(): string {
    return this.identity.address;
  }

  /** Takes over an accepted TCP connection. */
  handleSocket(raw: Socket): void {
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    const source = sourceKey(raw.remoteAddress);
    if (!this.#admission.admitHandshake(source)) {
      raw.on('error', () => {});
      raw.resetAndDestroy();
      return;
    }
    this.#pending.add(raw);
    raw.setNoDelay(true);
    raw.setKeepAlive(true, TCP_KEEPALIVE_MS);
    // One deadline for TCP → TLS → hello: a peer that stalls anywhere before it is authenticated is dropped.
    const deadline = setTimeout(() => {
      this.stats.count('handshake_timeout');
      this.#log.info(`dropped ${remote}: no TLS handshake and hello within ${HANDSHAKE_TIMEOUT_MS} ms`);
      raw.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    const tls = new TLSSocket(raw, { isServer: true, secureContext: this.#context });
    let released = false;
    const cleanup = () => {
      clearTimeout(deadline);
      this.#pending.delete(raw);
      if (!released) this.#admission.releaseHandshake(source);
      released = true;
    };
    raw.once('close', cleanup);
    tls.on('error', (err) => {
      this.#log.debug(`connection ${remote}: ${errorMessage(err)}`);
      tls.destroy();
    });
    tls.once('secure', () => {
      exchangeHello(tls, this.identity, 'relay', HANDSHAKE_TIMEOUT_MS).then(
        (address) => {
          cleanup();
          raw.off('close', cleanup);
          this.#admit(tls, address, remote, source);
        },
        (err) => {
          this.stats.count('hello_rejected');
          this.#log.info(`rejected ${remote}: ${errorMessage(err)}`);
          // A refused hello was answered with its reason and an end: give that a moment to reach the peer.
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
    const mux = new MuxSession(tls, { role: 'server', keepAliveInterval: KEEPALIVE_INTERVAL_MS, keepAliveTimeout: KEEPALIVE_TIMEOUT_MS });
    const session: AgentSession = { address, mux, ports: new Map(), remote, source, connectedAt: Date.now() };
    // Every authenticated session is kept: one that publishes nothing displaces nothing (see SessionSet).
    this.registry.add(session);
    this.stats.count('session_opened');
    this.#log.debug(`${address} connected from ${remote} (${this.registry.sessionsOf(address).length} session(s) of this address)`);
    mux.on('stream', (stream: MuxStream) => this.#onStream(session, stream));
    mux.once('close', (err?: Error) => {
      if (err instanceof MuxError && (err.code === 'ECONTROLSTALL' || err.code === 'ETIMEDOUT')) {
        // A peer that floods us without reading, or a path that died: worth a line and a counter.
        this.stats.count(err.code === 'ECONTROLSTALL' ? 'session_control_stall' : 'session_timeout');
        this.#log.info(`closed the session of ${address} from ${remote}: ${errorMessage(err)}`);
      }
      if (this.registry.remove(session)) this.#log.debug(`${address} disconnected${err ? `: ${errorMessage(err)}` : ''}`);
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
    readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS).then(
      (first) => {
        if (first.t === 'publish') this.#onControl(session, stream, first);
        else if (first.t === 'connect') this.#onConnect(session, stream, first);
        else throw new Error(`unexpected first message "${String(first.t)}"`);
      },
    ).catch((err) => {
      this.stats.count('bad_stream');
      this.#log.info(`stream from ${session.address} closed: ${errorMessage(err)}`);
      reply(stream, errorReply('bad-request', errorMessage(err)));
      stream.end();
    });
  }

  #onControl(session: AgentSession, stream: MuxStream, first: Record<string, unknown>): void {
    const apply = (message: Record<string, unknown>) => {
      const publish = parsePublish(message);
      this.registry.publish(session, publish.ports);
      reply(stream, { t: 'ok', address: session.address });
      this.#log.info(`${session.address} published ${publish.ports.map((p) => `${p.port}/${p.mode}`).join(', ') || 'nothing'}`);
    };
    apply(first);
    readFrames(stream, MAX_CONTROL_BYTES, apply).catch((err) => {
      // The control stream ends with the session; an explicit close withdraws the publish set.
      this.registry.publish(session, []);
      if (!session.mux.closed) this.#log.info(`control stream of ${session.address} ended: ${errorMessage(err)}`);
    });
  }

  #onConnect(session: AgentSession, client: MuxStream, first: Record<string, unknown>): void {
    const connect = parseConnect(first);
    const caller = { kind: 'agent' as const, address: session.address, source: session.source };
    routeToDevice(this.registry, this.address, caller, connect.to, connect.port, connect.e2e === true, this.shares).then(
      ({ stream: device, e2e }) => {
        this.stats.count('stream_routed');
        reply(client, e2e ? { t: 'ok', e2e } : { t: 'ok' });
        splice(client, device);
      },
      (err) => {
        const code = err instanceof RouteError ? err.reply : 'unavailable';
        this.stats.count(`route_${code}`);
        this.#log.info(`${session.address} → ${connect.to}:${connect.port}: ${errorMessage(err)}`);
        reply(client, errorReply(code, errorMessage(err)));
        client.end();
      },
    );
  }

  /** One line per change of who gets an address's streams; a warning when several sessions publish it. */
  #onPublisherChange({ address, active, previous, standby }: PublisherChange): void {
    if (active && standby.length > 0 && standby.includes(previous!)) {
      this.stats.count('publisher_duplicate');
      this.#log.warn(
        `${address} is published by ${standby.length + 1} sessions: streams go to the newest, from ${active.remote}; ` +
          `standby: ${standby.map((s) => s.remote).join(', ')} (an agent restarted before its old connection died, or a cloned key)`,
      );
    } else if (active && previous && !this.registry.sessionsOf(address).includes(previous)) {
      this.stats.count('publisher_takeover');
      this.#log.info(`${address}: the session from ${previous.remote} is gone; standby session from ${active.remote} takes over its streams`);
    }
  }

  /** Closes every session and pending handshake. */
  close(): void {
    for (const raw of this.#pending) raw.destroy();
    for (const session of [...this.registry.all()]) session.mux.close();
  }
}

function reply(stream: MuxStream, message: Reply): void {
  if (!stream.destroyed && stream.writable) writeFrame(stream, message);
}
