import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { MuxSession, MuxStream } from '../mux/index.ts';
import type { DataConn } from '../link/data-pool.ts';
import { abort, gateEnd } from '../util/pump.ts';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { connectE2E, E2EError } from '../e2e/index.ts';
import type { Connect, ReplyCode } from '../protocol/messages.ts';
import { requestStream, requestStreamAhead, HeaderRefused } from '../protocol/request.ts';
import { CLIENT_ANSWER_TIMEOUT_MS } from '../protocol/limits.ts';
import { dataWaitMs } from '../data/wait.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';

/** ms a dial waits for a relay session when the link is (re)connecting. */
export const RELAY_WAIT_MS = 5_000;
/**
 * ms after the relay's ok by which the device's TLS server flight must arrive on a data
 * connection. The device sends it with its ok and the relay passes both on together, so
 * nothing honest comes near this; a connection that died without a word (its NAT mapping
 * lost) is then given up and the stream dialled again over the link, not failed.
 */
export const DATA_FLIGHT_TIMEOUT_MS = 2_000;
/** The code of the DialError for a data connection that carried nothing (see DATA_FLIGHT_TIMEOUT_MS). */
const SILENT_DATA = 'EDIAL_DATA_SILENT';

/**
 * Why a dial failed: the relay's or device's reply code, `no-relay` (no
 * session), or `no-e2e` (the relay answered without the end-to-end layer:
 * a relay that would read or forge the stream; nothing of the caller's
 * was sent, only the TLS ClientHello).
 */
export type DialFailure = ReplyCode | 'no-relay' | 'no-e2e';

export class DialError extends DiodeError {
  readonly reply: DialFailure;
  /** `code`: a more specific one than the reply's (EDIAL_<REPLY>). */
  constructor(reply: DialFailure, message: string, code = `EDIAL_${reply.toUpperCase().replace(/-/g, '_')}`) {
    super(code, message);
    this.name = 'DialError';
    this.reply = reply;
  }
}

/**
 * Opens a stream to <address>:<port> through the relay; resolves once the
 * device accepted it. Every stream asks for the end-to-end layer: the result
 * is the cleartext side of the end-to-end TLS session, after the device
 * proved it is `address` and admitted our proven address. An answer without
 * the layer fails the dial before a byte of the caller's is sent.
 *
 * The stream travels on one of the link's ready data connections when it
 * has one (the relay splices it to the device's without reading it), else
 * on a stream of the relay link. A data connection the relay no longer
 * holds (`data-closed`) costs one more try on the link, never the stream.
 */
export async function dialThroughRelay(link: RelayLink, identity: Identity, address: string, port: number): Promise<Duplex> {
  const deadline = performance.now() + RELAY_WAIT_MS;
  for (;;) {
    const session = await sessionOf(link, deadline);
    try {
      return await dialOnSession(link, session, identity, address, port);
    } catch (err) {
      // A pipelined session whose relay failed its hello took nothing of ours further: the link's next one may.
      if (!session.closed || session.readStarted || performance.now() >= deadline) throw err;
    }
  }
}

async function sessionOf(link: RelayLink, deadline: number): Promise<MuxSession> {
  try {
    return await link.waitForSession(Math.max(0, deadline - performance.now()));
  } catch (err) {
    throw new DialError('no-relay', errorMessage(err));
  }
}

/** On one session: a ready data connection if the link has one (given up for the link if it is found dead), else the link. */
async function dialOnSession(link: RelayLink, session: MuxSession, identity: Identity, address: string, port: number): Promise<Duplex> {
  const pool = link.dataPool;
  // Beyond the ready ones, a connection already on its way is worth a short wait: on the link the
  // stream's every byte would be opened and sealed by the relay for its whole life.
  const data = pool?.take() ?? (await pool?.next(dataWaitMs(session.rttMs)));
  if (data) {
    try {
      return await dialOn(session, link, identity, address, port, data);
    } catch (err) {
      if (!(err instanceof DialError && err.reply === 'data-closed')) throw err;
      if (err.code === SILENT_DATA) {
        link.dataFailed(err.message);
        link.dataPool?.renew();
      }
    }
  }
  return dialOn(session, link, identity, address, port, undefined);
}

/** One try: `connect` on a new stream of the link; the end-to-end layer on `data` if given, else on that stream. */
async function dialOn(session: MuxSession, link: RelayLink, identity: Identity, address: string, port: number, data: DataConn | undefined): Promise<Duplex> {
  let stream: MuxStream;
  try {
    stream = session.open();
  } catch (err) {
    if (data) abort(data.socket);
    throw new DialError('no-relay', `relay session is closing: ${errorMessage(err)}`);
  }
  stream.on('error', () => {});
  const header: Connect = { t: 'connect', to: address, port, e2e: true, ...(data ? { data: data.token } : {}) };
  // The end-to-end TLS handshake starts right behind the connect (its ClientHello holds nothing of
  // the caller's), so the device can answer the relay's incoming with its TLS server flight: one
  // round trip less. On the link the relay's answer is taken off in front of the TLS socket; on a
  // data connection the answer comes on the stream and the TLS bytes on the connection.
  const answer = data ? requestStream(stream, header, CLIENT_ANSWER_TIMEOUT_MS) : requestStreamAhead(stream, header, CLIENT_ANSWER_TIMEOUT_MS);
  const under: Duplex = data ? data.socket : stream;
  const e2e = connectE2E(under, identity, address, { answered: answer, ...(data ? { flightTimeoutMs: DATA_FLIGHT_TIMEOUT_MS } : {}) });
  e2e.catch(() => {}); // settled below, after the answer
  let reply;
  try {
    reply = await answer;
  } catch (err) {
    abort(under);
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (refused) throw new DialError(refused.code, refused.message || refused.code);
    throw new DialError('unavailable', `no answer from the relay for ${address}:${port}: ${errorMessage(err)}`);
  }
  if (data) {
    // The answer was all the stream was for: the bytes are on the data connection.
    stream.end();
    stream.resume();
  }
  if (!reply.e2e) {
    abort(under);
    const relay = `${link.relayAddress ?? 'unknown address'}${link.relayEndpoint ? ` at ${link.relayEndpoint}` : ''}`;
    throw new DialError('no-e2e', `relay ${relay} answered the connect to ${address}:${port} without the end-to-end layer; refused (nothing of the caller's was sent): this relay could read or pose as the device`);
  }
  let result;
  try {
    result = await e2e;
  } catch (err) {
    abort(under);
    // A data connection that carries nothing died unnoticed (a NAT that dropped it): dialled again on the link.
    if (err instanceof E2EError && err.code === 'EE2E_SILENT') throw new DialError('data-closed', `${address}:${port}: ${errorMessage(err)}`, SILENT_DATA);
    // The peer is not the device we dialled, or the layer failed: nothing was sent to it.
    throw new DialError('unavailable', `${address}:${port}: ${errorMessage(err)}`);
  }
  if ('refused' in result) throw new DialError(result.refused.code, result.refused.message || result.refused.code);
  // On a data connection a FIN is the device's only while the relay is there to have passed it on.
  if (data) gateEnd(result.socket, () => session.ping());
  return result.socket;
}
