import type { Duplex } from 'node:stream';
import type { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { Logger } from '../util/log.ts';
import type { LearnedRelays } from '../link/learned-relays.ts';
import type { NameResolver } from '../names/resolver.ts';
import type { DiodeHost } from '../names/host.ts';
import { clientLinks, currentLink, dialAnyRelay } from './lookup.ts';
import { clientResolver } from './names.ts';

export interface ClientSessionOptions {
  relays: RelayEntry[];
  identity: Identity;
  log: Logger;
  /** The state directory: the person's names and the pinned ones live there. */
  home: string;
  /** Where the one line about a newly pinned name goes (default: the log, at info). */
  notice?: (line: string) => void;
  /** Relays learned from the cluster, tried after the configured ones (link/learned-relays.ts). */
  learned?: LearnedRelays;
  /** Data connections each link keeps ready (default CLIENT_DATA_POOL; 0 for a one-shot command: `diode proxy`). */
  dataPool?: number;
}

/** A client's relay session plus dialling with its identity: what proxy and bind share with socksd. */
export class ClientSession {
  /** One link per configured relay: the device may be on any of them (lookup.ts). */
  readonly links: RelayLink[];
  readonly identity: Identity;
  /** Names → addresses: the person's own, then the relays', pinned. */
  readonly names: NameResolver;

  constructor(options: ClientSessionOptions) {
    this.identity = options.identity;
    this.links = clientLinks(options.relays, options.identity, options.log, { learned: options.learned, dataPool: options.dataPool });
    this.names = clientResolver(options.home, this.links, options.notice ?? ((line) => options.log.info(line)));
    for (const link of this.links) link.start();
  }

  /** The link `diode status` reports: the first with a live session. */
  get link(): RelayLink {
    return currentLink(this.links);
  }

  /** A stream to the device port (its name resolved first), after the relay's and (private ports) the device's checks. */
  async dial(host: DiodeHost): Promise<Duplex> {
    const target = await this.names.target(host);
    return dialAnyRelay(this.links, this.identity, target.address, target.port);
  }

  async stop(): Promise<void> {
    await Promise.all(this.links.map((l) => l.stop()));
  }
}
