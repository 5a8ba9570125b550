import { connect, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { abort, gateEnd, splice } from '../util/pump.ts';
import type { DataConn, DataPool } from '../link/data-pool.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseIncoming, parsePing, errorReply, type AccessMode, type Reply, type Incoming } from '../protocol/messages.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import { acceptE2E, sendVerdict } from '../e2e/index.ts';
import type { PortMapping } from './port-spec.ts';
import type { StreamStats } from '../ops/stream-stats.ts';

/** ms to reach the local target port before answering "refused". */
const LOCAL_CONNECT_TIMEOUT_MS = 5_000;

/**
 * Modes whose streams always run the end-to-end layer, asked for or not: the
 * device itself proves who the client is. Public ports run it when the
 * client asks (every agent does); only the public gateway reaches them in clear.
 */
export const E2E_MODES: ReadonlySet<AccessMode> = new Set(['private', 'protected']);

/**
 * Decides whether a client address may use a port. For private and
 * protected ports the address is the one the client proved end to end,
 * never the relay's claim; for public ports it is the relay's claim (and
 * nobody is refused). The relay's earlier filter only keeps traffic off the
 * link; this check is the one that counts.
 */
export type AccessCheck = (mapping: PortMapping, client: string) => Promise<boolean> | boolean;

export const defaultAccessCheck: AccessCheck = (mapping, client) => {
  if (mapping.mode === 'public') return true;
  if (mapping.mode === 'private') return mapping.allow.includes(client);
  return false;
};

export interface IncomingHandlerOptions {
  /** The device's key: proves the device to clients inside the end-to-end layer. */
  identity: Identity;
  check?: AccessCheck;
  /** Counts accepted and refused streams and their bytes (diode status, --metrics). */
  stats?: StreamStats;
}

/** The device side of a data stream: header, (end-to-end layer,) access check, local connect, then the pump. */
export class IncomingHandler {
  readonly #ports: Map<number, PortMapping>;
  readonly #log: Logger;
  readonly #identity: Identity;
  readonly #check: AccessCheck;
  readonly #stats: StreamStats | undefined;

  constructor(mappings: PortMapping[], log: Logger, options: IncomingHandlerOptions) {
    this.#ports = new Map(mappings.map((m) => [m.remotePort, m]));
    this.#log = log;
    this.#identity = options.identity;
    this.#check = options.check ?? defaultAccessCheck;
    this.#stats = options.stats;
  }

  /** An inbound stream of the relay link; `data`: that session's data connections (`incoming.data` names one). */
  handle(stream: MuxStream, data?: DataPool): void {
    stream.on('error', () => {});
    this.#handle(stream, data).catch((err) => {
      this.#stats?.fail('bad-request', `incoming stream dropped: ${errorMessage(err)}`);
      this.#log.info(`incoming stream dropped: ${errorMessage(err)}`);
      stream.destroy();
    });
  }

  /**
   * The one line per stream an operator reads (info): who, proven how, to
   * which port, and the verdict. `client` is the end-to-end proven address
   * for private and protected ports, the relay's proven one for public ports.
   */
  #verdict(result: 'accepted' | 'denied' | 'no-such-port' | 'refused' | 'no-e2e', client: string, port: number, mode: string, via: string, detail?: string): void {
    const e2e = E2E_MODES.has(mode as AccessMode);
    const proof = e2e ? 'proven end to end' : `proven to relay ${via}`;
    const text =
      result === 'no-e2e'
        ? `refused a stream to port ${port} (${mode}; relay says from ${client}): ${detail}`
        : `${result} ${client} → port ${port}${mode ? ` (${mode})` : ''}, ${proof}${detail ? `: ${detail}` : ''}`;
    if (result !== 'accepted') this.#stats?.fail(result, text);
    this.#log.info(text, { event: 'stream', result, client, port, mode: mode || undefined, via, proof: result === 'no-e2e' ? 'none' : e2e ? 'e2e' : 'relay' });
  }

  async #handle(stream: MuxStream, data: DataPool | undefined): Promise<void> {
    const first = await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS);
    if (first.t === 'ping') {
      // `diode query --ping`: answered at once, no port involved.
      const ping = parsePing(first, 'device');
      this.#log.debug(`ping from ${ping.from} via ${ping.via}`);
      return answer(stream, { t: 'ok' }, true);
    }
    const incoming = parseIncoming(first);
    // The relay paired one of our data connections for this stream: its bytes travel there.
    let conn: DataConn | undefined;
    if (incoming.data !== undefined) {
      conn = await data?.claim(incoming.data);
      if (!conn) return answer(stream, errorReply('data-closed', `data connection ${incoming.data.slice(0, 8)}… is not held by this device; use another`), true);
    } else if (incoming.e2e) {
      // The relay had none of ours ready for it: the pool grows to such bursts.
      data?.missed();
    }
    const mapping = this.#ports.get(incoming.port);
    // A caller that asked for the end-to-end layer hears about an unpublished port inside it, as it
    // would about a port it may not use: the two answers are the same (notPublished), and so is their way.
    if (!mapping && incoming.e2e) return this.#refuseE2E(stream, incoming, conn?.socket);
    if (!mapping || (!incoming.e2e && E2E_MODES.has(mapping.mode))) {
      if (conn) abort(conn.socket);
      // Without the layer a private or protected port is not there for the caller (the public gateway).
      this.#verdict(mapping ? 'denied' : 'no-such-port', incoming.from, incoming.port, mapping?.mode ?? '', incoming.via, mapping ? 'no end-to-end layer asked for' : 'not published');
      return answer(stream, this.#notPublished(incoming.port), true);
    }
    if (incoming.e2e || E2E_MODES.has(mapping.mode)) return this.#handleE2E(stream, mapping, incoming, conn?.socket);
    if (!(await this.#check(mapping, incoming.from))) {
      this.#verdict('denied', incoming.from, incoming.port, mapping.mode, incoming.via);
      return answer(stream, this.#notPublished(incoming.port), true);
    }
    let why = '';
    const local = await this.#connectLocal(mapping).catch((err) => void (why = errorMessage(err)));
    if (!local) {
      this.#verdict('refused', incoming.from, incoming.port, mapping.mode, incoming.via, `cannot reach ${mapping.host}:${mapping.localPort}: ${why}`);
      return answer(stream, errorReply('refused', `the device cannot reach its local port ${mapping.localPort}`), true);
    }
    this.#verdict('accepted', incoming.from, incoming.port, mapping.mode, incoming.via);
    this.#stats?.track(local);
    answer(stream, { t: 'ok' }, false);
    splice(stream, local);
  }

  /**
   * A stream between two agents (any mode), and every stream to a private or
   * protected port: the bytes after our ok are a TLS session with the
   * client, whatever the relay claims; plaintext fails the TLS handshake and
   * never reaches the local port.
   */
  async #handleE2E(stream: MuxStream, mapping: PortMapping, incoming: Incoming, dataSocket: Socket | undefined): Promise<void> {
    // On a data connection the answer is all the link's stream carries.
    answer(stream, { t: 'ok', e2e: true }, dataSocket !== undefined);
    const under: Duplex = dataSocket ?? stream;
    // A public port admits every proven client, so its local connection is opened while the
    // handshake runs (the verdict can then leave with our hello); no byte reaches it before the
    // verdict, and it is closed unused if the client proves nothing. Other modes connect after the check.
    const early = mapping.mode === 'public' ? this.#connectLocal(mapping).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))) : undefined;
    const dropEarly = () => void early?.then((s) => s instanceof Socket && s.destroy());
    let session;
    try {
      session = await acceptE2E(under, this.#identity);
    } catch (err) {
      dropEarly();
      this.#verdict('no-e2e', incoming.from, incoming.port, mapping.mode, incoming.via, `no end-to-end proof: ${errorMessage(err)}`);
      // The TLS socket frees the stream when it closes: reset after a failure, closed in order after
      // a refused hello (its reason went ahead of close_notify and FIN).
      return;
    }
    const client = session.peer;
    if (client !== incoming.from) this.#log.warn(`port ${incoming.port}: the relay ${incoming.via} claimed ${incoming.from}, the client proved ${client}`);
    if (!(await this.#check(mapping, client))) {
      dropEarly();
      this.#verdict('denied', client, incoming.port, mapping.mode, incoming.via);
      return sendVerdict(session, this.#notPublished(incoming.port));
    }
    let why = '';
    const connected = early ? await early : await this.#connectLocal(mapping).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
    const local = connected instanceof Socket ? connected : undefined;
    if (!local) {
      why = errorMessage(connected);
      this.#verdict('refused', client, incoming.port, mapping.mode, incoming.via, `cannot reach ${mapping.host}:${mapping.localPort}: ${why}`);
      return sendVerdict(session, errorReply('refused', `the device cannot reach its local port ${mapping.localPort}`));
    }
    if (session.socket.destroyed) {
      local.destroy();
      return;
    }
    this.#verdict('accepted', client, incoming.port, mapping.mode, incoming.via);
    this.#stats?.track(local);
    sendVerdict(session, { t: 'ok' });
    // On a data connection a FIN is the client's only while the relay is there to have passed it on.
    if (dataSocket) gateEnd(session.socket, () => stream.session.ping());
    splice(session.socket, local);
  }

  /** The one answer for a port the caller may not use, the same as for a port that is not published (and the relay's: notPublished). */
  #notPublished(port: number): Reply {
    return errorReply('no-such-port', `device ${this.#identity.address} does not publish port ${port}`);
  }

  /** An unpublished port, for a caller that asked for the end-to-end layer: answered inside it, as a refusal is. */
  async #refuseE2E(stream: MuxStream, incoming: Incoming, dataSocket: Socket | undefined): Promise<void> {
    answer(stream, { t: 'ok', e2e: true }, dataSocket !== undefined);
    let session;
    try {
      session = await acceptE2E(dataSocket ?? stream, this.#identity);
    } catch (err) {
      // The TLS socket frees what runs under it when it closes (see #handleE2E).
      this.#verdict('no-e2e', incoming.from, incoming.port, '', incoming.via, `no end-to-end proof: ${errorMessage(err)}`);
      return;
    }
    this.#verdict('no-such-port', session.peer, incoming.port, '', incoming.via, 'not published');
    sendVerdict(session, this.#notPublished(incoming.port));
  }

  #connectLocal(mapping: PortMapping): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const local = connect({ host: mapping.host, port: mapping.localPort, allowHalfOpen: true, noDelay: true, timeout: LOCAL_CONNECT_TIMEOUT_MS });
      local.once('timeout', () => local.destroy(new Error(`no answer within ${LOCAL_CONNECT_TIMEOUT_MS} ms`)));
      local.once('error', reject);
      local.once('connect', () => {
        local.setTimeout(0);
        local.removeAllListeners('error');
        local.on('error', () => {});
        resolve(local);
      });
    });
  }
}

function answer(stream: Duplex, reply: Reply, end: boolean): void {
  if (stream.destroyed) return;
  writeFrame(stream, reply);
  if (end) stream.end();
}
