import type { MuxStream } from '../mux/index.ts';
import type { Incoming, ReplyCode } from '../protocol/messages.ts';
import { requestStream, HeaderRefused } from '../protocol/request.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import type { SessionSet } from './registry.ts';
import type { CallerShares } from './fair-share.ts';

export class RouteError extends DiodeError {
  readonly reply: ReplyCode;
  constructor(reply: ReplyCode, message: string) {
    super(`EROUTE_${reply.toUpperCase().replace(/-/g, '_')}`, message);
    this.name = 'RouteError';
    this.reply = reply;
  }
}

/**
 * Who asks for a stream: an authenticated agent, or the public gateway (no
 * identity: public ports only). `source` (IPv4 address or IPv6 /64) is what
 * the fair share counts besides the address.
 */
export type Caller = { kind: 'agent'; address: string; source?: string } | { kind: 'gateway'; remote: string; source?: string };

/**
 * Opens a stream to a device's published port on behalf of a caller and
 * returns it once the device said ok. The relay checks what it can (online,
 * published, mode) so unwanted traffic never reaches the device's link; the
 * device checks again, and its check is the one that counts.
 */
export async function dialDevice(registry: SessionSet, relayAddress: string, caller: Caller, to: string, port: number, shares?: CallerShares): Promise<MuxStream> {
  return (await routeToDevice(registry, relayAddress, caller, to, port, false, shares)).stream;
}

/** A stream the device accepted, and whether its bytes are an end-to-end TLS session (the client must run it). */
export interface Routed {
  stream: MuxStream;
  e2e: boolean;
}

/**
 * dialDevice, also reporting the device's `e2e` flag, which the relay passes
 * on to an agent client. `e2e`: the caller (an agent) asked for the
 * end-to-end layer; it is passed on in `incoming`.
 */
export async function routeToDevice(registry: SessionSet, relayAddress: string, caller: Caller, to: string, port: number, e2e: boolean, shares?: CallerShares): Promise<Routed> {
  const device = registry.publisher(to);
  if (!device) throw new RouteError('offline', `device ${to} is not connected`);
  const published = device.ports.get(port);
  if (!published) throw new RouteError('no-such-port', `device ${to} does not publish port ${port}`);
  if (caller.kind === 'gateway' && published.mode !== 'public') {
    throw new RouteError('denied', `port ${port} of ${to} is ${published.mode}, not public`);
  }
  if (caller.kind === 'agent' && published.mode === 'private' && !published.allow?.includes(caller.address)) {
    throw new RouteError('denied', `${caller.address} is not on the allow list of port ${port} of ${to}`);
  }
  // Fair share of the device's stream slots: counted until the stream closes.
  const callers = [caller.kind === 'agent' ? caller.address : undefined, caller.source].filter((c): c is string => c !== undefined);
  const share = shares?.take(callers, to);
  if (typeof share === 'string') throw new RouteError('unavailable', `too many streams toward ${to}: ${share}`);
  let stream: MuxStream;
  try {
    stream = device.mux.open();
  } catch (err) {
    share?.release();
    throw new RouteError('offline', `device ${to} is going away: ${errorMessage(err)}`);
  }
  stream.on('error', () => {});
  if (share) stream.once('close', share.release);
  const from = caller.kind === 'agent' ? caller.address : '0x0000000000000000000000000000000000000000';
  const header: Incoming = { t: 'incoming', from, port, via: relayAddress, ...(e2e && caller.kind === 'agent' ? { e2e: true as const } : {}) };
  let reply;
  try {
    reply = await requestStream(stream, header);
    share?.answered();
  } catch (err) {
    share?.release();
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (refused) throw new RouteError(refused.code, refused.message || `device refused: ${refused.code}`);
    throw new RouteError('unavailable', `device ${to} did not answer for port ${port}: ${errorMessage(err)}`);
  }
  if (reply.e2e && caller.kind === 'gateway') {
    // The gateway has no key to run the end-to-end layer with.
    stream.destroy();
    throw new RouteError('denied', `port ${port} of ${to} needs a client key (end-to-end layer)`);
  }
  return { stream, e2e: reply.e2e === true };
}
