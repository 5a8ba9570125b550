import type { MuxStream } from '../mux/index.ts';
import type { RelayServer } from '../relay/server.ts';
import { dialDevice, RouteError } from '../relay/router.ts';
import type { ReplyCode } from '../protocol/messages.ts';
import { Rep, type RepCode, type SocksRequest } from '../socks/protocol.ts';
import { SocksRefusal, type SocksConnector } from '../socks/server.ts';
import { parseDiodeHost, type DiodeTarget } from '../client/hostname.ts';
import { errorMessage } from '../util/errors.ts';
import { sourceKey } from './limiter.ts';

/** How the gateway answers each route failure, in SOCKS and in HTTP (issue #3). */
export const GATEWAY_ANSWER: Readonly<Record<ReplyCode, { rep: RepCode; status: number; title: string }>> = Object.freeze({
  offline: { rep: Rep.hostUnreachable, status: 502, title: 'Device offline' },
  denied: { rep: Rep.notAllowed, status: 403, title: 'Port not public' },
  'no-such-port': { rep: Rep.connectionRefused, status: 502, title: 'Port not published' },
  refused: { rep: Rep.connectionRefused, status: 502, title: 'Device refused the connection' },
  unavailable: { rep: Rep.hostUnreachable, status: 504, title: 'Device did not answer' },
  'bad-request': { rep: Rep.generalFailure, status: 502, title: 'Bad gateway' },
});

/** The relay state the gateway routes through: its directory (devices here or on other relays of its cluster), its address and counters. */
export type GatewayRelay = Pick<RelayServer, 'directory' | 'address' | 'stats'> & Partial<Pick<RelayServer, 'shares'>>;

/** Resolves a host name the gateway serves: `<address>[-<port>]` under `.diode`, `.diode.link` or the gateway domain. */
export function gatewayTarget(host: string, port: number, domain: string | undefined): DiodeTarget | undefined {
  return parseDiodeHost(host, port, domain ? [domain] : []);
}

/** Opens a stream to a PUBLIC port (dialDevice refuses the rest for a gateway caller) and counts the outcome. */
export async function dialPublic(relay: GatewayRelay, remote: string, target: DiodeTarget, via: 'socks' | 'http'): Promise<MuxStream> {
  try {
    const source = sourceKey(remote.replace(/:\d+$/, ''));
    const stream = await dialDevice(relay.directory, relay.address, { kind: 'gateway', remote, source }, target.address, target.port, relay.shares);
    relay.stats.count(`gateway_${via}_routed`);
    return stream;
  } catch (err) {
    const code: ReplyCode = err instanceof RouteError ? err.reply : 'unavailable';
    relay.stats.count(`gateway_${via}_${code.replace(/-/g, '_')}`);
    throw err instanceof RouteError ? err : new RouteError('unavailable', errorMessage(err));
  }
}

/**
 * The gateway's SOCKS connector: only device names, only public ports.
 * IP literals and other names are refused as not allowed (this is no open
 * proxy) without any DNS lookup.
 */
export function gatewayConnector(relay: GatewayRelay, domain: string | undefined): SocksConnector {
  return async (request: SocksRequest, remote: string) => {
    if (request.addressType !== 'domain') {
      relay.stats.count('gateway_socks_not_a_device');
      throw new SocksRefusal(Rep.notAllowed, `${request.host} is an IP address; the gateway only reaches <address>.diode names`);
    }
    const target = gatewayTarget(request.host, request.port, domain);
    if (!target) {
      relay.stats.count('gateway_socks_not_a_device');
      throw new SocksRefusal(Rep.hostUnreachable, `${request.host} is not a <address>.diode name`);
    }
    try {
      return await dialPublic(relay, remote, target, 'socks');
    } catch (err) {
      const route = err as RouteError;
      throw new SocksRefusal(GATEWAY_ANSWER[route.reply].rep, route.message);
    }
  };
}
