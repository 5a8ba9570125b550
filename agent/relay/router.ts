import type { Duplex } from 'node:stream';
import type { MuxStream } from '../mux/index.ts';
import type { Forward, Incoming, ReplyCode } from '../protocol/messages.ts';
import { requestStream, HeaderRefused } from '../protocol/request.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { FORWARD_ANSWER_TIMEOUT_MS } from '../protocol/limits.ts';
import type { AgentSession } from './registry.ts';
import type { Directory, Location } from './directory.ts';
import type { CallerShares, Share } from './fair-share.ts';
import type { StreamHold } from './hold.ts';
import type { Ahead } from './ahead.ts';
import type { DataConns } from './data-conns.ts';
import { abort } from '../util/pump.ts';
import { dataWaitMs } from '../data/wait.ts';

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
 * device checks again, and its check is the one that counts. (The public
 * gateway's way in: a stream on the device's relay link, never a data
 * connection.)
 */
export async function dialDevice(directory: Directory, relayAddress: string, caller: Caller, to: string, port: number, shares?: CallerShares): Promise<MuxStream> {
  return (await routeToDevice({ directory, relayAddress, caller, to, port, e2e: false, shares })).stream as MuxStream;
}

/** What a route needs: where devices are, who asks for which port, and what it already sent. */
export interface RouteRequest {
  directory: Directory;
  /** This relay's address (`incoming.via` for its own callers). */
  relayAddress: string;
  caller: Caller;
  to: string;
  port: number;
  /** The caller (an agent) asked for the end-to-end layer; passed on in `incoming` (and `forward`). */
  e2e: boolean;
  shares?: CallerShares;
  /** The caller's leg, whose bytes sent ahead of the answer go on to the device leg. */
  ahead?: Ahead;
  /** This relay's data connections: an end-to-end stream of an agent gets a device leg on one of the device's. */
  data?: DataConns;
}

/**
 * A device leg the device accepted, and whether its bytes are an end-to-end
 * TLS session (the client must run it). `leg`: the device's data connection,
 * or a stream on a relay link (the device's own, or a link to the relay of
 * the cluster that holds the device).
 */
export interface Routed {
  stream: Duplex;
  e2e: boolean;
  leg: 'data' | 'link';
  /** A data leg's FIN is its sender's only while this resolves (the device's session, or the link to the relay holding it, answers a ping). */
  confirm?: () => Promise<unknown>;
  /** The device is on another relay of the cluster: the leg is a relay-to-relay data connection or a stream of the link to it. */
  forwarded?: true;
}

/**
 * The route to a device: here, or on another relay of the cluster (then the
 * stream is forwarded to it), as the directory says. A relay that turns out
 * not to hold the device (unreachable, or it answers `offline`) makes its
 * entry stale, and the device is looked up once more; a stream whose session
 * was superseded while it waited is routed to the newest. The fair share
 * toward the device is counted here in all cases.
 */
