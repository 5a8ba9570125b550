import { createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import { controlDir, serveOwnerOnly, type LocalSocket } from './control.ts';
import { MAX_STREAM_REQUEST_BYTES, STREAM_REQUEST_TIMEOUT_MS, STREAM_WATCH_WAIT_MS, streamSocketPath, type StreamRequest, type StreamRole, type StreamVerdict } from './stream-protocol.ts';

// The agent's side of the stream socket (protocol: stream-protocol.ts).

/** What an agent that opens client streams offers `diode proxy`. */
export interface StreamService {
  /**
   * Why this agent must not open the stream the caller's own `diode proxy`
   * would (another key in the state directory, other relays, its link down,
   * a host or port that does not parse); undefined: it may.
   */
  refusal(request: StreamRequest): string | undefined;
  /** The stream, after the relay's and the device's checks; rejects with the DiodeError the caller prints. */
  open(request: StreamRequest, notice: (line: string) => void): Promise<Duplex>;
  /** A stream is open on `socket` (for the agent's counters). */
  opened?(socket: Socket): void;
}

export type StreamSocket = LocalSocket;

const line = (value: unknown): string => JSON.stringify(value) + '\n';

/** A stream's verdict, kept for (or handed to) its caller's watch connection. */
interface Watch {
  verdict?: StreamVerdict;
  socket?: Socket;
  timer?: NodeJS.Timeout;
}

/** The request line, checked: bounded strings only. */
export function parseStreamRequest(text: string): StreamRequest | { watch: string } | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object') return undefined;
  const { host, port, relay, watch } = raw as Record<string, unknown>;
  if (typeof watch === 'string') return { watch };
  if (typeof host !== 'string' || typeof port !== 'string') return undefined;
  if (relay !== undefined && !(Array.isArray(relay) && relay.every((r) => typeof r === 'string'))) return undefined;
  return { host, port, ...(relay !== undefined ? { relay: relay as string[] } : {}) };
}

/**
 * Serves `service` on <home>/run/<role>-<pid>.streams.sock. Failing to
 * create it is logged and never stops the agent (`diode proxy` then opens
 * its own relay sessions, as before).
 */
export async function startStreamSocket(home: string, role: StreamRole, service: StreamService, log: Logger): Promise<StreamSocket | undefined> {
  const live = new Set<Socket>();
  const watches = new Map<string, Watch>();
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    live.add(socket);
    socket.once('close', () => live.delete(socket));
    serve(socket, service, watches, log);
  });
  const path = streamSocketPath(controlDir(home), role, process.pid);
  return serveOwnerOnly(home, path, server, log, { name: 'stream socket', without: 'diode proxy will open relay sessions of its own', live });
}

/** One caller: its request line, then refused, or taken and the dial's outcome, then the stream's bytes. */
function serve(socket: Socket, service: StreamService, watches: Map<string, Watch>, log: Logger): void {
  socket.on('error', () => {});
  let buffer: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), STREAM_REQUEST_TIMEOUT_MS);
  const onData = (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    const nl = buffer.indexOf(0x0a);
    if (nl < 0) {
      if (buffer.length > MAX_STREAM_REQUEST_BYTES) refuse('request line too long');
      return;
    }
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    // The caller sends nothing more before our "ok".
    if (nl !== buffer.length - 1) return refuse('bytes after the request line');
    const request = parseStreamRequest(buffer.subarray(0, nl).toString('utf8'));
    if (!request) return refuse('not a stream request');
    if ('watch' in request) return watchFor(request.watch);
    let why: string | undefined;
    try {
      why = service.refusal(request);
    } catch (err) {
      why = errorMessage(err);
    }
    if (why !== undefined) return refuse(why);
    socket.write(line({ taken: true }));
    dial(request);
  };
  const refuse = (why: string) => {
    clearTimeout(timer);
    log.debug(`stream socket: refused: ${why}`);
    socket.end(line({ refused: why }));
  };
  /** A caller's second connection: the verdict of its stream (token from "ok"), now or when it comes. */
  const watchFor = (token: string) => {
    const watch = watches.get(token);
    if (!watch) return void socket.end(line({ unknown: true }));
    clearTimeout(watch.timer);
    if (watch.verdict) {
      watches.delete(token);
      return void socket.end(line(watch.verdict));
    }
    watch.socket = socket;
    socket.once('close', () => {
      if (watches.get(token) === watch && !watch.verdict) watches.delete(token);
    });
  };
  const dial = (request: StreamRequest) => {
    service.open(request, (notice) => socket.write(line({ notice }))).then(
      (tunnel) => {
        if (socket.destroyed) return void tunnel.destroy();
        const token = randomBytes(16).toString('hex');
        const watch: Watch = {};
        watches.set(token, watch);
        // A caller that never watches (an older proxy, one killed at once) does not leave its entry behind.
        watch.timer = setTimeout(() => watches.delete(token), STREAM_WATCH_WAIT_MS);
        const settle = (verdict: StreamVerdict) => {
          if (watch.verdict) return;
          watch.verdict = verdict;
          if (!watch.socket) return;
          watches.delete(token);
          watch.socket.end(line(verdict));
        };
        // The device's side ended: said before the splice passes the end on.
        tunnel.once('end', () => settle({ end: true }));
        socket.write(line({ ok: true, watch: token }));
        service.opened?.(socket);
        log.debug(`stream socket: ${request.host} port ${request.port} open`);
        splice(socket, tunnel, (err) => settle(err ? { broke: errorMessage(err) } : { end: true }));
      },
      (err: unknown) => {
        const failure = err instanceof DiodeError ? err : new DiodeError('EDIAL', errorMessage(err));
        socket.end(line({ error: { code: failure.code, message: failure.message } }));
      },
    );
  };
  socket.on('data', onData);
}
