import type { Duplex } from 'node:stream';
import { RelayLink } from '../link/relay-link.ts';
import { CLIENT_DATA_POOL } from '../link/data-pool.ts';
import type { Identity } from '../identity/index.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { Logger } from '../util/log.ts';
import type { LearnedRelays } from '../link/learned-relays.ts';
import { dialThroughRelay, DialError } from './dial.ts';

/**
 * A client's links to its configured relays, one per relay (each stays on
 * its own relay: a device may be on any of them). Until relays share a
 * registry (the cluster), a device is found by asking all of them. Each
 * keeps `dataPool` data connections ready (0: none, every stream on the link).
 */
export function clientLinks(relays: RelayEntry[], identity: Identity, log: Logger, options: { learned?: LearnedRelays; dataPool?: number } = {}): RelayLink[] {
  const { learned, dataPool = CLIENT_DATA_POOL } = options;
  return relays.map((relay) => new RelayLink({ relays: [relay], identity, log, learned, dataPool }));
}

/** The link to report in `diode status`: the first one with a live session, else the first. */
export function currentLink(links: readonly RelayLink[]): RelayLink {
  return links.find((l) => l.session !== undefined && !l.session.closed) ?? links[0];
}

/** Which refusal to report when no relay had the device: the most specific one (a device's own answer ranks 0). */
const REFUSAL_RANK: Readonly<Partial<Record<DialError['reply'], number>>> = Object.freeze({
  unavailable: 1,
  offline: 2,
  'no-relay': 3,
});

/**
 * Opens a stream to <address>:<port> through whichever relay holds the
 * device: the relays with a live session are asked in parallel (all of them
 * when none is up yet), the first that gets the device's ok wins and the
 * others' streams, should they succeed later, are reset. When every relay
 * refuses, the most telling refusal is thrown (a device's `denied` over
 * another relay's `offline`).
 */
export function dialAnyRelay(links: readonly RelayLink[], identity: Identity, address: string, port: number): Promise<Duplex> {
  if (links.length === 1) return dialThroughRelay(links[0], identity, address, port);
  const up = links.filter((l) => l.session !== undefined && !l.session.closed);
  const ask = up.length > 0 ? up : links;
  return new Promise((resolve, reject) => {
    let pending = ask.length;
    let won = false;
    const refusals: unknown[] = [];
    for (const link of ask) {
      dialThroughRelay(link, identity, address, port).then(
        (stream) => {
          if (won) return void stream.destroy();
          won = true;
          resolve(stream);
        },
        (err: unknown) => {
          refusals.push(err);
          if (--pending > 0 || won) return;
          const rank = (e: unknown) => (e instanceof DialError ? REFUSAL_RANK[e.reply] ?? 0 : 4);
          reject(refusals.reduce((best, e) => (rank(e) < rank(best) ? e : best)));
        },
      );
    }
  });
}
