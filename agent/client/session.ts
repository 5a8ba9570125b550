import type { Duplex } from 'node:stream';
import { RelayLink } from '../link/relay-link.ts';
import type { Identity } from '../identity/index.ts';
import type { RelayEntry } from '../config/relay-entry.ts';
import type { Logger } from '../util/log.ts';
import { dialThroughRelay } from './dial.ts';
import type { DiodeTarget } from './hostname.ts';

/** A client's relay session plus dialling with its identity: what proxy and bind share with socksd. */
export class ClientSession {
  readonly link: RelayLink;
  readonly identity: Identity;

  constructor(relays: RelayEntry[], identity: Identity, log: Logger) {
    this.identity = identity;
    this.link = new RelayLink({ relays, identity, log });
    this.link.start();
  }

  /** A stream to the device port, after the relay's and (private ports) the device's checks. */
  dial(target: DiodeTarget): Promise<Duplex> {
    return dialThroughRelay(this.link, this.identity, target.address, target.port);
  }

  stop(): Promise<void> {
    return this.link.stop();
  }
}
