import type { MuxStream } from '../mux/index.ts';
import type { RelayServer } from '../relay/server.ts';
import { dialDevice, RouteError } from '../relay/router.ts';
import type { ReplyCode } from '../protocol/messages.ts';
import { Rep, type RepCode, type SocksRequest } from '../socks/protocol.ts';
import { SocksRefusal, type SocksConnector } from '../socks/server.ts';
import { classifyHost, type DiodeHost, type HostClass } from '../names/host.ts';
import { NameError } from '../names/name.ts';
import { NameResolver } from '../names/resolver.ts';
import type { NameTable } from '../relay/names.ts';
import { errorMessage } from '../util/errors.ts';
import { sourceKey } from './limiter.ts';
import { StreamHold } from '../relay/hold.ts';

/** How the gateway answers each route failure, in SOCKS and in HTTP (issue #3). */
export const GATEWAY_ANSWER: Readonly<Record<ReplyCode, { rep: RepCode; status: number; title: string }>> = Object.freeze({
  offline: { rep: Rep.hostUnreachable, status: 502, title: 'Device offline' },
  denied: { rep: Rep.notAllowed, status: 403, title: 'Port not public' },
  'no-such-port': { rep: Rep.connectionRefused, status: 502, title: 'Port not published' },
  refused: { rep: Rep.connectionRefused, status: 502, title: 'Device refused the connection' },
  unavailable: { rep: Rep.hostUnreachable, status: 504, title: 'Device did not answer' },
  'bad-request': { rep: Rep.generalFailure, status: 502, title: 'Bad gateway' },
  // Never for the gateway (its streams use no data connections); a bad gateway if a device said it.
  'data-closed': { rep: Rep.generalFailure, status: 502, title: 'Bad gateway' },
});

/** How the gateway answers a name nobody holds (no DNS lookup is ever made): SOCKS 0x04, HTTP 404. */
export const UNKNOWN_NAME_ANSWER = Object.freeze({ rep: Rep.hostUnreachable, status: 404, title: 'Unknown name' });

/** The relay state the gateway routes through: its directory (devices here or on other relays of its cluster), its names, its address and counters. */
export type GatewayRelay = Pick<RelayServer, 'directory' | 'names' | 'address' | 'stats'> & Partial<Pick<RelayServer, 'shares' | 'holds'>>;

/** Sorts a host name the gateway serves: `<address>[-<port>]` or `<name>[-<port>]` under `.diode`, `.diode.link` or the gateway domain. */
export function gatewayTarget(host: string, port: number, domain: string | undefined): HostClass {
  return classifyHost(host, port, domain ? [domain] : []);
}

/** The gateway's lookup chain: its relay's (or cluster's) names alone, no pins (it has no memory of its own to keep). */
export function gatewayNames(names: NameTable): NameResolver {
  return new NameResolver({
    sources: [
      {
        label: 'this relay',
        pinned: false,
        lookup: async (name) => {
          const record = await names.lookup(name);
          return record ? { address: record.address, from: 'this relay' } : undefined;
        },
      },
    ],
  });
}

const resolvers = new WeakMap<NameTable, NameResolver>();

/** Opens a stream to a PUBLIC port (dialDevice refuses the rest for a gateway caller), its name resolved first, and counts the outcome. */
export async function dialPublic(relay: GatewayRelay, remote: string, host: DiodeHost, via: 'socks' | 'http'): Promise<MuxStream> {
  let resolver = resolvers.get(relay.names);
  if (!resolver) resolvers.set(relay.names, (resolver = gatewayNames(relay.names)));
  try {
    const source = sourceKey(remote.replace(/:\d+$/, ''));
    const target = await resolver.target(host);
    // What the device's stream holds for this client counts against its source, as an agent's would.
    const hold = relay.holds && new StreamHold(relay.holds.holder(source, `gateway client ${remote}`));
    const stream = await dialDevice(relay.directory, relay.address, { kind: 'gateway', remote, source, hold }, target.address, target.port, relay.shares);
    // The relay reads this stream itself (SOCKS splice, HTTP client): bytes are given back as they are read.
    hold?.settle(stream.readableLength + stream.writableLength, 'granted');
    relay.stats.count(`gateway_${via}_routed`);
    return stream;
  } catch (err) {
    if (err instanceof NameError) {
      relay.stats.count(`gateway_${via}_unknown_name`);
      throw err;
    }
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
    const sorted = gatewayTarget(request.host, request.port, domain);
    if (sorted.kind !== 'device') {
      relay.stats.count('gateway_socks_not_a_device');
      throw new SocksRefusal(Rep.hostUnreachable, `${request.host} is not a <name>.diode or <address>.diode name${sorted.kind === 'malformed' ? ` (${sorted.reason})` : ''}`);
    }
    try {
      return await dialPublic(relay, remote, sorted.host, 'socks');
    } catch (err) {
      if (err instanceof NameError) throw new SocksRefusal(UNKNOWN_NAME_ANSWER.rep, err.message);
      const route = err as RouteError;
      throw new SocksRefusal(GATEWAY_ANSWER[route.reply].rep, route.message);
    }
  };
}
