import type { Readable } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { Forward, Incoming, ReplyCode } from '../protocol/messages.ts';
import { requestStream, HeaderRefused } from '../protocol/request.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { FORWARD_ANSWER_TIMEOUT_MS } from '../protocol/limits.ts';
import type { AgentSession } from './registry.ts';
import type { Directory, Location } from './directory.ts';
import type { CallerShares, Share } from './fair-share.ts';
import type { StreamHold } from './hold.ts';

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
 * the fair share counts besides the address. `via`: the relay that
 * authenticated the caller when it is another relay of the cluster (a
 * forwarded stream). `hold`: where the bytes of the stream the relay opens
 * for the caller are charged (the caller's, with its own stream's).
 */
export type Caller = ({ kind: 'agent'; address: string } | { kind: 'gateway'; remote: string }) & { source?: string; via?: string; hold?: StreamHold };

const ZERO_ADDRESS = '0x0000000000000000000000000000000000000000';
/** Times one stream may be moved to a newer session of its device while it waits for an answer (a device that keeps reconnecting cannot hold it forever). */
const MAX_MOVES = 2;

/**
 * Streams waiting for a device session's answer to `incoming`, by session:
 * when a newer session of the address publishes, they are asked there
 * instead (moveWaitingStreams). A device whose address changed leaves its old
 * session dead; a stream routed to it in the second before the device was
 * back would otherwise hang until that session is dropped.
 */
const waiting = new WeakMap<AgentSession, Set<() => void>>();

/** The route's session was superseded before the device answered: ask the address's newest session. */
class MovedRoute extends RouteError {
  constructor(to: string) {
    super('unavailable', `device ${to} moved to a newer session while the stream waited for its answer`);
  }
}

/**
 * A newer session of the same address published: every stream still waiting
 * for `superseded`'s answer is withdrawn from it (reset there) and routed
 * again, to the newest session.
 */
export function moveWaitingStreams(superseded: AgentSession): void {
  for (const move of [...(waiting.get(superseded) ?? [])]) move();
}

/**
 * Opens a stream to a device's published port on behalf of a caller and
 * returns it once the device said ok. The relay checks what it can (online,
 * published, mode) so unwanted traffic never reaches the device's link; the
 * device checks again, and its check is the one that counts.
 */
export async function dialDevice(directory: Directory, relayAddress: string, caller: Caller, to: string, port: number, shares?: CallerShares): Promise<MuxStream> {
  return (await routeToDevice(directory, relayAddress, caller, to, port, false, shares)).stream;
}

/** A stream the device accepted, and whether its bytes are an end-to-end TLS session (the client must run it). */
export interface Routed {
  stream: MuxStream;
  e2e: boolean;
}

/**
 * dialDevice, also reporting the device's `e2e` flag, which the relay passes
 * on to an agent client. `e2e`: the caller (an agent) asked for the
 * end-to-end layer; it is passed on in `incoming` (and `forward`). The directory says where the device is: here, or
 * on another relay of the cluster (then the stream is forwarded to it). A
 * relay that turns out not to hold the device (unreachable, or it answers
 * `offline`) makes its entry stale, and the device is looked up once more.
 * The fair share toward the device is counted here in both cases.
 */
export async function routeToDevice(directory: Directory, relayAddress: string, caller: Caller, to: string, port: number, e2e: boolean, shares?: CallerShares, early?: Readable): Promise<Routed> {
  let where = await directory.locate(to);
  let moves = 0;
  for (let attempt = 0; ; attempt++) {
    if (!where) throw new RouteError('offline', `device ${to} is not connected`);
    if (where.kind === 'local') {
      try {
        return await routeLocal(where.session, relayAddress, caller, to, port, e2e, shares, early);
      } catch (err) {
        if (!(err instanceof MovedRoute) || ++moves > MAX_MOVES) throw err;
        where = await directory.locate(to, true);
        attempt--;
        continue;
      }
    }
    try {
      return await withShare(shares, caller, to, () => forwardTo(where as Extract<Location, { kind: 'relay' }>, caller, to, port, e2e, early));
    } catch (err) {
      if (!(err instanceof StaleRoute)) throw err;
      where.stale();
      const tried = where.relay;
      where = attempt === 0 ? await directory.locate(to, true) : undefined;
      if (where?.kind === 'relay' && where.relay === tried) where = undefined;
      if (!where) throw err.error;
    }
  }
}

/**
 * Runs open() under a fair-share slot of caller toward device `to`: the slot
 * is pending until open() settles and held until the stream closes.
 */
export async function withShare(shares: CallerShares | undefined, caller: Caller, to: string, open: () => Promise<Routed>): Promise<Routed> {
  const callers = [caller.kind === 'agent' ? caller.address : undefined, caller.source].filter((c): c is string => c !== undefined);
  const share: Share | string | undefined = shares?.take(callers, to);
  if (typeof share === 'string') throw new RouteError('unavailable', `too many streams toward ${to}: ${share}`);
  let routed: Routed;
  try {
    routed = await open();
  } catch (err) {
    share?.release();
    throw err;
  }
  if (share) {
    share.answered();
    if (routed.stream.destroyed) share.release();
    else routed.stream.once('close', share.release);
  }
  return routed;
}

/**
 * The one answer for a port the caller may not use, the same as for a port
 * that is not published: a caller learns nothing about ports it may not use.
 */
export function notPublished(to: string, port: number): RouteError {
  return new RouteError('no-such-port', `device ${to} does not publish port ${port}`);
}

/**
 * Whether the relay answers a connect for this port itself: never for a port
 * the caller may use; for the others only when the device publishes no
 * protected port. The relay cannot tell a fleet member, so the device
 * answers for its protected ports, inside the end-to-end layer; it then
 * answers for its unpublished and private ports the same way, or their
 * quick answer from the relay would tell them apart from the protected ones.
 */
