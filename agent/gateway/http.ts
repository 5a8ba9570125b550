import { request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { RouteError } from '../relay/router.ts';
import type { Logger } from '../util/log.ts';
import type { DiodeHost } from '../names/host.ts';
import { NameError } from '../names/name.ts';
import { errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import type { GatewayLimits } from './config.ts';
import type { Refusal } from './limiter.ts';
import { PREFIX_48_FACTOR, PREFIX_56_FACTOR } from '../util/sources.ts';
import { sendErrorPage, writeRawErrorPage } from './pages.ts';
import { GATEWAY_ANSWER, UNKNOWN_NAME_ANSWER, dialPublic, gatewayTarget, type GatewayRelay } from './route.ts';

/** Port a bare `<address>.<domain>` host reaches. */
export const DEFAULT_HTTP_PORT = 80;

/**
 * Requests one connection may have waiting behind the one being served.
 * Node parses and emits every pipelined request at once; the gateway serves
 * them one at a time, in order (one device stream at a time), and refuses a
 * connection that pipelines more than this with 429 and a close.
 */
export const MAX_PIPELINED_REQUESTS = 8;

/**
 * Sockets handed back to the HTTP server after an Upgrade the device did not
 * accept (the connection goes on as ordinary HTTP); the gateway's admission
 * has already counted them.
 */
export const REINJECTED = new WeakSet<Socket>();

/** Per connection: whether a request is being served, and the ones waiting behind it. */
interface Pipeline {
  busy: boolean;
  waiting: Array<() => void>;
  refused: boolean;
}

/** Hop-by-hop request headers (RFC 9110 §7.6.1); the rest is forwarded as sent, but for CLIENT_ADDRESS_HEADERS. */
const REQUEST_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'expect']);
/**
 * Headers that tell a web server who the client is and how it came: the
 * gateway sets them itself (X-Forwarded-For appended to, X-Forwarded-Proto,
 * X-Forwarded-Host, X-Real-IP, Forwarded) and drops whatever a client sent
 * under these names, also spelled with underscores (X_Real_IP: CGI, PHP and
 * nginx with underscores_in_headers read it as X-Real-IP).
 */
const CLIENT_ADDRESS_HEADERS = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-server', 'x-real-ip', 'forwarded', 'x-client-ip', 'true-client-ip', 'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip']);
/** Hop-by-hop response headers; Node frames the body for the client itself (length or chunked). */
const RESPONSE_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

export interface HttpRouterOptions {
  relay: GatewayRelay;
  domain: string | undefined;
  limits: GatewayLimits;
  log: Logger;
  /** Set when the connection came in over the connection caps: every request on it gets 429/503. */
  refusalOf(socket: Socket): Refusal | undefined;
}

type Proto = 'http' | 'https';

/** Names listed in a Connection header are hop-by-hop too. */
function connectionTokens(req: IncomingMessage): Set<string> {
  const value = req.headers.connection;
  return new Set((value ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

function clientIp(socket: Socket): string {
  return (socket.remoteAddress ?? 'unknown').replace(/^::ffff:(?=\d+\.)/, '');
}

/**
 * The request's raw headers for the device: hop-by-hop ones removed, the
 * client-address headers the gateway's own (X-Forwarded-For keeps what the
 * client sent under exactly that name before the address the gateway saw).
 */
function forwardedHeaders(req: IncomingMessage, proto: Proto, keepHopByHop: boolean): string[] {
  const drop = keepHopByHop ? new Set<string>() : new Set([...REQUEST_DROP, ...connectionTokens(req)]);
  const out: string[] = [];
  let forwardedFor: string | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name === 'x-forwarded-for') forwardedFor = forwardedFor ? `${forwardedFor}, ${raw[i + 1]}` : raw[i + 1];
    else if (!drop.has(name) && !CLIENT_ADDRESS_HEADERS.has(name.replace(/_/g, '-'))) out.push(raw[i], raw[i + 1]);
  }
  const ip = clientIp(req.socket);
  out.push('X-Forwarded-For', forwardedFor ? `${forwardedFor}, ${ip}` : ip);
  out.push('X-Forwarded-Proto', proto);
  out.push('X-Real-IP', ip);
  const host = req.headers.host;
  if (host) out.push('X-Forwarded-Host', host);
  out.push('Forwarded', `for=${forwardedNode(ip)};proto=${proto}${host && /^[\x21-\x7e]+$/.test(host) ? `;host="${host.replace(/["\\]/g, '')}"` : ''}`);
  return out;
}

/** An address as a Forwarded `for=` node (RFC 7239 §6: IPv6 quoted and in brackets). */
function forwardedNode(ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip;
}

