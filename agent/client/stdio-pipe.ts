import { finished, type Duplex } from 'node:stream';
import { DiodeError, errorMessage } from '../util/errors.ts';
import { STREAM_VERDICT_WAIT_MS } from '../ops/stream-protocol.ts';

/**
 * `diode proxy`'s stdin → tunnel (its end is a half-close), tunnel → stdout;
 * done when the tunnel's reading side ends. The tunnel is the end-to-end
 * stream of the proxy's own relay session, or a running agent's stream
 * socket carrying one of that agent's: then `broke` (the agent's verdict)
 * tells an end from a break, which that socket's end cannot.
 */
export function pipeStdio(tunnel: Duplex, broke?: Promise<string | undefined>): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdin.on('error', () => tunnel.end());
    process.stdin.pipe(tunnel);
    tunnel.pipe(process.stdout);
    finished(tunnel, { writable: false }, (err) => {
      process.stdin.unpipe(tunnel);
      process.stdin.pause();
      const fail = (why: string) => reject(new DiodeError('ECONNRESET', `proxy: the connection broke: ${why}`));
      if (!broke) return err ? fail(errorMessage(err)) : resolve();
      // The agent's verdict (its reason beats our socket's "read ECONNRESET") comes with the end; a silent agent does not hold the proxy.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), STREAM_VERDICT_WAIT_MS)));
      void Promise.race([broke, late]).then((why) => {
        clearTimeout(timer);
        if (why !== undefined) fail(why);
        else if (err) fail(errorMessage(err));
        else resolve();
      });
    });
  });
}