function refusedHere(device: AgentSession, caller: Caller, port: number, e2e: boolean): boolean {
  const published = device.ports.get(port);
  const usable = published !== undefined && (published.mode === 'public' || (caller.kind === 'agent' && (published.mode === 'protected' || published.allow?.includes(caller.address) === true)));
  if (usable) return false;
  if (caller.kind === 'gateway' || !e2e) return true;
  for (const p of device.ports.values()) if (p.mode === 'protected') return false;
  return true;
}

/** Routes to a session of this relay: the relay's own checks, then `incoming` to the device. */
export async function routeLocal(device: AgentSession, relayAddress: string, caller: Caller, to: string, port: number, e2e: boolean, shares?: CallerShares, early?: Readable): Promise<Routed> {
  if (refusedHere(device, caller, port, e2e)) throw notPublished(to, port);
  // Fair share of the device's stream slots: counted until the stream closes.
  return withShare(shares, caller, to, () => openLocal(device, relayAddress, caller, to, port, e2e, early));
}

/**
 * What the caller already sent behind its header (the client's end-to-end
 * TLS ClientHello, sent without waiting for our answer) goes on right behind
 * the header we send: the device's answer can then carry its TLS reply, a
 * round trip earlier. The device reads these bytes only after it decided; the
 * rest of the caller's bytes follow once the streams are spliced.
 */
function passEarly(early: Readable | undefined, next: MuxStream): Buffer | null {
  if (!early || early.readableLength === 0 || early.destroyed) return null;
  const bytes = early.read() as Buffer | null;
  if (bytes !== null && bytes.length > 0) next.write(bytes);
  return bytes;
}

/** A new stream to a device's session; `offline` if the session no longer takes streams (going away). */
export function openDeviceStream(device: AgentSession, to: string): MuxStream {
  let stream: MuxStream;
  try {
    stream = device.mux.open();
  } catch (err) {
    throw new RouteError('offline', `device ${to} is going away: ${errorMessage(err)}`);
  }
  stream.on('error', () => {});
  return stream;
}

async function openLocal(device: AgentSession, relayAddress: string, caller: Caller, to: string, port: number, e2e: boolean, early?: Readable): Promise<Routed> {
  const stream = openDeviceStream(device, to);
  caller.hold?.attach(stream);
  const from = caller.kind === 'agent' ? caller.address : ZERO_ADDRESS;
  const header: Incoming = { t: 'incoming', from, port, via: caller.via ?? relayAddress, ...(e2e && caller.kind === 'agent' ? { e2e: true as const } : {}) };
  let reply;
  let passed: Buffer | null = null;
  let moved = false;
  const move = (): void => {
    moved = true;
    stream.reset();
  };
  const waitingHere = waiting.get(device) ?? new Set<() => void>();
  waiting.set(device, waitingHere);
  waitingHere.add(move);
  try {
    const answer = requestStream(stream, header);
    passed = passEarly(early, stream);
    reply = await answer;
  } catch (err) {
    if (moved) {
      // Asked again elsewhere: the caller's early bytes go there.
      if (passed && early && !early.destroyed) early.unshift(passed);
      throw new MovedRoute(to);
    }
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (refused) throw new RouteError(refused.code, refused.message || `device refused: ${refused.code}`);
    throw new RouteError('unavailable', `device ${to} did not answer for port ${port}: ${errorMessage(err)}`);
  } finally {
    waitingHere.delete(move);
  }
  if (reply.e2e && caller.kind === 'gateway') {
    // The gateway has no key to run the end-to-end layer with: to it, such a port is not there.
    stream.destroy();
    throw notPublished(to, port);
  }
  return { stream, e2e: reply.e2e === true };
}

/** The relay a directory entry named does not hold the device (any more). */
class StaleRoute extends Error {
  readonly error: RouteError;
  constructor(error: RouteError) {
    super(error.message);
    this.error = error;
  }
}

/** One extra hop: `forward` to the relay holding the device, which routes it as its own caller's and answers for the device. */
async function forwardTo(where: Extract<Location, { kind: 'relay' }>, caller: Caller, to: string, port: number, e2e: boolean, early?: Readable): Promise<Routed> {
  let stream: MuxStream;
  try {
    stream = await where.open();
  } catch (err) {
    throw new StaleRoute(new RouteError('offline', `device ${to} was on relay ${where.relay}, which is unreachable: ${errorMessage(err)}`));
  }
  stream.on('error', () => {});
  caller.hold?.attach(stream);
  const header: Forward =
    caller.kind === 'agent'
      ? { t: 'forward', to, port, from: caller.address, ...(e2e ? { e2e: true as const } : {}) }
      : { t: 'forward', to, port, from: ZERO_ADDRESS, gateway: true };
  let reply;
  let passed: Buffer | null = null;
  try {
    const answer = requestStream(stream, header, FORWARD_ANSWER_TIMEOUT_MS);
    passed = passEarly(early, stream);
    reply = await answer;
  } catch (err) {
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    // Tried again elsewhere: the caller's early bytes go there.
    if (refused?.code === 'offline' && passed && early && !early.destroyed) early.unshift(passed);
    if (refused?.code === 'offline') throw new StaleRoute(new RouteError('offline', refused.message || `device ${to} is not connected`));
    if (refused) throw new RouteError(refused.code, refused.message || `relay ${where.relay} refused: ${refused.code}`);
    throw new RouteError('unavailable', `relay ${where.relay} did not answer for ${to}:${port}: ${errorMessage(err)}`);
  }
  return { stream, e2e: reply.e2e === true };
}
