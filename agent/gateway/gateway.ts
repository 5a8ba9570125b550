import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createHttpServer, type Server as HttpServer, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Logger } from '../util/log.ts';
import type { HostPort } from '../util/hostport.ts';
import { handleSocksConnection, SocksRefusal } from '../socks/server.ts';
import { Rep } from '../socks/protocol.ts';
import type { GatewayConfig } from './config.ts';
import { listenOn } from '../util/listen.ts';
import { ConnectionLimiter, sourceKey, type Refusal } from './limiter.ts';
import { GatewayHttpRouter, REINJECTED } from './http.ts';
import { gatewayConnector, type GatewayRelay } from './route.ts';

/** Connections over the caps that may wait for their refusal at once; past it they are dropped unanswered. */
export const MAX_REFUSING_CONNS = 64;
/** ms a connection over the caps has to send its request and read the refusal. */
export const REFUSAL_GRACE_MS = 3_000;
/** ms between Node's checks of the HTTP head deadline (it checks lazily, default every 30 s). */
const HEADER_CHECK_INTERVAL_MS = 1_000;

export type GatewayListener = 'socks' | 'http' | 'https';

export interface RunningGateway {
  /** Bound addresses (ephemeral ports resolved) of the listeners that run. */
  listening: Partial<Record<GatewayListener, HostPort>>;
  close(): Promise<void>;
}

/**
 * The relay's public gateway: listeners for SOCKS and HTTP(S), one shared
 * connection limiter, and the routing through the relay's registry (public
 * ports only). Admission happens on the TCP connection, before any parsing:
 * over a cap, the client still gets a clear refusal in its own protocol
 * (SOCKS general failure, HTTP 429 / 503), within a short grace period.
 */
export async function startGateway(relay: GatewayRelay, config: GatewayConfig, log: Logger): Promise<RunningGateway> {
  const limits = config.limits;
  const limiter = new ConnectionLimiter(limits.maxConns, limits.maxConnsPerIp);
  const sockets = new Set<Socket>();
  const servers: NetServer[] = [];
  const listening: RunningGateway['listening'] = {};
  let refusing = 0;

  /** Admits a new TCP connection or marks it refused; false when it was dropped outright. */
  const admit = (socket: Socket, listener: GatewayListener): Refusal | undefined | 'dropped' => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const source = sourceKey(socket.remoteAddress);
    const refusal = limiter.admit(source);
    if (!refusal) {
      socket.once('close', () => limiter.release(source));
      return undefined;
    }
    relay.stats.count(`gateway_refused_${refusal === 'total' ? 'total' : refusal === 'per-ip' ? 'per_ip' : 'per_prefix'}`);
    log.info(`${listener} ${source}: refused, ${refusal === 'total' ? `gateway full (${limits.maxConns} connections)` : limiter.describe(refusal, source, 'connections')}`);
    if (refusing >= MAX_REFUSING_CONNS) {
      relay.stats.count('gateway_refused_dropped');
      socket.destroy();
      return 'dropped';
    }
    refusing++;
    const grace = setTimeout(() => socket.destroy(), REFUSAL_GRACE_MS);
    socket.once('close', () => {
      refusing--;
      clearTimeout(grace);
    });
    return refusal;
  };

  const listen = async (server: NetServer, name: GatewayListener, at: HostPort) => {
    const port = await listenOn(server, at, `--gateway-${name}`);
    servers.push(server);
    listening[name] = { host: at.host, port };
  };

  try {
    if (config.socks) {
      const connector = gatewayConnector(relay, config.domain);
      const server = createNetServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
        const refusal = admit(socket, 'socks');
        if (refusal === 'dropped') return;
        socket.setTimeout(limits.idleTimeoutMs, () => {
          relay.stats.count('gateway_idle_timeout');
          log.info(`socks ${socket.remoteAddress}: closed after ${limits.idleTimeoutMs / 1000} s idle`);
          socket.destroy();
        });
        const onRefused = (reason: string) => {
          relay.stats.count(/larger than/.test(reason) ? 'gateway_socks_header_too_large' : 'gateway_socks_refused');
        };
        if (refusal) {
          const why = refusal === 'total' ? 'gateway full' : `too many connections from ${socket.remoteAddress}${refusal === 'per-ip' ? '' : `'s ${refusal === 'per-56' ? '/56' : '/48'}`}`;
          handleSocksConnection(socket, {
            connector: async () => {
              throw new SocksRefusal(Rep.generalFailure, why);
            },
            log,
            onRefused,
            handshakeTimeoutMs: REFUSAL_GRACE_MS,
          });
        } else {
          handleSocksConnection(socket, { connector, log, onRefused, handshakeTimeoutMs: limits.headerTimeoutMs });
        }
      });
      await listen(server, 'socks', config.socks);
    }

    const httpOptions: ServerOptions = {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headerTimeoutMs,
      // Bodies may be large and slow; the idle timeout bounds a stalled one instead.
      requestTimeout: 0,
      keepAliveTimeout: limits.keepAliveMs,
      connectionsCheckingInterval: HEADER_CHECK_INTERVAL_MS,
      noDelay: true,
    };
    const serveHttp = async (server: HttpServer, name: 'http' | 'https', at: HostPort) => {
      // Refusal verdicts by connection, for the router (an https request's socket is the TLS wrapper, same peer).
      const verdicts = new Map<string, Refusal>();
      const key = (s: Socket) => `${s.remoteAddress}|${s.remotePort}`;
      server.timeout = limits.idleTimeoutMs;
      // Runs before the server's own listener: admission precedes any parsing (and any TLS handshake).
      server.prependListener('connection', (socket: Socket) => {
        if (REINJECTED.has(socket)) return; // handed back after a declined upgrade: admitted already
        const refusal = admit(socket, name);
        if (refusal === undefined || refusal === 'dropped') return;
        const k = key(socket);
        verdicts.set(k, refusal);
        socket.once('close', () => verdicts.delete(k));
      });
      new GatewayHttpRouter({ relay, domain: config.domain, limits, log, refusalOf: (s) => verdicts.get(key(s)) }).attach(server, name);
      await listen(server, name, at);
    };
    if (config.http) await serveHttp(createHttpServer(httpOptions), 'http', config.http);
    if (config.https && config.tls) {
      const server = createHttpsServer({ ...httpOptions, key: config.tls.key, cert: config.tls.cert, handshakeTimeout: limits.headerTimeoutMs });
      server.on('tlsClientError', (err, socket) => {
        relay.stats.count('gateway_https_tls_error');
        log.debug(`https ${socket.remoteAddress}: TLS: ${err.message}`);
      });
      await serveHttp(server, 'https', config.https);
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }

  return {
    listening,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    },
  };
}
