import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { MuxSession, MuxStream } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { connectE2E } from '../e2e/index.ts';
import type { Connect, ReplyCode } from '../protocol/messages.ts';
import { requestStreamAhead, HeaderRefused } from '../protocol/request.ts';
import { CLIENT_ANSWER_TIMEOUT_MS } from '../protocol/limits.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';

/** ms a dial waits for a relay session when the link is (re)connecting. */
export const RELAY_WAIT_MS = 5_000;

/**
 * Why a dial failed: the relay's or device's reply code, `no-relay` (no
 * session), or `no-e2e` (the relay answered without the end-to-end layer:
 * a relay that would read or forge the stream; nothing of the caller's
 * was sent, only the TLS ClientHello).
 */
export type DialFailure = ReplyCode | 'no-relay' | 'no-e2e';

export class DialError extends DiodeError {
  readonly reply: DialFailure;
  constructor(reply: DialFailure, message: string) {
    super(`EDIAL_${reply.toUpperCase().replace(/-/g, '_')}`, message);
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

async function dialOnSession(link: RelayLink, session: MuxSession, identity: Identity, address: string, port: number): Promise<Duplex> {
  let stream: MuxStream;
  try {
    stream = session.open();
  } catch (err) {
    throw new DialError('no-relay', `relay session is closing: ${errorMessage(err)}`);
  }
  stream.on('error', () => {});
  const header: Connect = { t: 'connect', to: address, port, e2e: true };
  // The end-to-end TLS handshake starts right behind the connect (its ClientHello holds nothing of
  // the caller's), so the device can answer the relay's incoming with its TLS server flight: one
  // round trip less. The relay's answer is taken off in front of the TLS socket.
  const answer = requestStreamAhead(stream, header, CLIENT_ANSWER_TIMEOUT_MS);
  const e2e = connectE2E(stream, identity, address, answer);
  e2e.catch(() => {}); // settled below, after the answer
  let reply;
  try {
    reply = await answer;
  } catch (err) {
    stream.destroy();
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (refused) throw new DialError(refused.code, refused.message || refused.code);
    throw new DialError('unavailable', `no answer from the relay for ${address}:${port}: ${errorMessage(err)}`);
  }
  if (!reply.e2e) {
    stream.destroy();
    const relay = `${link.relayAddress ?? 'unknown address'}${link.relayEndpoint ? ` at ${link.relayEndpoint}` : ''}`;
    throw new DialError('no-e2e', `relay ${relay} answered the connect to ${address}:${port} without the end-to-end layer; refused (nothing of the caller's was sent): this relay could read or pose as the device`);
  }
  let result;
  try {
    result = await e2e;
  } catch (err) {
    stream.destroy();
    // The peer is not the device we dialled, or the layer failed: nothing was sent to it.
    throw new DialError('unavailable', `${address}:${port}: ${errorMessage(err)}`);
  }
  if ('refused' in result) throw new DialError(result.refused.code, result.refused.message || result.refused.code);
  return result.socket;
}
