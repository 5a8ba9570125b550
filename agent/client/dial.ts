import type { MuxStream } from '../mux/index.ts';
import type { RelayLink } from '../link/relay-link.ts';
import { readFrame, writeFrame } from '../protocol/frames.ts';
import { parseReply, type Connect, type ReplyCode } from '../protocol/messages.ts';
import { MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS } from '../protocol/limits.ts';
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

/** Opens a stream to <address>:<port> through the relay; resolves once the device accepted it. */
export async function dialThroughRelay(link: RelayLink, address: string, port: number): Promise<MuxStream> {
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
  writeFrame(stream, header);
  let reply;
  try {
    reply = parseReply(await readFrame(stream, MAX_STREAM_HEADER_BYTES, STREAM_HEADER_TIMEOUT_MS));
  } catch (err) {
    stream.destroy();
    throw new DialError('unavailable', `no answer from the relay for ${address}:${port}: ${errorMessage(err)}`);
  }
  if (reply.t === 'error') {
    stream.destroy();
    throw new DialError(reply.code, reply.message || reply.code);
  }
  return stream;
}
