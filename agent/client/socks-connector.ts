import { connect, isIP, type Socket } from 'node:net';
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { Rep, type RepCode, type SocksRequest } from '../socks/protocol.ts';
import { SocksRefusal, type SocksConnector } from '../socks/server.ts';
import { UsageError, errorMessage } from '../util/errors.ts';
import { classifyHost } from '../names/host.ts';
import { NameError } from '../names/name.ts';
import type { NameResolver } from '../names/resolver.ts';
import { DialError } from './dial.ts';
import { dialAnyRelay } from './lookup.ts';
import { canonicalIp, isLinkLocalIp, isLoopbackIp, isUnspecifiedIp } from '../util/ip.ts';

/** How socksd answers each dial failure (issue #2: offline and unpublished are "connection refused"). */
const REPLY_FOR: Record<DialError['reply'], RepCode> = {
  offline: Rep.connectionRefused,
  'no-such-port': Rep.connectionRefused,
  refused: Rep.connectionRefused,
  denied: Rep.notAllowed,
  'bad-request': Rep.generalFailure,
  // The same reply the gateway gives: the device did not answer (the relay's deadline passed).
  unavailable: Rep.hostUnreachable,
  'no-relay': Rep.networkUnreachable,
  'no-e2e': Rep.generalFailure,
  // Dialled again over the relay link before it could reach socksd (dial.ts); general failure if it still did.
  'data-closed': Rep.generalFailure,
};

/**
 * How socksd answers a name that does not resolve: nobody knows it (0x04,
 * as for a host that does not exist), a relay moved a pinned name or
 * forged a claim (0x02: refused by this machine's own rule).
 */
const NAME_REPLY_FOR: Readonly<Record<NameError['reason'], RepCode>> = Object.freeze({
  unknown: Rep.hostUnreachable,
  moved: Rep.notAllowed,
  'bad-answer': Rep.notAllowed,
});

/** The IP of a "ip:port" / "[ip]:port" remote. */
function remoteIp(remote: string): string {
  return remote.replace(/^\[/, '').replace(/\]?:\d+$/, '');
}

/** What socksd does with a name that is not `<name>.diode` or `<address>.diode` (`--fallback`, as the Diode client's -fallback). */
export type SocksFallback = 'refuse' | 'direct';

export function parseFallback(text: string): SocksFallback {
  if (text !== 'refuse' && text !== 'direct') throw new UsageError(`--fallback: "${text}" must be direct or refuse`);
  return text;
}

/** ms a direct (fallback) connection has to be established. */
export const DIRECT_CONNECT_TIMEOUT_MS = 10_000;

/** SOCKS replies for the errno of a failed direct connection. */
const DIRECT_REPLY_FOR: Readonly<Record<string, RepCode>> = Object.freeze({
  ECONNREFUSED: Rep.connectionRefused,
  ENOTFOUND: Rep.hostUnreachable,
  EAI_AGAIN: Rep.hostUnreachable,
  EHOSTUNREACH: Rep.hostUnreachable,
  ENETUNREACH: Rep.networkUnreachable,
  ETIMEDOUT: Rep.ttlExpired,
});

/**
 * Why a direct connection to `ip` is not for a client on another machine:
 * this machine's loopback, its own addresses (where its local services
 * listen), link-local addresses (a cloud's metadata service). undefined: fine.
 */
export function forbiddenForRemote(ip: string, own: ReadonlySet<string> = ownAddresses()): string | undefined {
  if (isLoopbackIp(ip) || isUnspecifiedIp(ip)) return 'this machine\'s loopback';
  if (isLinkLocalIp(ip)) return 'a link-local address';
  if (own.has(canonicalIp(ip))) return 'an address of this machine';
  return undefined;
}

/** Every address of this machine's interfaces, canonical. */
function ownAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(canonicalIp(a.address));
  return out;
}

/**
 * Where a direct connection for a client on another machine may go: the
 * name resolved here, once, and every address that is this machine's own,
 * its loopback or link-local dropped (the connection then goes to the
 * address checked, so a name cannot resolve elsewhere a moment later).
 */
async function remoteTarget(host: string): Promise<string> {
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    try {
      addresses = (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      throw new SocksRefusal(DIRECT_REPLY_FOR[code] ?? Rep.hostUnreachable, `direct ${host}: ${errorMessage(err)}`);
    }
  }
  const own = ownAddresses();
  const allowed = addresses.find((a) => forbiddenForRemote(a, own) === undefined);
  if (allowed !== undefined) return allowed;
  const why = forbiddenForRemote(addresses[0], own) ?? 'no address';
  throw new SocksRefusal(Rep.notAllowed, `direct ${host}: ${addresses[0]} is ${why}, which socksd --allow-remote --fallback direct keeps from clients on other machines`, 'not-allowed');
}

/** A plain TCP connection from this machine (DNS by the OS), for --fallback direct. */
function connectDirect(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, allowHalfOpen: true, noDelay: true });
    socket.setTimeout(DIRECT_CONNECT_TIMEOUT_MS, () => socket.destroy(Object.assign(new Error(`no connection within ${DIRECT_CONNECT_TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' })));
    socket.once('error', (err: NodeJS.ErrnoException) => reject(new SocksRefusal(DIRECT_REPLY_FOR[err.code ?? ''] ?? Rep.generalFailure, `direct ${host}:${port}: ${errorMessage(err)}`)));
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/**
 * socksd's connector: `<name>.diode` and `<address>.diode` go through the
 * relay (a name resolved by `names` first: the person's own names, then the
 * relays', pinned). IP literals and other names are refused without any DNS
 * lookup, so nothing leaks, unless fallback is 'direct': then they are
 * connected from this machine as any proxy would (a browser's system proxy).
 */
export function diodeConnector(links: RelayLink[], identity: Identity, names: NameResolver, fallback: SocksFallback = 'refuse'): SocksConnector {
  return async (request: SocksRequest, remote: string) => {
    const sorted = request.addressType === 'domain' ? classifyHost(request.host, request.port) : undefined;
    if (sorted?.kind !== 'device') {
      // A malformed diode name is never looked up in DNS, whatever the fallback.
      if (fallback === 'direct' && sorted?.kind !== 'malformed') {
        // A client on another machine (--allow-remote) does not get this machine's loopback, own or link-local addresses.
        const host = isLoopbackIp(remoteIp(remote)) ? request.host : await remoteTarget(request.host);
        return connectDirect(host, request.port);
      }
      if (request.addressType !== 'domain') throw new SocksRefusal(Rep.addressTypeNotSupported, `${request.host} is an IP address; use <name>.diode or <address>.diode (or socksd --fallback direct)`, 'not-a-device');
      const hint = sorted?.kind === 'malformed' ? `${sorted.reason}; such a name is never looked up in DNS` : 'socksd --fallback direct connects such names directly';
      throw new SocksRefusal(Rep.hostUnreachable, `${request.host} is not a <name>.diode or <address>.diode name (${hint})`, 'not-a-device');
    }
    try {
      const target = await names.target(sorted.host);
      return await dialAnyRelay(links, identity, target.address, target.port);
    } catch (err) {
      if (err instanceof NameError) throw new SocksRefusal(NAME_REPLY_FOR[err.reason], err.message, `name-${err.reason}`);
      if (err instanceof DialError) throw new SocksRefusal(REPLY_FOR[err.reply], err.message, err.reply);
      throw err;
    }
  };
}