/** How many times a header occurs (Node keeps only the first Host in req.headers). */
function countHeader(req: IncomingMessage, name: string): number {
  let n = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === name) n++;
  return n;
}

function responseHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!RESPONSE_DROP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** The Host header without its port; undefined for a missing host or an IP literal in brackets. */
function hostName(req: IncomingMessage): string | undefined {
  const host = req.headers.host;
  if (!host || host.startsWith('[')) return undefined;
  return host.replace(/:\d*$/, '');
}

/**
 * HTTP host routing: `Host: <address>.<domain>` reaches port 80 of that
 * device, `<address>-<port>.<domain>` another port; public ports only. Every
 * request is routed on its own (a keep-alive connection may carry requests
 * for different devices) over a fresh mux stream, with bodies streamed both
 * ways. Upgrades (WebSocket) are forwarded as a raw head and then spliced.
 */
export class GatewayHttpRouter {
  readonly #o: HttpRouterOptions;
  /** Requests in flight per connection: an idle timeout then is an abuse event, not a keep-alive expiry. */
  readonly #inFlight = new WeakMap<Socket, number>();
  /** One request at a time per connection (see MAX_PIPELINED_REQUESTS). */
  readonly #pipelines = new WeakMap<Socket, Pipeline>();

  constructor(options: HttpRouterOptions) {
    this.#o = options;
  }

