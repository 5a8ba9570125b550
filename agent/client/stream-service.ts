import { readFileSync } from 'node:fs';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import { keyFilePath } from '../identity/index.ts';
import { formatRelayEntry, type RelayEntry } from '../config/relay-entry.ts';
import type { StreamStats } from '../ops/stream-stats.ts';
import type { StreamService } from '../ops/stream-socket.ts';
import type { StreamRequest } from '../ops/stream-protocol.ts';
import { parsePort } from '../util/hostport.ts';
import { errorMessage } from '../util/errors.ts';
import { NameError } from '../names/name.ts';
import { resolveRelays } from '../cli/relays.ts';
import { parseTargetHost } from './target.ts';
import { clientResolver } from './names.ts';
import { dialAnyRelay } from './lookup.ts';
import { DialError } from './dial.ts';
import { proxyDialError } from './proxy-errors.ts';

export interface ClientStreamOptions {
  home: string;
  identity: Identity;
  /** The relays this agent was started with (--relay or the config), one link each. */
  relays: readonly RelayEntry[];
  links: readonly RelayLink[];
  stats: StreamStats;
}

const hexKey = (text: string): string => text.trim().replace(/^0x/i, '').toLowerCase();

/**
 * What a socksd or bind offers `diode proxy` on its stream socket: the
 * stream the proxy's own session would have opened, on this agent's relay
 * session, only when that is the same thing: the key in the state directory
 * is this agent's (read again at each request: a key replaced since the agent
 * started is not its), the relays the proxy would use (its --relay, else the
 * config's, read now) are this agent's, and a link is up (a fresh session may
 * get through where this agent's link waits to reconnect). The names are
 * resolved as the proxy's own would be: a resolver per stream (the person's
 * names, then the relays, pinned), its notice going to the proxy's stderr.
 */
export function clientStreamService(options: ClientStreamOptions): StreamService {
  const { home, identity, links, stats } = options;
  const relays = options.relays.map(formatRelayEntry).join(',');
  return {
    refusal(request: StreamRequest): string | undefined {
      if (!links.some((l) => l.session !== undefined && !l.session.closed)) return 'its relay link is down';
      let key: string;
      try {
        key = hexKey(readFileSync(keyFilePath(home), 'latin1'));
      } catch (err) {
        return `cannot read the key file: ${errorMessage(err)}`;
      }
      if (key !== hexKey(identity.privateKey)) return 'the key file holds another key than the one this agent runs with';
      const wanted = resolveRelays(request.relay, home).map(formatRelayEntry).join(',');
      if (wanted !== relays) return `the caller's relays (${wanted}) are not this agent's (${relays})`;
      parseTargetHost(request.host, parsePort(request.port, 'proxy: port'), 'proxy');
      return undefined;
    },
    async open(request: StreamRequest, notice: (line: string) => void) {
      const target = parseTargetHost(request.host, parsePort(request.port, 'proxy: port'), 'proxy');
      try {
        const named = await clientResolver(home, links, notice).target(target);
        return await dialAnyRelay(links, identity, named.address, named.port);
      } catch (err) {
        const reason = err instanceof DialError ? err.reply : err instanceof NameError ? `name-${err.reason}` : 'error';
        const failure = proxyDialError(err, request.host, target.port);
        stats.fail(reason, failure.message);
        throw failure;
      }
    },
    opened: (socket) => stats.track(socket),
  };
}
