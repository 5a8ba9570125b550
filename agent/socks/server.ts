import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.ts';
import type { HostPort } from '../util/hostport.ts';
import { errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import { listenOn } from '../util/listen.ts';
import {
  CMD_CONNECT,
  MAX_SOCKS_HANDSHAKE_BYTES,
  METHOD_NO_AUTH,
  METHOD_NONE_ACCEPTABLE,
  Rep,
  SOCKS4,
  SOCKS5,
  parseSocks4Request,
  parseSocks5Greeting,
  parseSocks5Request,
  socks4Reply,
  socks5MethodReply,
  socks5Reply,
  type Parse,
  type RepCode,
  type SocksRequest,
} from './protocol.ts';

/** ms a client has to complete its SOCKS handshake. */
export const SOCKS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** A refusal with the SOCKS5 reply code it maps to. */
export class SocksRefusal extends Error {
  readonly rep: RepCode;
  /** A short word for counters (a dial reply code such as "offline"), when the connector knows one. */
  readonly reason: string | undefined;
  constructor(rep: RepCode, message: string, reason?: string) {
    super(message);
    this.name = 'SocksRefusal';
    this.rep = rep;
    this.reason = reason;
  }
}

/** Opens the tunnel for a parsed CONNECT; throws SocksRefusal to answer with a specific code. */
export type SocksConnector = (request: SocksRequest, remote: string) => Promise<Duplex>;

export interface SocksServerOptions {
  connector: SocksConnector;
  log: Logger;
  handshakeTimeoutMs?: number;
  /** Called when a connection is refused or fails, with a short reason (for counters). */
  onRefused?: (reason: string) => void;
  /** Called with the client's socket when its tunnel opened (for stream and byte counters). */
  onOpen?: (socket: Socket) => void;
}

/**
 * Serves one SOCKS client: greeting (SOCKS5 no-auth, or SOCKS4/4a), one
 * CONNECT, then the pump. Every stage is bounded in bytes and in time; a
 * malformed request gets the proper error reply where the protocol has one.
 */
export function handleSocksConnection(socket: Socket, options: SocksServerOptions): void {
  const remote = `${socket.remoteAddress}:${socket.remotePort}`;
  const log = options.log;
  let buffer: Buffer = Buffer.alloc(0);
  let stage: 'greeting' | 'request' = 'greeting';
  let version = 0;
  const timeoutMs = options.handshakeTimeoutMs ?? SOCKS_HANDSHAKE_TIMEOUT_MS;
  const timer = setTimeout(() => drop(`no complete SOCKS request within ${timeoutMs} ms`), timeoutMs);
  socket.setNoDelay(true);
  socket.on('error', () => {});
  socket.once('close', () => clearTimeout(timer));

  const drop = (reason: string, reply?: Buffer) => {
    clearTimeout(timer);
    socket.off('data', onData);
    options.onRefused?.(reason);
    log.info(`socks ${remote}: ${reason}`);
    if (reply && socket.writable) socket.end(reply);
    else socket.destroy();
    setTimeout(() => socket.destroy(), 1000).unref();
  };

  const take = <T>(result: Parse<T>, failReply?: (rep?: RepCode) => Buffer): T | undefined => {
    if (result.kind === 'more') {
      if (buffer.length > MAX_SOCKS_HANDSHAKE_BYTES) drop(`handshake larger than ${MAX_SOCKS_HANDSHAKE_BYTES} bytes`);
      return undefined;
    }
    if (result.kind === 'bad') {
      drop(`malformed request: ${result.reason}`, failReply?.(result.rep));
      return undefined;
    }
    buffer = buffer.subarray(result.used);
    return result.value;
  };

  const onData = (chunk: Buffer) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
    if (stage === 'greeting') {
      version = buffer[0];
      if (version === SOCKS4) {
        const request = take(parseSocks4Request(buffer), () => socks4Reply(false));
        if (request) start(request);
        return;
      }
      if (version !== SOCKS5) return drop(`not a SOCKS4/5 client (first byte ${version})`);
      const greeting = take(parseSocks5Greeting(buffer));
      if (!greeting) return;
      if (!greeting.methods.includes(METHOD_NO_AUTH)) return drop('client offers no "no authentication" method', socks5MethodReply(METHOD_NONE_ACCEPTABLE));
      // A client that pipelined its whole request behind the greeting (the bench does; nc -X 5 waits)
      // has no use for the method reply before the answer: both leave in one write (one wake-up of
      // the client less). A request still incomplete gets the method reply at once, as before.
      if (buffer.length > 0 && parseSocks5Request(buffer).kind !== 'more') socket.cork();
      socket.write(socks5MethodReply(METHOD_NO_AUTH));
      stage = 'request';
      if (buffer.length === 0) return;
    }
    const request = take(parseSocks5Request(buffer), (rep) => socks5Reply(rep ?? Rep.generalFailure));
    if (request) start(request);
  };

  const refuse = (request: SocksRequest, rep: RepCode, reason: string) =>
    drop(`CONNECT ${request.host}:${request.port} refused: ${reason}`, request.version === 5 ? socks5Reply(rep) : socks4Reply(false));

  const start = (request: SocksRequest) => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    if (buffer.length > 0) socket.unshift(buffer);
    if (request.command !== CMD_CONNECT) return refuse(request, Rep.commandNotSupported, `command ${request.command} is not supported (CONNECT only)`);
    options.connector(request, remote).then(
      (tunnel) => {
        if (socket.destroyed) {
          tunnel.destroy();
          return;
        }
        socket.write(request.version === 5 ? socks5Reply(Rep.succeeded) : socks4Reply(true));
        if (socket.writableCorked > 0) socket.uncork();
        log.debug(`socks ${remote}: CONNECT ${request.host}:${request.port} open`);
        options.onOpen?.(socket);
        splice(socket, tunnel);
      },
      (err) => refuse(request, err instanceof SocksRefusal ? err.rep : Rep.generalFailure, errorMessage(err)),
    );
  };

  socket.on('data', onData);
}

export interface RunningSocksServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Listens on host:port (0 = any free port) and serves SOCKS on every connection. */
export async function startSocksServer(listen: HostPort, options: SocksServerOptions): Promise<RunningSocksServer> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    handleSocksConnection(socket, options);
  });
  const port = await listenOn(server, listen);
  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
