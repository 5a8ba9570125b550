import type { HostPort } from '../util/hostport.ts';
import { formatHostPort } from '../util/hostport.ts';
import { DiodeError, errorMessage } from '../util/errors.ts';

/** One relay that could not be used, and why. */
export interface RelayFailure {
  target: HostPort;
  err: unknown;
}

/** Every relay tried in one round failed: the message joins their lines, `failures` keeps them in the order tried. */
export class RelaysUnreachable extends DiodeError {
  readonly failures: readonly RelayFailure[];
  constructor(message: string, failures: readonly RelayFailure[]) {
    super('ENORELAY', message);
    this.name = 'RelaysUnreachable';
    this.failures = failures;
  }
}

/** Codes of a failure, as short words for a line on a login screen (the log keeps the full sentence). */
const SHORT: Readonly<Record<string, string>> = {
  ENOTFOUND: 'its name does not resolve',
  EAI_NONAME: 'its name does not resolve',
  EAI_FAIL: 'its name does not resolve',
  EAI_AGAIN: 'its name could not be resolved (no DNS answer)',
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'no route to it (network down?)',
  ENETUNREACH: 'no route to it (network down?)',
  ETIMEDOUT: 'no answer',
  ENOTRELAY: 'not a diode relay (TLS failed)',
  EPINNED: 'it proved another address than its pin',
  EPUBLISH: 'it refused the published ports',
};

/** ≤ this many characters of an unknown failure's message go on the line. */
const MAX_OTHER_REASON_CHARS = 50;

/** "relay.example.org:41046: its name does not resolve": a failure in one short line. */
export function describeFailure({ target, err }: RelayFailure): string {
  const code = err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? '') : '';
  let reason = SHORT[code];
  if (reason === undefined) {
    const text = errorMessage(err).replace(`${formatHostPort(target)}: `, '');
    reason = text.length > MAX_OTHER_REASON_CHARS ? `${text.slice(0, MAX_OTHER_REASON_CHARS - 3)}...` : text;
  }
  return `${formatHostPort(target)}: ${reason}`;
}