  /** Wires the router into an http or https server (created by the gateway with the limits applied). */
  attach(server: Server, proto: Proto): void {
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res, proto));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(server, req, socket as Socket, head, proto));
    server.on('connect', (req: IncomingMessage, socket: Duplex) => {
      this.#count('gateway_http_bad_request');
      writeRawErrorPage(socket, 405, 'Not a proxy', 'This gateway routes by Host name; CONNECT is not supported (use the SOCKS gateway).', req.headers.accept);
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.#onClientError(err, socket as Socket));
    server.on('timeout', (socket: Socket) => {
      if (this.#inFlight.get(socket)) {
        this.#count('gateway_idle_timeout');
        this.#o.log.info(`http ${clientIp(socket)}: closed after ${this.#o.limits.idleTimeoutMs / 1000} s idle`);
      }
      socket.destroy();
    });
  }

  #count(name: string): void {
    this.#o.relay.stats.count(name);
  }

  #refuse(req: IncomingMessage, res: ServerResponse, status: number, title: string, detail: string, close = false): void {
    this.#count(`gateway_http_${status}`);
    this.#o.log.info(`http ${clientIp(req.socket)} ${req.method} ${req.headers.host ?? '-'}${req.url}: ${status} ${detail}`);
    // A body still on its way is not worth draining: close after the page instead.
    sendErrorPage(req, res, status, title, detail, close || !req.complete);
  }

  #capRefusal(socket: Socket): { status: number; title: string; detail: string } | undefined {
    const refusal = this.#o.refusalOf(socket);
    if (!refusal) return undefined;
    if (refusal === 'total') return { status: 503, title: 'Gateway busy', detail: `the gateway holds its maximum of ${this.#o.limits.maxConns} connections; retry later` };
    const { maxConns, maxConnsPerIp } = this.#o.limits;
    const cap = refusal === 'per-ip' ? maxConnsPerIp : Math.min(maxConns, maxConnsPerIp * (refusal === 'per-56' ? PREFIX_56_FACTOR : PREFIX_48_FACTOR));
    const from = refusal === 'per-ip' ? 'one address' : `the addresses of one IPv6 ${refusal === 'per-56' ? '/56' : '/48'}`;
    return { status: 429, title: 'Too many connections', detail: `at most ${cap} connections from ${from}; close some and retry` };
  }

  /** Resolves the target or explains, as [status, title, detail], why not. */
  #target(req: IncomingMessage): { target: DiodeHost; error?: undefined } | { target?: undefined; error: [number, string, string] } {
    if (!req.url?.startsWith('/')) {
      return { error: [400, 'Bad request', 'this gateway is not a forward proxy: send origin-form requests (GET /path) with a Host header'] };
    }
    if (countHeader(req, 'host') > 1) {
      return { error: [400, 'Bad request', 'the request has more than one Host header'] };
    }
    const name = hostName(req);
    const sorted = name ? gatewayTarget(name, DEFAULT_HTTP_PORT, this.#o.domain) : undefined;
    if (sorted?.kind !== 'device') {
      const domain = this.#o.domain ?? 'diode';
      const why = sorted?.kind === 'malformed' ? ` (${sorted.reason})` : '';
      return { error: [400, 'Bad host', `"${req.headers.host ?? ''}" is not a device name${why}; use <name>.${domain}, <address>.${domain} or <name>-<port>.${domain}`] };
    }
    return { target: sorted.host };
  }

  #onRequest(req: IncomingMessage, res: ServerResponse, proto: Proto): void {
    const socket = req.socket;
    this.#count('gateway_http_request');
    this.#inFlight.set(socket, (this.#inFlight.get(socket) ?? 0) + 1);
    res.once('close', () => this.#inFlight.set(socket, Math.max(0, (this.#inFlight.get(socket) ?? 1) - 1)));
    const cap = this.#capRefusal(socket);
    if (cap) return this.#refuse(req, res, cap.status, cap.title, cap.detail, true);
    // Pipelined requests wait their turn: one device stream per connection at a time.
    let line = this.#pipelines.get(socket);
    if (!line) this.#pipelines.set(socket, (line = { busy: false, waiting: [], refused: false }));
    const pipeline = line;
    // Past the bound: the 429 (with Connection: close) ends the connection after the earlier answers; these are never served.
    if (pipeline.refused) return;
    const serve = () => {
      pipeline.busy = true;
      res.once('close', () => {
        pipeline.busy = false;
        const next = pipeline.waiting.shift();
        if (next) next();
        else if (socket.isPaused()) socket.resume();
      });
      this.#serve(req, res, proto);
    };
    if (!pipeline.busy) return serve();
    if (pipeline.waiting.length >= MAX_PIPELINED_REQUESTS) {
      pipeline.refused = true;
      this.#count('gateway_http_pipeline_refused');
      this.#o.log.info(`http ${clientIp(socket)}: more than ${MAX_PIPELINED_REQUESTS} pipelined requests waiting; answered 429 and closing`);
      sendErrorPage(req, res, 429, 'Too many pipelined requests', `at most ${MAX_PIPELINED_REQUESTS} requests may wait on one connection`, true);
      return;
    }
    // Stop reading more requests until this one's turn comes (its body, if any, is complete: the next head followed it).
    this.#count('gateway_http_pipelined');
    socket.pause();
    pipeline.waiting.push(serve);
  }

  /** Routes one request to its device (its turn on the connection has come). */
  #serve(req: IncomingMessage, res: ServerResponse, proto: Proto): void {
    const socket = req.socket;
    if (res.destroyed || req.destroyed) return;
    const { target, error } = this.#target(req);
    if (error) return this.#refuse(req, res, ...error);
    dialPublic(this.#o.relay, `${clientIp(socket)}:${socket.remotePort}`, target, 'http').then(
      (stream) => {
        if (res.destroyed || req.destroyed) {
          stream.destroy();
          return;
        }
        this.#forward(req, res, stream, proto);
      },
      (err: RouteError | NameError) => {
        const answer = err instanceof NameError ? UNKNOWN_NAME_ANSWER : GATEWAY_ANSWER[err.reply];
        this.#refuse(req, res, answer.status, answer.title, err.message);
      },
    );
  }

  /** One request over one mux stream with Node's HTTP/1.1 client; bodies are piped (backpressure, no buffering). */
  #forward(req: IncomingMessage, res: ServerResponse, stream: MuxStream, proto: Proto): void {
    const upstream = httpRequest({
      method: req.method,
      path: req.url,
      headers: forwardedHeaders(req, proto, false),
      setHost: false,
      createConnection: () => stream as unknown as Socket,
    });
    upstream.on('response', (answer: IncomingMessage) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, responseHeaders(answer.rawHeaders));
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => {
      this.#count('gateway_http_upstream_error');
      if (res.headersSent) res.destroy();
      else this.#refuse(req, res, 502, 'Bad gateway', `the device's HTTP server failed: ${errorMessage(err)}`);
    });
    // The client went away (or the response is done): release the stream either way.
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
      stream.destroy();
    });
    req.pipe(upstream);
  }

  #onUpgrade(server: Server, req: IncomingMessage, socket: Socket, head: Buffer, proto: Proto): void {
    this.#count('gateway_http_upgrade');
    socket.on('error', () => {});
    // The HTTP server let go of the socket: the idle timeout is ours now.
    const onIdle = () => {
      this.#count('gateway_idle_timeout');
      this.#o.log.info(`http ${clientIp(socket)}: upgraded connection closed after ${this.#o.limits.idleTimeoutMs / 1000} s idle`);
      socket.destroy();
    };
    socket.setTimeout(this.#o.limits.idleTimeoutMs, onIdle);
    const refuse = (status: number, title: string, detail: string) => {
      this.#count(`gateway_http_${status}`);
      this.#o.log.info(`http ${clientIp(socket)} upgrade ${req.headers.host ?? '-'}${req.url}: ${status} ${detail}`);
      writeRawErrorPage(socket, status, title, detail, req.headers.accept);
    };
    const cap = this.#capRefusal(socket);
    if (cap) return refuse(cap.status, cap.title, cap.detail);
    const { target, error } = this.#target(req);
    if (error) return refuse(...error);
    // Nothing more is read from the client until the device has answered the upgrade.
    socket.pause();
    dialPublic(this.#o.relay, `${clientIp(socket)}:${socket.remotePort}`, target, 'http').then(
      (stream) => {
        if (socket.destroyed) {
          stream.destroy();
          return;
        }
        this.#upgrade(server, req, socket, head, proto, stream, onIdle);
      },
      (err: RouteError | NameError) => {
        const answer = err instanceof NameError ? UNKNOWN_NAME_ANSWER : GATEWAY_ANSWER[err.reply];
        refuse(answer.status, answer.title, err.message);
      },
    );
  }

  /**
   * Sends the upgrade request to the device and splices the connection
   * through only once the device answered 101. Any other answer is passed
   * on as an ordinary response (hop-by-hop headers dropped), and the
   * connection goes back to the HTTP server, so later requests get the
   * usual routing and header rewriting.
   */
  #upgrade(server: Server, req: IncomingMessage, socket: Socket, head: Buffer, proto: Proto, stream: MuxStream, onIdle: () => void): void {
    const upstream = httpRequest({
      method: req.method,
      path: req.url,
      headers: forwardedHeaders(req, proto, true),
      setHost: false,
      createConnection: () => stream as unknown as Socket,
    });
    const fail = (err: Error) => {
      this.#count('gateway_http_upstream_error');
      stream.destroy();
      writeRawErrorPage(socket, 502, 'Bad gateway', `the device's HTTP server failed: ${errorMessage(err)}`, req.headers.accept);
    };
    upstream.on('error', fail);
    upstream.on('upgrade', (answer: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
      upstream.off('error', fail);
      let text = `HTTP/1.1 101 ${answer.statusMessage || 'Switching Protocols'}\r\n`;
      const raw = answer.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
      socket.write(text + '\r\n');
      if (upHead.length > 0) socket.write(upHead);
      if (head.length > 0) upSocket.write(head);
      splice(socket, upSocket);
    });
    upstream.on('response', (answer: IncomingMessage) => {
      // Not upgraded: an ordinary response, framed by us, then HTTP again on this connection.
      this.#count('gateway_http_upgrade_declined');
      const headers = responseHeaders(answer.rawHeaders);
      const noBody = req.method === 'HEAD' || answer.statusCode === 204 || answer.statusCode === 304;
      const length = answer.headers['content-length'];
      const chunked = !noBody && length === undefined;
      let text = `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n`;
      for (let i = 0; i + 1 < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
      if (chunked) text += 'Transfer-Encoding: chunked\r\n';
      socket.write(text + '\r\n');
      answer.on('data', (chunk: Buffer) => {
        if (noBody) return;
        if (!(chunked ? socket.write(`${chunk.length.toString(16)}\r\n`) && socket.write(chunk) && socket.write('\r\n') : socket.write(chunk))) {
          answer.pause();
          socket.once('drain', () => answer.resume());
        }
      });
      answer.once('error', () => socket.destroy());
      answer.once('end', () => {
        if (chunked) socket.write('0\r\n\r\n');
        stream.destroy();
        if (socket.destroyed) return;
        // Back to the HTTP server: bytes the client sent after the upgrade request are its next request.
        socket.setTimeout(0);
        socket.off('timeout', onIdle);
        if (head.length > 0) socket.unshift(head);
        REINJECTED.add(socket);
        server.emit(socket instanceof TLSSocket ? 'secureConnection' : 'connection', socket);
        socket.resume();
      });
    });
    upstream.end();
  }

  #onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const ip = clientIp(socket);
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      this.#count('gateway_http_header_too_large');
      this.#o.log.info(`http ${ip}: request head larger than ${this.#o.limits.maxHeaderBytes} bytes refused (431)`);
      writeRawErrorPage(socket, 431, 'Request header too large', `request line and headers must fit in ${this.#o.limits.maxHeaderBytes} bytes`);
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      this.#count('gateway_http_header_timeout');
      this.#o.log.info(`http ${ip}: no complete request head within ${this.#o.limits.headerTimeoutMs / 1000} s (408)`);
      writeRawErrorPage(socket, 408, 'Request timeout', `send the request head within ${this.#o.limits.headerTimeoutMs / 1000} s`);
    } else {
      this.#count('gateway_http_bad_request');
      this.#o.log.info(`http ${ip}: malformed request: ${errorMessage(err)} (400)`);
      writeRawErrorPage(socket, 400, 'Bad request', `malformed HTTP request (${err.code ?? err.message})`);
    }
  }
}
