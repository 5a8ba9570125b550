import { connect } from 'node:net';
import type { MuxStream } from '../mux/index.ts';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import { splice } from '../util/pump.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseIncoming, errorReply, type Reply, type Incoming } from '../protocol/messages.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
import type { PortMapping } from './port-spec.ts';

/** ms to reach the local target port before answering "refused". */
const LOCAL_CONNECT_TIMEOUT_MS = 5_000;

/**
 * Decides whether a caller may use a port. The device's check is the one
 * that counts; the relay's earlier filter only keeps traffic off the link.
 */
export type AccessCheck = (mapping: PortMapping, incoming: Incoming) => Promise<boolean> | boolean;

export const defaultAccessCheck: AccessCheck = (mapping, incoming) => {
  if (mapping.mode === 'public') return true;
  if (mapping.mode === 'private') return mapping.allow.includes(incoming.from);
  return false;
};

/** The device side of a data stream: header, access check, local connect, then the pump. */
export class IncomingHandler {
  readonly #ports: Map<number, PortMapping>;
  readonly #log: Logger;
  readonly #check: AccessCheck;

  constructor(mappings: PortMapping[], log: Logger, check: AccessCheck = defaultAccessCheck) {
    this.#ports = new Map(mappings.map((m) => [m.remotePort, m]));
    this.#log = log;
    this.#check = check;
  }

  handle(stream: MuxStream): void {
    stream.on('error', () => {});
    this.#handle(stream).catch((err) => {
      this.#log.info(`incoming stream dropped: ${errorMessage(err)}`);
      stream.destroy();
    });
  }

  async #handle(stream: MuxStream): Promise<void> {
    const incoming = parseIncoming(await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS));
    const mapping = this.#ports.get(incoming.port);
    if (!mapping) {
      this.#log.info(`refused ${incoming.from} → port ${incoming.port}: not published`);
      return answer(stream, errorReply('no-such-port', `port ${incoming.port} is not published`), true);
    }
    if (!(await this.#check(mapping, incoming))) {
      this.#log.warn(`denied ${incoming.from} → port ${incoming.port} (${mapping.mode})`);
      return answer(stream, errorReply('denied', `${incoming.from} may not use port ${incoming.port}`), true);
    }
    const local = connect({ host: mapping.host, port: mapping.localPort, allowHalfOpen: true, noDelay: true, timeout: LOCAL_CONNECT_TIMEOUT_MS });
    local.once('timeout', () => local.destroy(new Error(`no answer within ${LOCAL_CONNECT_TIMEOUT_MS} ms`)));
    local.once('error', (err) => {
      if (local.connecting || local.pending) {
        this.#log.warn(`port ${incoming.port}: cannot reach ${mapping.host}:${mapping.localPort}: ${errorMessage(err)}`);
        answer(stream, errorReply('refused', `the device cannot reach its local port ${mapping.localPort}`), true);
      }
    });
    local.once('connect', () => {
      local.setTimeout(0);
      answer(stream, { t: 'ok' }, false);
      splice(stream, local);
    });
  }
}

function answer(stream: MuxStream, reply: Reply, end: boolean): void {
  if (stream.destroyed) return;
  writeFrame(stream, reply);
  if (end) stream.end();
}
