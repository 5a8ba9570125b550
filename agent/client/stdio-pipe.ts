import { finished, type Duplex } from 'node:stream';
import { DiodeError, errorMessage } from '../util/errors.ts';

/**
 * `diode proxy`'s stdin → tunnel (its end is a half-close), tunnel → stdout;
 * done when the tunnel's reading side ends. The tunnel is the end-to-end
 * stream of the proxy's own relay session, or a running agent's stream
 * socket carrying one of that agent's.
 */
export function pipeStdio(tunnel: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdin.on('error', () => tunnel.end());
    process.stdin.pipe(tunnel);
    tunnel.pipe(process.stdout);
    finished(tunnel, { writable: false }, (err) => {
      process.stdin.unpipe(tunnel);
      process.stdin.pause();
      if (err) reject(new DiodeError('ECONNRESET', `proxy: the connection broke: ${errorMessage(err)}`));
      else resolve();
    });
  });
}
