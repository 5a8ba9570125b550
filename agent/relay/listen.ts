import { createServer, type Server } from 'node:net';
import type { Identity } from '../identity/index.ts';
import type { Logger } from '../util/log.ts';
import type { HostPort } from '../util/hostport.ts';
import { loadOrCreateRelayCert } from './cert.ts';
import { RelayServer } from './server.ts';
import { listenOn } from '../util/listen.ts';
import { AcceptGuard } from './admission.ts';
import type { RelayLimits } from './config.ts';

export interface RunningRelay {
  server: RelayServer;
  listener: Server;
  port: number;
  close(): Promise<void>;
}

/** Listens for agents on host:port (port 0 picks a free one) and hands each connection to a RelayServer. */
export async function startRelay(options: { listen: HostPort; home: string; identity: Identity; log: Logger; limits?: Partial<RelayLimits>; fdLimit?: number }): Promise<RunningRelay> {
  const cert = await loadOrCreateRelayCert(options.home);
  const server = new RelayServer({ identity: options.identity, cert, log: options.log, limits: options.limits });
  const listener = createServer({ noDelay: true }, (socket) => server.handleSocket(socket));
  const port = await listenOn(listener, options.listen);
  // From here on an 'error' (EMFILE at accept) pauses the listener instead of crashing the process.
  const guard = new AcceptGuard({ server: listener, host: options.listen.host, port, pauseMs: server.limits.acceptPauseMs, stats: server.stats, log: options.log, fdLimit: options.fdLimit });
  return {
    server,
    listener,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        guard.stop();
        server.close();
        if (listener.listening) listener.close(() => resolve());
        else resolve();
      }),
  };
}
