import type { Server } from 'node:net';
import { DiodeError } from './errors.ts';
import { formatHostPort, type HostPort } from './hostport.ts';

/** Why a listen failed, in words, for the errno codes a person can fix. */
const LISTEN_REASONS: Readonly<Record<string, string>> = Object.freeze({
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
  EPERM: 'permission denied',
  EADDRNOTAVAIL: 'address not available (no interface of this machine has it)',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'the host name could not be resolved',
  EAFNOSUPPORT: 'address family not supported',
  EINVAL: 'invalid address',
});

/** The one line a failed listen becomes: `cannot listen on 127.0.0.1:2022: address already in use`. */
export function listenError(at: HostPort, err: unknown, what?: string): DiodeError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  const reason = LISTEN_REASONS[code] ?? (err instanceof Error ? err.message : String(err));
  return new DiodeError('ELISTEN', `${what ? `${what}: ` : ''}cannot listen on ${formatHostPort(at)}: ${reason}`);
}

/**
 * Listens on host:port (port 0 picks a free one); a failure rejects with
 * listenError's one line, never the raw errno dump. Resolves with the bound port.
 * `backlog`: the kernel's queue of connections not yet accepted (Node's default 511;
 * the kernel caps it at net.core.somaxconn).
 */
export function listenOn(server: Server, at: HostPort, what?: string, backlog?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(listenError(at, err, what));
    server.once('error', onError);
    server.listen({ port: at.port, host: at.host, backlog }, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : at.port);
    });
  });
}
