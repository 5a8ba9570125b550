import { renameSync, writeFileSync } from 'node:fs';
import type { Logger } from '../util/log.ts';
import { errorMessage } from '../util/errors.ts';
import type { RelayLink } from '../link/relay-link.ts';
import { formatRelayEntry, type RelayEntry } from '../config/relay-entry.ts';

/** Where the relay link stands, as `publish --status-file` writes it. */
export type LinkState = 'connecting' | 'connected' | 'failing';

/**
 * `diode publish --status-file PATH`: the relay link's state as a small text
 * file, rewritten (atomically) only when it changes, so a login screen (the
 * image's diode-issue, through a systemd path unit) or a monitoring script can
 * show it without asking the agent. Lines:
 *
 *     state=connecting|connected|failing
 *     text=relay <host:port>: connected | connecting | <what is wrong, in a few words>
 *
 * Put it on a RAM file system (/run): it is written again at every change of
 * state, never while nothing changes.
 */
export function writeLinkStatus(path: string, link: RelayLink, relays: readonly RelayEntry[], log: Logger): void {
  let last = '';
  let failedOnce = false;
  const write = (state: LinkState, text: string): void => {
    const body = `state=${state}\ntext=${text.replace(/[\r\n]/g, ' ')}\n`;
    if (body === last) return;
    last = body;
    try {
      writeFileSync(`${path}.tmp`, body);
      renameSync(`${path}.tmp`, path);
    } catch (err) {
      if (!failedOnce) log.warn(`--status-file ${path}: cannot write it: ${errorMessage(err)}`);
      failedOnce = true;
    }
  };
  write('connecting', `relay ${relays.map(formatRelayEntry).join(', ')}: connecting`);
  link.on('up', () => write('connected', `relay ${link.relayEndpoint ?? ''}: connected`));
  link.on('down', () => write('connecting', `relay ${link.relayEndpoint ?? ''}: lost; reconnecting`));
  // "relay relay.example.org:41046: its name does not resolve"
  link.on('problem', (line: string) => write('failing', `relay ${line}`));
}
