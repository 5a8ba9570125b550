import type { Duplex } from 'node:stream';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { Logger } from '../util/log.ts';
import type { LearnedRelays } from '../link/learned-relays.ts';
import { clientLinks, currentLink, dialAnyRelay } from './lookup.ts';
import type { DiodeTarget } from './hostname.ts';

/** A client's relay session plus dialling with its identity: what proxy and bind share with socksd. */
export class ClientSession {
  /** One link per configured relay: the device may be on any of them (lookup.ts). */
  readonly links: RelayLink[];
  readonly identity: Identity;

  constructor(relays: RelayEntry[], identity: Identity, log: Logger, learned?: LearnedRelays) {
    this.identity = identity;
    this.links = clientLinks(relays, identity, log, learned);
    for (const link of this.links) link.start();
  }

  /** The link `diode status` reports: the first with a live session. */
  get link(): RelayLink {
    return currentLink(this.links);
  }

  /** A stream to the device port, after the relay's and (private ports) the device's checks. */
  dial(target: DiodeTarget): Promise<Duplex> {
    return dialAnyRelay(this.links, this.identity, target.address, target.port);
  }

  async stop(): Promise<void> {
    await Promise.all(this.links.map((l) => l.stop()));
  }
}