export async function routeToDevice(req: RouteRequest): Promise<Routed> {
  const { directory, caller, to, shares } = req;
  let where = await directory.locate(to);
  let moves = 0;
  for (let attempt = 0; ; attempt++) {
    if (!where) throw new RouteError('offline', `device ${to} is not connected`);
    if (where.kind === 'local') {
      try {
        return await routeLocal(where.session, req);
      } catch (err) {
        if (!(err instanceof MovedRoute) || ++moves > MAX_MOVES) throw err;
        where = await directory.locate(to, true);
        attempt--;
        continue;
      }
    }
    try {
      return await withShare(shares, caller, to, () => forwardTo(where as Extract<Location, { kind: 'relay' }>, req));
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
export async function routeLocal(device: AgentSession, req: RouteRequest): Promise<Routed> {
  const { caller, to, port, e2e } = req;
  if (refusedHere(device, caller, port, e2e)) throw notPublished(to, port);
  // Fair share of the device's stream slots: counted until the stream closes.
  return withShare(req.shares, caller, to, () => openLocal(device, req));
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

/** Data connections of the device tried for one stream before its relay link is used. */
const MAX_DATA_LEG_TRIES = 2;

/**
 * Asks the device (`incoming`) on `leg`, a new stream of its session or,
 * with `member`, one of its data connections: withdrawn (MovedRoute) if a
 * newer session of the address publishes meanwhile.
 */
async function askDevice(device: AgentSession, req: RouteRequest, header: Incoming, member?: { socket: Duplex; token: string }) {
  const { caller, to, ahead } = req;
  const stream = openDeviceStream(device, to);
  caller.hold?.attach(stream);
  let moved = false;
  const move = (): void => {
    moved = true;
    stream.reset();
  };
  const waitingHere = waiting.get(device) ?? new Set<() => void>();
  waiting.set(device, waitingHere);
  waitingHere.add(move);
  try {
    const answer = requestStream(stream, member ? { ...header, data: member.token } : header);
    ahead?.to(member?.socket ?? stream);
    return { stream, reply: await answer };
  } catch (err) {
    // Asked again elsewhere (another leg, another session): the caller's early bytes go there (the copy is kept).
    ahead?.detach();
    if (member) abort(member.socket);
    if (moved) throw new MovedRoute(to);
    throw err;
  } finally {
    waitingHere.delete(move);
  }
}

async function openLocal(device: AgentSession, req: RouteRequest): Promise<Routed> {
  const { caller, to, port, e2e, ahead, data } = req;
  const from = caller.kind === 'agent' ? caller.address : ZERO_ADDRESS;
  const header: Incoming = { t: 'incoming', from, port, via: caller.via ?? req.relayAddress, ...(e2e && caller.kind === 'agent' ? { e2e: true as const } : {}) };
  if (header.e2e && data) {
    // The device leg on one of the device's data connections; one it no longer holds is replaced by the next.
    for (let tries = 0; tries < MAX_DATA_LEG_TRIES; tries++) {
      // None ready, but some on their way (the device refills as its connections are taken): worth a
      // short wait, or this stream's every byte crosses both links, opened and sealed by the relay.
      const member = data.takeIdle(device) ?? (await data.nextIdle(device, dataWaitMs(device.mux.rttMs)));
      if (!member) {
        // The device hears of this one on its link and, if its pool grows, asks for one more.
        data.missed(device);
        break;
      }
      let asked;
      try {
        asked = await askDevice(device, req, header, member);
      } catch (err) {
        if (err instanceof HeaderRefused && err.reply?.code === 'data-closed') {
          data.stale();
          continue;
        }
        throw answerError(err, to, port);
      }
      // The answer was all this stream was for.
      asked.stream.end();
      asked.stream.resume();
      ahead?.commit();
      return { stream: member.socket, e2e: asked.reply.e2e === true, leg: 'data', confirm: () => device.mux.ping() };
    }
  }
  let asked;
  try {
    asked = await askDevice(device, req, header);
  } catch (err) {
    throw answerError(err, to, port);
  }
  ahead?.commit();
  const { stream, reply } = asked;
  if (reply.e2e && caller.kind === 'gateway') {
    // The gateway has no key to run the end-to-end layer with: to it, such a port is not there.
    stream.destroy();
    throw notPublished(to, port);
  }
  return { stream, e2e: reply.e2e === true, leg: 'link' };
}

/** The device's refusal as the caller gets it, `unavailable` when it did not answer; a withdrawn stream stays a MovedRoute. */
function answerError(err: unknown, to: string, port: number): RouteError {
  if (err instanceof MovedRoute) return err;
  const refused = err instanceof HeaderRefused ? err.reply : undefined;
  if (refused) return new RouteError(refused.code, refused.message || `device refused: ${refused.code}`);
  return new RouteError('unavailable', `device ${to} did not answer for port ${port}: ${errorMessage(err)}`);
}

/** The relay a directory entry named does not hold the device (any more). */
class StaleRoute extends Error {
  readonly error: RouteError;
  constructor(error: RouteError) {
    super(error.message);
    this.error = error;
  }
}

/**
 * One extra hop: `forward` to the relay holding the device, which routes it
 * as its own caller's and answers for the device. An agent's end-to-end
 * stream travels on a relay-to-relay data connection when one is ready (the
 * holder answers `data-closed` for one it no longer holds: the next, two
 * tries in all), else on a stream of the link, as the public gateway's
 * always does; the holding relay may give it a data connection of the
 * device's for its last leg.
 */
async function forwardTo(where: Extract<Location, { kind: 'relay' }>, req: RouteRequest): Promise<Routed> {
  const { caller, to, port, e2e } = req;
  const header: Forward =
    caller.kind === 'agent'
      ? { t: 'forward', to, port, from: caller.address, ...(e2e ? { e2e: true as const } : {}) }
      : { t: 'forward', to, port, from: ZERO_ADDRESS, gateway: true };
  if (header.e2e) {
    for (let tries = 0; tries < MAX_DATA_LEG_TRIES; tries++) {
      const leg = await where.takeData?.();
      if (!leg) break;
      let asked;
      try {
        asked = await askRelay(where, req, { ...header, data: leg.token }, leg.socket);
      } catch (err) {
        if (err instanceof RelayDataClosed) continue;
        throw err;
      }
      // The answer was all the link stream was for.
      asked.stream.end();
      asked.stream.resume();
      return { stream: leg.socket, e2e: asked.reply.e2e === true, leg: 'data', confirm: leg.confirm, forwarded: true };
    }
  }
  const { stream, reply } = await askRelay(where, req, header);
  return { stream, e2e: reply.e2e === true, leg: 'link', forwarded: true };
}

/** The holding relay no longer holds the relay data connection a `forward` named: the next one, or the link. */
class RelayDataClosed extends Error {}

/**
 * Sends `header` on a new stream of the link to the relay holding the
 * device and waits for its answer; the caller's early bytes go on `leg`
 * (the relay data connection the header names) or on that stream. A leg
 * refused or unanswered is closed.
 */
async function askRelay(where: Extract<Location, { kind: 'relay' }>, req: RouteRequest, header: Forward, leg?: Duplex) {
  const { caller, to, port, ahead } = req;
  let stream: MuxStream;
  try {
    stream = await where.open();
  } catch (err) {
    if (leg) abort(leg);
    throw new StaleRoute(new RouteError('offline', `device ${to} was on relay ${where.relay}, which is unreachable: ${errorMessage(err)}`));
  }
  stream.on('error', () => {});
  caller.hold?.attach(stream);
  try {
    const answer = requestStream(stream, header, FORWARD_ANSWER_TIMEOUT_MS);
    ahead?.to(leg ?? stream);
    const reply = await answer;
    ahead?.commit();
    return { stream, reply };
  } catch (err) {
    // Tried again elsewhere: the caller's early bytes go there (the copy is kept).
    ahead?.detach();
    if (leg) abort(leg);
    const refused = err instanceof HeaderRefused ? err.reply : undefined;
    if (leg && refused?.code === 'data-closed') throw new RelayDataClosed(refused.message);
    if (refused?.code === 'offline') throw new StaleRoute(new RouteError('offline', refused.message || `device ${to} is not connected`));
    if (refused) throw new RouteError(refused.code, refused.message || `relay ${where.relay} refused: ${refused.code}`);
    throw new RouteError('unavailable', `relay ${where.relay} did not answer for ${to}:${port}: ${errorMessage(err)}`);
  }
}
