import { request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { RouteError } from '../relay/router.ts';
import type { Logger } from '../util/log.ts';
import type { DiodeTarget } from '../client/hostname.ts';
import { errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import type { GatewayLimits } from './config.ts';
import type { Refusal } from './limiter.ts';
import { sendErrorPage, writeRawErrorPage } from './pages.ts';
import { GATEWAY_ANSWER, dialPublic, gatewayTarget, type GatewayRelay } from './route.ts';

/** Port a bare `<address>.<domain>` host reaches. */
export const DEFAULT_HTTP_PORT = 80;

/** Hop-by-hop request headers (RFC 9110 §7.6.1) plus what the gateway sets itself; the rest is forwarded as sent. */
const REQUEST_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'expect', 'x-forwarded-proto', 'x-forwarded-host']);
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

/** The request's raw headers for the device: hop-by-hop ones removed, X-Forwarded-* added (For appended to). */
function forwardedHeaders(req: IncomingMessage, proto: Proto, keepHopByHop: boolean): string[] {
  const drop = keepHopByHop ? new Set<string>(['x-forwarded-proto', 'x-forwarded-host']) : new Set([...REQUEST_DROP, ...connectionTokens(req)]);
  const out: string[] = [];
  let forwardedFor: string | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (name === 'x-forwarded-for') forwardedFor = forwardedFor ? `${forwardedFor}, ${raw[i + 1]}` : raw[i + 1];
    else if (!drop.has(name)) out.push(raw[i], raw[i + 1]);
  }
  const ip = clientIp(req.socket);
  out.push('X-Forwarded-For', forwardedFor ? `${forwardedFor}, ${ip}` : ip);
  out.push('X-Forwarded-Proto', proto);
  if (req.headers.host) out.push('X-Forwarded-Host', req.headers.host);
  return out;
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

  constructor(options: HttpRouterOptions) {
    this.#o = options;
  }

  /** Wires the router into an http or https server (created by the gateway with the limits applied). */
  attach(server: Server, proto: Proto): void {
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res, proto));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket as Socket, head, proto));
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
    return refusal === 'per-ip'
      ? { status: 429, title: 'Too many connections', detail: `at most ${this.#o.limits.maxConnsPerIp} connections from one address; close some and retry` }
      : { status: 503, title: 'Gateway busy', detail: `the gateway holds its maximum of ${this.#o.limits.maxConns} connections; retry later` };
  }

  /** Resolves the target or explains, as [status, title, detail], why not. */
  #target(req: IncomingMessage): { target: DiodeTarget; error?: undefined } | { target?: undefined; error: [number, string, string] } {
    if (!req.url?.startsWith('/')) {
      return { error: [400, 'Bad request', 'this gateway is not a forward proxy: send origin-form requests (GET /path) with a Host header'] };
    }
    const name = hostName(req);
    const target = name ? gatewayTarget(name, DEFAULT_HTTP_PORT, this.#o.domain) : undefined;
    if (!target) {
      const example = `<address>.${this.#o.domain ?? 'diode'}`;
      return { error: [400, 'Bad host', `"${req.headers.host ?? ''}" is not a device name; use ${example} or <address>-<port>.${this.#o.domain ?? 'diode'}`] };
    }
    return { target };
  }

  #onRequest(req: IncomingMessage, res: ServerResponse, proto: Proto): void {
    const socket = req.socket;
    this.#count('gateway_http_request');
    this.#inFlight.set(socket, (this.#inFlight.get(socket) ?? 0) + 1);
    res.once('close', () => this.#inFlight.set(socket, Math.max(0, (this.#inFlight.get(socket) ?? 1) - 1)));
    const cap = this.#capRefusal(socket);
    if (cap) return this.#refuse(req, res, cap.status, cap.title, cap.detail, true);
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
      (err: RouteError) => {
        const answer = GATEWAY_ANSWER[err.reply];
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

  #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer, proto: Proto): void {
    this.#count('gateway_http_upgrade');
    socket.on('error', () => {});
    // The HTTP server let go of the socket: the idle timeout is ours now.
    socket.setTimeout(this.#o.limits.idleTimeoutMs, () => {
      this.#count('gateway_idle_timeout');
      this.#o.log.info(`http ${clientIp(socket)}: upgraded connection closed after ${this.#o.limits.idleTimeoutMs / 1000} s idle`);
      socket.destroy();
    });
    const refuse = (status: number, title: string, detail: string) => {
      this.#count(`gateway_http_${status}`);
      this.#o.log.info(`http ${clientIp(socket)} upgrade ${req.headers.host ?? '-'}${req.url}: ${status} ${detail}`);
      writeRawErrorPage(socket, status, title, detail, req.headers.accept);
    };
    const cap = this.#capRefusal(socket);
    if (cap) return refuse(cap.status, cap.title, cap.detail);
    const { target, error } = this.#target(req);
    if (error) return refuse(...error);
    dialPublic(this.#o.relay, `${clientIp(socket)}:${socket.remotePort}`, target, 'http').then(
      (stream) => {
        if (socket.destroyed) {
          stream.destroy();
          return;
        }
        const raw = forwardedHeaders(req, proto, true);
        let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
        for (let i = 0; i + 1 < raw.length; i += 2) text += `${raw[i]}: ${raw[i + 1]}\r\n`;
        stream.write(text + '\r\n');
        if (head.length > 0) stream.write(head);
        splice(socket, stream);
      },
      (err: RouteError) => {
        const answer = GATEWAY_ANSWER[err.reply];
        refuse(answer.status, answer.title, err.message);
      },
    );
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
