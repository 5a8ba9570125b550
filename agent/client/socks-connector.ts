import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { Rep, type RepCode, type SocksRequest } from '../socks/protocol.ts';
import { SocksRefusal, type SocksConnector } from '../socks/server.ts';
import { parseDiodeHost } from './hostname.ts';
import { dialThroughRelay, DialError } from './dial.ts';

/** How socksd answers each dial failure (issue #2: offline and unpublished are "connection refused"). */
const REPLY_FOR: Record<DialError['reply'], RepCode> = {
  offline: Rep.connectionRefused,
  'no-such-port': Rep.connectionRefused,
  refused: Rep.connectionRefused,
  denied: Rep.notAllowed,
  'bad-request': Rep.generalFailure,
  unavailable: Rep.generalFailure,
  'no-relay': Rep.networkUnreachable,
};

/**
 * socksd's connector: only `<address>.diode` names are served. IP literals and
 * other names are refused without any DNS lookup, so nothing leaks.
 */
export function diodeConnector(link: RelayLink, identity: Identity): SocksConnector {
  return async (request: SocksRequest) => {
    if (request.addressType !== 'domain') {
      throw new SocksRefusal(Rep.addressTypeNotSupported, `${request.host} is an IP address; use <address>.diode`);
    }
    const target = parseDiodeHost(request.host, request.port);
    if (!target) throw new SocksRefusal(Rep.hostUnreachable, `${request.host} is not a <address>.diode name`);
    try {
      return await dialThroughRelay(link, identity, target.address, target.port);
    } catch (err) {
      if (err instanceof DialError) throw new SocksRefusal(REPLY_FOR[err.reply], err.message);
      throw err;
    }
  };
}
