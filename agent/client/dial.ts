import type { Duplex } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { connectE2E } from '../e2e/index.ts';
import type { Connect, ReplyCode } from '../protocol/messages.ts';
import { requestStream, HeaderRefused } from '../protocol/request.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';

/** ms a dial waits for a relay session when the link is (re)connecting. */
export const RELAY_WAIT_MS = 5_000;

export class DialError extends DiodeError {
  readonly reply: ReplyCode | 'no-relay';
  constructor(reply: ReplyCode | 'no-relay', message: string) {
    super(`EDIAL_${reply.toUpperCase().replace(/-/g, '_')}`, message);
    this.name = 'DialError';
    this.reply = reply;
  }
}

/**
 * Opens a stream to <address>:<port> through the relay; resolves once the
 * device accepted it. For private and protected ports (the device's ok says
 * e2e) the result is the cleartext side of the end-to-end TLS session, after
 * the device proved it is `address` and admitted our proven address.
 */
export async function dialThroughRelay(link: RelayLink, identity: Identity, address: string, port: number): Promise<Duplex> {
  let session;
  try {
    session = await link.waitForSession(RELAY_WAIT_MS);
  } catch (err) {
    throw new DialError('no-relay', errorMessage(err));
  }
  let stream: MuxStream;
  try {
    stream = session.open();
  } catch (err) {
    throw new DialError('no-relay', `relay session is closing: ${errorMessage(err)}`);
  }
  stream.on('error', () => {});
  const header: Connect = { t: 'connect', to: address, port };
  let reply;
  try {
    reply = await requestStream(stream, header);
  } catch (err) {
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (refused) throw new DialError(refused.code, refused.message || refused.code);
    throw new DialError('unavailable', `no answer from the relay for ${address}:${port}: ${errorMessage(err)}`);
  }
  if (!reply.e2e) return stream;
  let result;
  try {
    result = await connectE2E(stream, identity, address);
  } catch (err) {
    stream.destroy();
    // The peer is not the device we dialled, or the layer failed: nothing was sent to it.
    throw new DialError('unavailable', `${address}:${port}: ${errorMessage(err)}`);
  }
  if ('refused' in result) throw new DialError(result.refused.code, result.refused.message || result.refused.code);
  return result.socket;
}
