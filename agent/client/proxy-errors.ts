import { DiodeError, errorMessage } from '../util/errors.ts';
import { NameError } from '../names/name.ts';

/**
 * The one line `diode proxy` fails with when the dial to `host` (as given)
 * fails: its own session's dial, or a running agent's on its behalf (the
 * agent sends this error, so both read the same).
 */
export function proxyDialError(err: unknown, host: string, port: number): DiodeError {
  if (err instanceof NameError) return new DiodeError(err.code, `proxy: ${err.message}`);
  return new DiodeError(err instanceof DiodeError ? err.code : 'EDIAL', `proxy: cannot reach ${host} port ${port}: ${errorMessage(err)}`);
}
